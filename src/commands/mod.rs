//! The verbs of `wasm-oci`, one file each: `RunCommand { .. }.execute()`.

mod pull;
mod push;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use pull::PullCommand;
pub use push::PushCommand;
pub use run::RunCommand;

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
    Pull(PullCommand),
    Push(PushCommand),
}

impl Cli {
    /// Runs the chosen verb; failures of `run` itself exit 125, as `docker run` does, so that
    /// they are not mistaken for the guest's own exit status.
    pub fn execute(self) -> ExitCode {
        let (result, failure) = match self.command {
            Command::Run(cmd) => (cmd.execute(&self.global), 125),
            Command::Pull(cmd) => (cmd.execute(&self.global), 1),
            Command::Push(cmd) => (cmd.execute(&self.global), 1),
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
