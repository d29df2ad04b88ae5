//! The verbs of `wasm-oci`, one file each: `RunCommand { .. }.execute()`.

mod cache;
mod compile;
mod inspect;
mod login;
mod prefetch;
mod pull;
mod push;
mod run;
mod save;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use wasm_oci_cache::{Cache, Hold, RefEntry};
use wasm_oci_fetcher::parse_reference;

pub use cache::CacheCommand;
pub use compile::CompileCommand;
pub use inspect::InspectCommand;
pub use login::{LoginCommand, LogoutCommand};
pub use prefetch::PrefetchCommand;
pub use pull::PullCommand;
pub use push::PushCommand;
pub use run::RunCommand;
pub use save::{LoadCommand, SaveCommand};
pub use serve::ServeCommand;

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

/// A module to run or compile: a local file or a layout's blob, read once, or the cached blob
/// of a reference.
struct Resolved {
    /// What errors call it: the file, or the blob's path.
    path: PathBuf,
    /// The bytes of a local file or a layout's blob, as read (and, for a layout, verified).
    bytes: Option<Vec<u8>>,
    /// The cache and what the reference resolved to, for references.
    cache: Option<Cache>,
    entry: Option<RefEntry>,
    /// Keeps `cache prune` from removing the blob while this process uses it.
    _hold: Option<Hold>,
}

impl Resolved {
    /// Finds `module` locally or in the cache, pulling it as `policy` allows.
    fn new(global: &GlobalOptions, module: &str, policy: PullPolicy) -> anyhow::Result<Self> {
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
                bytes: Some(bytes),
                cache: None,
                entry: None,
                _hold: None,
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
                bytes: Some(bytes),
                cache: None,
                entry: None,
                _hold: None,
            });
        }
        let reference = parse_reference(module)?;
        let name = reference.whole();
        if policy != PullPolicy::Always {
            // The warm path: no runtime, no client, nothing created on disk.
            if let Some(cache) = Cache::open_existing(global.cache_dir()?)
                && let Some(entry) = cache.get_ref(&name)?
            {
                tracing::debug!(reference = %name, digest = %entry.layer_digest, "cache hit");
                return Ok(Self::cached(cache, entry));
            }
        }
        if policy == PullPolicy::Never {
            bail!(
                "{name} is not in the cache and --pull never forbids asking the registry; \
                 run `wasm-oci pull {module}` first"
            );
        }
        let fetcher = global.fetcher()?;
        let pulled = crate::block_on(fetcher.pull(&reference))?
            .with_context(|| format!("pulling {module}"))?;
        Ok(Self::cached(fetcher.cache().clone(), pulled.entry))
    }

    fn cached(cache: Cache, entry: RefEntry) -> Self {
        cache.touch_ref(&entry.reference);
        // A blob pruned between lookup and hold fails to open; running it would fail too.
        let hold = cache.hold(&entry.layer_digest).ok();
        Self {
            path: cache.blob_path(&entry.layer_digest),
            bytes: None,
            cache: Some(cache),
            entry: Some(entry),
            _hold: hold,
        }
    }

    /// Whether it says it is a wasi:http/proxy component before it is compiled: from the bytes
    /// read, or from the `component` section of a cached reference's config (a guess the
    /// runner confirms; it only picks the engine).
    fn is_proxy(&self) -> bool {
        let proxy = |world: &str| world.starts_with("wasi:http/proxy@");
        if let Some(bytes) = &self.bytes {
            return wasm_oci_fetcher::interface(bytes)
                .and_then(|i| i.world)
                .is_some_and(|w| proxy(&w));
        }
        let (Some(cache), Some(entry)) = (&self.cache, &self.entry) else {
            return false;
        };
        entry
            .config_digest
            .as_ref()
            .and_then(|d| cache.read_blob(d).ok())
            .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
            .is_some_and(|c| c["component"]["target"].as_str().is_some_and(proxy))
    }

    /// The wasm for the runner: the bytes read, or the cached blob (whose compiled code is
    /// kept in the cache).
    fn wasm(&self) -> wasm_oci_shim::Wasm<'_> {
        match (&self.bytes, &self.cache, &self.entry) {
            (Some(bytes), ..) => wasm_oci_shim::Wasm::Bytes { bytes, cache: None },
            (None, Some(cache), Some(entry)) => wasm_oci_shim::Wasm::Cached {
                cache,
                digest: &entry.layer_digest,
            },
            (None, ..) => unreachable!("a resolved module has bytes or a cache entry"),
        }
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
