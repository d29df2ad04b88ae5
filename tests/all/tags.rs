//! `tags`, `tag` and `manifest` against a real Docker Distribution registry, behind a
//! counting proxy: pages followed, no blob moved by a retag, no layer read to show a manifest.

use crate::support::proxy::{Fault, Proxy};
use crate::support::{
    Registry, WasmOci, describe, guests, manifest, put_manifest, stderr, testdata,
};

fn hello() -> String {
    testdata("hello.wasm").display().to_string()
}

fn pushed_digest(cli: &WasmOci, file: &str, reference: &str) -> String {
    let out = cli.ok(&["push", "--json", file, reference]);
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    pushed["digest"].as_str().unwrap().to_owned()
}

/// As [`pushed_digest`], a plain wasm manifest at the tag (`--no-image`), for hand-written
/// indexes and tags to name.
fn plain_pushed_digest(cli: &WasmOci, file: &str, reference: &str) -> String {
    let out = cli.ok(&["push", "--json", "--no-image", file, reference]);
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    pushed["digest"].as_str().unwrap().to_owned()
}

#[test]
fn tags_lists_every_tag_asking_n_at_a_time() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    plain_pushed_digest(&cli, &hello(), &registry.reference("hello:v1"));
    let body = serde_json::to_vec(&manifest(&registry, "hello", "v1")).unwrap();
    let mut expected = vec!["v1".to_owned()];
    for i in 0..6 {
        let tag = format!("t{i}");
        put_manifest(
            &registry,
            "hello",
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &body,
        );
        expected.push(tag);
    }
    expected.sort();
    let proxy = Proxy::start(&registry.addr, Fault::None);

    let out = cli.ok(&["tags", "--page-size", "2", &proxy.reference("hello")]);
    // In the registry's order (Distribution 2.8 pages in its storage's order), each once.
    let mut listed: Vec<&str> = out.lines().collect();
    listed.sort();
    assert_eq!(listed, expected);
    // Asked two at a time. Distribution 2.8 ignores `n` on tag lists (pagination came in
    // 3.0) and answers all seven at once, without a Link: the pages themselves are
    // followed in the fetcher's unit tests (`tags::tests`).
    assert_eq!(proxy.asked("GET /v2/hello/tags/list?n=2 "), 1);

    let out = cli.ok(&["tags", "--json", &proxy.reference("hello")]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["repository"], proxy.reference("hello"));
    let mut tags: Vec<String> = serde_json::from_value(json["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, expected);

    let out = cli.run(&["tags", &registry.reference("nothing-here")]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&registry.reference("nothing-here")),
        "{}",
        describe(&out)
    );
}

#[test]
fn tag_puts_the_same_manifest_under_a_new_tag_and_moves_no_blob() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let digest = pushed_digest(&cli, &hello(), &registry.reference("hello:v1"));
    let proxy = Proxy::start(&registry.addr, Fault::None);

    let out = cli.ok(&["tag", "--json", &proxy.reference("hello:v1"), "stable"]);
    let tagged: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tagged["digest"], digest.as_str());
    assert_eq!(tagged["reference"], proxy.reference("hello:stable"));
    assert_eq!(
        manifest(&registry, "hello", "stable"),
        manifest(&registry, "hello", "v1")
    );
    // The manifest's digest as the registry computes it, from the bytes it stored.
    let by_digest = manifest(&registry, "hello", &digest);
    assert_eq!(by_digest, manifest(&registry, "hello", "stable"));
    assert_eq!(proxy.asked("PUT /v2/hello/manifests/stable"), 1);
    assert_eq!(proxy.asked("POST "), 0, "no upload was opened");
    assert_eq!(proxy.asked("HEAD "), 0);
    assert!(proxy.seen(|s| s.blob_gets.is_empty()), "no blob was read");

    // A tag that is not one is refused before anything is sent, naming it.
    for bad in [".x", "a/b", "x\u{1b}[2J"] {
        let out = cli.run(&["tag", &proxy.reference("hello:v1"), bad]);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(stderr(&out).contains("a tag is"), "{}", describe(&out));
        assert!(!stderr(&out).contains('\u{1b}'), "{}", describe(&out));
    }
    assert_eq!(proxy.asked("PUT "), 1);

    let out = cli.run(&["tag", &registry.reference("hello:missing"), "stable"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&registry.reference("hello:missing")),
        "{}",
        describe(&out)
    );
}

#[test]
fn manifest_shows_an_index_and_its_entries_without_reading_a_layer() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let module = plain_pushed_digest(&cli, &hello(), &registry.reference("hello:wasip1"));
    let component = plain_pushed_digest(
        &cli,
        guests().hello_component.to_str().unwrap(),
        &registry.reference("hello:wasip2"),
    );
    let size = |tag: &str| {
        serde_json::to_vec(&manifest(&registry, "hello", tag))
            .unwrap()
            .len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": module,
             "size": size("wasip1"), "platform": {"architecture": "wasm", "os": "wasip1"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": component,
             "size": size("wasip2"), "platform": {"architecture": "wasm", "os": "wasip2"}},
        ],
    });
    let index_body = serde_json::to_vec(&index).unwrap();
    let index_digest = put_manifest(
        &registry,
        "hello",
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &index_body,
    );
    let proxy = Proxy::start(&registry.addr, Fault::None);

    let out = cli.ok(&["manifest", "--json", &proxy.reference("hello:v1")]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["digest"], index_digest.as_str());
    assert_eq!(shown["manifest_size"], index_body.len());
    assert_eq!(
        shown["manifest_media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(shown["manifest"], index);
    let entries = shown["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (entry, (digest, tag)) in entries
        .iter()
        .zip([(&module, "wasip1"), (&component, "wasip2")])
    {
        assert_eq!(entry["digest"], digest.as_str());
        assert_eq!(entry["manifest_size"], size(tag));
        assert_eq!(entry["platform"]["os"], tag);
        assert_eq!(entry["manifest"], manifest(&registry, "hello", tag));
    }

    let out = cli.ok(&["manifest", &proxy.reference("hello:wasip1")]);
    let layer = &manifest(&registry, "hello", "wasip1")["layers"][0];
    assert!(out.contains(&format!("Digest: {module}\n")), "{out}");
    assert!(
        out.contains(&format!(
            "Layer: {} application/wasm {}\n",
            layer["digest"].as_str().unwrap(),
            layer["size"]
        )),
        "{out}"
    );
    assert!(proxy.seen(|s| s.blob_gets.is_empty()), "no blob was read");
    assert_eq!(proxy.seen(|s| s.blob_bytes), 0);
}
