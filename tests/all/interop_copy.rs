//! `wasm-oci copy` beside `oras cp` and `crane copy` (Debian sid's oras 1.3.3 and crane
//! 0.20.7), between the two registry implementations each way: the same digests for a
//! manifest and for an index with every entry, and the same referrers as `oras cp -r`.

use crate::support::{
    CraneRegistry, Registry, TestRegistry, WasmOci, crane, guests, manifest_at, oras_in, testdata,
};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The digests `oras discover` lists for `reference`, sorted.
fn oras_referrers(reference: &str) -> Vec<String> {
    let found = json(&oras_in(
        None,
        &["discover", "--plain-http", "--format", "json", reference],
    ));
    let mut digests: Vec<String> = found["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_owned())
        .collect();
    digests.sort();
    digests
}

/// A module (annotated, with an SBOM attached), a component, and the index crane writes of
/// them, in `src`; each copied to `dst` by oras, crane and wasm-oci, which must agree.
fn copies_agree(src: &dyn TestRegistry, dst: &dyn TestRegistry) {
    let cli = WasmOci::new();
    let module = json(&cli.ok(&[
        "push",
        "--json",
        "-a",
        "org.opencontainers.image.source=https://example.com/hello",
        &testdata("hello.wasm").display().to_string(),
        &src.reference("hello:v1"),
    ]));
    cli.ok(&[
        "push",
        guests().hello_component.to_str().unwrap(),
        &src.reference("hello:wasip2"),
    ]);
    crane(&[
        "index",
        "append",
        "-m",
        &src.reference("hello:v1"),
        "-m",
        &src.reference("hello:wasip2"),
        "-t",
        &src.reference("hello:multi"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom.spdx.json");
    std::fs::write(&sbom, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let attached = json(&cli.ok(&[
        "attach",
        "--json",
        &src.reference("hello:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
    ]));

    for tag in ["v1", "multi"] {
        let from = src.reference(&format!("hello:{tag}"));
        let (source_manifest, source_bytes) = manifest_at(src.addr(), "hello", tag);
        let source_digest = crate::support::sha256_digest(&source_bytes);
        if tag == "v1" {
            assert_eq!(module["digest"], source_digest.as_str());
        }

        let by_oras = dst.reference(&format!("by-oras:{tag}"));
        oras_in(
            None,
            &[
                "cp",
                "-r",
                "--from-plain-http",
                "--to-plain-http",
                &from,
                &by_oras,
            ],
        );
        let by_crane = dst.reference(&format!("by-crane:{tag}"));
        crane(&["copy", &from, &by_crane]);
        let by_us = dst.reference(&format!("by-wasm-oci:{tag}"));
        let copied = json(&cli.ok(&["copy", "--json", &from, &by_us]));

        assert_eq!(copied["digest"], source_digest.as_str(), "{tag}");
        for (repo, what) in [
            ("by-oras", "oras cp"),
            ("by-crane", "crane copy"),
            ("by-wasm-oci", "wasm-oci copy"),
        ] {
            let (_, bytes) = manifest_at(dst.addr(), repo, tag);
            assert_eq!(bytes, source_bytes, "{what} of {tag}: not byte for byte");
            assert_eq!(
                crane(&["digest", &dst.reference(&format!("{repo}:{tag}"))]).trim_end(),
                source_digest,
                "{what} of {tag}"
            );
            // Every entry of an index is there, by digest, with the same bytes.
            for entry in source_manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let digest = entry["digest"].as_str().unwrap();
                let (_, theirs) = manifest_at(dst.addr(), repo, digest);
                let (_, ours) = manifest_at(src.addr(), "hello", digest);
                assert_eq!(theirs, ours, "{what} of {tag}: entry {digest}");
            }
        }
        // wasm-oci copies the referrers, as oras cp -r does.
        if tag == "v1" {
            let theirs = oras_referrers(&by_oras);
            assert_eq!(theirs, [attached["digest"].as_str().unwrap()]);
            assert_eq!(oras_referrers(&by_us), theirs);
            let ours = json(&cli.ok(&["discover", "--json", &by_us]));
            assert_eq!(ours["referrers"][0]["digest"], attached["digest"]);
        }
        // And what wasm-oci copied runs.
        assert_eq!(
            WasmOci::new().ok(&["run", &by_us]),
            crate::support::HELLO,
            "{tag}"
        );
    }
}

#[test]
fn oras_crane_and_wasm_oci_copy_to_the_same_digests_from_distribution_to_crane_registry() {
    copies_agree(&Registry::start(), &CraneRegistry::start());
}

#[test]
fn oras_crane_and_wasm_oci_copy_to_the_same_digests_from_crane_registry_to_distribution() {
    copies_agree(&CraneRegistry::start(), &Registry::start());
}

#[test]
fn a_layout_oras_cp_writes_with_referrers_loads_and_copies_back() {
    // oras-go's layout store lists every manifest it holds in index.json, the referrers
    // too (untagged, with their artifactType): load must tell them from the artifact.
    let registry = CraneRegistry::start();
    let cli = WasmOci::new();
    let pushed = json(&cli.ok(&[
        "push",
        "--json",
        &testdata("hello.wasm").display().to_string(),
        &registry.reference("hello:v1"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom.spdx.json");
    std::fs::write(&sbom, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let attached = json(&cli.ok(&[
        "attach",
        "--json",
        &registry.reference("hello:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
    ]));
    let layout = dir.path().join("airgap");
    oras_in(
        None,
        &[
            "cp",
            "-r",
            "--from-plain-http",
            &registry.reference("hello:v1"),
            "--to-oci-layout",
            &format!("{}:v1", layout.display()),
        ],
    );
    let index: serde_json::Value =
        json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    // The index push wrote, its three manifests (the wasm, Linux amd64 and arm64; the
    // wasm's linux/ARCH `wasm` entries name it again) and the SBOM.
    assert_eq!(index["manifests"].as_array().unwrap().len(), 5, "{index}");

    // oras names the entry by its tag only: load is told the repository.
    let offline = WasmOci::new();
    let reference = registry.reference("hello:v1");
    offline.ok(&[
        "load",
        layout.to_str().unwrap(),
        "--repository",
        &registry.reference("hello"),
    ]);
    drop(registry);
    assert_eq!(offline.ok(&["run", &reference]), crate::support::HELLO);
    assert_eq!(
        WasmOci::new().ok(&["run", &format!("oci:{}:v1", layout.display())]),
        crate::support::HELLO
    );
    // And wasm-oci copies it back into a registry with its referrer, as oras would.
    let back = Registry::start();
    let copied = json(&cli.ok(&[
        "copy",
        "--json",
        &format!("oci:{}:v1", layout.display()),
        &back.reference("hello:v1"),
    ]));
    assert_eq!(copied["digest"], pushed["digest"]);
    assert_eq!(
        oras_referrers(&back.reference("hello:v1")),
        [attached["digest"].as_str().unwrap()]
    );
}
