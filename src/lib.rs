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
use std::sync::OnceLock;
use wasm_oci_cache::Cache;

use wasm_oci_fetcher::auth::{Credentials, Secret};
use wasm_oci_fetcher::{Fetcher, RegistryOptions};

/// Options every verb accepts, before or after the verb's name.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Cache directory [default: $XDG_CACHE_HOME/wasm-oci, else ~/.cache/wasm-oci]
    #[arg(long, global = true, env = "WASM_OCI_CACHE", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Speak plain HTTP (no TLS) to the registry. A registry on loopback (localhost,
    /// 127.0.0.0/8, [::1]) is spoken to in whatever it answers, as docker does; any other
    /// uses TLS unless this is given. WASM_OCI_PLAIN_HTTP is false when empty, 0, false, no,
    /// off, n or f, and true otherwise, as the containerd shim reads it
    #[arg(
        long,
        global = true,
        env = "WASM_OCI_PLAIN_HTTP",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub plain_http: bool,

    /// Registry user name; the password comes from --password-stdin. Without them,
    /// credentials come from docker's config ($DOCKER_CONFIG/config.json, credential helpers)
    #[arg(long, global = true, value_name = "NAME", requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the registry password (or token) from standard input
    #[arg(long, global = true)]
    pub password_stdin: bool,

    /// Trust this PEM certificate authority for registry TLS (SSL_CERT_FILE is trusted too)
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Accept any registry certificate. Dangerous: anyone on the path can serve you code
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,

    /// containerd's registry host directory (DIR/REGISTRY/hosts.toml, DIR/_default/hosts.toml):
    /// mirrors tried before each registry, and per-host TLS and headers [default:
    /// /etc/containerd/certs.d when it exists]
    #[arg(long, global = true, env = "WASM_OCI_HOSTS_DIR", value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
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

    /// `--username` with the password read from stdin (once per process).
    pub fn explicit_credentials(&self) -> anyhow::Result<Option<(String, Secret)>> {
        static PASSWORD: OnceLock<Secret> = OnceLock::new();
        let Some(username) = &self.username else {
            if self.password_stdin {
                anyhow::bail!("--password-stdin needs --username");
            }
            return Ok(None);
        };
        if PASSWORD.get().is_none() {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("--password-stdin read an empty password");
            }
            let _ = PASSWORD.set(Secret::new(password));
        }
        Ok(Some((
            username.clone(),
            PASSWORD.get().expect("set above").clone(),
        )))
    }

    /// How to reach registries, from the options and the environment. `--username` names
    /// credentials for `registry`, the one the command names, and for no other.
    pub fn registry_options(&self, registry: &str) -> anyhow::Result<RegistryOptions> {
        let credentials = match self.explicit_credentials()? {
            Some((username, password)) => Credentials::Explicit {
                registry: registry.to_owned(),
                username,
                password,
            },
            None => Credentials::DockerConfig,
        };
        let mut ca_files: Vec<PathBuf> = self.ca_file.iter().cloned().collect();
        ca_files.extend(RegistryOptions::from_env().ca_files);
        for file in &ca_files {
            anyhow::ensure!(file.is_file(), "CA file {} does not exist", file.display());
        }
        if self.insecure_skip_tls_verify {
            eprintln!(
                "WARNING: --insecure-skip-tls-verify: registry certificates are not checked; \
                 anyone between you and the registry can change what you run"
            );
        }
        Ok(RegistryOptions {
            plain_http: self.plain_http,
            credentials,
            ca_files,
            insecure_skip_tls_verify: self.insecure_skip_tls_verify,
            max_layer_size: None,
            hosts_dir: wasm_oci_fetcher::hosts::hosts_dir(self.hosts_dir.clone()),
        })
    }

    /// A fetcher over the cache for a command that names `registry`, drawing progress bars
    /// when stderr is a terminal.
    pub fn fetcher(&self, registry: &str) -> anyhow::Result<Fetcher> {
        let fetcher = Fetcher::new(self.open_cache()?, self.registry_options(registry)?);
        Ok(match progress::Bars::on_terminal(false) {
            Some(bars) => fetcher.with_progress(bars),
            None => fetcher,
        })
    }
}

/// Runs a future on a runtime made for this one command; the warm path of `run` never gets here.
///
/// One thread, this one: what runs on it is network I/O, while hashing, writing, syncing and
/// compiling run on the blocking pool. With a worker thread next to it, hyper's connection
/// task ran on the worker and the body's reader here, and each received chunk woke the other
/// thread; on the current thread a 256 MiB pull switched threads a quarter less often and
/// used 8% less CPU.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
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

/// `println!` for command output: a closed stdout (`wasm-oci cache ls | head -1`) ends the
/// program quietly instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

/// What [`outln!`] calls.
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("Error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Where the log goes when `WASM_OCI_LOG_FILE` names no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDefault {
    /// Standard error (the CLI).
    Stderr,
    /// The `log` crate's logger, which the caller has (the shim's writes to containerd's log).
    Logger,
}

/// Sets up logging: `WASM_OCI_LOG` is a `tracing` filter (default `warn`), and
/// `WASM_OCI_LOG_FILE` names a file to append to (services, edge agents, the shim); without
/// it the log goes where `default` says. The error names a log file that cannot be opened.
pub fn init_logging(default: LogDefault) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter =
        || EnvFilter::try_from_env("WASM_OCI_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    match std::env::var_os("WASM_OCI_LOG_FILE") {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("WASM_OCI_LOG_FILE {}: {e}", path.to_string_lossy()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        // For a person: colour only on a terminal and without NO_COLOR, and no timestamps
        // (a log file has them).
        None if default == LogDefault::Stderr => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .without_time()
            .with_writer(std::io::stderr)
            .init(),
        // Events reach the `log` logger through tracing's `log` feature.
        None => {}
    }
    Ok(())
}
