//! `push --annotation` and `--artifact-type`: the manifest read back from a real registry
//! carries them, and bad ones are refused before anything is sent.

use crate::support::{
    Registry, WasmOci, describe, http, manifest, stderr, testdata, wasm_manifest,
};

#[test]
fn push_writes_annotations_and_the_artifact_type_into_the_manifest() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm").display().to_string();
    let out = cli.ok(&[
        "push",
        "--json",
        "--annotation",
        "org.opencontainers.image.source=https://example.com/hello",
        "-a",
        "com.example.note=a=b",
        "--artifact-type",
        "application/vnd.example.hello+wasm",
        &hello,
        &registry.reference("hello:v1"),
    ]);
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The tag names the index of the wasm manifest and its Linux image; both carry the
    // annotations, the wasm manifest its artifact type.
    let index = manifest(&registry, "hello", "v1");
    assert_eq!(
        index["annotations"]["org.opencontainers.image.source"],
        "https://example.com/hello"
    );
    let (_, written) = wasm_manifest(&registry, "hello", "v1");
    assert_eq!(
        written["annotations"],
        serde_json::json!({
            "org.opencontainers.image.source": "https://example.com/hello",
            "com.example.note": "a=b",
        })
    );
    assert_eq!(
        written["artifactType"],
        "application/vnd.example.hello+wasm"
    );
    // The digests push reports: the index's (what `manifest` shows of the tag) and the wasm
    // manifest's, which carries them.
    let shown: serde_json::Value =
        serde_json::from_str(&cli.ok(&["manifest", "--json", &registry.reference("hello:v1")]))
            .unwrap();
    assert_eq!(shown["digest"], pushed["digest"]);
    assert_eq!(shown["manifest"], index);
    let pinned = format!(
        "{}@{}",
        registry.reference("hello"),
        pushed["manifest_digest"].as_str().unwrap()
    );
    let shown: serde_json::Value =
        serde_json::from_str(&cli.ok(&["manifest", "--json", &pinned])).unwrap();
    assert_eq!(shown["manifest"], written);
    // And it still runs.
    let out = cli.run(&["run", &registry.reference("hello:v1")]);
    assert!(out.status.success(), "{}", describe(&out));

    // Without them, the CNCF layout's own artifact type and no annotations.
    cli.ok(&["push", &hello, &registry.reference("hello:plain")]);
    let (_, plain) = wasm_manifest(&registry, "hello", "plain");
    assert_eq!(plain["artifactType"], "application/vnd.wasm.config.v0+json");
    assert!(plain.get("annotations").is_none(), "{plain}");
}

#[test]
fn bad_annotations_and_artifact_types_are_refused_before_anything_is_sent() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm").display().to_string();
    for (option, value, says) in [
        ("--annotation", "no-equals-sign", "expected KEY=VALUE"),
        ("--annotation", "k=\u{1b}[2J", "without control characters"),
        ("--annotation", "=v", "the key must be"),
        ("--artifact-type", "not a type", "expected a media type"),
    ] {
        let out = cli.run(&["push", option, value, &hello, &registry.reference("bad:v1")]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert!(stderr(&out).contains(says), "{}", describe(&out));
        assert!(!stderr(&out).contains('\u{1b}'), "{}", describe(&out));
    }
    let r = http(&registry.addr, "GET", "/v2/bad/tags/list", &[], b"").unwrap();
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
}
