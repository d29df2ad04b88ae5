//! `wasm-oci run REF|FILE [-- ARGS...]`: pull if needed, then start the guest in wasmtime.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use wasm_oci_shim::{EngineOptions, Error as RunError, Preopen, RunOptions, Runner};

use super::{PullPolicy, Resolved};
use crate::GlobalOptions;
use crate::units::{parse_duration, parse_size};

/// Run a wasm module or component from a registry reference or a local file.
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
///     wasm-oci run localhost:5000/hello:v1
///     wasm-oci run --dir ./data::/data:ro --env LANG localhost:5000/tool:v2 -- --verbose /data/in.txt
///     wasm-oci run --max-memory 64MiB --timeout 10s ./hello.wasm
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunCommand {
    /// A reference such as localhost:5000/hello:v1, a path to a .wasm file, or an OCI layout
    /// as oci:DIR[:TAG]
    module: String,

    /// Arguments for the guest (put them after --)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,

    /// When to ask the registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,

    /// Give the guest a host directory: HOST[::GUEST][:ro]. Read-write unless :ro; without
    /// ::GUEST the guest sees it at the host's path. Repeatable
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]")]
    dirs: Vec<Preopen>,

    /// Set an environment variable for the guest, or pass one of yours with --env KEY. Repeatable
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    envs: Vec<String>,

    /// Cap the guest's linear memories and tables together (a table element counts 8 bytes),
    /// e.g. 16MiB
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<usize>,

    /// Stop the guest after this long, e.g. 1s, 500ms, 2m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,

    /// Stop the guest after it has used this much fuel (about one unit per wasm instruction)
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// The guest's argv[0] [default: the module as given]
    #[arg(long, value_name = "NAME")]
    argv0: Option<String>,
}

impl RunCommand {
    /// Resolves the module and runs it.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let resolved = Resolved::new(global, &self.module, self.pull)?;
        let runner = Runner::new(EngineOptions {
            interruptible: self.timeout.is_some(),
            fuel: self.fuel.is_some(),
            pooling: false,
        })?;
        let loaded = runner
            .load(&resolved.path, resolved.wasm())
            .with_context(|| format!("loading {}", self.module))?;
        let options = self.run_options();
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
                eprintln!("Error: {:?}", anyhow::Error::from(e));
                Ok(ExitCode::from(code))
            }
            // A limit is not a bug in the guest: one line, no backtrace.
            Err(
                e @ (RunError::Timeout { .. }
                | RunError::MemoryLimit { .. }
                | RunError::OutOfFuel { .. }),
            ) => {
                eprintln!("Error: {e}");
                Ok(ExitCode::from(e.exit_code()))
            }
            Err(e) => Err(e).with_context(|| format!("running {}", self.module)),
        }
    }

    fn run_options(&self) -> RunOptions {
        let argv0 = self.argv0.clone().unwrap_or_else(|| self.module.clone());
        let env = self
            .envs
            .iter()
            .filter_map(|e| match e.split_once('=') {
                Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                None => std::env::var(e).ok().map(|v| (e.clone(), v)),
            })
            .collect();
        RunOptions {
            args: std::iter::once(argv0)
                .chain(self.args.iter().cloned())
                .collect(),
            env,
            preopens: self.dirs.clone(),
            max_memory: self.max_memory,
            timeout: self.timeout,
            fuel: self.fuel,
            ..RunOptions::default()
        }
    }
}
