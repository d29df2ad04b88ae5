//! Air-gapped nodes: OCI image layouts written by save (and by skopeo), loaded and run offline.

use std::fs;
use std::process::Command;

use crate::support::{HELLO, Registry, WasmOci, describe, guests, stderr, testdata};

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is not installed: run ./scripts/test, which installs it");
    assert!(out.status.success(), "skopeo {args:?}: {}", describe(&out));
}

#[test]
fn save_then_load_into_an_empty_cache_runs_offline() {
    let mut registry = Registry::start();
    let cli = WasmOci::new();
    let hello = registry.reference("hello:v1");
    let probe = registry.reference("tools/probe:v2");
    cli.ok(&["push", testdata("hello.wasm").to_str().unwrap(), &hello]);
    cli.ok(&["push", guests().probe.to_str().unwrap(), &probe]);
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    cli.ok(&["save", &hello, &probe, "-o", dir.to_str().unwrap()]);

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["v1", "v2"]);
    assert_eq!(
        fs::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );

    // The layout runs in place, as skopeo names it.
    assert_eq!(
        WasmOci::new().ok(&["run", &format!("oci:{}:v1", dir.display())]),
        HELLO
    );

    // Another node: no registry, an empty cache, the layout carried over.
    registry.stop();
    let node = WasmOci::new();
    let out = node.run(&["load", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("Loaded: {hello}")),
        "{}",
        describe(&out)
    );
    assert_eq!(node.ok(&["run", "--pull", "never", &hello]), HELLO);
    assert_eq!(
        node.ok(&["run", "--pull", "never", &probe, "--", "exit", "0"]),
        ""
    );
    assert!(node.run(&["cache", "verify"]).status.success());
}

#[test]
fn skopeo_reads_our_layouts_and_we_read_skopeos() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = registry.reference("hello:v1");
    cli.ok(&["push", testdata("hello.wasm").to_str().unwrap(), &hello]);
    let tmp = tempfile::tempdir().unwrap();

    // Ours, pushed back to a registry by skopeo.
    let ours = tmp.path().join("ours");
    cli.ok(&["save", &hello, "-o", ours.to_str().unwrap()]);
    let copied = registry.reference("copied/hello:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", ours.display()),
        &format!("docker://{copied}"),
    ]);
    assert_eq!(WasmOci::new().ok(&["run", &copied]), HELLO);

    // Skopeo's, loaded and run: `--all` keeps the index push wrote (without it skopeo takes
    // this host's Linux image, see interop::skopeo_copies_what_we_push_to_an_oci_layout).
    let theirs = tmp.path().join("theirs");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{hello}"),
        &format!("oci:{}:v1", theirs.display()),
    ]);
    assert_eq!(
        WasmOci::new().ok(&["run", &format!("oci:{}:v1", theirs.display())]),
        HELLO
    );
    let node = WasmOci::new();
    let out = node.run(&["load", theirs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("pass --repository"),
        "{}",
        describe(&out)
    );
    let named = "airgap.local/hello";
    node.ok(&["load", theirs.to_str().unwrap(), "--repository", named]);
    assert_eq!(
        node.ok(&["run", "--pull", "never", "airgap.local/hello:v1"]),
        HELLO
    );
}

#[test]
fn a_damaged_layout_is_refused_and_nothing_is_imported() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = registry.reference("hello:v1");
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &hello,
        "--json",
    ]))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    cli.ok(&["save", &hello, "-o", dir.to_str().unwrap()]);
    let layer = pushed["layer_digest"].as_str().unwrap();
    let blob = dir
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    fs::write(&blob, bytes).unwrap();

    let node = WasmOci::new();
    let out = node.run(&["load", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("blob {layer} hashes to")),
        "{}",
        describe(&out)
    );
    assert!(node.blobs().is_empty(), "{:?}", node.blobs());
    let out = node.run(&["run", &format!("oci:{}:v1", dir.display())]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
}
