//! pull (and run by reference) against a real Docker Distribution registry: what is pushed
//! comes back byte for byte, offline runs from the cache, indexes, and the errors a user reads
//! when the registry, the tag or the bytes are wrong.

use std::fs;

use crate::support::{
    HELLO, PUSHED_PLATFORMS, Registry, WasmOci, describe, free_port, hello, index_platforms,
    manifest, put_manifest, stderr, testdata, without_trust_store,
};

#[test]
fn push_then_run_prints_hello_and_pull_gives_identical_bytes() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");

    let pushed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["push", &hello(), &reference, "--json"])).unwrap();
    assert_eq!(pushed["reference"], reference);
    assert_eq!(
        pushed["size"],
        fs::metadata(testdata("hello.wasm")).unwrap().len()
    );
    assert_eq!(pushed["kind"], "module");

    // The tag names an index: the wasm manifest as wasip1/wasm (and again as linux/ARCH of
    // variant `wasm` for oci-client's resolver), then the Linux image containerd runs.
    let index = manifest(&registry, "hello", "v1");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["digest"], pushed["manifest_digest"]);
    assert_eq!(
        index["manifests"][0]["platform"],
        serde_json::json!({"architecture": "wasm", "os": "wasip1"})
    );
    assert_eq!(index_platforms(&index), PUSHED_PLATFORMS);

    // The wasm manifest: the CNCF TAG Runtime layout.
    let (_, m) = crate::support::wasm_manifest(&registry, "hello", "v1");
    assert_eq!(m["artifactType"], "application/vnd.wasm.config.v0+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(m["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "hello.wasm"
    );
    assert_eq!(m["layers"][0]["digest"], pushed["layer_digest"]);
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = crate::support::http(
        &registry.addr,
        "GET",
        &format!("/v2/hello/blobs/{config_digest}"),
        &[],
        b"",
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["layerDigests"][0], pushed["layer_digest"]);

    let out = cli.run(&["run", &reference]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), HELLO);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("hello.wasm");
    cli.ok(&["pull", &reference, "--out", target.to_str().unwrap()]);
    assert_eq!(
        fs::read(&target).unwrap(),
        fs::read(testdata("hello.wasm")).unwrap()
    );

    // --out DIR takes the title annotation as the file name.
    let other = tempfile::tempdir().unwrap();
    let pulled: serde_json::Value = serde_json::from_str(&WasmOci::new().ok(&[
        "pull",
        &reference,
        "--out",
        other.path().to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(pulled["digest"], pushed["manifest_digest"]);
    assert_eq!(pulled["layer_digest"], pushed["layer_digest"]);
    assert_eq!(
        fs::read(other.path().join("hello.wasm")).unwrap(),
        fs::read(testdata("hello.wasm")).unwrap()
    );
}

#[test]
fn a_cached_reference_runs_with_the_registry_stopped() {
    let mut registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello(), &reference]);
    cli.ok(&["pull", &reference]);
    // The cache holds the layer, the config and the manifest, and a reference entry.
    assert_eq!(cli.blobs().len(), 3, "{:?}", cli.blobs());
    registry.stop();

    assert_eq!(cli.ok(&["run", &reference]), HELLO);
    assert_eq!(cli.ok(&["run", "--pull", "never", &reference]), HELLO);

    let out = cli.run(&["run", "--pull", "always", &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach registry {}", registry.addr)),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_host_without_trust_roots_still_pulls_over_plain_http() {
    // The system's roots are read on the first TLS handshake, not before every request: a
    // plain-HTTP registry needs none, and a minimal image may have none.
    let registry = Registry::start();
    let reference = registry.reference("bare/hello:v1");
    let cli = WasmOci::new();
    cli.ok(&["push", &hello(), &reference]);
    let bare_cli = WasmOci::new();
    let mut cmd = bare_cli.command();
    let _bare = without_trust_store(cmd.args(["run", &reference]));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
}

#[test]
fn pull_never_without_a_cached_copy_says_what_to_do() {
    let cli = WasmOci::new();
    let out = cli.run(&["run", "--pull", "never", "localhost:1/hello:v1"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("localhost:1/hello:v1 is not in the cache"),
        "{err}"
    );
    assert!(err.contains("wasm-oci pull localhost:1/hello:v1"), "{err}");
}

#[test]
fn an_unknown_tag_or_repository_is_a_clear_error() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    cli.ok(&["push", &hello(), &registry.reference("hello:v1")]);
    for missing in ["hello:nope", "nobody/here:v1"] {
        let reference = registry.reference(missing);
        let out = cli.run(&["run", &reference]);
        assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{reference} was not found in the registry")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(cli.blobs().is_empty(), "{:?}", cli.blobs());
}

#[test]
fn a_registry_that_is_down_is_named_in_the_error() {
    let cli = WasmOci::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let out = cli.run(&["run", &format!("{addr}/hello:v1")]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach registry {addr}")),
        "{err}"
    );
    assert!(err.contains("check that it is running"), "{err}");

    let out = cli.run(&["pull", &format!("{addr}/hello:v1")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn corrupted_blob_bytes_fail_with_a_digest_error_and_leave_nothing() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let pushed: serde_json::Value =
        serde_json::from_str(&WasmOci::new().ok(&["push", &hello(), &reference, "--json"]))
            .unwrap();
    let layer = pushed["layer_digest"].as_str().unwrap();
    let file = registry.blob_file(layer);
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&file, &bytes).unwrap();

    let cli = WasmOci::new();
    let out = cli.run(&["run", &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("corrupted content"), "{err}");
    assert!(err.contains(layer), "{err}");
    assert!(
        !cli.blobs().contains(&layer["sha256:".len()..].to_owned()),
        "{:?}",
        cli.blobs()
    );
    assert!(cli.ingest().is_empty(), "{:?}", cli.ingest());
}

#[test]
fn an_image_index_resolves_to_its_wasm_entry() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    // A plain wasm manifest (no Linux image), for hand-written indexes to name.
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        "--no-image",
        &hello(),
        &registry.reference("hello:module"),
        "--json",
    ]))
    .unwrap();
    let size = manifest_size(&registry, "hello", "module");
    let entry = |os: &str, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": pushed["digest"],
            "size": size,
            "platform": {"os": os, "architecture": arch},
        })
    };
    let index = |entries: Vec<serde_json::Value>| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap()
    };
    let index_type = "application/vnd.oci.image.index.v1+json";
    put_manifest(
        &registry,
        "hello",
        "multi",
        index_type,
        &index(vec![entry("linux", "amd64"), entry("wasip1", "wasm")]),
    );
    put_manifest(
        &registry,
        "hello",
        "linux",
        index_type,
        &index(vec![entry("linux", "amd64"), entry("linux", "arm64")]),
    );

    assert_eq!(cli.ok(&["run", &registry.reference("hello:multi")]), HELLO);

    let out = cli.run(&["run", &registry.reference("hello:linux")]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no entry for wasm/wasip1 or wasm/wasip2"),
        "{err}"
    );
    assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
}

fn manifest_size(registry: &Registry, repo: &str, tag: &str) -> usize {
    let accept = "application/vnd.oci.image.manifest.v1+json";
    crate::support::http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", accept)],
        b"",
    )
    .unwrap()
    .body
    .len()
}

#[test]
fn a_bad_reference_says_what_a_reference_looks_like() {
    let out = WasmOci::new().run(&["run", "Not A/Reference"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("expected [REGISTRY/]REPOSITORY[:TAG|@DIGEST]"),
        "{}",
        describe(&out)
    );
}
