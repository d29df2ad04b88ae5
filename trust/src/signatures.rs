//! Signatures as cosign stores them, read and written without any transport: the
//! `sha256-<hex>.sig` manifest whose layers are simple-signing payloads, each with its
//! signature in an annotation; what a registry, a layout or the cache holds is read here the
//! same way, and `sign` appends to it here.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::json;
use wasm_oci_artifact::printable;
use wasm_oci_cache::{Cache, Digest, Signatures};

use crate::key::PublicKey;
use crate::payload::{SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE};
use crate::policy::SignatureBlob;

/// A `.sig` manifest larger than this is refused: cosign's hold a few hundred bytes per
/// signature.
pub const MAX_SIGNATURE_MANIFEST: u64 = 256 << 10;
/// More signatures than this on one digest are refused rather than fetched one by one.
pub const MAX_SIGNATURES: usize = 64;
/// The media type of a `.sig` manifest (an OCI image manifest).
pub const SIGNATURE_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The signatures of one digest as found in a registry, a layout or the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The `.sig` manifest's bytes.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: Digest,
    /// Each signature layer: its digest and content.
    pub layers: Vec<(Digest, SignatureBlob)>,
}

impl Fetched {
    /// The signatures alone.
    pub fn blobs(&self) -> Vec<SignatureBlob> {
        self.layers.iter().map(|(_, b)| b.clone()).collect()
    }
}

/// Why a `.sig` manifest is not something signatures can be read from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignaturesError {
    /// Not an OCI manifest.
    #[error("its signature manifest is not an OCI manifest: {0}")]
    NotManifest(#[source] serde_json::Error),
    /// Over [`MAX_SIGNATURE_MANIFEST`].
    #[error("its signature manifest is over {MAX_SIGNATURE_MANIFEST} bytes")]
    TooLarge,
    /// Over [`MAX_SIGNATURES`] layers.
    #[error("its signature manifest lists {0} layers; more than {MAX_SIGNATURES} are refused")]
    TooMany(usize),
    /// A layer digest that is none (printable).
    #[error("a signature layer's digest is invalid: {0}")]
    BadDigest(String),
    /// A payload larger than any is.
    #[error(
        "a signature layer claims {0} bytes; payloads over {max} bytes are refused",
        max = crate::payload::MAX_PAYLOAD_SIZE
    )]
    PayloadTooLarge(i64),
}

/// A descriptor of the signature manifest, as much of it as is read.
#[derive(serde::Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(serde::Deserialize)]
struct SigLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One simple-signing layer of a `.sig` manifest, checked before its payload is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload's digest.
    pub digest: Digest,
    /// Its size, at most [`crate::payload::MAX_PAYLOAD_SIZE`].
    pub size: u64,
    /// The base64 signature of its annotation.
    pub signature: String,
}

/// The layers of a `.sig` manifest that are simple-signing payloads with a signature, and
/// their sizes, checked before any is fetched.
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>, SignaturesError> {
    if manifest.len() as u64 > MAX_SIGNATURE_MANIFEST {
        return Err(SignaturesError::TooLarge);
    }
    let parsed: SigManifest =
        serde_json::from_slice(manifest).map_err(SignaturesError::NotManifest)?;
    if parsed.layers.len() > MAX_SIGNATURES {
        return Err(SignaturesError::TooMany(parsed.layers.len()));
    }
    let mut out = Vec::new();
    for layer in parsed.layers {
        if layer.media_type != SIMPLESIGNING_MEDIA_TYPE {
            tracing::debug!(media_type = %printable(&layer.media_type), "skipping a signature layer of another type");
            continue;
        }
        let digest: Digest = layer.digest.parse().map_err(|e: wasm_oci_cache::Error| {
            SignaturesError::BadDigest(printable(&e.to_string()))
        })?;
        let size = u64::try_from(layer.size)
            .ok()
            .filter(|s| *s <= crate::payload::MAX_PAYLOAD_SIZE)
            .ok_or(SignaturesError::PayloadTooLarge(layer.size))?;
        let signature = layer
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        out.push(SignatureLayer {
            digest,
            size,
            signature,
        });
    }
    Ok(out)
}

/// Signatures kept in the cache: what `signatures` records, read back from the blobs, each
/// checked against its digest (a blob changed in place is not a signature). `None` when one
/// is missing or damaged.
pub fn cached_signatures(cache: &Cache, signatures: &Signatures) -> Option<Fetched> {
    let read = |digest: &Digest| {
        cache
            .read_blob(digest)
            .ok()
            .filter(|bytes| &Digest::of(bytes) == digest)
    };
    let manifest = read(&signatures.manifest)?;
    let layers = signature_layers(&manifest).ok()?;
    let layers = layers
        .into_iter()
        .map(|layer| {
            let payload = read(&layer.digest)?;
            Some((
                layer.digest,
                SignatureBlob {
                    payload,
                    signature: layer.signature,
                },
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Fetched {
        manifest,
        manifest_digest: signatures.manifest.clone(),
        layers,
    })
}

/// What `sign` must write to add one signature: the blobs and the new `.sig` manifest.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The payload (a new layer) and its digest.
    pub payload: (Digest, Vec<u8>),
    /// The manifest's config and its digest.
    pub config: (Digest, Vec<u8>),
    /// The new `.sig` manifest.
    pub manifest: Vec<u8>,
    /// How many signatures it holds.
    pub count: usize,
}

/// The `.sig` manifest with a signature `signature` (base64) of `payload` appended to
/// `existing`'s, as cosign appends it: earlier signatures are kept. `None` when `existing`
/// holds this payload signed by `key` already: signing it again would only add a copy.
pub fn append(
    existing: Option<&Fetched>,
    payload: &[u8],
    signature: &str,
    key: &PublicKey,
) -> Option<Appended> {
    let payload_digest = Digest::of(payload);
    if let Some(found) = existing {
        let signed_already = found.layers.iter().any(|(digest, blob)| {
            digest == &payload_digest
                && blob.payload == payload
                && base64::engine::general_purpose::STANDARD
                    .decode(blob.signature.trim())
                    .is_ok_and(|raw| key.verifies(payload, &raw))
        });
        if signed_already {
            return None;
        }
    }
    let mut layers: Vec<serde_json::Value> = existing
        .and_then(|f| serde_json::from_slice::<serde_json::Value>(&f.manifest).ok())
        .and_then(|m| m["layers"].as_array().cloned())
        .unwrap_or_default();
    layers.push(json!({
        "mediaType": SIMPLESIGNING_MEDIA_TYPE,
        "size": payload.len(),
        "digest": payload_digest.to_string(),
        "annotations": { SIGNATURE_ANNOTATION: signature },
    }));
    let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .expect("json serializes");
    let config_digest = Digest::of(&config);
    let count = layers.len();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": SIGNATURE_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": config_digest.to_string(),
        },
        "layers": layers,
    }))
    .expect("json serializes");
    Some(Appended {
        payload: (payload_digest, payload.to_vec()),
        config: (config_digest, config),
        manifest,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PrivateKey;

    fn fetched(appended: &Appended) -> Fetched {
        let manifest = appended.manifest.clone();
        let layers = signature_layers(&manifest).unwrap();
        Fetched {
            manifest_digest: Digest::of(&manifest),
            manifest,
            layers: layers
                .into_iter()
                .map(|l| {
                    (
                        l.digest,
                        SignatureBlob {
                            payload: appended.payload.1.clone(),
                            signature: l.signature,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Signing a digest again with the same key adds nothing; another key adds its own.
    #[test]
    fn the_same_key_signs_a_payload_once() {
        let payload =
            crate::payload::make("localhost:5000/app", &format!("sha256:{}", "a".repeat(64)));
        let sign =
            |key: &PrivateKey| base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        let key = PrivateKey::generate();
        let first = append(None, &payload, &sign(&key), &key.public()).unwrap();
        assert_eq!(first.count, 1);
        let found = fetched(&first);
        assert!(append(Some(&found), &payload, &sign(&key), &key.public()).is_none());
        let other = PrivateKey::generate();
        let second = append(Some(&found), &payload, &sign(&other), &other.public()).unwrap();
        assert_eq!(second.count, 2);
    }
}
