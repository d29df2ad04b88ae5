//! The `wasm-oci` command: parse arguments, set up logging, hand over to the verb.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = wasm_oci::init_logging(wasm_oci::LogDefault::Stderr) {
        eprintln!("wasm-oci: cannot open the log file: {e}");
        return ExitCode::from(125);
    }
    match wasm_oci::commands::Cli::from_args() {
        Ok(cli) => cli.execute(),
        Err(code) => code,
    }
}
