//! Attacks on pull by a hostile registry (a scripted server, `support::Server`, that controls
//! every byte it sends): digests pinned with other algorithms, index entries that lie about
//! sizes, redirects to plain HTTP. Each test checks what the user sees.

use sha2::Digest as _;

use crate::support::{
    Artifact, HELLO, INDEX_TYPE, MANIFEST_TYPE, Reply, Server, WasmOci, describe, honest, sha256,
    stderr, tls,
};

#[test]
fn a_reference_pinned_by_sha512_is_verified_with_sha512() {
    let artifact = Artifact::hello();
    let pinned = format!(
        "sha512:{}",
        hex::encode(sha2::Sha512::digest(&artifact.manifest))
    );
    // The registry answers the pinned digest with another manifest (announced with its own
    // sha256, so only the pinned sha512 tells them apart).
    let other = Artifact::with_annotation("not what was pinned");
    let lying = Server::start(honest(other));
    let reference = format!("{}/hello@{pinned}", lying.addr);
    let cli = WasmOci::new();
    let out = cli.run(&["run", &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("corrupted content") && stderr(&out).contains(&pinned),
        "{}",
        describe(&out)
    );
    assert!(cli.blobs().is_empty(), "{:?}", cli.blobs());

    // The manifest that was pinned passes the same check, and runs.
    let truthful = Server::start(honest(Artifact::hello()));
    let reference = format!("{}/hello@{pinned}", truthful.addr);
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);

    // A digest of an algorithm that cannot be verified is refused before anything is asked.
    let reference = format!("{}/hello@sha1:{}", truthful.addr, "0".repeat(40));
    let out = WasmOci::new().run(&["pull", &reference]);
    assert!(!out.status.success(), "{}", describe(&out));
}

/// An index with one wasm entry for `child`, under `digest` and claiming `size` bytes.
fn index(digest: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": digest, "size": size,
            "platform": {"os": "wasip1", "architecture": "wasm"},
        }],
    }))
    .unwrap()
}

/// A registry serving `index` at every tag and `child` at every digest.
fn index_registry(index: Vec<u8>, child: Artifact) -> Server {
    Server::start(move |request| {
        if request.path == "/v2/" {
            Reply::new(200)
        } else if request.path.contains("/manifests/v1") {
            Reply::new(200)
                .header("Content-Type", INDEX_TYPE)
                .body(index.clone())
        } else if request.path.contains("/manifests/") {
            // No Docker-Content-Digest: only the index's digest can catch a swap.
            Reply::new(200)
                .header("Content-Type", MANIFEST_TYPE)
                .body(child.manifest.clone())
        } else {
            child.blob(request).unwrap_or_else(|| Reply::new(404))
        }
    })
}

#[test]
fn an_index_entry_pinned_by_sha384_is_verified_with_sha384() {
    let pinned = Artifact::hello();
    let digest = format!(
        "sha384:{}",
        hex::encode(sha2::Sha384::digest(&pinned.manifest))
    );
    let size = pinned.manifest.len();

    let swapped = index_registry(index(&digest, size), Artifact::with_annotation("swapped!"));
    let out = WasmOci::new().run(&["run", &format!("{}/hello:v1", swapped.addr)]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("corrupted content") && stderr(&out).contains(&digest),
        "{}",
        describe(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    let faithful = index_registry(index(&digest, size), pinned);
    assert_eq!(
        WasmOci::new().ok(&["run", &format!("{}/hello:v1", faithful.addr)]),
        HELLO
    );
}

#[test]
fn an_index_entry_size_must_be_the_manifests_size() {
    let child = Artifact::hello();
    let digest = sha256(&child.manifest);
    let size = child.manifest.len();
    let registry = index_registry(index(&digest, size + 7), child);
    let out = WasmOci::new().run(&["run", &format!("{}/hello:v1", registry.addr)]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!(
            "says {} bytes, but that manifest is {size} bytes",
            size + 7
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn an_https_registry_cannot_redirect_to_plain_http() {
    let certs = tempfile::tempdir().unwrap();
    let (config, ca) = tls(certs.path());
    let artifact = Artifact::hello();
    let layer = sha256(&artifact.wasm);
    let wasm = artifact.wasm.clone();
    let plain = Server::start(move |_| Reply::new(200).body(wasm.clone()));
    let downgrade = plain.url("/the-layer");
    let serve = honest(artifact);
    let registry = Server::start_tls(config, move |request| {
        if request.path.ends_with(&layer) {
            Reply::new(307).header("Location", &downgrade)
        } else {
            serve(request)
        }
    });
    let out = WasmOci::new().run(&[
        "run",
        "--ca-file",
        &ca,
        &format!("{}/hello:v1", registry.addr),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("redirect from HTTPS to plain HTTP"),
        "{}",
        describe(&out)
    );
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
}
