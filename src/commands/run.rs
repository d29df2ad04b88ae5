//! `wasm-oci run REF|FILE [-- ARGS...]`: pull if needed, then start the guest in wasmtime.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use wasm_oci_cache::Cache;
use wasm_oci_fetcher::parse_reference;
use wasm_oci_shim::{RunOptions, Runner};

use crate::GlobalOptions;

/// Run a wasm module or component from a registry reference or a local file.
///
/// A reference is pulled into the cache when it is not there yet (docker's default pull
/// policy), so a second run starts without asking the registry. The guest gets its arguments,
/// stdin, stdout and stderr, and nothing else of the host; its exit status is wasm-oci's.
/// When wasm-oci itself fails (the pull, an invalid module) it exits 125, as docker run does.
///
///     wasm-oci run localhost:5000/hello:v1
///     wasm-oci run localhost:5000/tool:v2 -- --verbose input.txt
///     wasm-oci run ./hello.wasm
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunCommand {
    /// A reference such as localhost:5000/hello:v1, or a path to a .wasm file
    module: String,

    /// Arguments for the guest (put them after --)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,

    /// When to ask the registry: missing (only when not cached), always, never
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PullPolicy {
    /// Pull only when the reference is not in the cache
    Missing,
    /// Always resolve the reference in the registry (blobs already cached are not downloaded again)
    Always,
    /// Never touch the network; fail when the reference is not cached
    Never,
}

impl RunCommand {
    /// Resolves the module and runs it.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let path = self.resolve(global)?;
        let mut args = Vec::with_capacity(self.args.len() + 1);
        args.push(self.module.clone());
        args.extend(self.args.iter().cloned());
        let options = RunOptions {
            args,
            ..RunOptions::default()
        };
        let runner = Runner::new()?;
        match runner.run(&path, &options) {
            // The OS keeps the low 8 bits of an exit status, as it does for wasmtime.
            Ok(code) => Ok(ExitCode::from(code as u8)),
            Err(e @ wasm_oci_shim::Error::Trap { .. }) => {
                eprintln!("Error: {:?}", anyhow::Error::from(e));
                // wasmtime exits like an abort on a trap.
                Ok(ExitCode::from(134))
            }
            Err(e) => Err(e).with_context(|| format!("running {}", self.module)),
        }
    }

    /// The path of the wasm to run: the local file, or the cached blob of the reference.
    fn resolve(&self, global: &GlobalOptions) -> anyhow::Result<PathBuf> {
        if looks_like_file(&self.module) {
            let path = PathBuf::from(&self.module);
            if !path.is_file() {
                bail!("{} does not exist or is not a file", path.display());
            }
            return Ok(path);
        }
        let reference = parse_reference(&self.module)?;
        let name = reference.whole();
        if self.pull != PullPolicy::Always {
            // The warm path: no runtime, no client, nothing created on disk.
            if let Some(cache) = Cache::open_existing(global.cache_dir()?)
                && let Some(entry) = cache.get_ref(&name)?
            {
                tracing::debug!(reference = %name, digest = %entry.layer_digest, "cache hit");
                return Ok(cache.blob_path(&entry.layer_digest));
            }
        }
        if self.pull == PullPolicy::Never {
            bail!(
                "{name} is not in the cache and --pull never forbids asking the registry; \
                 run `wasm-oci pull {}` first",
                self.module
            );
        }
        let fetcher = global.fetcher()?;
        let pulled = crate::block_on(fetcher.pull(&reference))?
            .with_context(|| format!("pulling {}", self.module))?;
        Ok(pulled.path)
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
