//! wasm-oci and the `oras` CLI (Debian sid's 1.3.3, `$WASM_OCI_ORAS`) on the same registry,
//! each way, on both registry implementations (Docker Distribution 2.8 and
//! go-containerregistry's, neither with a referrers API): what one attaches the other
//! discovers, what one pushes the other pulls or runs.

use std::fs;

use crate::support::{
    CraneRegistry, HELLO, Registry, TestRegistry, WasmOci, manifest_at, oras_in, testdata,
};

/// `text` as JSON, or a failure that shows it.
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `oras attach` then `wasm-oci discover`, and `wasm-oci attach` then `oras discover`, on
/// one subject: each lists both, with the same digests, artifact types and sizes.
fn attachments_cross(registry: &dyn TestRegistry) {
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm").display().to_string();
    let subject_ref = registry.reference("hello:v1");
    let pushed = json(&cli.ok(&["push", "--json", &hello, &subject_ref]));
    let subject = pushed["digest"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("sbom.spdx.json"),
        br#"{"spdxVersion":"SPDX-2.3"}"#,
    )
    .unwrap();
    fs::write(dir.path().join("note.txt"), b"reviewed\n").unwrap();

    // oras attaches; wasm-oci discovers.
    let by_oras = json(&oras_in(
        Some(dir.path()),
        &[
            "attach",
            "--plain-http",
            "--format",
            "json",
            "--artifact-type",
            "application/spdx+json",
            &subject_ref,
            "sbom.spdx.json",
        ],
    ));
    let oras_digest = by_oras["digest"].as_str().unwrap().to_owned();
    let found = json(&cli.ok(&["discover", "--json", &subject_ref]));
    assert_eq!(found["digest"], subject.as_str());
    // Neither registry has the referrers API: both fell back on the tag schema.
    assert_eq!(
        found["source"],
        format!("tag {}", subject.replacen(':', "-", 1))
    );
    let listed = found["referrers"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{found}");
    assert_eq!(listed[0]["digest"], oras_digest.as_str());
    assert_eq!(listed[0]["artifactType"], "application/spdx+json");
    assert_eq!(listed[0]["size"], by_oras["size"]);
    assert_eq!(listed[0]["mediaType"], by_oras["mediaType"]);
    assert_eq!(listed[0]["annotations"], by_oras["annotations"]);

    // wasm-oci attaches; oras discovers both.
    let note = dir.path().join("note.txt").display().to_string();
    let by_us = json(&cli.ok(&[
        "attach",
        "--json",
        &subject_ref,
        &note,
        "--artifact-type",
        "text/x-review",
        "-a",
        "purpose=review",
    ]));
    assert_eq!(by_us["subject"], subject.as_str());
    let our_digest = by_us["digest"].as_str().unwrap().to_owned();
    let discovered = json(&oras_in(
        None,
        &["discover", "--plain-http", "--format", "json", &subject_ref],
    ));
    assert_eq!(discovered["digest"], subject.as_str());
    let theirs = discovered["referrers"].as_array().unwrap();
    let mut digests: Vec<&str> = theirs
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    digests.sort();
    let mut expected = vec![oras_digest.as_str(), our_digest.as_str()];
    expected.sort();
    assert_eq!(digests, expected, "{discovered}");
    let ours = theirs
        .iter()
        .find(|r| r["digest"] == our_digest.as_str())
        .unwrap();
    assert_eq!(ours["artifactType"], "text/x-review");
    assert_eq!(ours["annotations"]["purpose"], "review");
    // The size oras read is the one of the manifest the registry holds.
    let (artifact, bytes) = manifest_at(registry.addr(), "hello", &our_digest);
    assert_eq!(ours["size"], bytes.len());
    assert_eq!(artifact["subject"]["digest"], subject.as_str());

    // And oras's filter by type finds ours alone, as wasm-oci's finds oras's alone.
    let filtered = json(&oras_in(
        None,
        &[
            "discover",
            "--plain-http",
            "--format",
            "json",
            "--artifact-type",
            "text/x-review",
            &subject_ref,
        ],
    ));
    assert_eq!(filtered["referrers"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["referrers"][0]["digest"], our_digest.as_str());
    let out = cli.ok(&[
        "discover",
        "--artifact-type",
        "application/spdx+json",
        &subject_ref,
    ]);
    assert_eq!(
        out,
        format!(
            "{oras_digest} application/spdx+json {}\n",
            by_oras["size"].as_u64().unwrap()
        )
    );

    // oras attaches again, on top of the referrers index wasm-oci last wrote: nothing is
    // lost, and both list the three in the same order with the same descriptors.
    fs::write(dir.path().join("second.txt"), b"second look\n").unwrap();
    let again = json(&oras_in(
        Some(dir.path()),
        &[
            "attach",
            "--plain-http",
            "--format",
            "json",
            "--artifact-type",
            "text/x-second",
            &subject_ref,
            "second.txt",
        ],
    ));
    let found = json(&cli.ok(&["discover", "--json", &subject_ref]));
    let ours: Vec<&str> = found["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    let discovered = json(&oras_in(
        None,
        &["discover", "--plain-http", "--format", "json", &subject_ref],
    ));
    let theirs: Vec<&str> = discovered["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(ours.len(), 3, "{found}");
    assert!(ours.contains(&again["digest"].as_str().unwrap()), "{found}");
    assert_eq!(ours, theirs);
}

#[test]
fn oras_and_wasm_oci_discover_what_the_other_attaches_on_distribution() {
    attachments_cross(&Registry::start());
}

#[test]
fn oras_and_wasm_oci_discover_what_the_other_attaches_on_crane_registry() {
    attachments_cross(&CraneRegistry::start());
}

/// `oras pull` of what `wasm-oci push --annotation --artifact-type` wrote: the very file, and
/// the manifest oras fetches is the one wasm-oci reports, annotations and type included.
fn oras_pulls_what_we_push(registry: &dyn TestRegistry) {
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let pushed = json(&cli.ok(&[
        "push",
        "--json",
        "-a",
        "org.opencontainers.image.source=https://example.com/hello",
        "--artifact-type",
        "application/vnd.example.hello+wasm",
        &testdata("hello.wasm").display().to_string(),
        &reference,
    ]));
    let out = tempfile::tempdir().unwrap();
    oras_in(
        Some(out.path()),
        &["pull", "--plain-http", "-o", ".", &reference],
    );
    assert_eq!(
        fs::read(out.path().join("hello.wasm")).unwrap(),
        fs::read(testdata("hello.wasm")).unwrap()
    );
    let fetched = oras_in(None, &["manifest", "fetch", "--plain-http", &reference]);
    let (held, bytes) = manifest_at(registry.addr(), "hello", "v1");
    assert_eq!(fetched.trim_end().as_bytes(), bytes.as_slice());
    assert_eq!(
        crate::support::sha256_digest(fetched.trim_end().as_bytes()),
        pushed["digest"].as_str().unwrap()
    );
    // The tag names the index of the wasm manifest and its Linux image: the annotations are
    // on both, the artifact type on the wasm manifest.
    assert_eq!(
        held["annotations"]["org.opencontainers.image.source"],
        "https://example.com/hello"
    );
    let wasm = pushed["manifest_digest"].as_str().unwrap();
    let (held, _) = manifest_at(registry.addr(), "hello", wasm);
    assert_eq!(held["artifactType"], "application/vnd.example.hello+wasm");
    assert_eq!(
        held["annotations"]["org.opencontainers.image.source"],
        "https://example.com/hello"
    );
    let descriptor = json(&oras_in(
        None,
        &[
            "manifest",
            "fetch",
            "--plain-http",
            "--descriptor",
            &reference,
        ],
    ));
    assert_eq!(descriptor["digest"], pushed["digest"]);
    // oras's descriptor has no artifactType: the manifest's own is checked above.
    assert_eq!(descriptor["size"], bytes.len());
}

#[test]
fn oras_pulls_what_wasm_oci_pushes_on_distribution() {
    oras_pulls_what_we_push(&Registry::start());
}

#[test]
fn oras_pulls_what_wasm_oci_pushes_on_crane_registry() {
    oras_pulls_what_we_push(&CraneRegistry::start());
}

/// `oras push FILE:application/wasm` (the CLI, with an artifact type and its empty config)
/// runs; a plain `oras push FILE` (a tar layer type) is refused, naming what it holds.
fn what_oras_pushes_runs(registry: &dyn TestRegistry) {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(testdata("hello.wasm"), dir.path().join("hello.wasm")).unwrap();
    let reference = registry.reference("oras/hello:v1");
    let pushed = json(&oras_in(
        Some(dir.path()),
        &[
            "push",
            "--plain-http",
            "--format",
            "json",
            "--artifact-type",
            "application/vnd.example.hello",
            &reference,
            "hello.wasm:application/wasm",
        ],
    ));
    let (held, bytes) = manifest_at(registry.addr(), "oras/hello", "v1");
    // wasm-oci shows the manifest oras wrote, with the digest oras reports.
    let shown = json(&WasmOci::new().ok(&["manifest", "--json", &reference]));
    assert_eq!(shown["digest"], pushed["digest"]);
    assert_eq!(shown["manifest_size"], bytes.len());
    assert_eq!(shown["manifest"], held);
    assert_eq!(
        held["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(held["layers"][0]["mediaType"], "application/wasm");
    let cli = WasmOci::new();
    assert_eq!(cli.ok(&["run", &reference]), HELLO);

    let untyped = registry.reference("oras/hello:untyped");
    oras_in(
        Some(dir.path()),
        &["push", "--plain-http", &untyped, "hello.wasm"],
    );
    let out = cli.run(&["run", &untyped]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "{}",
        crate::support::describe(&out)
    );
    let err = crate::support::stderr(&out);
    assert!(
        err.contains(&format!("{untyped} has no wasm layer")),
        "{err}"
    );
    assert!(
        err.contains("application/vnd.oci.image.layer.v1.tar"),
        "{err}"
    );
}

#[test]
fn what_the_oras_cli_pushes_runs_from_distribution() {
    what_oras_pushes_runs(&Registry::start());
}

#[test]
fn what_the_oras_cli_pushes_runs_from_crane_registry() {
    what_oras_pushes_runs(&CraneRegistry::start());
}

#[test]
fn oras_copies_a_layout_wasm_oci_saves_into_a_registry_where_it_runs() {
    let source = Registry::start();
    let target = CraneRegistry::start();
    let cli = WasmOci::new();
    let pushed = json(&cli.ok(&[
        "push",
        "--json",
        &testdata("hello.wasm").display().to_string(),
        &source.reference("hello:v1"),
    ]));
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    cli.ok(&[
        "save",
        &source.reference("hello:v1"),
        "-o",
        dir.to_str().unwrap(),
    ]);
    let reference = target.reference("hello:v1");
    oras_in(
        None,
        &[
            "cp",
            "--from-oci-layout",
            &format!("{}:v1", dir.display()),
            "--to-plain-http",
            &reference,
        ],
    );
    // save wrote the wasm manifest the tag resolved to (not the index beside it).
    let (_, bytes) = manifest_at(target.addr(), "hello", "v1");
    assert_eq!(
        crate::support::sha256_digest(&bytes),
        pushed["manifest_digest"].as_str().unwrap()
    );
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);
}
