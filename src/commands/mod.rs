//! The verbs of `wasm-oci`, one file each: `RunCommand { .. }.execute()`.

mod cache;
mod compile;
mod completion;
mod inspect;
mod key;
mod login;
mod output;
mod prefetch;
mod pull;
mod push;
mod run;
mod save;
mod serve;
mod sign;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use wasm_oci_cache::{Cache, RefEntry};
use wasm_oci_fetcher::parse_reference;
use wasm_oci_fetcher::trust::policy::Policy;

use cache::CacheCommand;
use compile::CompileCommand;
use completion::{CompletionCommand, ManCommand};
use inspect::InspectCommand;
use key::KeyCommand;
use login::{LoginCommand, LogoutCommand};
use prefetch::PrefetchCommand;
use pull::PullCommand;
use push::PushCommand;
use run::RunCommand;
use save::{LoadCommand, SaveCommand};
use serve::ServeCommand;
use sign::SignCommand;
use verify::VerifyCommand;

use crate::{GlobalOptions, RegistryArgs};

/// Run WebAssembly straight from OCI registries.
///
/// A wasm module pushed to a registry as an OCI artifact is pulled by reference, verified, kept
/// in a content-addressed cache and started in wasmtime with WASI. References are read the way
/// docker reads them ([REGISTRY/]REPOSITORY[:TAG|@DIGEST]; the registry defaults to docker.io).
/// Set WASM_OCI_LOG=debug for details of what happens; `wasm-oci VERB --help` for each verb.
///
/// Examples:
///     wasm-oci push hello.wasm localhost:5000/hello:v1
///     wasm-oci run localhost:5000/hello:v1
#[derive(Debug, Parser)]
#[command(name = "wasm-oci", version, verbatim_doc_comment, max_term_width = 100)]
#[command(mut_args = before_the_verb)]
pub struct Cli {
    /// Cache directory [default: $XDG_CACHE_HOME/wasm-oci, else ~/.cache/wasm-oci]
    #[arg(long, global = true, env = "WASM_OCI_CACHE", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Registry options given before the verb, where scripts written for older versions put
    /// them; hidden here, documented on each verb that talks to a registry.
    #[command(flatten)]
    registry_before: RegistryArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(RunCommand),
    Serve(ServeCommand),
    Pull(PullCommand),
    Push(PushCommand),
    Compile(CompileCommand),
    Prefetch(PrefetchCommand),
    Inspect(InspectCommand),
    Save(SaveCommand),
    Load(LoadCommand),
    Cache(CacheCommand),
    Login(LoginCommand),
    Logout(LogoutCommand),
    Completion(CompletionCommand),
    Man(ManCommand),
    #[command(subcommand)]
    Key(KeyCommand),
    Sign(SignCommand),
    Verify(VerifyCommand),
}

/// The registry options of the top level are accepted there but shown on the verbs only, and
/// read no environment variable there (the verb's copy does).
fn before_the_verb(arg: clap::Arg) -> clap::Arg {
    const REGISTRY_ARGS: [&str; 6] = [
        "plain_http",
        "username",
        "password_stdin",
        "ca_file",
        "insecure_skip_tls_verify",
        "hosts_dir",
    ];
    if REGISTRY_ARGS.contains(&arg.get_id().as_str()) {
        arg.hide(true).env(None)
    } else {
        arg
    }
}

impl Command {
    /// The verb as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Serve(_) => "serve",
            Command::Pull(_) => "pull",
            Command::Push(_) => "push",
            Command::Compile(_) => "compile",
            Command::Prefetch(_) => "prefetch",
            Command::Inspect(_) => "inspect",
            Command::Save(_) => "save",
            Command::Load(_) => "load",
            Command::Cache(_) => "cache",
            Command::Login(_) => "login",
            Command::Logout(_) => "logout",
            Command::Completion(_) => "completion",
            Command::Man(_) => "man",
            Command::Key(_) => "key",
            Command::Sign(_) => "sign",
            Command::Verify(_) => "verify",
        }
    }

    /// The registry options of a verb that talks to a registry.
    fn registry_args(&mut self) -> Option<&mut RegistryArgs> {
        match self {
            Command::Run(cmd) => Some(&mut cmd.registry),
            Command::Serve(cmd) => Some(&mut cmd.registry),
            Command::Pull(cmd) => Some(&mut cmd.registry),
            Command::Push(cmd) => Some(&mut cmd.registry),
            Command::Compile(cmd) => Some(&mut cmd.registry),
            Command::Prefetch(cmd) => Some(&mut cmd.registry),
            Command::Inspect(cmd) => Some(&mut cmd.registry),
            Command::Save(cmd) => Some(&mut cmd.registry),
            Command::Login(cmd) => Some(&mut cmd.registry),
            Command::Sign(cmd) => Some(&mut cmd.registry),
            Command::Verify(cmd) => Some(&mut cmd.registry),
            Command::Load(_)
            | Command::Key(_)
            | Command::Cache(_)
            | Command::Logout(_)
            | Command::Completion(_)
            | Command::Man(_) => None,
        }
    }
}

impl Cli {
    /// The command line of this process, parsed; when it cannot be, the error is printed and
    /// the exit code returned: 125 for `run` and `serve`, as `docker run` exits on a usage
    /// error (a guest's own exit 2 must not read as one), else clap's 2 (0 for --help).
    pub fn from_args() -> Result<Cli, ExitCode> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        Cli::try_parse_from(&args).map_err(|e| {
            let _ = e.print();
            let verb = verb_of(args.iter().skip(1).filter_map(|a| a.to_str()));
            let code = match verb {
                Some("run" | "serve") if e.use_stderr() => 125,
                _ => e.exit_code(),
            };
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        })
    }

    /// Runs the chosen verb; failures of `run` itself exit 125, as `docker run` does, so that
    /// they are not mistaken for the guest's own exit status.
    pub fn execute(mut self) -> ExitCode {
        let registry = match self.command.registry_args() {
            Some(args) => std::mem::take(args).or(self.registry_before),
            None => {
                if let Some(option) = self.registry_before.first_given() {
                    eprintln!(
                        "Error: {option} is an option of the verbs that talk to a registry \
                         (run, serve, pull, push, compile, prefetch, inspect, save, login, sign, verify); \
                         `wasm-oci {}` talks to none",
                        self.command.name()
                    );
                    return ExitCode::from(2);
                }
                RegistryArgs::default()
            }
        };
        let global = GlobalOptions {
            cache_dir: self.cache_dir,
            registry,
        };
        let (result, failure) = match self.command {
            Command::Run(cmd) => (cmd.execute(&global), 125),
            Command::Serve(cmd) => (cmd.execute(&global), 125),
            Command::Pull(cmd) => (cmd.execute(&global), 1),
            Command::Push(cmd) => (cmd.execute(&global), 1),
            Command::Compile(cmd) => (cmd.execute(&global), 1),
            Command::Prefetch(cmd) => (cmd.execute(&global), 1),
            Command::Inspect(cmd) => (cmd.execute(&global), 1),
            Command::Save(cmd) => (cmd.execute(&global), 1),
            Command::Load(cmd) => (cmd.execute(&global), 1),
            Command::Cache(cmd) => (cmd.execute(&global), 1),
            Command::Login(cmd) => (cmd.execute(&global), 1),
            Command::Logout(cmd) => (cmd.execute(&global), 1),
            Command::Completion(cmd) => (cmd.execute(), 1),
            Command::Man(cmd) => (cmd.execute(), 1),
            Command::Key(cmd) => (cmd.execute(&global), 1),
            Command::Sign(cmd) => (cmd.execute(&global), 1),
            Command::Verify(cmd) => (cmd.execute(&global), 1),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                // On one line, every control character escaped: an error may quote what a
                // registry or a module says (a module's import and export names, in wasmtime's
                // own messages), which must not recolour or rewrite the terminal, nor forge
                // a line.
                eprintln!(
                    "Error: {}",
                    wasm_oci_fetcher::text::printable(&format!("{e:#}"))
                );
                ExitCode::from(failure)
            }
        }
    }
}

/// The verb of a command line (without the program's name): the first word that is neither
/// an option before it nor such an option's value.
fn verb_of<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    const TAKE_A_VALUE: [&str; 5] = [
        "--cache-dir",
        "--username",
        "-u",
        "--ca-file",
        "--hosts-dir",
    ];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if TAKE_A_VALUE.contains(&arg) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// A cached artifact as every verb reports it, in JSON and in words: `digest` is the
/// manifest's (what `push` prints and what `@sha256:` pins), `layer_digest` the wasm's.
#[derive(Debug, serde::Serialize)]
struct Artifact {
    reference: String,
    digest: String,
    layer_digest: String,
    layer_media_type: String,
    size: u64,
}

impl From<&RefEntry> for Artifact {
    fn from(entry: &RefEntry) -> Self {
        Artifact {
            reference: entry.reference.clone(),
            digest: entry.manifest_digest.to_string(),
            layer_digest: entry.layer_digest.to_string(),
            layer_media_type: entry.layer_media_type.clone(),
            size: entry.size,
        }
    }
}

/// Context for an error, given only when the error does not already name what it is about:
/// the fetcher's and the runner's errors name the reference or the file, and a line that
/// says it twice reads as two failures.
trait Naming<T> {
    /// `what` as context, unless the error's text holds one of `subjects`.
    fn naming(self, subjects: &[&str], what: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Naming<T> for Result<T, E> {
    fn naming(self, subjects: &[&str], what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e = e.into();
            let text = format!("{e:#}");
            if subjects.iter().any(|s| !s.is_empty() && text.contains(s)) {
                e
            } else {
                e.context(what())
            }
        })
    }
}

/// When to ask the registry about a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PullPolicy {
    /// Pull only when the reference is not in the cache
    Missing,
    /// Always resolve the reference in the registry (blobs already cached are not downloaded again)
    Always,
    /// Never touch the network; fail when the reference is not cached
    Never,
}

impl From<PullPolicy> for wasm_oci_fetcher::PullPolicy {
    fn from(policy: PullPolicy) -> Self {
        match policy {
            PullPolicy::Missing => Self::Missing,
            PullPolicy::Always => Self::Always,
            PullPolicy::Never => Self::Never,
        }
    }
}

/// Where the signature policy comes from, for the verbs that pull and run.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyOption {
    /// Signature policy in containers-policy.json(5) format: which references must carry a
    /// valid cosign signature (sigstoreSigned), are refused (reject) or accepted as they are
    /// (insecureAcceptAnything). Default: $WASM_OCI_POLICY, else /etc/wasm-oci/policy.json;
    /// without a file everything is accepted
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

impl PolicyOption {
    /// The policy to enforce; a file that was named and cannot be used is an error.
    pub fn load(&self) -> anyhow::Result<Policy> {
        Ok(Policy::locate(self.policy.as_deref())?)
    }
}

/// A module to run or compile.
struct Resolved {
    /// What errors call it: the file, or the blob's path.
    path: PathBuf,
    source: Source,
    /// Where the compiled code of bytes read (a local file, a layout's blob) is kept, by
    /// their digest, as the shim keeps a rootfs module's: a second start skips the compile.
    compiled: Option<Cache>,
}

enum Source {
    /// A local file or a layout's blob, read once (and, for a layout, verified).
    Bytes(Vec<u8>),
    /// A reference's artifact in the cache, held while this lives.
    Cached {
        cache: Cache,
        artifact: wasm_oci_fetcher::Resolved,
    },
}

impl Resolved {
    /// Finds `module` locally or in the cache, pulling it as `policy` allows, under the
    /// signature policy `trust`.
    fn new(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
    ) -> anyhow::Result<Self> {
        Self::find(global, module, policy, trust, false)
    }

    /// [`Resolved::new`] for a module about to run: a pull that finds in the config an import
    /// this host does not provide stops before downloading the layer.
    fn to_run(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
    ) -> anyhow::Result<Self> {
        let mut resolved = Self::find(global, module, policy, trust, true)?;
        if let Source::Bytes(_) = resolved.source {
            resolved.compiled = compiled_cache(global);
        }
        Ok(resolved)
    }

    fn find(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
        check_imports: bool,
    ) -> anyhow::Result<Self> {
        if let Some(spec) = module.strip_prefix("oci:") {
            // `oci:DIR[:TAG]`, as skopeo names layouts; verified, run in place, not cached,
            // and held to the signature policy as `load` holds the same layout: a layout is
            // data from elsewhere, and running it in place must not skip that check.
            let (dir, tag) = match spec.rsplit_once(':') {
                Some((dir, tag)) if Path::new(dir).is_dir() => (dir, Some(tag)),
                _ => (spec, None),
            };
            let (path, digest) =
                wasm_oci_fetcher::layout::resolve_trusted(Path::new(dir), tag, trust)?;
            // What runs is what was hashed here, whatever the file holds by then.
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading {} of {module}", path.display()))?;
            let actual = wasm_oci_cache::Digest::of(&bytes);
            if actual != digest {
                bail!(
                    "{} in {module} hashes to {actual}, not {digest}: the layout changed while it \
                     was read",
                    path.display()
                );
            }
            return Ok(Self {
                path,
                source: Source::Bytes(bytes),
                compiled: None,
            });
        }
        if looks_like_file(module) {
            let path = PathBuf::from(module);
            if !path.is_file() {
                bail!("{} does not exist or is not a file", path.display());
            }
            let bytes = std::fs::read(&path).with_context(|| format!("reading {module}"))?;
            let bytes = from_text(&path, bytes)?;
            return Ok(Self {
                path,
                source: Source::Bytes(bytes),
                compiled: None,
            });
        }
        let reference = parse_reference(module)?;
        let policy = policy.into();
        // The warm path: no runtime, no client, nothing created on disk.
        let cached = match Cache::open_existing(global.cache_dir()?) {
            Some(cache) => wasm_oci_fetcher::resolve_cached(&cache, &reference, policy, trust)?
                .map(|artifact| (cache, artifact)),
            None if policy == wasm_oci_fetcher::PullPolicy::Never => {
                return Err(wasm_oci_fetcher::Error::NotCached {
                    reference: reference.whole(),
                }
                .into());
            }
            None => None,
        };
        let (cache, artifact) = match cached {
            Some(hit) => hit,
            None => {
                let mut fetcher = global
                    .fetcher(reference.registry())?
                    .with_policy(std::sync::Arc::new(trust.clone()));
                if check_imports {
                    fetcher = fetcher.with_config_check(std::sync::Arc::new(|config: &[u8]| {
                        imports_provided(config).map_err(Into::into)
                    }));
                }
                let artifact = crate::block_on(fetcher.resolve(&reference, policy))?
                    .naming(&[module], || format!("pulling {module}"))?;
                (fetcher.cache().clone(), artifact)
            }
        };
        Ok(Self {
            path: cache.blob_path(&artifact.entry.layer_digest),
            source: Source::Cached { cache, artifact },
            compiled: None,
        })
    }

    /// The cache and the reference's entry, for a cached reference.
    fn cached(&self) -> Option<(&Cache, &RefEntry)> {
        match &self.source {
            Source::Cached { cache, artifact } => Some((cache, &artifact.entry)),
            Source::Bytes(_) => None,
        }
    }

    /// Whether it says it is a wasi:http/proxy component before it is compiled: from the bytes
    /// read, or from the `component` section of a cached reference's config (a guess the
    /// runner confirms; it only picks the engine).
    fn is_proxy(&self) -> bool {
        let proxy = |world: &str| world.starts_with("wasi:http/proxy@");
        match &self.source {
            Source::Bytes(bytes) => wasm_oci_fetcher::interface(bytes)
                .and_then(|i| i.world)
                .is_some_and(|w| proxy(&w)),
            Source::Cached { cache, artifact } => artifact
                .entry
                .config_digest
                .as_ref()
                .and_then(|d| cache.read_blob(d).ok())
                .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
                .is_some_and(|c| c["component"]["target"].as_str().is_some_and(proxy)),
        }
    }

    /// The wasm for the runner: the bytes read, or the cached blob; the compiled code of
    /// either is kept in the cache (for bytes, when it is to run).
    fn wasm(&self) -> wasm_oci_shim::Wasm<'_> {
        match &self.source {
            Source::Bytes(bytes) => wasm_oci_shim::Wasm::Bytes {
                bytes,
                cache: self.compiled.as_ref(),
            },
            Source::Cached { cache, artifact } => wasm_oci_shim::Wasm::Cached {
                cache,
                digest: &artifact.entry.layer_digest,
            },
        }
    }
}

/// A module in the text format (what `wat::Detect` reads as text: a `(` after whitespace
/// and comments) made binary, as wasmtime runs it; anything else as it is.
fn from_text(path: &Path, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if wat::Detect::from_bytes(&bytes) != wat::Detect::WasmText {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(std::borrow::Cow::into_owned)
        .map_err(|mut e| {
            // wat's message is a snippet over several lines: one line, as every error here,
            // `FILE:LINE:COL: what`, as compilers say it.
            e.set_path(path);
            let text = e.to_string();
            let mut lines = text.lines();
            let message = lines.next().unwrap_or_default();
            match lines.next().and_then(|l| l.trim().strip_prefix("--> ")) {
                Some(at) => anyhow::anyhow!("{at}: {message}"),
                None => anyhow::anyhow!("{}: {message}", path.display()),
            }
        })
}

/// The cache that keeps the compiled code of local files, when there is one to be had: a
/// cache that cannot be opened only costs a compile per start.
fn compiled_cache(global: &GlobalOptions) -> Option<Cache> {
    let dir = global.cache_dir().ok()?;
    Cache::open(&dir)
        .inspect_err(|e| tracing::debug!(error = %e, "compiled code of local files is not kept"))
        .ok()
}

/// Refuses a config whose `component` section lists an import this host does not provide.
fn imports_provided(config: &[u8]) -> Result<(), String> {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(config) else {
        return Ok(());
    };
    let component = &config["component"];
    let imports = component["imports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str());
    let missing = wasm_oci_shim::runner::unsatisfied_imports(imports, component["target"].as_str());
    match missing.as_slice() {
        [] => Ok(()),
        _ => Err(format!(
            "its config says it imports {}, which wasm-oci does not provide",
            wasm_oci_fetcher::text::printable(&missing.join(", "))
        )),
    }
}

/// A path rather than a reference: it exists, starts like a path, or names a `.wasm` file
/// (a reference with a registry or tag always has `/` or `:` before such a suffix).
fn looks_like_file(arg: &str) -> bool {
    arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || Path::new(arg).is_file()
        || ((arg.ends_with(".wasm") || arg.ends_with(".wat")) && !arg.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_references_are_told_apart() {
        for file in [
            "./hello.wasm",
            "/tmp/x.wasm",
            "../a",
            "hello.wasm",
            "dir/hello.wasm",
            "hello.wat",
        ] {
            assert!(looks_like_file(file), "{file}");
        }
        for reference in [
            "localhost:5000/hello:v1",
            "hello",
            "ghcr.io/a/b@sha256:00",
            "x:hello.wasm",
        ] {
            assert!(!looks_like_file(reference), "{reference}");
        }
    }

    #[test]
    fn the_verb_is_found_past_the_options_before_it() {
        let verb = |line: &str| verb_of(line.split_whitespace()).map(str::to_owned);
        assert_eq!(verb("run -v x"), Some("run".into()));
        assert_eq!(verb("--cache-dir run serve x"), Some("serve".into()));
        assert_eq!(verb("--plain-http -u run pull x"), Some("pull".into()));
        assert_eq!(verb("--plain-http"), None);
    }

    #[test]
    fn text_modules_are_made_binary_and_binary_ones_kept() {
        let wat = b"(module (func (export \"_start\")))".to_vec();
        let wasm = from_text(Path::new("a.wat"), wat).unwrap();
        assert!(wasm.starts_with(b"\0asm"));
        assert_eq!(from_text(Path::new("a.wat"), wasm.clone()).unwrap(), wasm);
        // Not text, not wasm: left for the runner to say what it starts with.
        assert_eq!(
            from_text(Path::new("a.wasm"), b"ELF...".to_vec()).unwrap(),
            b"ELF..."
        );
        let e = from_text(Path::new("bad.wat"), b"(module (func (oops)))".to_vec()).unwrap_err();
        assert!(format!("{e:#}").contains("bad.wat"), "{e:#}");
    }
}
