//! TLS for our HTTP client, with the system's trust roots read on the first handshake instead
//! of when the client is built.
//!
//! reqwest's platform verifier reads every certificate of the system's store when a client is
//! built: on Debian, a 140-certificate bundle and 440 files in `/etc/ssl/certs`, about 5 ms per
//! process. A plain-HTTP registry (a local one, `--plain-http`) never needs them, and a host
//! with no store at all (a minimal edge image) could not even build the client:
//! "No CA certificates were loaded from the system", before any request. Here the same
//! verifier is made on first use, once per client; an empty store fails that handshake only.

use std::sync::{Arc, OnceLock};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// A client configuration that trusts the system's roots plus the PEM certificates in
/// `extra` (each the contents of a file, possibly a bundle), loading them when the first
/// server presents its certificate.
pub(crate) fn lazy_roots(extra: &[Vec<u8>]) -> Result<rustls::ClientConfig, rustls::Error> {
    client_config(extra, None, false)
}

/// A client certificate chain and its private key, from PEM (the key may be in the same file
/// as the certificates, as containerd accepts it).
pub(crate) type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificates of `chain` and the private key in `key`, both PEM.
pub(crate) fn identity(chain: &[u8], key: &[u8]) -> Result<Identity, rustls::Error> {
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rustls::Error::General(format!("reading the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(rustls::Error::General("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| rustls::Error::General(format!("reading the private key: {e}")))?;
    Ok((certs, key))
}

/// [`lazy_roots`], presenting `identity` to servers that ask for a client certificate, and
/// with `skip_verify` accepting any server certificate (the operator's `skip_verify` for
/// one host in its hosts.toml).
pub(crate) fn client_config(
    extra: &[Vec<u8>],
    identity: Option<Identity>,
    skip_verify: bool,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let extra = extra
        .iter()
        .flat_map(|pem| CertificateDer::pem_slice_iter(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rustls::Error::General(format!("reading a CA certificate: {e}")))?;
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if skip_verify {
        Arc::new(AcceptAny(provider.clone()))
    } else {
        Arc::new(LazyVerifier {
            extra,
            provider: provider.clone(),
            verifier: OnceLock::new(),
        })
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    // reqwest offers HTTP/1.1 when it builds the configuration itself; so do we.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any server certificate; signatures are still checked, so the handshake is whole.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// webpki's refusal of a CA certificate presented as a server's own.
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            )
        }
        _ => false,
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// reqwest's own verifier (the platform's), made on the first certificate to check.
#[derive(Debug)]
struct LazyVerifier {
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl LazyVerifier {
    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.extra.iter().cloned(),
                    self.provider.clone(),
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The very certificate the user listed, which `openssl req -x509` marks CA:TRUE
            // (a self-signed registry certificate made the usual way): trusted as it is, for
            // the names it carries, as curl and skopeo trust it. The handshake's signature
            // still proves the server holds its key.
            Err(e)
                if is_ca_used_as_end_entity(&e)
                    && self.extra.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| e.clone())?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| {
                        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    })?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    // The signatures are checked with the provider's algorithms, as the platform verifier
    // checks them; no trust roots are involved.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
