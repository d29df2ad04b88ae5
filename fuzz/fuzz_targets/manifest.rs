//! Manifest and index selection never panics on any bytes a registry could send: `choose` is
//! the very function `pull` and OCI layouts call.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wasm_oci_artifact::choose(data, "fuzz.example/repo:tag");
});
