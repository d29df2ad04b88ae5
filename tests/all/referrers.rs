//! OCI 1.1 referrers against Docker Distribution 2.8, which has no referrers API: `attach`
//! writes an artifact with a `subject` and updates the `sha256-<hex>` index; `discover` reads it.

use crate::support::{Registry, WasmOci, describe, manifest, stderr, testdata};

#[test]
fn attach_and_discover_through_the_referrers_tag() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm").display().to_string();
    let pushed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["push", "--json", &hello, &registry.reference("hello:v1")]))
            .unwrap();
    let subject = pushed["digest"].as_str().unwrap().to_owned();
    let subject_size = serde_json::to_vec(&manifest(&registry, "hello", "v1"))
        .unwrap()
        .len();

    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom.spdx.json");
    std::fs::write(&sbom, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let note = dir.path().join("note.txt");
    std::fs::write(&note, b"reviewed\n").unwrap();

    let attached: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "attach",
        "--json",
        &registry.reference("hello:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
        "-a",
        "purpose=sbom",
    ]))
    .unwrap();
    assert_eq!(attached["subject"], subject.as_str());
    let tag = subject.replacen(':', "-", 1);
    assert_eq!(attached["referrers_tag"], tag.as_str());
    let sbom_digest = attached["digest"].as_str().unwrap().to_owned();

    // The artifact manifest names its subject by digest, media type and size: what the tag
    // names, as `oras attach` attaches, here the index push wrote.
    let artifact = manifest(&registry, "hello", &sbom_digest);
    assert_eq!(artifact["artifactType"], "application/spdx+json");
    assert_eq!(artifact["subject"]["digest"], subject.as_str());
    assert_eq!(artifact["subject"]["size"], subject_size);
    assert_eq!(
        artifact["subject"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        artifact["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(artifact["annotations"]["purpose"], "sbom");

    let out = cli.ok(&[
        "attach",
        &registry.reference("hello:v1"),
        note.to_str().unwrap(),
        "--artifact-type",
        "text/plain",
    ]);
    assert!(out.contains(&format!("Subject: {subject}\n")), "{out}");

    // The referrers tag lists both, as the distribution spec's fallback says.
    let index = manifest(&registry, "hello", &tag);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{index}");
    assert_eq!(listed[0]["digest"], sbom_digest.as_str());
    assert_eq!(listed[1]["artifactType"], "text/plain");

    let found: serde_json::Value =
        serde_json::from_str(&cli.ok(&["discover", "--json", &registry.reference("hello:v1")]))
            .unwrap();
    assert_eq!(found["digest"], subject.as_str());
    assert_eq!(found["source"], format!("tag {tag}"));
    assert_eq!(found["referrers"], index["manifests"]);

    let out = cli.ok(&[
        "discover",
        "--artifact-type",
        "application/spdx+json",
        &registry.reference("hello:v1"),
    ]);
    let size = listed[0]["size"].as_u64().unwrap();
    assert_eq!(out, format!("{sbom_digest} application/spdx+json {size}\n"));

    // Nothing attached: an empty list, not an error.
    cli.ok(&["push", &hello, &registry.reference("other:v1")]);
    let out = cli.ok(&["discover", &registry.reference("other:v1")]);
    assert_eq!(out, "");
}

#[test]
fn attach_to_a_missing_reference_says_which_and_writes_nothing() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom.json");
    std::fs::write(&sbom, b"{}").unwrap();
    let out = cli.run(&[
        "attach",
        &registry.reference("ghost:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/json",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&registry.reference("ghost:v1")),
        "{}",
        describe(&out)
    );
    let r = crate::support::http(&registry.addr, "GET", "/v2/_catalog", &[], b"").unwrap();
    let catalog: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!([]), "{catalog}");
}
