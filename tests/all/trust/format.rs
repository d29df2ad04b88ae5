//! The second peer, written here from cosign's published format and not from either library:
//! the simple-signing payload, the `sha256-<hex>.sig` manifest with the signature annotation,
//! signed with ring. It forges what an attacker would: tampered payloads, copied signatures,
//! another repository's identity, oversized and garbage signature manifests.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

use crate::support::{Reply, Request, Server, forward, http, sha256, sig_tag};

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A key pair made with ring: a plain PKCS#8 `PRIVATE KEY` PEM and a `PUBLIC KEY` PEM.
pub struct RingKey {
    pair: EcdsaKeyPair,
    pub private_pem: String,
    pub public_pem: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl RingKey {
    pub fn generate() -> RingKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // SubjectPublicKeyInfo of an id-ecPublicKey on prime256v1, then the point.
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        RingKey {
            private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            public_pem: pem("PUBLIC KEY", &spki),
            pair,
        }
    }

    /// The base64 ASN.1 signature of `payload`, as the annotation holds it.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig = self.pair.sign(&SystemRandom::new(), payload).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }
}

/// The payload cosign signs.
pub fn payload(identity: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

/// An HTTP/1.0 exchange that keeps the response headers.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let r = http(addr, method, path, headers, body).expect("the registry answers");
    (r.status, r.head, r.body)
}

/// Uploads `bytes` as a blob of `repo` (a monolithic upload) and returns its digest.
pub fn upload_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let (status, head, _) = exchange(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(status, 202, "{head}");
    let location = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap();
    let path = location
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or(&location)
        .to_owned();
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, head, _) = exchange(
        addr,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(status, 201, "{head}");
    digest
}

/// A signature manifest listing `layers` (payload, base64 signature), as cosign writes it,
/// stored under the `.sig` tag of `digest` in `repo`; its payloads and config are uploaded.
pub fn put_signatures(addr: &str, repo: &str, digest: &str, layers: &[(Vec<u8>, String)]) {
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|(payload, signature)| {
            serde_json::json!({
                "mediaType": SIMPLESIGNING,
                "size": payload.len(),
                "digest": upload_blob(addr, repo, payload),
                "annotations": {ANNOTATION: signature},
            })
        })
        .collect();
    put_signature_manifest(addr, repo, digest, descriptors);
}

/// Stores a `.sig` manifest with these layer descriptors (uploaded or not) and a config.
pub fn put_signature_manifest(
    addr: &str,
    repo: &str,
    digest: &str,
    layers: Vec<serde_json::Value>,
) {
    let config =
        br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let config_digest = upload_blob(addr, repo, config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": config_digest,
        },
        "layers": layers,
    }))
    .unwrap();
    put_raw_manifest(addr, repo, &sig_tag(digest), &manifest);
}

/// Stores `body` as the manifest `tag` of `repo`, whatever it holds.
pub fn put_raw_manifest(addr: &str, repo: &str, tag: &str, body: &[u8]) {
    let (status, head, body) = exchange(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        body,
    );
    assert_eq!(status, 201, "{head} {}", String::from_utf8_lossy(&body));
}

/// The `.sig` manifest of `digest` in `repo`, as JSON.
pub fn signature_manifest(addr: &str, repo: &str, digest: &str) -> serde_json::Value {
    let (status, head, body) = exchange(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{}", sig_tag(digest)),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 200, "{head}");
    serde_json::from_slice(&body).unwrap()
}

/// A registry front that forwards every request to `upstream` but answers the `.sig` tags
/// with `garbage`, as a hostile or broken registry would.
pub fn garbage_sigs(upstream: &str, garbage: &'static [u8]) -> Server {
    let upstream = upstream.to_owned();
    Server::start(move |r: &Request| {
        if r.path.ends_with(".sig") {
            Reply::new(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .body(garbage)
        } else {
            forward(&upstream, r, &r.path)
        }
    })
}
