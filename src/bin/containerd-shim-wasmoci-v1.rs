//! The containerd runtime `io.containerd.wasmoci.v1`: hands over to `wasm_oci_shim::containerd`.

fn main() {
    // Without WASM_OCI_LOG_FILE the shim logs into containerd's log, through the logger the
    // shim protocol sets up.
    if let Err(e) = wasm_oci::init_logging(wasm_oci::LogDefault::Logger) {
        eprintln!("containerd-shim-wasmoci-v1: cannot open the log file: {e}");
    }
    wasm_oci_shim::containerd::main();
}
