//! The `wasm-oci` command line: one module per verb, shared options and output helpers.
//!
//! The binaries in `src/bin` only parse arguments and hand over to [`commands`].

// Doc comments of arguments are --help text, where `[REGISTRY/]REPO` is not a link.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod commands;
mod progress;
pub mod units;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use wasm_oci_cache::Cache;
use wasm_oci_fetcher::{Fetcher, RegistryOptions};

/// Options every verb accepts, before or after the verb's name.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Cache directory [default: $XDG_CACHE_HOME/wasm-oci, else ~/.cache/wasm-oci]
    #[arg(long, global = true, env = "WASM_OCI_CACHE", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Speak plain HTTP (no TLS) to the registry. Registries on loopback (localhost,
    /// 127.0.0.0/8, [::1]) always use plain HTTP, as docker does
    #[arg(long, global = true, env = "WASM_OCI_PLAIN_HTTP")]
    pub plain_http: bool,
}

impl GlobalOptions {
    /// Where the cache lives, without creating it.
    pub fn cache_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.cache_dir {
            Some(dir) => Ok(dir.clone()),
            None => wasm_oci_cache::default_dir()
                .context("cannot find a cache directory: set $WASM_OCI_CACHE or pass --cache-dir"),
        }
    }

    /// Opens (creating when needed) the cache.
    pub fn open_cache(&self) -> anyhow::Result<Cache> {
        let dir = self.cache_dir()?;
        Cache::open(&dir).with_context(|| format!("opening the cache at {}", dir.display()))
    }

    /// A fetcher over the cache, drawing progress bars when stderr is a terminal.
    pub fn fetcher(&self) -> anyhow::Result<Fetcher> {
        let fetcher = Fetcher::new(
            self.open_cache()?,
            RegistryOptions {
                plain_http: self.plain_http,
            },
        );
        Ok(match progress::Bars::on_terminal(false) {
            Some(bars) => fetcher.with_progress(bars),
            None => fetcher,
        })
    }
}

/// Runs a future on a runtime made for this one command; the warm path of `run` never gets here.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Prints `value` as JSON on stdout; a closed stdout is not an error.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let result = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out));
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
