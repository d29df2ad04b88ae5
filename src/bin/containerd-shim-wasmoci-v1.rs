//! The containerd runtime `io.containerd.wasmoci.v1`: hands over to `wasm_oci_shim::containerd`.

fn main() {
    wasm_oci_shim::containerd::main();
}
