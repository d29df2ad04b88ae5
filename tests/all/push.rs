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

/// `REF@DIGEST` names one document: push writes the wasm manifest by that digest (no index
/// can have it), and `--image`, asked for explicitly, is refused saying why.
#[test]
fn a_push_to_a_digest_writes_the_manifest_by_that_digest() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        "--json",
        &hello(),
        &registry.reference("hello:v1"),
    ]))
    .unwrap();
    let manifest_digest = pushed["manifest_digest"].as_str().unwrap();
    let pinned = format!("{}@{manifest_digest}", registry.reference("copy"));

    let out = cli.run(&["push", "--image", &hello(), &pinned]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--image pushes an index to a tag"),
        "{}",
        stderr(&out)
    );

    let again: serde_json::Value =
        serde_json::from_str(&cli.ok(&["push", "--json", &hello(), &pinned])).unwrap();
    assert_eq!(again["digest"], manifest_digest);
    assert!(again.get("manifest_digest").is_none(), "{again}");
    assert_eq!(
        manifest(&registry, "copy", manifest_digest)["layers"][0]["digest"],
        pushed["layer_digest"]
    );
    assert_eq!(WasmOci::new().ok(&["run", &pinned]), HELLO);
}
