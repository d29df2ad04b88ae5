//! `wasm-oci serve REF|FILE`: serve a `wasi:http/proxy` component over HTTP.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::run::HttpArgs;
use super::{PullPolicy, RunCommand};
use crate::GlobalOptions;
use crate::units::{parse_duration, parse_size};

/// Serve a wasi:http/proxy component over HTTP/1.1, from a reference or a local file.
///
/// The component is pulled (when not cached) and compiled once; every request gets a fresh
/// instance, with its deadline (--timeout, answered 504); --max-memory holds for all the
/// instances running at once together. A request whose instance traps is answered 500 and
/// logged; the server goes on. Idle connections, slow request heads and slow bodies time out
/// (--idle-timeout, --header-timeout, --body-timeout: 408); past --max-connections a client
/// is answered 503 with Retry-After. On SIGTERM or SIGINT it stops accepting, lets the
/// requests in flight finish (--shutdown-timeout at most), stops the rest and exits 0.
/// Prints "Serving HTTP on http://ADDR/" on stderr once it listens.
///
/// The component gets no directory, no environment variable and no network unless asked:
/// outbound HTTP only to the hosts named by --allow-http.
///
/// Examples:
///     wasm-oci serve localhost:5000/hello-http:v1
///     wasm-oci serve --addr 0.0.0.0:8080 --max-memory 64MiB --timeout 5s ./proxy.wasm
///     wasm-oci serve --addr 9000 --allow-http api.example.com localhost:5000/gw:v2
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServeCommand {
    /// A reference such as localhost:5000/hello-http:v1, a path to a .wasm file, or an OCI
    /// layout as oci:DIR[:TAG]
    #[arg(value_name = "REF|FILE")]
    module: String,

    /// When to ask the registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,

    #[command(flatten)]
    trust: super::PolicyOption,

    /// Set an environment variable for the component, or pass one of yours with --env KEY.
    /// Repeatable
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    envs: Vec<String>,

    /// Cap each request's instance: its linear memories and tables together, e.g. 64MiB
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<usize>,

    /// Answer 504 when a request takes longer than this, e.g. 5s
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    #[command(flatten)]
    http: HttpArgs,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl ServeCommand {
    /// Resolves the component and serves it, as `run` serves a proxy, with none of a
    /// command's options.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let run = RunCommand {
            command: vec![self.module],
            pull: self.pull,
            trust: self.trust,
            dirs: Vec::new(),
            envs: self.envs,
            max_memory: self.max_memory,
            timeout: self.timeout,
            fuel: None,
            argv0: None,
            network: Default::default(),
            http: self.http,
            registry: self.registry,
        };
        run.execute_as(global, true)
    }
}
