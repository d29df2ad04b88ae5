//! `wasm-oci run [OPTIONS] REF|FILE [ARGS...]`: pull if needed, then start the guest in wasmtime: a
//! command runs to completion, a `wasi:http/proxy` component is served.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use wasm_oci_shim::runner::http::DEFAULT_MAX_CONCURRENCY;
use wasm_oci_shim::runner::{ConnectRule, HttpPolicy, HttpRule, SocketPolicy};
use wasm_oci_shim::{
    EngineOptions, Error as RunError, Loaded, Preopen, RunOptions, Runner, ServeOptions, World,
};

use super::naming::Naming;
use super::resolve::{PullPolicy, Resolved};
use crate::GlobalOptions;
use crate::units::{parse_duration, parse_size};

/// Run a wasm module or component from a registry reference or a local file.
///
/// A command (a core module, or a wasi:cli/command component) runs to completion; a
/// wasi:http/proxy component is served over HTTP, as `wasm-oci serve` does.
///
/// A reference is pulled into the cache when it is not there yet (docker's default pull
/// policy), so a second run starts without asking the registry, and the code compiled on the
/// first run is kept in the cache so later runs start without compiling. Core modules get WASI
/// preview 1, components WASI 0.2 (wasi:cli/command), with the same flags.
///
/// The guest gets its arguments, stdin, stdout and stderr, and nothing else of the host unless
/// asked: no directory and no environment variable by default.
///
/// Exit status: the guest's own (0 when it returns, else what it passed to exit); 134 when it
/// traps (the trap and its wasm backtrace are printed), as wasmtime does; 124 when --timeout
/// stops it, as timeout(1) does; 125 when wasm-oci itself fails (the pull, an invalid module),
/// as docker run does.
///
/// Examples:
///     wasm-oci run localhost:5000/hello:v1
///     wasm-oci run --dir ./data::/data:ro --env LANG localhost:5000/tool:v2 -- --verbose /data/in.txt
///     wasm-oci run --max-memory 64MiB --timeout 10s ./hello.wasm
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunCommand {
    /// A reference such as localhost:5000/hello:v1, a path to a .wasm file, or an OCI layout
    /// as oci:DIR[:TAG]; everything after it is the guest's arguments, as with wasmtime and
    /// docker (a `--` right after it is dropped)
    #[arg(
        value_name = "REF|FILE [ARGS]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(super) command: Vec<String>,

    /// When to ask the registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub(super) pull: PullPolicy,

    #[command(flatten)]
    pub(super) trust: super::resolve::PolicyOption,

    /// Give the guest a host directory: HOST[::GUEST][:ro]. Read-write unless :ro; without
    /// ::GUEST the guest sees it at the host's path. Repeatable
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]")]
    pub(super) dirs: Vec<Preopen>,

    /// Set an environment variable for the guest, or pass one of yours with --env KEY. Repeatable
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    pub(super) envs: Vec<String>,

    /// Cap the guest's linear memories and tables together (a table element counts 8 bytes),
    /// e.g. 16MiB
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(super) max_memory: Option<usize>,

    /// Stop the guest after this long, e.g. 1s, 500ms, 2m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(super) timeout: Option<Duration>,

    /// Stop the guest after it has used this much fuel (about one unit per wasm instruction)
    #[arg(long, value_name = "N")]
    pub(super) fuel: Option<u64>,

    /// The guest's argv[0] [default: the module as given]
    #[arg(long, value_name = "NAME")]
    pub(super) argv0: Option<String>,

    #[command(flatten)]
    pub(super) network: NetworkArgs,

    #[command(flatten)]
    pub(super) http: HttpArgs,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

/// What a command component may do with wasi:sockets: nothing unless allowed here.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Network (wasi:sockets, for components; denied by default)")]
pub(super) struct NetworkArgs {
    /// Let the guest connect (TCP) and send (UDP) to this address or network: HOST:PORT,
    /// IP:PORT, CIDR (any port) or CIDR:PORT; a HOST is resolved once, at start. Repeatable
    #[arg(long = "allow-connect", value_name = "HOST:PORT|CIDR[:PORT]")]
    allow_connect: Vec<String>,

    /// Let the guest bind and listen on this local address (port 0: any port). Repeatable
    #[arg(long = "allow-bind", value_name = "ADDR:PORT")]
    allow_bind: Vec<SocketAddr>,

    /// Let the guest resolve host names
    #[arg(long = "allow-dns")]
    allow_dns: bool,
}

impl NetworkArgs {
    /// The first option given, as typed, for an error that says it does not apply.
    fn first_given(&self) -> Option<&'static str> {
        [
            (!self.allow_connect.is_empty(), "--allow-connect"),
            (!self.allow_bind.is_empty(), "--allow-bind"),
            (self.allow_dns, "--allow-dns"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }

    fn policy(&self) -> anyhow::Result<SocketPolicy> {
        let mut connect = Vec::new();
        for spec in &self.allow_connect {
            connect.extend(ConnectRule::resolve(spec)?);
        }
        Ok(SocketPolicy {
            connect,
            bind: self.allow_bind.clone(),
            dns: self.allow_dns,
        })
    }
}

/// How a wasi:http/proxy component is served.
#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP (wasi:http/proxy components)")]
pub(super) struct HttpArgs {
    /// Address to listen on: HOST:PORT, IP:PORT, or a PORT alone (on 127.0.0.1); port 0
    /// picks a free one, printed when listening
    #[arg(long, value_name = "[HOST:]PORT", default_value = "127.0.0.1:8080", value_parser = parse_listen_addr)]
    addr: ListenAddr,

    /// Requests handled at once; more wait for a free slot
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENCY)]
    max_concurrency: usize,

    /// Largest request body passed to the component; larger ones are answered 413
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16MiB")]
    max_body: usize,

    /// Let the component send HTTP requests to this host (wasi:http/outgoing-handler):
    /// HOST (on the scheme's default port), HOST:PORT or HOST:*. Denied by default. Repeatable
    #[arg(long = "allow-http", value_name = "HOST[:PORT]")]
    allow_http: Vec<HttpRule>,

    /// On SIGTERM or SIGINT, how long requests in flight may take to finish
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    shutdown_timeout: Duration,

    /// Connections open at once; more are answered 503 with Retry-After [default: 4096, or
    /// fewer when the descriptor limit (ulimit -n) would not hold them]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// How long a connection may stay open with no request begun (keep-alive)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    idle_timeout: Duration,

    /// How long a client may take to send a request's head, from its first byte
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    header_timeout: Duration,

    /// How long a client may take to send a request's body; a slower one is answered 408
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    body_timeout: Duration,
}

impl RunCommand {
    /// Resolves the module and runs it, or serves it when it is a wasi:http/proxy.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        self.execute_as(global, false)
    }

    /// `serve_only`: refuse anything but a wasi:http/proxy (`wasm-oci serve`).
    pub(super) fn execute_as(
        self,
        global: &GlobalOptions,
        serve_only: bool,
    ) -> anyhow::Result<ExitCode> {
        self.check_words()?;
        let trust = self.trust.load()?;
        // What the options say is checked before anything is pulled or compiled: a mistake
        // costs no download and no compile.
        let sockets = self.network.policy()?;
        let resolved = Resolved::to_run(global, self.module(), self.pull, &trust)?;
        if resolved.is_proxy() {
            self.check_proxy_options()?;
        }
        let run_engine = EngineOptions {
            interruptible: self.timeout.is_some(),
            fuel: self.fuel.is_some(),
            pooling: false,
        };
        // Proxies are served by the engine `serve` uses (pooling, interruptible); what the
        // artifact says it is picks the engine first, so that nothing is compiled twice.
        let mut engine = if serve_only || resolved.is_proxy() {
            EngineOptions::SHIM
        } else {
            run_engine
        };
        let (runner, loaded) = loop {
            let runner = Runner::new(engine)?;
            super::precompiled::adopt_for(global, &trust, &resolved, &runner, self.pull);
            let loaded = crate::progress::while_compiling(
                self.module(),
                || resolved.to_compile(&runner),
                || runner.load(&resolved.path, resolved.wasm()),
            )
            .naming(
                &[self.module(), &resolved.path.display().to_string()],
                || format!("loading {}", self.module()),
            )?;
            let wanted = match loaded.world(runner.engine()) {
                World::Proxy => EngineOptions::SHIM,
                _ if serve_only => EngineOptions::SHIM,
                _ => run_engine,
            };
            if wanted == engine {
                break (runner, loaded);
            }
            engine = wanted;
        };
        runner.check_imports(&resolved.path, &loaded).naming(
            &[self.module(), &resolved.path.display().to_string()],
            || format!("loading {}", self.module()),
        )?;
        match loaded.world(runner.engine()) {
            World::Proxy => return self.serve(&resolved, &runner, &loaded),
            world if serve_only => bail!(
                "{} is {}, not a wasi:http/proxy component; run it with `wasm-oci run`",
                self.module(),
                match world {
                    World::Module => "a core module",
                    World::Command => "a wasi:cli/command component",
                    _ =>
                        "a component that exports neither wasi:cli/run nor wasi:http/incoming-handler",
                }
            ),
            _ => {}
        }
        let options = self.run_options(sockets);
        match runner.run(&resolved.path, &loaded, &options) {
            Ok(outcome) => {
                if let (Some(bytes), Some(limit)) = (outcome.memory_denied, self.max_memory)
                    && outcome.code != 0
                {
                    eprintln!(
                        "note: the guest asked for {bytes} bytes of memory and was refused by --max-memory {limit}"
                    );
                }
                Ok(ExitCode::from(outcome.exit_code()))
            }
            // A trap is a bug in the guest: the trap with its wasm backtrace, as wasmtime.
            Err(e @ RunError::Trap { .. }) => {
                let code = e.exit_code();
                // Line by line, control characters escaped: the backtrace names the module's
                // functions. (A name may still break a line: the guest, which could write
                // anything to its stderr while it ran, gains nothing by it.)
                let text = format!("Error: {:?}", anyhow::Error::from(e));
                for line in text.lines() {
                    eprintln!("{}", wasm_oci_artifact::text::printable(line));
                }
                Ok(ExitCode::from(code))
            }
            // A limit is not a bug in the guest: one line, no backtrace.
            Err(
                e @ (RunError::Timeout { .. }
                | RunError::MemoryLimit { .. }
                | RunError::OutOfFuel { .. }),
            ) => {
                eprintln!(
                    "Error: {}",
                    wasm_oci_artifact::text::printable(&e.to_string())
                );
                Ok(ExitCode::from(e.exit_code()))
            }
            Err(e) => Err(e).naming(&[self.module()], || format!("running {}", self.module())),
        }
    }

    /// Serves a proxy component until SIGTERM or SIGINT, then lets requests in flight finish.
    fn serve(
        &self,
        resolved: &Resolved,
        runner: &Runner,
        loaded: &Loaded,
    ) -> anyhow::Result<ExitCode> {
        let Loaded::Component(component) = loaded else {
            unreachable!("only components are proxies")
        };
        self.check_proxy_options()?;
        let options = ServeOptions {
            env: self.env(),
            max_concurrency: self.http.max_concurrency,
            timeout: self.timeout,
            max_memory: self.max_memory,
            max_body: self.http.max_body as u64,
            outbound: HttpPolicy {
                hosts: self.http.allow_http.clone(),
            },
            drain: self.http.shutdown_timeout,
            idle_timeout: self.http.idle_timeout,
            header_timeout: self.http.header_timeout,
            body_timeout: self.http.body_timeout,
            max_connections: self.http.max_connections.map(|n| n as usize),
            stdout: None,
            stderr: None,
        };
        let server = runner
            .proxy(&resolved.path, component, options)
            .with_context(|| format!("serving {}", self.module()))?;
        let listener = std::net::TcpListener::bind(&self.http.addr.addrs[..])
            .with_context(|| format!("listening on {}", self.http.addr.text))?;
        let local = listener
            .local_addr()
            .context("reading the listening address")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let result = runtime.block_on(async {
            let shutdown = shutdown_signal()?;
            eprintln!("Serving HTTP on http://{local}/");
            server.serve(listener, shutdown).await?;
            anyhow::Ok(())
        });
        // Requests abandoned after --shutdown-timeout are not waited for.
        runtime.shutdown_timeout(Duration::from_millis(100));
        result.with_context(|| format!("serving {}", self.module()))?;
        Ok(ExitCode::SUCCESS)
    }

    fn env(&self) -> Vec<(String, String)> {
        self.envs
            .iter()
            .filter_map(|e| match e.split_once('=') {
                Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                None => std::env::var(e).ok().map(|v| (e.clone(), v)),
            })
            .collect()
    }

    /// The module: the first of the command's words.
    fn module(&self) -> &str {
        &self.command[0]
    }

    /// The guest's arguments: the rest, without a `--` that separates them.
    fn args(&self) -> &[String] {
        match &self.command[1..] {
            [first, rest @ ..] if first == "--" => rest,
            rest => rest,
        }
    }

    /// Refuses what a proxy component cannot use, naming it: a proxy gets requests, not a
    /// command's arguments, directories, fuel or sockets.
    fn check_proxy_options(&self) -> anyhow::Result<()> {
        let given = [
            (self.fuel.is_some(), "--fuel"),
            (!self.dirs.is_empty(), "--dir"),
            (self.argv0.is_some(), "--argv0"),
            (!self.args().is_empty(), "guest arguments"),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .chain(self.network.first_given())
        .collect::<Vec<_>>();
        if !given.is_empty() {
            bail!(
                "{} is a wasi:http/proxy component, which takes none of these options of \
                 commands: {}; see `wasm-oci serve --help`",
                self.module(),
                given.join(", ")
            );
        }
        Ok(())
    }

    /// Refuses a module that reads as an option (`-v`, `--volume`, a misspelt flag): clap
    /// takes any word as the module, since everything from there on is the guest's. Warns
    /// about wasm-oci's own options after the module, which go to the guest.
    fn check_words(&self) -> anyhow::Result<()> {
        let module = self.module();
        if module.starts_with('-') && module != "-" {
            bail!(
                "{}",
                unknown_option(module, self.command.get(1).map(String::as_str))
            );
        }
        if self.command.get(1).is_some_and(|w| w == "--") {
            return Ok(());
        }
        let own = own_long_options();
        for word in self.args() {
            let Some(name) = word.strip_prefix("--") else {
                continue;
            };
            let name = name.split('=').next().unwrap_or_default();
            if own.iter().any(|o| o == name) {
                eprintln!(
                    "warning: --{} after the module is passed to the guest, not to wasm-oci: \
                     wasm-oci's options go before the module (write `--` after the module to \
                     pass guest arguments without this warning)",
                    wasm_oci_artifact::text::printable(name)
                );
            }
        }
        Ok(())
    }

    fn run_options(&self, sockets: SocketPolicy) -> RunOptions {
        let argv0 = self
            .argv0
            .clone()
            .unwrap_or_else(|| self.module().to_owned());
        RunOptions {
            args: std::iter::once(argv0)
                .chain(self.args().iter().cloned())
                .collect(),
            env: self.env(),
            preopens: self.dirs.clone(),
            max_memory: self.max_memory,
            timeout: self.timeout,
            fuel: self.fuel,
            sockets,
            ..RunOptions::default()
        }
    }
}

/// The long options of `run`, without their dashes (`help` and `version` excepted: a guest
/// is asked for its help as often as wasm-oci).
pub(super) fn own_long_options() -> Vec<String> {
    let command = <RunCommand as Args>::augment_args(clap::Command::new("run"));
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "help" | "version"))
        .map(str::to_owned)
        .collect()
}

/// What to say of `word`, an option `run` does not have, given before the module; `next` is
/// the word after it (the value of a docker option, to show in wasm-oci's spelling).
fn unknown_option(word: &str, next: Option<&str>) -> String {
    let shown = wasm_oci_artifact::text::printable(word);
    let name = word.split('=').next().unwrap_or(word);
    let value = word.split_once('=').map(|(_, v)| v).or(next);
    let hint = match name {
        "-v" | "--volume" | "--mount" => {
            // docker's HOST:GUEST[:ro] is wasmtime's HOST::GUEST[:ro].
            let example = value
                .and_then(|v| {
                    let (host, rest) = v.split_once(':')?;
                    (!rest.starts_with(':')).then(|| format!("--dir {host}::{rest}"))
                })
                .unwrap_or_else(|| "--dir HOST::GUEST".to_owned());
            format!("use {}", wasm_oci_artifact::text::printable(&example))
        }
        "-e" => "use --env KEY=VALUE".to_owned(),
        "-m" | "--memory" => "use --max-memory SIZE".to_owned(),
        "-p" | "--publish" | "--port" | "--listen" => "use --addr [HOST:]PORT".to_owned(),
        "-w" | "--workdir" | "--mapdir" => "use --dir HOST::GUEST".to_owned(),
        _ => match closest_option(name) {
            Some(option) => format!("did you mean --{option}? `wasm-oci run --help` lists them"),
            None => "`wasm-oci run --help` lists wasm-oci's options, which go before the module"
                .to_owned(),
        },
    };
    format!("unknown option {shown} ({hint})")
}

/// The option of `run` that `--name` was probably meant to be: one that starts with it, or
/// that it starts with.
fn closest_option(name: &str) -> Option<String> {
    let name = name.strip_prefix("--")?;
    if name.len() < 3 {
        return None;
    }
    own_long_options()
        .into_iter()
        .find(|o| o.starts_with(name) || name.starts_with(o.as_str()))
}

/// Where `--addr` listens: what was typed, and the addresses it names, tried in order.
#[derive(Debug, Clone)]
pub(super) struct ListenAddr {
    text: String,
    addrs: Vec<SocketAddr>,
}

/// How `--addr` is spelled, for its errors.
const LISTEN_USAGE: &str =
    "expected HOST:PORT, IP:PORT or PORT, e.g. 0.0.0.0:8080, localhost:8080 or 8080";

/// An `--addr` that names no address to listen on.
#[derive(Debug, thiserror::Error)]
enum ListenAddrError {
    /// Not spelled as an address.
    #[error("{LISTEN_USAGE}")]
    Usage,
    /// A port that is not a number from 0 to 65535.
    #[error("{port:?} is not a port: {LISTEN_USAGE}")]
    Port {
        /// As typed.
        port: String,
    },
    /// A host name that does not resolve.
    #[error("cannot resolve {host}: {cause}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        cause: std::io::Error,
    },
    /// A host name that resolves to nothing.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The host.
        host: String,
    },
}

/// Reads `--addr`: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved now), or a bare `PORT` on
/// 127.0.0.1, the default host.
fn parse_listen_addr(text: &str) -> Result<ListenAddr, ListenAddrError> {
    let t = text.trim();
    let spec = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{t}")
    } else {
        t.to_owned()
    };
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(ListenAddr {
            text: spec,
            addrs: vec![addr],
        });
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(ListenAddrError::Usage);
    };
    let port: u16 = port.parse().map_err(|_| ListenAddrError::Port {
        port: port.to_owned(),
    })?;
    if host.is_empty() || host.contains([':', '[', ']', '/']) {
        return Err(ListenAddrError::Usage);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|cause| ListenAddrError::Resolve {
            host: host.to_owned(),
            cause,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ListenAddrError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(ListenAddr { text: spec, addrs })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    // SIGINT drains the server now; progress bars of the pull before do not end it.
    crate::progress::sigint_taken();
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("Shutting down: finishing the requests in flight");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_takes_a_port_a_host_name_or_an_address() {
        let a = parse_listen_addr("8080").unwrap();
        assert_eq!(a.addrs, ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
        let a = parse_listen_addr("0.0.0.0:0").unwrap();
        assert_eq!(a.addrs, ["0.0.0.0:0".parse::<SocketAddr>().unwrap()]);
        let a = parse_listen_addr("[::1]:80").unwrap();
        assert_eq!(a.addrs, ["[::1]:80".parse::<SocketAddr>().unwrap()]);
        let a = parse_listen_addr("localhost:8080").unwrap();
        assert!(
            a.addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
        for bad in ["", "localhost", "x:y", "70000", ":80", "a/b:80"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_spellings_get_wasm_oci_s() {
        assert_eq!(
            unknown_option("-v", Some("./d:/d")),
            "unknown option -v (use --dir ./d::/d)"
        );
        assert_eq!(
            unknown_option("--volume=./d:/d:ro", None),
            "unknown option --volume=./d:/d:ro (use --dir ./d::/d:ro)"
        );
        assert_eq!(
            unknown_option("-e", Some("A=1")),
            "unknown option -e (use --env KEY=VALUE)"
        );
        assert!(unknown_option("--max-mem", None).contains("did you mean --max-memory?"));
        assert!(unknown_option("--nosuchflag", None).contains("`wasm-oci run --help`"));
    }
}
