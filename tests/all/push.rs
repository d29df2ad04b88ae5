//! push: formats other tools read (wasm-to-oci's layout), and what is not wasm refused.

use crate::support::{HELLO, Registry, WasmOci, hello, manifest, stderr, testdata};

#[test]
fn the_wasm_to_oci_layout_is_pushed_and_runs() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("legacy/hello:v1");
    cli.ok(&["push", "--format", "wasm-to-oci", &hello(), &reference]);
    let m = manifest(&registry, "legacy/hello", "v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v1+json"
    );
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.wasm.content.layer.v1+wasm"
    );
    let config = crate::support::http(
        &registry.addr,
        "GET",
        &format!(
            "/v2/legacy/hello/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(config.body, b"{}");
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);
}

#[test]
fn pushing_something_that_is_not_wasm_is_refused() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let out = cli.run(&[
        "push",
        &testdata("hello.wat").display().to_string(),
        &registry.reference("x:v1"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("hello.wat is not a WebAssembly module or component"),
        "{err}"
    );
}
