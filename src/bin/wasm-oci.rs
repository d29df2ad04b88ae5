//! The `wasm-oci` command: parse arguments, set up logging, hand over to the verb.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_env("WASM_OCI_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    // WASM_OCI_LOG_FILE: append the log there instead of stderr (services, edge agents).
    let file = std::env::var_os("WASM_OCI_LOG_FILE").map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("WASM_OCI_LOG_FILE {}: {e}", path.to_string_lossy()))
    });
    match file {
        Some(Ok(file)) => subscriber
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
        Some(Err(e)) => {
            eprintln!("wasm-oci: cannot open the log file: {e}");
            return ExitCode::from(125);
        }
        None => subscriber.with_writer(std::io::stderr).init(),
    }
    wasm_oci::commands::Cli::parse().execute()
}
