//! What a registry's answer (or the lack of one) means, decided in one place: not found,
//! access denied, throttled, a certificate refused, unreachable, worth another try. The
//! crate's error, the retry loop and the mirror fallback all ask [`classify`], so that the
//! three can no longer disagree about, say, whether `BLOB_UNKNOWN` means "not found".

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// What kind of failure a registry request ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The manifest, blob, tag or repository does not exist (404, or a "not found" code).
    NotFound,
    /// Credentials are wanted, or were refused (401, 403, `UNAUTHORIZED`, `DENIED`).
    Denied,
    /// The registry asks the client to slow down (429, `TOOMANYREQUESTS`).
    Throttled,
    /// The registry's TLS certificate was not accepted: asking again will not change that.
    Certificate,
    /// The host could not be connected to, or did not answer in time.
    Unreachable,
    /// A connection the egress rule forbids (see [`crate::egress`]) was not made: asking
    /// again will not change that.
    Egress,
    /// A host name does not resolve: asking again will not change that.
    UnknownHost,
    /// A server error or a connection broken mid-answer: may pass if asked again.
    Broken,
    /// Anything else: a client error, a violation of the spec.
    Other,
}

impl Class {
    /// Worth another try: what may pass by itself.
    pub(crate) fn is_transient(self) -> bool {
        matches!(self, Class::Throttled | Class::Unreachable | Class::Broken)
    }
}

/// The error codes of the distribution spec that say the thing asked for does not exist.
pub(crate) fn is_not_found_code(code: &OciErrorCode) -> bool {
    matches!(
        code,
        OciErrorCode::ManifestUnknown
            | OciErrorCode::NameUnknown
            | OciErrorCode::BlobUnknown
            | OciErrorCode::NotFound
    )
}

/// Classifies a failed request.
pub(crate) fn classify(error: &OciDistributionError) -> Class {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => Class::NotFound,
        OciDistributionError::RegistryError { envelope, .. } => {
            let any = |f: fn(&OciErrorCode) -> bool| envelope.errors.iter().any(|e| f(&e.code));
            if any(is_not_found_code) {
                Class::NotFound
            } else if any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                Class::Denied
            } else if any(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                Class::Throttled
            } else {
                Class::Other
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => Class::NotFound,
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        }
        | OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Class::Denied,
        OciDistributionError::ServerError { code: 429, .. } => Class::Throttled,
        OciDistributionError::ServerError { code, .. } if *code >= 500 => Class::Broken,
        OciDistributionError::RequestError(e) => {
            let status = e.status().map(|s| s.as_u16());
            if matches!(status, Some(401 | 403)) {
                Class::Denied
            } else if crate::egress::refusal_in(e).is_some() {
                Class::Egress
            } else if crate::egress::is_unknown_name(e) {
                Class::UnknownHost
            } else if is_certificate_error(e) {
                Class::Certificate
            } else if e.is_connect() || e.is_timeout() {
                Class::Unreachable
            } else if status == Some(429) {
                Class::Throttled
            } else if e.is_body() || e.is_request() || status.is_some_and(|s| s >= 500) {
                // `is_request` covers a pooled connection the server closed under us.
                Class::Broken
            } else {
                Class::Other
            }
        }
        OciDistributionError::IoError(_) => Class::Broken,
        _ => Class::Other,
    }
}

/// Whether a transport error is a refused certificate (unknown issuer, wrong name, expired),
/// or no certificate could be checked at all: the host has no trust store and none was given.
pub(crate) fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        let text = err.to_string();
        if text.contains("invalid peer certificate")
            || text.contains("UnknownIssuer")
            || text.contains(NO_TRUST_STORE)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Whether a TLS handshake was answered by a server speaking plain HTTP: rustls reads the
/// `HTTP/1.1 400` as a record of an invalid content type.
pub(crate) fn is_plain_http_answer(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // An io::Error hides the error it carries from `source()`, and hyper wraps rustls's
        // in two of them: look inside each.
        let mut inner: &(dyn std::error::Error + 'static) = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            );
        }
        cur = err.source();
    }
    false
}

/// Whether the root of a transport error is a refused connection.
pub(crate) fn is_connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What rustls-platform-verifier says when the system's store holds no certificate.
pub(crate) const NO_TRUST_STORE: &str = "No CA certificates were loaded from the system";

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    /// A registry's error envelope with one error of `code`.
    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "m".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://r/v2/x/manifests/1".into(),
        }
    }

    #[test]
    fn every_not_found_code_means_not_found() {
        for code in [
            OciErrorCode::ManifestUnknown,
            OciErrorCode::NameUnknown,
            OciErrorCode::BlobUnknown,
            OciErrorCode::NotFound,
        ] {
            let name = format!("{code:?}");
            assert_eq!(classify(&envelope(code)), Class::NotFound, "{name}");
            assert!(!Class::NotFound.is_transient());
        }
        let bare_404 = OciDistributionError::ServerError {
            code: 404,
            url: "http://r/v2/x/blobs/sha256:0".into(),
            message: String::new(),
        };
        assert_eq!(classify(&bare_404), Class::NotFound);
    }

    #[test]
    fn denied_throttled_and_server_errors_are_told_apart() {
        for code in [OciErrorCode::Unauthorized, OciErrorCode::Denied] {
            assert_eq!(classify(&envelope(code)), Class::Denied);
        }
        assert_eq!(
            classify(&envelope(OciErrorCode::Toomanyrequests)),
            Class::Throttled
        );
        assert_eq!(
            classify(&envelope(OciErrorCode::ManifestInvalid)),
            Class::Other
        );
        let status = |code| OciDistributionError::ServerError {
            code,
            url: "http://r/v2/".into(),
            message: String::new(),
        };
        assert_eq!(classify(&status(401)), Class::Denied);
        assert_eq!(classify(&status(403)), Class::Denied);
        assert_eq!(classify(&status(429)), Class::Throttled);
        assert_eq!(classify(&status(503)), Class::Broken);
        assert_eq!(classify(&status(400)), Class::Other);
        assert!(Class::Throttled.is_transient() && Class::Broken.is_transient());
        assert!(!Class::Denied.is_transient() && !Class::Other.is_transient());
    }
}
