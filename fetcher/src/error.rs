//! The fetcher's error type: every variant names the reference and says what to do.

use std::path::PathBuf;

use oci_client::errors::OciDistributionError;

use crate::remote::answer::{Class, classify};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong between a reference and the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operator's registry host configuration (containerd's `hosts.toml`) cannot be used.
    #[error(
        "the registry host configuration {} for {registry} is invalid: {reason}; fix it (containerd reads the same file) or point --hosts-dir / WASM_OCI_HOSTS_DIR elsewhere",
        path.display()
    )]
    HostsConfig {
        /// The file (or directory) read.
        path: PathBuf,
        /// The registry it configures.
        registry: String,
        /// What is wrong.
        reason: Box<crate::remote::hosts::HostsError>,
    },
    /// No host configured for the registry may do what the pull needs.
    #[error(
        "no host configured for {registry} may {operation} {reference} (see its hosts.toml capabilities); add `{operation}` to a host's capabilities"
    )]
    NoCapableHost {
        /// The reference asked for.
        reference: String,
        /// The registry.
        registry: String,
        /// `resolve` (a tag) or `pull` (by digest).
        operation: &'static str,
    },
    /// A reference, or a manifest or index, that is not what the artifact crate's rules
    /// accept: its text, not a copy of it.
    #[error(transparent)]
    Artifact(#[from] wasm_oci_artifact::Error),
    /// The registry has no such repository, tag or digest.
    #[error(
        "{reference} was not found in the registry: check the repository name and tag, or push it first with `wasm-oci push FILE {reference}`"
    )]
    NotFound {
        /// The reference asked for.
        reference: String,
    },
    /// The caller refused the artifact from its config, before its layer was downloaded.
    #[error("{reference} is refused before its layer is downloaded: {reason}")]
    Refused {
        /// The reference asked for.
        reference: String,
        /// Why.
        reason: String,
    },
    /// Its manifest names another wasm layer than the one had locally (a pull given the
    /// layer's bytes); nothing was downloaded.
    #[error("{reference} names the wasm layer {layer}, not {local}")]
    OtherLayer {
        /// The reference asked for.
        reference: String,
        /// The layer its manifest names.
        layer: String,
        /// The local bytes' digest.
        local: String,
    },
    /// The signature policy refuses it: no valid signature, or a scope that rejects it.
    #[error("{reference} is refused by {scope}: {reason}")]
    Untrusted {
        /// The reference asked for.
        reference: String,
        /// The policy scope that matched, and its file.
        scope: String,
        /// The trust gate's verdict, and where the signatures were looked for.
        reason: TrustRefusal,
    },
    /// Its `.sig` manifest is not something signatures can be read from.
    #[error("the signatures of {reference} cannot be read: {reason}")]
    InvalidSignatures {
        /// The reference asked for.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A signature policy that cannot be used.
    #[error(transparent)]
    Policy(#[from] wasm_oci_trust::PolicyError),
    /// The pull policy is `never` and the cache does not have the reference.
    #[error(
        "{reference} is not in the cache, and the pull policy `never` forbids asking the registry: pull it first (`wasm-oci pull {reference}`)"
    )]
    NotCached {
        /// The reference asked for.
        reference: String,
    },
    /// The registry could not be reached at all.
    #[error(
        "cannot reach registry {registry} for {reference}: check that it is running and that the address is right{}",
        // Plain HTTP already failed: suggesting it would send the user in a circle.
        if *scheme == "https" { " (it is spoken to over HTTPS; pass --plain-http for a registry without TLS)" } else { "" }
    )]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The reference asked for.
        reference: String,
        /// `http` or `https`.
        scheme: &'static str,
        /// The transport error.
        #[source]
        source: OciDistributionError,
    },
    /// A TLS handshake was answered in plain HTTP.
    #[error("registry {registry} speaks plain HTTP, not HTTPS: pass --plain-http to reach it")]
    PlainHttp {
        /// The registry host.
        registry: String,
        /// The transport error.
        #[source]
        source: OciDistributionError,
    },
    /// A plain-HTTP request was answered that the registry speaks HTTPS.
    #[error(
        "registry {registry} speaks HTTPS, not plain HTTP: drop --plain-http (and WASM_OCI_PLAIN_HTTP) to reach it"
    )]
    SpeaksHttps {
        /// The registry host.
        registry: String,
        /// The registry's answer.
        #[source]
        source: OciDistributionError,
    },
    /// `login`'s credentials were refused.
    #[error(
        "registry {registry} refused the credentials: check the user name and the password or token"
    )]
    CredentialsRefused {
        /// The registry host.
        registry: String,
        /// The registry's answer.
        #[source]
        source: OciDistributionError,
    },
    /// The registry refused our credentials, or wants some.
    #[error(
        "registry {registry} refused access to {reference}: log in with `wasm-oci login {registry}` (or docker login), or pass --username and --password-stdin, and check that the repository exists"
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The reference asked for.
        reference: String,
        /// The registry's answer.
        #[source]
        source: OciDistributionError,
    },
    /// Any other registry failure.
    #[error("registry error for {reference}")]
    Registry {
        /// The reference asked for.
        reference: String,
        /// The registry's answer.
        #[source]
        source: OciDistributionError,
    },
    /// The connection broke while a blob was downloading, after every retry.
    #[error(
        "the download of {reference} broke off after {bytes} bytes and did not recover after {attempts} attempts; run the command again to resume from there"
    )]
    Interrupted {
        /// The reference asked for.
        reference: String,
        /// How much of the blob is kept for the next attempt.
        bytes: u64,
        /// How many attempts were made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: std::io::Error,
    },
    /// The blob did not match its digest.
    #[error(
        "the registry sent corrupted content for {reference}: expected {expected}, got {actual}. Nothing was stored; retry, and if it persists push the module again"
    )]
    DigestMismatch {
        /// The reference asked for.
        reference: String,
        /// The digest in the manifest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A digest of an algorithm that is not verified here.
    #[error(
        "{reference}: the digest {digest} is refused, since it cannot be verified: manifests are verified with sha256, sha384 or sha512 and blobs with sha256; push the artifact with sha256 digests"
    )]
    UnsupportedDigest {
        /// The reference asked for.
        reference: String,
        /// The digest, as the reference or the registry wrote it (escaped).
        digest: String,
    },
    /// An HTTPS registry named a plain-HTTP token service; the credentials were not sent.
    #[error(
        "registry {registry} speaks HTTPS but names {realm}, a plain-HTTP token service, for {reference}; credentials are never sent there in clear, so they were not sent. Its operator should serve the token service over HTTPS; without credentials, its public repositories can still be pulled"
    )]
    InsecureTokenService {
        /// The registry.
        registry: String,
        /// The reference asked for.
        reference: String,
        /// The token service's URL (escaped).
        realm: String,
    },
    /// A file given to push is not WebAssembly.
    #[error(
        "{} is not a WebAssembly module or component (it does not start with the `\\0asm` header); build it with a wasm target",
        path.display()
    )]
    InvalidWasm {
        /// The file.
        path: PathBuf,
    },
    /// A file pushed as one platform of an index is of the other kind (a component named
    /// wasip1, a core module named wasip2).
    #[error(
        "{} is a {kind} but was given as --platform {os}; a {kind} is {expected}: pass --platform {expected}={}",
        path.display(), path.display()
    )]
    PlatformMismatch {
        /// The file.
        path: PathBuf,
        /// The platform it was given as.
        os: String,
        /// What the file is ("core module" or "component").
        kind: &'static str,
        /// The platform it is.
        expected: &'static str,
    },
    /// Credentials could not be found or stored.
    #[error("credentials for {registry}: {reason}")]
    Credentials {
        /// The registry.
        registry: String,
        /// What went wrong (never the secret).
        reason: String,
    },
    /// The registry's TLS certificate was not accepted.
    #[error(
        "cannot verify the TLS certificate of registry {registry} for {reference}: trust its CA with --ca-file PATH (or SSL_CERT_FILE); --insecure-skip-tls-verify turns verification off"
    )]
    Tls {
        /// The registry.
        registry: String,
        /// The reference asked for.
        reference: String,
        /// The TLS error.
        #[source]
        source: OciDistributionError,
    },
    /// An OCI image layout is unusable.
    #[error("OCI layout {}: {reason}", dir.display())]
    Layout {
        /// The layout's directory.
        dir: PathBuf,
        /// What is wrong.
        reason: Box<crate::layout::LayoutError>,
    },
    /// A local file could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] wasm_oci_cache::Error),
    /// A connection the operator's egress rule forbids (see [`crate::egress`]) was not made.
    #[error("{reference} needs a connection the operator's rule forbids: {reason}")]
    Egress {
        /// The reference asked for.
        reference: String,
        /// Which connection, and why not.
        reason: String,
    },
    /// A host name that does not resolve: no scheme or retry changes that.
    #[error(
        "cannot reach registry {registry} for {reference}: a host name in the way does not resolve; check its spelling (and the node's DNS)"
    )]
    UnknownHost {
        /// The registry host.
        registry: String,
        /// The reference asked for.
        reference: String,
        /// The lookup's error.
        #[source]
        source: OciDistributionError,
    },
}

/// Why the signature policy refuses a reference: the trust gate's verdict, and where the
/// signatures it judged were looked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustRefusal {
    /// The gate refused what the registry holds (or the scope refuses anything).
    #[error("{0}")]
    Refused(wasm_oci_trust::Refusal),
    /// The gate refused what the cache holds, and the pull policy forbids asking the
    /// registry.
    #[error("{0} (the pull policy `never` forbids asking the registry for signatures)")]
    CachedOnly(wasm_oci_trust::Refusal),
    /// The gate refused what an OCI layout holds.
    #[error("{refusal} (in the layout {})", dir.display())]
    InLayout {
        /// The verdict.
        refusal: wasm_oci_trust::Refusal,
        /// The layout's directory.
        dir: PathBuf,
    },
    /// The scope needs signatures and those the registry has cannot be read.
    #[error("its signatures cannot be read: {0}")]
    Unreadable(Box<Error>),
}

impl Error {
    /// The variant a user can act on for a failed request of `reference` over `scheme`:
    /// what [`classify`] makes of it.
    pub(crate) fn from_oci(
        source: OciDistributionError,
        reference: &oci_client::Reference,
        scheme: &'static str,
    ) -> Self {
        let reference_s = reference.whole();
        let registry = reference.registry().to_owned();
        match classify(&source) {
            Class::NotFound => Error::NotFound {
                reference: reference_s,
            },
            Class::Denied => Error::Unauthorized {
                registry,
                reference: reference_s,
                source,
            },
            Class::Certificate => Error::Tls {
                registry,
                reference: reference_s,
                source,
            },
            Class::Egress => Error::Egress {
                reference: reference_s,
                reason: match &source {
                    OciDistributionError::RequestError(e) => crate::egress::refusal_in(e)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    _ => String::new(),
                },
            },
            Class::UnknownHost => Error::UnknownHost {
                registry,
                reference: reference_s,
                source,
            },
            Class::Unreachable => Error::Unreachable {
                registry,
                reference: reference_s,
                scheme,
                source,
            },
            Class::Throttled | Class::Broken | Class::Other => Error::Registry {
                reference: reference_s,
                source,
            },
        }
    }
}

impl Error {
    /// A reference that is not one ([`wasm_oci_artifact::Error::InvalidReference`]).
    pub(crate) fn invalid_reference(
        reference: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Artifact(wasm_oci_artifact::Error::InvalidReference {
            reference: reference.into(),
            reason: reason.into(),
        })
    }

    /// A manifest that cannot be used ([`wasm_oci_artifact::Error::InvalidManifest`]).
    pub(crate) fn invalid_manifest(
        reference: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Artifact(wasm_oci_artifact::Error::InvalidManifest {
            reference: reference.into(),
            reason: reason.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError, OciErrorCode};

    #[test]
    fn the_choice_of_manifest_says_the_same_in_the_fetcher() {
        use wasm_oci_artifact::Error as A;
        let reference = || "localhost:5000/x:1".to_owned();
        for e in [
            A::NoMatchingPlatform {
                reference: reference(),
                platforms: vec!["linux/amd64".into()],
            },
            A::NoMatchingPlatform {
                reference: reference(),
                platforms: vec![],
            },
            A::NoWasmLayer {
                reference: reference(),
                config_media_type: "c".into(),
                layer_media_types: vec!["l".into()],
            },
            A::AmbiguousWasmLayers {
                reference: reference(),
                count: 3,
            },
            A::InvalidManifest {
                reference: reference(),
                reason: "r".into(),
            },
        ] {
            let text = e.to_string();
            let converted = Error::from(e);
            assert!(matches!(converted, Error::Artifact(_)), "{converted:?}");
            assert_eq!(converted.to_string(), text);
        }
    }

    fn registry_error(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "unknown".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://r/v2/x/manifests/v1".into(),
        }
    }

    #[test]
    fn every_not_found_code_is_reported_as_not_found() {
        let reference: oci_client::Reference = "localhost:5000/x:v1".parse().unwrap();
        for code in [
            OciErrorCode::ManifestUnknown,
            OciErrorCode::NameUnknown,
            OciErrorCode::BlobUnknown,
            OciErrorCode::NotFound,
        ] {
            let name = format!("{code:?}");
            let e = Error::from_oci(registry_error(code), &reference, "http");
            assert!(matches!(e, Error::NotFound { .. }), "{name}: {e:?}");
        }
        let e = Error::from_oci(registry_error(OciErrorCode::Denied), &reference, "http");
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    }
}
