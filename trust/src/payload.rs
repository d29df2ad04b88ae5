//! The simple-signing payload cosign signs: which manifest digest, claimed for which
//! repository (`critical.identity.docker-reference`), and how signatures are stored: a
//! `sha256-<hex>.sig` tagged manifest whose layers are the payloads, each with its signature
//! in an annotation.

use serde::{Deserialize, Serialize};

/// The payload's `critical.type`, as cosign and containers/image write it.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The media type of a signature layer (the payload).
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that holds the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// A payload is a few hundred bytes; a larger one is refused unread.
pub const MAX_PAYLOAD_SIZE: u64 = 64 << 10;

/// The tag cosign stores the signatures of `digest` (`sha256:<hex>`) under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// What a signature says it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `critical.identity.docker-reference`.
    pub identity: String,
    /// `critical.image.docker-manifest-digest`.
    pub digest: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    #[serde(default)]
    optional: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The payload that claims `digest` for `identity`, as cosign writes it.
pub fn make(identity: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: identity.to_owned(),
            },
            image: Image {
                docker_manifest_digest: digest.to_owned(),
            },
            kind: PAYLOAD_TYPE.to_owned(),
        },
        optional: None,
    })
    .expect("json serializes")
}

/// Why a payload is not a simple-signing payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not the document's shape.
    #[error("its payload is not a simple-signing document: {0}")]
    NotSimpleSigning(#[source] serde_json::Error),
    /// Another `critical.type` (printable).
    #[error("its payload is of type {0:?}, not {PAYLOAD_TYPE:?}")]
    OtherType(String),
}

/// What a (verified) payload claims; an error says why it is not a simple-signing payload.
pub fn parse(bytes: &[u8]) -> Result<Claim, PayloadError> {
    let payload: Payload = serde_json::from_slice(bytes).map_err(PayloadError::NotSimpleSigning)?;
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(PayloadError::OtherType(wasm_oci_artifact::printable(
            &payload.critical.kind,
        )));
    }
    Ok(Claim {
        identity: payload.critical.identity.docker_reference,
        digest: payload.critical.image.docker_manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_tags_are_cosigns() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let claim = parse(&make("localhost:5000/hello", &digest)).unwrap();
        assert_eq!(claim.identity, "localhost:5000/hello");
        assert_eq!(claim.digest, digest);
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
        assert!(parse(br#"{"critical":{"identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":"b"},"type":"other"}}"#).is_err());
    }
}
