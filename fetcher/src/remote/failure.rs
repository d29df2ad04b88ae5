//! A request to a registry that did not succeed, as the transport sees it ([`Failure`]):
//! the registry's answer with its status and `Retry-After`, or what kept it from answering.
//! It becomes the crate's [`Error`] once, in [`Failure::into_error`], where the reference
//! that was asked for is known.

use std::time::{Duration, SystemTime};

use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::answer::{Class, classify, is_connection_refused, is_plain_http_answer};
use super::body::read_at_most;
use super::retry::{Transient, in_words};
use crate::error::Error;
use wasm_oci_artifact::text::printable;

/// An error body is kept up to this size for the message; the rest is not read.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A request that did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The error as oci-client would report it, the status the registry answered (when it
    /// answered), and when it said to come back.
    Request {
        error: OciDistributionError,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// A manifest whose bytes do not hash to the digest asked for or announced.
    Digest { expected: String, actual: String },
    /// A digest of an algorithm that is not verified here: refused, never used unverified.
    UnsupportedDigest { digest: String },
    /// Credentials would have gone to a plain-HTTP token service of an HTTPS registry.
    InsecureRealm { realm: String },
    /// A TLS handshake was answered in plain HTTP: asking again will not change that.
    PlainHttp { error: OciDistributionError },
    /// Nothing listens on a loopback port: no network in between to recover, so asking
    /// again only delays the answer.
    Refused { error: OciDistributionError },
    /// A plain-HTTP request was answered that the server speaks HTTPS (Go's TLS servers,
    /// Docker Distribution among them, say so in a 400).
    HttpsOnly { error: OciDistributionError },
}

impl Failure {
    /// As our error, naming `reference`.
    pub(crate) fn into_error(self, reference: &Reference, scheme: &'static str) -> Error {
        match self {
            Failure::Request { error, .. } => Error::from_oci(error, reference, scheme),
            Failure::Digest { expected, actual } => Error::DigestMismatch {
                reference: reference.whole(),
                expected,
                actual,
            },
            Failure::UnsupportedDigest { digest } => Error::UnsupportedDigest {
                reference: reference.whole(),
                digest,
            },
            Failure::InsecureRealm { realm } => Error::InsecureTokenService {
                registry: reference.registry().to_owned(),
                reference: reference.whole(),
                realm,
            },
            Failure::PlainHttp { error } => Error::PlainHttp {
                registry: reference.registry().to_owned(),
                source: error,
            },
            Failure::Refused { error } => Error::from_oci(error, reference, scheme),
            Failure::HttpsOnly { error } => Error::SpeaksHttps {
                registry: reference.registry().to_owned(),
                source: error,
            },
        }
    }
}

impl Failure {
    /// The registry answered that the manifest, blob or repository does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Failure::Request { error, .. } if classify(error) == Class::NotFound)
    }

    /// The registry refused a manifest for a blob it references: unknown to it
    /// (`MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN`), or a blob link it could not read back
    /// (`DIGEST_INVALID`: Distribution says so of a link file another upload of the same
    /// blob is rewriting). Sending the blobs again may mend either.
    pub(crate) fn is_manifest_blob_missing(&self) -> bool {
        let Failure::Request {
            error: OciDistributionError::RegistryError { envelope, .. },
            ..
        } = self
        else {
            return false;
        };
        envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestBlobUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::DigestInvalid
            )
        })
    }
}

impl Failure {
    /// The HTTP status the registry answered, when it answered one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Request { status, .. } => *status,
            _ => None,
        }
    }
}

impl From<OciDistributionError> for Failure {
    fn from(error: OciDistributionError) -> Self {
        Failure::Request {
            error,
            status: None,
            retry_after: None,
        }
    }
}

impl From<reqwest::Error> for Failure {
    /// Tells apart the transport failures no retry can help: a TLS handshake answered in
    /// plain HTTP, and a refused connection to a loopback port.
    fn from(e: reqwest::Error) -> Self {
        let plain = is_plain_http_answer(&e);
        let refused = e.is_connect()
            && is_connection_refused(&e)
            && e.url()
                .and_then(|u| u.host_str())
                .is_some_and(wasm_oci_artifact::reference::is_loopback);
        let error = OciDistributionError::RequestError(e);
        if plain {
            Failure::PlainHttp { error }
        } else if refused {
            Failure::Refused { error }
        } else {
            error.into()
        }
    }
}

impl Failure {
    /// The host could not be connected to (refused, unreachable, timed out connecting), or
    /// kept silent longer than its read timeout.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Failure::Request {
                error: OciDistributionError::RequestError(e),
                ..
            } => e.is_connect() || e.is_timeout(),
            // Nothing listens on a loopback port: as unreachable as a host can be.
            Failure::Refused { .. } => true,
            _ => false,
        }
    }
}

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Request { error, .. } => classify(error).is_transient(),
            Failure::Digest { .. } | Failure::UnsupportedDigest { .. } => false,
            Failure::InsecureRealm { .. } => false,
            Failure::PlainHttp { .. } | Failure::Refused { .. } | Failure::HttpsOnly { .. } => {
                false
            }
        }
    }
    fn cause(&self) -> String {
        match self {
            Failure::Request {
                error: OciDistributionError::RegistryError { envelope, .. },
                status: Some(status),
                ..
            } => match envelope.errors.first() {
                // The registry's own words, after the status: `429: rate limited`.
                Some(first) => format!("the registry answered {status}: {}", first.message),
                None => format!("the registry answered {status}"),
            },
            Failure::Request { error, .. } => in_words(error),
            other => other.to_string(),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Request { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Request { error, .. }
            | Failure::PlainHttp { error }
            | Failure::Refused { error }
            | Failure::HttpsOnly { error } => error.fmt(f),
            Failure::Digest { expected, actual } => {
                write!(f, "content hashes to {actual}, not {expected}")
            }
            Failure::UnsupportedDigest { digest } => {
                write!(
                    f,
                    "the digest {digest} is of an algorithm not verified here"
                )
            }
            Failure::InsecureRealm { realm } => {
                write!(
                    f,
                    "credentials are not sent to the plain-HTTP token service {realm}"
                )
            }
        }
    }
}

/// A spec violation: the registry or its token service answered what it must not.
pub(crate) fn violation(text: String) -> Failure {
    OciDistributionError::SpecViolationError(text).into()
}

/// An unsuccessful response as the error oci-client would have made of it, with its
/// `Retry-After`.
pub(crate) async fn failure(response: reqwest::Response) -> Failure {
    let status = response.status();
    let url = response.url().to_string();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = read_at_most(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    // A client error may carry the distribution spec's error envelope; anything else is
    // reported with its status and body. Both are the registry's text, printed escaped.
    let envelope = status
        .is_client_error()
        .then(|| serde_json::from_slice::<OciEnvelope>(&body).ok())
        .flatten()
        .map(|mut envelope| {
            for error in &mut envelope.errors {
                error.message = printable(&error.message);
            }
            envelope
        });
    let https_only = status == StatusCode::BAD_REQUEST
        && url.starts_with("http:")
        && String::from_utf8_lossy(&body).contains("HTTP request to an HTTPS server");
    let error = match (status, envelope) {
        (StatusCode::UNAUTHORIZED, _) => OciDistributionError::UnauthorizedError { url },
        (_, Some(envelope)) => OciDistributionError::RegistryError { envelope, url },
        (s, None) => OciDistributionError::ServerError {
            code: s.as_u16(),
            url,
            // Without the line end most bodies close with, which would print as `\n`.
            message: printable(String::from_utf8_lossy(&body).trim_end()),
        },
    };
    if https_only {
        return Failure::HttpsOnly { error };
    }
    Failure::Request {
        error,
        status: Some(status.as_u16()),
        retry_after,
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciError, OciErrorCode};

    #[test]
    fn a_failure_is_not_found_for_every_not_found_code_and_a_bare_404() {
        let answered = |code| Failure::Request {
            error: OciDistributionError::RegistryError {
                envelope: OciEnvelope {
                    errors: vec![OciError {
                        code,
                        message: "unknown".into(),
                        detail: serde_json::Value::Null,
                    }],
                },
                url: "http://r/v2/x/blobs/sha256:0".into(),
            },
            status: Some(404),
            retry_after: None,
        };
        for code in [
            OciErrorCode::ManifestUnknown,
            OciErrorCode::NameUnknown,
            OciErrorCode::BlobUnknown,
            OciErrorCode::NotFound,
        ] {
            let name = format!("{code:?}");
            assert!(answered(code).is_not_found(), "{name}");
        }
        assert!(!answered(OciErrorCode::Denied).is_not_found());
        let bare: Failure = OciDistributionError::ServerError {
            code: 404,
            url: "http://r/v2/x/blobs/sha256:0".into(),
            message: String::new(),
        }
        .into();
        assert!(bare.is_not_found());
        assert!(!bare.is_transient());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(90);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            wait > Duration::from_secs(85) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
