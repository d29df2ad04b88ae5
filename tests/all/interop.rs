//! Artifacts laid out by other tools run, and what we push other tools can copy.

use std::fs;
use std::process::Command;

use crate::support::{HELLO, Registry, WasmOci, describe, manifest, oras_python, stderr, testdata};

/// Pushes `files` (`name:media-type`) with the ORAS Python SDK, from a directory holding
/// hello.wasm and the given extra files.
fn oras_push(
    registry: &Registry,
    target: &str,
    files: &[&str],
    config: Option<(&str, &str, &str)>,
    extra: &[(&str, &[u8])],
) {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(testdata("hello.wasm"), dir.path().join("hello.wasm")).unwrap();
    for (name, bytes) in extra {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    let config_arg = match config {
        Some((name, media_type, body)) => {
            fs::write(dir.path().join(name), body).unwrap();
            format!("manifest_config='{name}:{media_type}',")
        }
        None => String::new(),
    };
    let files = files
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ");
    oras_python(
        &format!(
            "import oras.client\n\
             c = oras.client.OrasClient(hostname='{addr}', insecure=True)\n\
             c.push(files=[{files}], {config_arg} target='{target}')\n",
            addr = registry.addr,
        ),
        dir.path(),
    );
}

#[test]
fn what_the_oras_python_sdk_pushes_runs() {
    let registry = Registry::start();
    let reference = registry.reference("oras/hello:v1");
    oras_push(
        &registry,
        &reference,
        &["hello.wasm:application/wasm"],
        None,
        &[],
    );
    let m = manifest(&registry, "oras/hello", "v1");
    assert_eq!(m["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);
}

#[test]
fn the_solo_io_layout_runs() {
    let registry = Registry::start();
    let reference = registry.reference("solo/hello:v1");
    oras_push(
        &registry,
        &reference,
        &["hello.wasm:application/vnd.module.wasm.content.layer.v1+wasm"],
        Some((
            "config.json",
            "application/vnd.module.wasm.config.v1+json",
            "{\"type\":\"envoy_proxy\"}",
        )),
        &[],
    );
    let m = manifest(&registry, "solo/hello", "v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.module.wasm.config.v1+json"
    );
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);
}

#[test]
fn the_wasm_to_oci_layout_pushed_by_oras_runs() {
    // wasm-to-oci was built on oras; this is its layout written by an independent client.
    let registry = Registry::start();
    let reference = registry.reference("w2o/hello:v1");
    oras_push(
        &registry,
        &reference,
        &["hello.wasm:application/vnd.wasm.content.layer.v1+wasm"],
        Some(("config.json", "application/vnd.wasm.config.v1+json", "{}")),
        &[],
    );
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);
}

#[test]
fn an_artifact_without_a_wasm_layer_is_a_clear_error() {
    let registry = Registry::start();
    let reference = registry.reference("docs/readme:v1");
    oras_push(
        &registry,
        &reference,
        &["README.txt:text/plain"],
        None,
        &[("README.txt", b"not wasm")],
    );
    let cli = WasmOci::new();
    let out = cli.run(&["run", &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{reference} has no wasm layer")),
        "{err}"
    );
    assert!(err.contains("text/plain"), "{err}");
    assert!(err.contains("application/wasm"), "{err}");
    assert!(cli.blobs().is_empty(), "{:?}", cli.blobs());
}

#[test]
fn skopeo_copies_what_we_push_to_an_oci_layout() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let pushed: serde_json::Value = serde_json::from_str(&WasmOci::new().ok(&[
        "push",
        &testdata("hello.wasm").display().to_string(),
        &reference,
        "--json",
    ]))
    .unwrap();
    // The tag names an index (the wasm manifest and its Linux image): `--all` copies it
    // whole, as operators mirror multi-platform images, and `--preserve-digests` keeps the
    // Linux image's uncompressed layer as it is (skopeo would gzip it, which changes the
    // Linux manifests' digests and so the index's, the digest a signature names).
    let layout = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", layout.path().display()))
        .output()
        .expect("skopeo is not installed: run ./scripts/test, which installs it");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        describe(&out)
    );

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], pushed["digest"]);
    let layer_hex = pushed["layer_digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    assert_eq!(
        fs::read(layout.path().join("blobs/sha256").join(layer_hex)).unwrap(),
        fs::read(testdata("hello.wasm")).unwrap()
    );
    let cli = WasmOci::new();
    let whole = format!("oci:{}:v1", layout.path().display());
    assert_eq!(cli.ok(&["run", &whole]), HELLO);

    // Without --all skopeo takes this host's platform, the Linux image: run says so, and
    // how to copy the wasm too.
    let single = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", single.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let out = cli.run(&["run", &format!("oci:{}:v1", single.path().display())]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("Linux container image")
            && stderr(&out).contains("skopeo copy --all"),
        "{}",
        describe(&out)
    );
}
