//! `wasm-oci copy` against a destination that fails midway and a source that lies: no tag
//! ever points at missing content, and a blob that is not its digest goes nowhere.

use crate::support::{Fault, Proxy, Registry, WasmOci, describe, http, stderr, testdata};

/// Whether `registry` has the manifest `repo`/`name`.
fn has_manifest(registry: &Registry, repo: &str, name: &str) -> bool {
    let r = http(
        &registry.addr,
        "HEAD",
        &format!("/v2/{repo}/manifests/{name}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )],
        b"",
    )
    .expect("registry answers");
    r.status == 200
}

#[test]
fn a_destination_that_refuses_a_blob_is_left_without_the_tag() {
    let (a, b) = (Registry::start(), Registry::start());
    let front = Proxy::start(&b.addr, Fault::RefuseBlobUploads);
    let cli = WasmOci::new();
    a.push_hello("hello:v1");
    let out = cli.run(&[
        "copy",
        &a.reference("hello:v1"),
        &front.reference("hello:v1"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("refused"), "{}", describe(&out));
    assert!(front.asked("PUT /v2/hello/blobs/uploads/") >= 1);
    // Nothing points at what is missing: no tag, no manifest.
    assert!(!has_manifest(&b, "hello", "v1"));
    assert_eq!(front.asked("PUT /v2/hello/manifests/"), 0);

    // Once the destination takes blobs again, the same copy completes.
    front.set_fault(Fault::None);
    cli.ok(&[
        "copy",
        &a.reference("hello:v1"),
        &front.reference("hello:v1"),
    ]);
    assert!(has_manifest(&b, "hello", "v1"));
}

#[test]
fn a_source_whose_blob_is_not_its_digest_copies_nothing() {
    let (a, b) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        "--json",
        testdata("hello.wasm").to_str().unwrap(),
        &a.reference("hello:v1"),
    ]))
    .unwrap();
    let lying = Proxy::start(&a.addr, Fault::CorruptBlobs);
    let out = cli.run(&[
        "copy",
        &lying.reference("hello:v1"),
        &b.reference("hello:v1"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("digest"), "{err}");
    assert!(!has_manifest(&b, "hello", "v1"));
    // The blob it claimed to be never landed in the destination.
    let layer = pushed["layer_digest"].as_str().unwrap();
    let r = http(
        &b.addr,
        "HEAD",
        &format!("/v2/hello/blobs/{layer}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn a_layout_name_that_is_not_one_is_refused() {
    let cli = WasmOci::new();
    for (bad, said) in [("oci:", "no directory"), ("oci:/tmp/x:a/b", "tag")] {
        let out = cli.run(&["copy", bad, "localhost:1/x:v1"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(stderr(&out).contains(said), "{bad}: {}", describe(&out));
    }
    // A source layout that is not there names it.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = cli.run(&[
        "copy",
        &format!("oci:{}", missing.display()),
        "localhost:1/x:v1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!missing.exists());
}
