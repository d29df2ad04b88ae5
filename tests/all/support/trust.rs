//! What the trust tests share: the module they sign, a registry's digests and signature
//! tags read over raw HTTP, keys made by `wasm-oci key generate`, and policy files that need
//! a signature in one scope.

use std::fs;
use std::path::{Path, PathBuf};

use super::{WasmOci, describe, http, sha256, testdata};

/// hello.wasm's path, as an argument.
pub fn hello_wasm() -> String {
    testdata("hello.wasm").display().to_string()
}

/// The tag the signatures of `digest` live under (`sha256-<hex>.sig`).
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The digest `repo:tag` resolves to in the registry at `addr` (a manifest or an index).
pub fn digest_of(addr: &str, repo: &str, tag: &str) -> String {
    let r = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )],
        b"",
    )
    .expect("the registry answers");
    assert_eq!(r.status, 200, "{}", r.head);
    sha256(&r.body)
}

/// Whether `repo` has a signature manifest for `digest`.
pub fn has_signatures(addr: &str, repo: &str, digest: &str) -> bool {
    let r = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{}", sig_tag(digest)),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .expect("the registry answers");
    r.status == 200
}

/// A key pair made by `wasm-oci key generate` in `dir`, encrypted with `password`:
/// (private, public).
pub fn generate_key(cli: &WasmOci, dir: &Path, name: &str, password: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = cli
        .command()
        .env("COSIGN_PASSWORD", password)
        .args(["key", "generate", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Writes at `path` a policy that accepts anything but needs, for docker scope `scope`, a
/// signature by `key` (signedIdentity left to its default, matchRepoDigestOrExact, unless
/// `identity` is given).
pub fn policy_requiring(path: &Path, scope: &str, key: &Path, identity: Option<&str>) -> PathBuf {
    let mut requirement = serde_json::json!({"type": "sigstoreSigned", "keyPath": key});
    if let Some(identity) = identity {
        requirement["signedIdentity"] = serde_json::json!({ "type": identity });
    }
    let json = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {scope: [requirement]}},
    });
    fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    path.to_owned()
}
