//! The verbs of `wasm-oci`, one file each: `RunCommand { .. }.execute()`.

mod cache;
mod compile;
mod inspect;
mod key;
mod login;
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

pub use cache::CacheCommand;
pub use compile::CompileCommand;
pub use inspect::InspectCommand;
pub use key::KeyCommand;
pub use login::{LoginCommand, LogoutCommand};
pub use prefetch::PrefetchCommand;
pub use pull::PullCommand;
pub use push::PushCommand;
pub use run::RunCommand;
pub use save::{LoadCommand, SaveCommand};
pub use serve::ServeCommand;
pub use sign::SignCommand;
pub use verify::VerifyCommand;

use crate::GlobalOptions;

/// Run WebAssembly straight from OCI registries.
///
/// A wasm module pushed to a registry as an OCI artifact is pulled by reference, verified, kept
/// in a content-addressed cache and started in wasmtime with WASI:
///
///     wasm-oci push hello.wasm localhost:5000/hello:v1
///     wasm-oci run localhost:5000/hello:v1
///
/// References are read the way docker reads them ([REGISTRY/]REPOSITORY[:TAG|@DIGEST]; the
/// registry defaults to docker.io). Set WASM_OCI_LOG=debug for details of what happens.
#[derive(Debug, Parser)]
#[command(name = "wasm-oci", version, verbatim_doc_comment, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalOptions,

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
    #[command(subcommand)]
    Key(KeyCommand),
    Sign(SignCommand),
    Verify(VerifyCommand),
}

impl Cli {
    /// Runs the chosen verb; failures of `run` itself exit 125, as `docker run` does, so that
    /// they are not mistaken for the guest's own exit status.
    pub fn execute(self) -> ExitCode {
        let (result, failure) = match self.command {
            Command::Run(cmd) => (cmd.execute(&self.global), 125),
            Command::Serve(cmd) => (cmd.execute(&self.global), 125),
            Command::Pull(cmd) => (cmd.execute(&self.global), 1),
            Command::Push(cmd) => (cmd.execute(&self.global), 1),
            Command::Compile(cmd) => (cmd.execute(&self.global), 1),
            Command::Prefetch(cmd) => (cmd.execute(&self.global), 1),
            Command::Inspect(cmd) => (cmd.execute(&self.global), 1),
            Command::Save(cmd) => (cmd.execute(&self.global), 1),
            Command::Load(cmd) => (cmd.execute(&self.global), 1),
            Command::Cache(cmd) => (cmd.execute(&self.global), 1),
            Command::Login(cmd) => (cmd.execute(&self.global), 1),
            Command::Logout(cmd) => (cmd.execute(&self.global), 1),
            Command::Key(cmd) => (cmd.execute(&self.global), 1),
            Command::Sign(cmd) => (cmd.execute(&self.global), 1),
            Command::Verify(cmd) => (cmd.execute(&self.global), 1),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::from(failure)
            }
        }
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
    /// signature policy the environment names (WASM_OCI_POLICY, /etc/wasm-oci/policy.json).
    fn new(global: &GlobalOptions, module: &str, policy: PullPolicy) -> anyhow::Result<Self> {
        let trust = Policy::locate(None)?;
        Self::find(global, module, policy, &trust, false)
    }

    /// [`Resolved::new`] for a module about to run: a pull that finds in the config an import
    /// this host does not provide stops before downloading the layer.
    fn to_run(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
    ) -> anyhow::Result<Self> {
        Self::find(global, module, policy, trust, true)
    }

    fn find(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
        check_imports: bool,
    ) -> anyhow::Result<Self> {
        if let Some(spec) = module.strip_prefix("oci:") {
            // `oci:DIR[:TAG]`, as skopeo names layouts; verified, run in place, not cached.
            let (dir, tag) = match spec.rsplit_once(':') {
                Some((dir, tag)) if Path::new(dir).is_dir() => (dir, Some(tag)),
                _ => (spec, None),
            };
            let (path, digest) = wasm_oci_fetcher::layout::resolve(Path::new(dir), tag)?;
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
            });
        }
        if looks_like_file(module) {
            let path = PathBuf::from(module);
            if !path.is_file() {
                bail!("{} does not exist or is not a file", path.display());
            }
            let bytes = std::fs::read(&path).with_context(|| format!("reading {module}"))?;
            return Ok(Self {
                path,
                source: Source::Bytes(bytes),
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
                    fetcher = fetcher.with_config_check(std::sync::Arc::new(imports_provided));
                }
                let artifact = crate::block_on(fetcher.resolve(&reference, policy))?
                    .with_context(|| format!("pulling {module}"))?;
                (fetcher.cache().clone(), artifact)
            }
        };
        Ok(Self {
            path: cache.blob_path(&artifact.entry.layer_digest),
            source: Source::Cached { cache, artifact },
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

    /// The wasm for the runner: the bytes read, or the cached blob (whose compiled code is
    /// kept in the cache).
    fn wasm(&self) -> wasm_oci_shim::Wasm<'_> {
        match &self.source {
            Source::Bytes(bytes) => wasm_oci_shim::Wasm::Bytes { bytes, cache: None },
            Source::Cached { cache, artifact } => wasm_oci_shim::Wasm::Cached {
                cache,
                digest: &artifact.entry.layer_digest,
            },
        }
    }
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
        || (arg.ends_with(".wasm") && !arg.contains(':'))
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
}
