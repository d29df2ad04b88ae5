//! Why the gate refuses an image, and why one signature is not valid.

use crate::payload;

/// Why the policy refuses an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The scope is `reject`.
    #[error("the scope rejects every image")]
    Rejected,
    /// The scope needs signatures and there are none.
    #[error(
        "it has no signature (no sha256-<hex>.sig in its repository); sign it with `wasm-oci sign` or cosign"
    )]
    Unsigned,
    /// Signatures, none of them valid: why each is not, numbered from 1.
    #[error("no valid signature ({})", .0.iter().map(|(i, why)| format!("signature {i}: {why}")).collect::<Vec<_>>().join("; "))]
    NoValidSignature(Vec<(usize, InvalidSignature)>),
    /// A cached reference whose signatures the cache does not hold.
    #[error("the cache holds no signatures for it")]
    NotCached,
    /// A cached reference whose signatures are missing or damaged in the cache.
    #[error("its cached signatures are incomplete")]
    CachedIncomplete,
    /// A cached reference whose record does not tie its signatures to its content.
    #[error("its cached record does not tie the signed digest {signed} to its content: {why}")]
    CachedUnbound {
        /// The digest the record says was signed.
        signed: String,
        /// What does not hold.
        why: &'static str,
    },
    /// Content that carries no signature (a module in a rootfs), where the scope needs one.
    #[error("{scope} (for the image {image}) needs a signed reference")]
    NeedsSignedReference {
        /// The scope, described.
        scope: String,
        /// The image's name (printable).
        image: String,
    },
    /// Native code offered for an image (a precompiled referrer) under a scope that names
    /// no key: nobody vouches for it, so it is not loaded.
    #[error(
        "{scope} names no key (sigstoreSigned), and native code from a registry is loaded only when one of the policy's keys signed it"
    )]
    CodeNeedsKeys {
        /// The scope, described.
        scope: String,
    },
    /// Content whose name is unknown, under a policy that does not accept anything
    /// everywhere.
    #[error(
        "the signature policy {policy} is not accept-anything and the name is not known, so no scope can be checked for it"
    )]
    Unnamed {
        /// The policy file, or `(none)`.
        policy: String,
    },
}

/// Why one signature is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSignature {
    /// The annotation is not base64.
    #[error("its signature annotation is not base64")]
    NotBase64,
    /// No key of the requirement made it, or its payload was changed.
    #[error(
        "not made by the key{} of the policy ({}), or its payload was changed",
        if fingerprints.len() == 1 { "" } else { "s" },
        fingerprints.join(", ")
    )]
    OtherKey {
        /// `sha256:<16 hex>` of each key tried.
        fingerprints: Vec<String>,
    },
    /// The payload is not a simple-signing payload.
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    /// It signs another digest.
    #[error("it signs {claimed}, not {signed} (a signature of another image)")]
    OtherDigest {
        /// What it signs (printable).
        claimed: String,
        /// What was asked.
        signed: String,
    },
    /// Its identity is not a reference (printable).
    #[error("its identity {0:?} is not a reference")]
    IdentityNotAReference(String),
    /// Its identity does not match the reference under the requirement's rule.
    #[error(
        "it is signed for {claimed}, which does not match {reference} under signedIdentity {rule}"
    )]
    OtherIdentity {
        /// The identity claimed (printable).
        claimed: String,
        /// The reference asked for.
        reference: String,
        /// The rule.
        rule: &'static str,
    },
}
