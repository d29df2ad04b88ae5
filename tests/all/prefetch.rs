//! prefetch: a node filled ahead of time from a list of references, shared blobs downloaded
//! once, failures reported while the rest lands; then everything runs offline.

use std::fs;

use crate::support::{Fault, HELLO, Proxy, Registry, WasmOci, describe, guests, hello, stderr};

#[test]
fn prefetch_downloads_shared_blobs_once_and_everything_then_runs_offline() {
    let mut registry = Registry::start();
    let cli = WasmOci::new();
    for r in ["a/hello:v1", "b/hello:v1", "c/hello:v2"] {
        cli.ok(&["push", &hello(), &registry.reference(r)]);
    }
    cli.ok(&[
        "push",
        guests().probe.to_str().unwrap(),
        &registry.reference("probe:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, Fault::None);
    let refs: Vec<String> = ["a/hello:v1", "b/hello:v1", "c/hello:v2", "probe:v1"]
        .iter()
        .map(|r| proxy.reference(r))
        .collect();
    let list = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        list.path(),
        format!("# edge modules\n{}\n\n{}\n", refs[2], refs[3]),
    )
    .unwrap();

    let edge = WasmOci::new();
    let out = edge.run(&[
        "prefetch",
        &refs[0],
        &refs[1],
        "--from-file",
        list.path().to_str().unwrap(),
        "--jobs",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes.len(), 4);
    assert!(
        outcomes
            .iter()
            .all(|o| o["compiled"] == true && o["error"].is_null()),
        "{outcomes:?}"
    );

    // hello's layer (and its config) went over the wire once for three references.
    let hello_layer =
        outcomes.iter().find(|o| o["reference"] == refs[0]).unwrap()["layer_digest"].clone();
    let gets = proxy.seen(|s| s.blob_gets.clone());
    let layer_gets = gets
        .iter()
        .filter(|g| g.contains(hello_layer.as_str().unwrap()))
        .count();
    assert_eq!(layer_gets, 1, "{gets:#?}");
    // Two distinct layers and two distinct configs in all.
    assert_eq!(gets.len(), 4, "{gets:#?}");

    // No registry, no proxy: every prefetched reference starts, from precompiled code.
    drop(proxy);
    registry.stop();
    for r in &refs[..3] {
        let out = edge
            .command()
            .args(["run", r])
            .env("WASM_OCI_LOG", "wasm_oci_shim=debug")
            .env_remove("WASM_OCI_LOG_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
        assert!(
            stderr(&out).contains("precompiled cache hit"),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(
        edge.ok(&["run", "--pull", "never", &refs[3], "--", "exit", "0"]),
        ""
    );
}

#[test]
fn prefetch_reports_failures_and_lands_the_rest() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    cli.ok(&["push", &hello(), &registry.reference("hello:v1")]);
    let out = cli.run(&[
        "prefetch",
        &registry.reference("hello:v1"),
        &registry.reference("missing:v1"),
        "Not/A Reference",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("prefetched 1 of 3 references"), "{err}");
    assert!(
        err.contains(&format!("failed {}: ", registry.reference("missing:v1"))),
        "{err}"
    );
    assert!(err.contains("was not found in the registry"), "{err}");
    assert!(
        err.contains("failed Not/A Reference: invalid reference"),
        "{err}"
    );
    assert_eq!(
        cli.ok(&["run", "--pull", "never", &registry.reference("hello:v1")]),
        HELLO
    );
}
