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

/// What a verb is given besides its own arguments: the cache, and for verbs that talk to a
/// registry, how to reach it.
#[derive(Debug, Clone, Default)]
pub struct GlobalOptions {
    /// `--cache-dir` or `$WASM_OCI_CACHE`.
    pub cache_dir: Option<PathBuf>,
    /// The registry options given to the verb (or before it).
    pub registry: RegistryArgs,
}

/// How to reach a registry: the options of the verbs that talk to one, under a heading of
/// their own in their `--help`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Registry options")]
pub struct RegistryArgs {
    /// Speak plain HTTP (no TLS) to the registry. A registry on loopback (localhost,
    /// 127.0.0.0/8, [::1]) is spoken to in whatever it answers, as docker does; any other
    /// uses TLS unless this is given. WASM_OCI_PLAIN_HTTP is false when empty, 0, false, no,
    /// off, n or f, and true otherwise, as the containerd shim reads it
    #[arg(
        long,
        env = "WASM_OCI_PLAIN_HTTP",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub plain_http: bool,

    /// Registry user name. The password comes from --password-stdin, or is asked for when
    /// standard input is a terminal. Without a user name, credentials come from docker's
    /// config ($DOCKER_CONFIG/config.json, credential helpers), as docker and oras find them
    #[arg(long, short = 'u', value_name = "NAME")]
    pub username: Option<String>,

    /// Read the registry password (or token) from standard input
    #[arg(long)]
    pub password_stdin: bool,

    /// Trust this PEM certificate authority for registry TLS (SSL_CERT_FILE is trusted too)
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Accept any registry certificate. Dangerous: anyone on the path can serve you code
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,

    /// containerd's registry host directory (DIR/REGISTRY/hosts.toml, DIR/_default/hosts.toml):
    /// mirrors tried before each registry, and per-host TLS and headers [default:
    /// /etc/containerd/certs.d when it exists]
    #[arg(long, env = "WASM_OCI_HOSTS_DIR", value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
}

impl RegistryArgs {
    /// These options given after the verb, completed by those given before it (where older
    /// scripts put them): a value after the verb wins.
    pub fn or(self, before: RegistryArgs) -> RegistryArgs {
        RegistryArgs {
            plain_http: self.plain_http || before.plain_http,
            username: self.username.or(before.username),
            password_stdin: self.password_stdin || before.password_stdin,
            ca_file: self.ca_file.or(before.ca_file),
            insecure_skip_tls_verify: self.insecure_skip_tls_verify
                || before.insecure_skip_tls_verify,
            hosts_dir: self.hosts_dir.or(before.hosts_dir),
        }
    }

    /// The first option set, as typed, to name in an error when it was given to a verb that
    /// talks to no registry.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            (self.plain_http, "--plain-http"),
            (self.username.is_some(), "--username"),
            (self.password_stdin, "--password-stdin"),
            (self.ca_file.is_some(), "--ca-file"),
            (self.insecure_skip_tls_verify, "--insecure-skip-tls-verify"),
            (self.hosts_dir.is_some(), "--hosts-dir"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
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

    /// `--username` with its password, read once per process: from stdin with
    /// `--password-stdin`, else asked for on the terminal (without echo) when stdin is one.
    pub fn explicit_credentials(&self) -> anyhow::Result<Option<(String, Secret)>> {
        static PASSWORD: OnceLock<Secret> = OnceLock::new();
        let registry = &self.registry;
        let Some(username) = &registry.username else {
            if registry.password_stdin {
                anyhow::bail!("--password-stdin needs --username NAME (-u NAME)");
            }
            return Ok(None);
        };
        if PASSWORD.get().is_none() {
            let password = if registry.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                let password = line.trim_end_matches(['\r', '\n']).to_owned();
                if password.is_empty() {
                    anyhow::bail!("--password-stdin read an empty password");
                }
                password
            } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                let password = rpassword::prompt_password(format!("Password for {username}: "))
                    .context("reading the password from the terminal")?;
                if password.is_empty() {
                    anyhow::bail!("no password given for {username}");
                }
                password
            } else {
                anyhow::bail!(
                    "--username {username} needs a password: pipe it in with --password-stdin, \
                     e.g. echo \"$TOKEN\" | wasm-oci login REGISTRY -u {username} --password-stdin"
                );
            };
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
        let mut ca_files: Vec<PathBuf> = self.registry.ca_file.iter().cloned().collect();
        ca_files.extend(RegistryOptions::from_env().ca_files);
        for file in &ca_files {
            anyhow::ensure!(file.is_file(), "CA file {} does not exist", file.display());
        }
        if self.registry.insecure_skip_tls_verify {
            eprintln!(
                "WARNING: --insecure-skip-tls-verify: registry certificates are not checked; \
                 anyone between you and the registry can change what you run"
            );
        }
        Ok(RegistryOptions {
            plain_http: self.registry.plain_http,
            credentials,
            ca_files,
            insecure_skip_tls_verify: self.registry.insecure_skip_tls_verify,
            max_layer_size: None,
            hosts_dir: wasm_oci_fetcher::hosts::hosts_dir(self.registry.hosts_dir.clone()),
        })
    }

    /// A fetcher over the cache for a command that names `registry`, enforcing `policy` on
    /// every pull, drawing progress bars when stderr is a terminal.
    pub fn fetcher(
        &self,
        registry: &str,
        policy: std::sync::Arc<wasm_oci_trust::Policy>,
    ) -> anyhow::Result<Fetcher> {
        let fetcher = Fetcher::new(self.open_cache()?, self.registry_options(registry)?, policy);
        Ok(match progress::Bars::on_terminal(false) {
            Some(bars) => fetcher.with_progress(bars),
            None => fetcher,
        })
    }

    /// A fetcher for a verb that runs nothing it reads or writes (push, sign, login, tags,
    /// tag, manifest, attach, discover): no signature policy has anything to decide there,
    /// so it is made with one that accepts anything, said here once.
    pub fn fetcher_running_nothing(&self, registry: &str) -> anyhow::Result<Fetcher> {
        self.fetcher(
            registry,
            std::sync::Arc::new(wasm_oci_trust::Policy::accept_anything()),
        )
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
    stdout_written(
        serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
    )
}

/// Writes `bytes` to stdout; a closed stdout (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    stdout_written(out.write_all(bytes).and_then(|()| out.flush()))
}

/// The outcome of a write to stdout, where a reader that went away is not an error.
pub(crate) fn stdout_written(result: std::io::Result<()>) -> anyhow::Result<()> {
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

/// The file `WASM_OCI_LOG_FILE` names cannot be opened to append to.
#[derive(Debug, thiserror::Error)]
#[error("WASM_OCI_LOG_FILE {}: {cause}", path.display())]
pub struct LogFileError {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    pub cause: std::io::Error,
}

/// Sets up logging: `WASM_OCI_LOG` is a `tracing` filter (default `warn`), and
/// `WASM_OCI_LOG_FILE` names a file to append to (services, edge agents, the shim); without
/// it the log goes where `default` says. The error names a log file that cannot be opened.
pub fn init_logging(default: LogDefault) -> Result<(), LogFileError> {
    use tracing_subscriber::EnvFilter;
    let filter =
        || EnvFilter::try_from_env("WASM_OCI_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    match std::env::var_os("WASM_OCI_LOG_FILE") {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|cause| LogFileError {
                    path: path.clone().into(),
                    cause,
                })?;
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        // For a person: colour only on a terminal and without NO_COLOR, and no timestamps
        // (a log file has them).
        None if default == LogDefault::Stderr => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(ansi)
                .event_format(PlainWarnings {
                    detailed: tracing_subscriber::fmt::format()
                        .without_time()
                        .with_ansi(ansi),
                })
                .with_writer(std::io::stderr)
                .init()
        }
        // Events reach the `log` logger through tracing's `log` feature.
        None => {}
    }
    Ok(())
}

/// Warnings as a person reads them on a terminal: the message and its fields, no level, target
/// or span (`retrying in 0.2 s: the registry answered 503`); other levels, asked for with
/// WASM_OCI_LOG, in tracing's full format.
struct PlainWarnings {
    detailed: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainWarnings
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if *event.metadata().level() != tracing::Level::WARN {
            return self.detailed.format_event(ctx, writer, event);
        }
        let mut fields = PlainFields::default();
        event.record(&mut fields);
        write!(writer, "{}", fields.message)?;
        if !fields.rest.is_empty() {
            write!(writer, " ({})", fields.rest.join(", "))?;
        }
        writeln!(writer)
    }
}

/// An event's message, and its other fields as `name: value`, with control characters
/// escaped (tracing's own format escapes them too): a warning may quote a registry.
#[derive(Default)]
struct PlainFields {
    message: String,
    rest: Vec<String>,
}

impl PlainFields {
    fn record(&mut self, field: &tracing::field::Field, value: &str) {
        let value = wasm_oci_artifact::text::printable(value);
        if field.name() == "message" {
            self.message = value;
        } else {
            self.rest.push(format!("{}: {value}", field.name()));
        }
    }
}

impl tracing::field::Visit for PlainFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record(field, value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `PlainWarnings` writes for the events `emit` makes.
    fn plain(emit: impl FnOnce()) -> String {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(PlainWarnings {
                detailed: tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            })
            .with_writer(move || Sink(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_warning_is_one_plain_line_and_cannot_drive_the_terminal() {
        let out = plain(|| {
            let span = tracing::info_span!("pull", reference = "r");
            let _in = span.enter();
            tracing::warn!("retrying in {} s: {}", 0.2, "the registry answered 503");
            tracing::warn!(path = "/x\u{1b}[2J", "cannot read CA file");
        });
        assert_eq!(
            out,
            "retrying in 0.2 s: the registry answered 503\n\
             cannot read CA file (path: /x\\u{1b}[2J)\n"
        );
    }
}
