//! `wasm-oci serve REF|FILE`: serve a `wasi:http/proxy` component over HTTP.

use std::process::ExitCode;

use clap::Args;

use super::RunCommand;
use crate::GlobalOptions;

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
///     wasm-oci serve --allow-http api.example.com --allow-http 127.0.0.1:9000 localhost:5000/gw:v2
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServeCommand {
    #[command(flatten)]
    pub(super) run: RunCommand,
}

impl ServeCommand {
    /// Resolves the component and serves it.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        self.run.execute_as(global, true)
    }
}
