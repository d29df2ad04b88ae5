//! wasm-oci against a second registry implementation, go-containerregistry's
//! (`crane registry serve`, Debian sid's crane 0.20.7, `$WASM_OCI_CRANE`), and the `crane`
//! CLI reading what wasm-oci writes: push, pull (with a resumed range), run, manifest, tags
//! paged without a `Link`, tag, and an index crane writes of what wasm-oci pushed.

use std::fs;

use crate::support::{
    CraneRegistry, Fault, HELLO, Proxy, Registry, TestRegistry, WasmOci, crane, crane_bytes,
    guests, manifest_at, oras_in, padded_hello, sha256_digest, testdata,
};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn hello() -> String {
    testdata("hello.wasm").display().to_string()
}

#[test]
fn what_wasm_oci_pushes_to_crane_registry_runs_and_crane_reads_the_same_manifest() {
    let registry = CraneRegistry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let pushed = json(&cli.ok(&["push", "--json", &hello(), &reference]));
    // Its layer is asked for with a range (go-containerregistry's registry answers only a
    // closed one), and runs.
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);

    assert_eq!(crane(&["digest", &reference]).trim_end(), pushed["digest"]);
    let (_, held) = manifest_at(&registry.addr, "hello", "v1");
    assert_eq!(crane(&["manifest", &reference]).as_bytes(), held.as_slice());
    let shown = json(&cli.ok(&["manifest", "--json", &reference]));
    assert_eq!(shown["digest"], pushed["digest"]);
    assert_eq!(shown["manifest_size"], held.len());
    assert_eq!(shown["manifest"], json(&crane(&["manifest", &reference])));
    // The layer crane downloads is the file pushed.
    let layer = pushed["layer_digest"].as_str().unwrap();
    let blob = crane_bytes(&["blob", &format!("{}@{layer}", registry.reference("hello"))]);
    assert_eq!(blob, fs::read(testdata("hello.wasm")).unwrap());
}

#[test]
fn a_cut_download_from_crane_registry_resumes_with_a_range_it_reads() {
    let registry = CraneRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let module = padded_hello(1 << 20);
    let file = dir.path().join("big.wasm");
    fs::write(&file, &module).unwrap();
    WasmOci::new().ok(&[
        "push",
        file.to_str().unwrap(),
        &registry.reference("big:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, Fault::CutFirstBlob);
    let cli = WasmOci::new();
    let out = dir.path().join("pulled.wasm");
    cli.ok(&[
        "pull",
        &proxy.reference("big:v1"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&out).unwrap(), module);
    let ranges = proxy.seen(|s| s.ranges.clone());
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(
        ranges[0].ends_with(&format!("-{}", module.len() - 1)),
        "{ranges:?}"
    );
}

/// `count` tags more on `repo:v1`, put by `wasm-oci tag`; every tag, sorted.
fn tag_many(cli: &WasmOci, registry: &dyn TestRegistry, repo: &str, count: usize) -> Vec<String> {
    cli.ok(&["push", &hello(), &registry.reference(&format!("{repo}:v1"))]);
    let mut tags = vec!["v1".to_owned()];
    for i in 0..count {
        let tag = format!("t{i}");
        cli.ok(&["tag", &registry.reference(&format!("{repo}:v1")), &tag]);
        tags.push(tag);
    }
    tags.sort();
    tags
}

#[test]
fn tags_are_paged_through_crane_registry_which_sends_no_link() {
    let registry = CraneRegistry::start();
    let cli = WasmOci::new();
    // Seven tags: pages of 2, 2, 2 and 1.
    let expected = tag_many(&cli, &registry, "hello", 6);
    let proxy = Proxy::start(&registry.addr, Fault::None);
    let out = cli.ok(&["tags", "--page-size", "2", &proxy.reference("hello")]);
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(
        listed, expected,
        "in the registry's (sorted) order, each once"
    );
    assert_eq!(proxy.asked("GET /v2/hello/tags/list?n=2 "), 1);
    assert_eq!(proxy.asked("GET /v2/hello/tags/list?n=2&last=t1 "), 1);
    assert_eq!(proxy.asked("GET /v2/hello/tags/list?n=2&last=t3 "), 1);
    assert_eq!(proxy.asked("GET /v2/hello/tags/list?n=2&last=t5 "), 1);
    assert_eq!(proxy.asked("GET /v2/hello/tags/list"), 4);
    // crane lists the same.
    let theirs: Vec<String> = crane(&["ls", &registry.reference("hello")])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(theirs, expected);

    // Eight: four full pages, and the one after the greatest tag, which this registry
    // starts over from the first, ends the list.
    let expected = tag_many(&cli, &registry, "eight", 7);
    let out = cli.ok(&["tags", "--page-size", "2", &proxy.reference("eight")]);
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    assert_eq!(proxy.asked("GET /v2/eight/tags/list?n=2&last=v1 "), 1);
    assert_eq!(proxy.asked("GET /v2/eight/tags/list"), 5);

    let out = cli.ok(&["tags", "--json", &registry.reference("eight")]);
    assert_eq!(json(&out)["tags"], serde_json::json!(expected));
}

/// `wasm-oci tag` and `crane tag` put the same bytes under a new tag; each reads the other's.
fn tags_agree(registry: &dyn TestRegistry) {
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let pushed = json(&cli.ok(&["push", "--json", &hello(), &reference]));
    let digest = pushed["digest"].as_str().unwrap();
    crane(&["tag", &reference, "by-crane"]);
    let ours = json(&cli.ok(&["tag", "--json", &reference, "by-wasm-oci"]));
    assert_eq!(ours["digest"], digest);
    assert_eq!(
        crane(&["digest", &registry.reference("hello:by-wasm-oci")]).trim_end(),
        digest
    );
    let theirs = json(&cli.ok(&["manifest", "--json", &registry.reference("hello:by-crane")]));
    assert_eq!(theirs["digest"], digest);
    let (_, by_crane) = manifest_at(registry.addr(), "hello", "by-crane");
    let (_, by_us) = manifest_at(registry.addr(), "hello", "by-wasm-oci");
    assert_eq!(by_crane, by_us);
    assert_eq!(sha256_digest(&by_us), digest);
    let mut listed: Vec<String> = cli
        .ok(&["tags", &registry.reference("hello")])
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut theirs: Vec<String> = crane(&["ls", &registry.reference("hello")])
        .lines()
        .map(str::to_owned)
        .collect();
    theirs.sort();
    assert_eq!(listed, ["by-crane", "by-wasm-oci", "v1"]);
    assert_eq!(listed, theirs);
    let mut by_oras: Vec<String> = oras_in(
        None,
        &["repo", "tags", "--plain-http", &registry.reference("hello")],
    )
    .lines()
    .map(str::to_owned)
    .collect();
    by_oras.sort();
    assert_eq!(listed, by_oras);
}

#[test]
fn wasm_oci_tag_and_crane_tag_agree_on_distribution() {
    tags_agree(&Registry::start());
}

#[test]
fn wasm_oci_tag_and_crane_tag_agree_on_crane_registry() {
    tags_agree(&CraneRegistry::start());
}

/// `crane index append` of a module and a component wasm-oci pushed: crane reads their
/// platforms from wasm-oci's config, `wasm-oci manifest` shows the index crane wrote, `run`
/// runs it, and `oras pull --platform` picks each entry.
fn an_index_crane_writes_runs(registry: &dyn TestRegistry) {
    let cli = WasmOci::new();
    // Plain wasm manifests (no Linux image beside them), for crane to index.
    let module = json(&cli.ok(&[
        "push",
        "--json",
        "--no-image",
        &hello(),
        &registry.reference("hello:wasip1"),
    ]));
    let component = json(&cli.ok(&[
        "push",
        "--json",
        "--no-image",
        guests().hello_component.to_str().unwrap(),
        &registry.reference("hello:wasip2"),
    ]));
    let index_ref = registry.reference("hello:v1");
    crane(&[
        "index",
        "append",
        "-m",
        &registry.reference("hello:wasip1"),
        "-m",
        &registry.reference("hello:wasip2"),
        "-t",
        &index_ref,
    ]);
    let (index, bytes) = manifest_at(registry.addr(), "hello", "v1");
    let shown = json(&cli.ok(&["manifest", "--json", &index_ref]));
    assert_eq!(shown["digest"], sha256_digest(&bytes));
    assert_eq!(shown["digest"], crane(&["digest", &index_ref]).trim_end());
    assert_eq!(
        shown["manifest_media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(shown["manifest"], index);
    let entries = shown["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{shown}");
    for (entry, (pushed, os)) in entries
        .iter()
        .zip([(&module, "wasip1"), (&component, "wasip2")])
    {
        assert_eq!(entry["digest"], pushed["digest"]);
        assert_eq!(entry["platform"]["architecture"], "wasm");
        assert_eq!(entry["platform"]["os"], os);
    }
    assert_eq!(WasmOci::new().ok(&["run", &index_ref]), HELLO);
    // oras picks each entry by its platform, and pulls the file wasm-oci pushed.
    for (platform, file) in [
        ("wasip1/wasm", testdata("hello.wasm")),
        ("wasip2/wasm", guests().hello_component.clone()),
    ] {
        let out = tempfile::tempdir().unwrap();
        oras_in(
            Some(out.path()),
            &["pull", "--plain-http", "--platform", platform, &index_ref],
        );
        let name = file.file_name().unwrap();
        assert_eq!(
            fs::read(out.path().join(name)).unwrap(),
            fs::read(&file).unwrap(),
            "{platform}"
        );
    }
}

#[test]
fn an_index_crane_writes_of_our_pushes_runs_from_distribution() {
    an_index_crane_writes_runs(&Registry::start());
}

#[test]
fn an_index_crane_writes_of_our_pushes_runs_from_crane_registry() {
    an_index_crane_writes_runs(&CraneRegistry::start());
}
