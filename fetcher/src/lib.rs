//! The wasm-oci fetcher: from an OCI reference to a verified wasm blob in the cache, and back.
//!
//! It resolves a reference to a manifest (choosing the wasm entry of an index), finds the wasm
//! layer by media type and streams it into [`wasm_oci_cache`]; `push` writes the CNCF or the
//! wasm-to-oci layout. It knows nothing of wasmtime.

#![deny(missing_docs)]

pub mod auth;
mod error;
mod inspect;
pub mod layout;
mod manifest;
mod pull;
mod push;
mod reference;
mod registry;
mod retry;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};
use wasm_oci_cache::Cache;

pub use error::Error;
pub use inspect::{ComponentConfig, Interface, interface};
pub use manifest::{
    CNCF_CONFIG_MEDIA_TYPE, CNCF_LAYER_MEDIA_TYPE, Choice, WASM_LAYER_MEDIA_TYPES,
    WASM_TO_OCI_CONFIG_MEDIA_TYPE, WASM_TO_OCI_LAYER_MEDIA_TYPE, choose,
};
pub use oci_client::Reference as OciReference;
pub use pull::Pulled;
pub use push::{PushFormat, Pushed, WasmKind};
pub use reference::{is_loopback, parse_reference};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("wasm-oci/", env!("CARGO_PKG_VERSION"));

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Speak plain HTTP to every registry, not only to loopback ones.
    pub plain_http: bool,
    /// Where credentials come from.
    pub credentials: auth::Credentials,
    /// PEM files of extra certificate authorities to trust (`--ca-file`, `SSL_CERT_FILE`).
    pub ca_files: Vec<std::path::PathBuf>,
    /// Accept any certificate. Dangerous; the CLI warns.
    pub insecure_skip_tls_verify: bool,
}

impl RegistryOptions {
    /// What the environment says, for processes without flags (the containerd shim):
    /// `WASM_OCI_PLAIN_HTTP`, `SSL_CERT_FILE`, and docker's config for credentials.
    pub fn from_env() -> Self {
        // Read as clap reads the CLI's `--plain-http` from the same variable.
        let plain_http = std::env::var("WASM_OCI_PLAIN_HTTP").is_ok_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no" | "off" | "n" | "f"
            )
        });
        Self {
            plain_http,
            credentials: auth::Credentials::DockerConfig,
            ca_files: std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .collect(),
            insecure_skip_tls_verify: false,
        }
    }
}

/// Receives progress of blob transfers; the CLI draws bars with it, libraries never print.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (when known) of `digest` for `reference` begins.
    fn transfer(&self, reference: &str, digest: &str, total: Option<u64>) -> Box<dyn Transfer>;
}

/// One blob transfer's progress.
pub trait Transfer: Send + Sync {
    /// The transfer stands at `bytes` (it resumed there, or restarted from 0).
    fn set_position(&self, bytes: u64);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The transfer ended, well or not.
    fn finish(&self);
}

/// Moves wasm artifacts between registries and a [`Cache`].
pub struct Fetcher {
    cache: Cache,
    options: RegistryOptions,
    progress: Option<Arc<dyn Progress>>,
    /// What each loopback registry speaks, probed once.
    probes: Mutex<HashMap<String, Probe>>,
    /// How to speak to each registry, for manifests and blobs.
    remotes: Mutex<HashMap<String, Arc<registry::Registry>>>,
    /// The contents of `options.ca_files`, read on first use.
    extra_roots: OnceLock<Vec<Vec<u8>>>,
}

impl Fetcher {
    /// A fetcher storing into `cache`.
    pub fn new(cache: Cache, options: RegistryOptions) -> Self {
        // reqwest is built without a default TLS provider; pick ring once per process. An error
        // only means another part of the process installed one first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            cache,
            options,
            progress: None,
            probes: Mutex::default(),
            remotes: Mutex::default(),
            extra_roots: OnceLock::new(),
        }
    }

    /// Reports blob transfers to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The cache this fetcher stores into.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// `http` with `--plain-http`; for a loopback registry, whatever it speaks (docker tries
    /// TLS there and falls back to plain HTTP); else always `https`, never downgraded.
    pub fn scheme(&self, reference: &Reference) -> &'static str {
        match self.probe(reference.registry()) {
            Some(probe) => probe.scheme,
            None if self.options.plain_http => "http",
            None => "https",
        }
    }

    /// What a loopback registry answered when asked what it speaks, asked once; `None` for
    /// another registry, or with `--plain-http`, where nothing is asked.
    fn probe(&self, registry: &str) -> Option<Probe> {
        if self.options.plain_http || !is_loopback(registry) {
            return None;
        }
        let mut probes = self.probes.lock().expect("probe map lock");
        Some(
            *probes
                .entry(registry.to_owned())
                .or_insert_with(|| Probe::new(registry)),
        )
    }

    /// How to speak to `reference`'s registry.
    fn remote(&self, reference: &Reference) -> Result<Arc<registry::Registry>> {
        let registry = reference.registry().to_owned();
        if let Some(remote) = self.remotes.lock().expect("remote map lock").get(&registry) {
            return Ok(remote.clone());
        }
        let http = self.new_http().map_err(|e| {
            Error::from_oci(
                OciDistributionError::RequestError(e),
                reference,
                self.scheme(reference),
            )
        })?;
        let open = self.probe(reference.registry()).is_some_and(|p| p.open);
        let remote = Arc::new(registry::Registry::new(
            http,
            self.client_settings(reference),
            self.auth(reference)?,
            self.scheme(reference),
            open,
        ));
        let mut remotes = self.remotes.lock().expect("remote map lock");
        Ok(remotes.entry(registry).or_insert(remote).clone())
    }

    /// The PEM certificate authorities of `--ca-file` and `SSL_CERT_FILE`, those readable;
    /// read once, for both clients of every registry.
    fn extra_roots(&self) -> &[Vec<u8>] {
        self.extra_roots.get_or_init(|| {
            self.options
                .ca_files
                .iter()
                .filter_map(|path| match std::fs::read(path) {
                    Ok(data) => Some(data),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read CA file");
                        None
                    }
                })
                .collect()
        })
    }

    /// The HTTP client for manifests and blobs, set up as oci-client sets up its own, except
    /// that the system's trust roots are read on the first TLS handshake (see [`tls`]).
    fn new_http(&self) -> Result<reqwest::Client, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT);
        if self.options.insecure_skip_tls_verify {
            // Nothing is verified, so there are no roots to load.
            return builder.danger_accept_invalid_certs(true).build();
        }
        match tls::lazy_roots(self.extra_roots()) {
            Ok(config) => builder.tls_backend_preconfigured(config).build(),
            // A CA file that is not PEM: reqwest's own parser says so, as before.
            Err(e) => {
                tracing::debug!(error = %e, "falling back to reqwest's TLS setup");
                let roots = self
                    .extra_roots()
                    .iter()
                    .map(|pem| reqwest::Certificate::from_pem(pem))
                    .collect::<Result<Vec<_>, _>>()?;
                builder.tls_certs_merge(roots).build()
            }
        }
    }

    /// What to present to the registry of `reference`.
    fn auth(&self, reference: &Reference) -> Result<auth::Login> {
        self.options.credentials.for_registry(reference.registry())
    }

    /// What oci-client's client for `reference`'s registry is made of.
    fn client_settings(&self, reference: &Reference) -> ClientSettings {
        ClientSettings {
            scheme: self.scheme(reference),
            extra_roots: self.extra_roots().to_vec(),
            insecure_skip_tls_verify: self.options.insecure_skip_tls_verify,
        }
    }
}

/// oci-client's client for one registry, as settings until it is needed: each one builds two
/// HTTP clients, and each of those reads the system's trust roots (see [`tls`]).
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    scheme: &'static str,
    extra_roots: Vec<Vec<u8>>,
    insecure_skip_tls_verify: bool,
}

impl ClientSettings {
    /// oci-client's client, or why it cannot be made: its `Client` also builds reqwest's
    /// default client, which panics on a host with no trust store. Our own TLS has shown
    /// there is one when it verified this registry with the system's roots alone; otherwise
    /// (plain HTTP, a CA file, no verification) the store is looked at first.
    pub(crate) fn build(&self) -> Result<Client, OciDistributionError> {
        if (self.scheme == "http" || !self.extra_roots.is_empty() || self.insecure_skip_tls_verify)
            && let Err(e) = tls::system_roots()
        {
            return Err(OciDistributionError::GenericError(Some(format!(
                "this host has no trust store ({e}), and oci-client, which fetches the registry's \
                 token, needs one: install ca-certificates, or point SSL_CERT_FILE at a CA bundle"
            ))));
        }
        let protocol = match self.scheme {
            "http" => ClientProtocol::Http,
            _ => ClientProtocol::Https,
        };
        let extra_root_certificates = self
            .extra_roots
            .iter()
            .map(|data| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: data.clone(),
            })
            .collect();
        Ok(Client::new(ClientConfig {
            protocol,
            extra_root_certificates,
            accept_invalid_certificates: self.insecure_skip_tls_verify,
            // Index entries are chosen by `manifest::select_platform`, not by the host's platform.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        }))
    }
}

/// What a loopback registry answered when asked, in plain HTTP, what it speaks.
#[derive(Debug, Clone, Copy)]
struct Probe {
    scheme: &'static str,
    /// Its `/v2/` answered 200 with no challenge: it wants nothing of an anonymous client,
    /// and the handshake need not ask again.
    open: bool,
}

impl Probe {
    /// An HTTP answer means plain HTTP; anything else (a TLS alert, a closed connection)
    /// means TLS. Nothing secret is sent.
    fn new(registry: &str) -> Probe {
        use std::io::{Read, Write};
        use std::net::{TcpStream, ToSocketAddrs};
        let host = registry.trim_start_matches('[').replace(']', "");
        let addr = if registry
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        {
            registry.to_owned()
        } else {
            format!("{host}:443")
        };
        let answer = (|| -> std::io::Result<Vec<u8>> {
            let sock = addr
                .to_socket_addrs()?
                .next()
                .ok_or(std::io::ErrorKind::NotFound)?;
            let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n")?;
            let mut answer = Vec::new();
            // A TLS server closes or sends an alert; Go's even answers in HTTP that it wants HTTPS.
            let _ = stream.take(1024).read_to_end(&mut answer);
            Ok(answer)
        })();
        let probe = match answer {
            Ok(a) if a.starts_with(b"HTTP/") && !String::from_utf8_lossy(&a).contains("HTTPS") => {
                Probe {
                    scheme: "http",
                    open: answers_openly(&a),
                }
            }
            Ok(_) => Probe {
                scheme: "https",
                open: false,
            },
            // Unreachable: say http, so the error names the registry as docker would.
            Err(_) => Probe {
                scheme: "http",
                open: false,
            },
        };
        tracing::debug!(%registry, scheme = probe.scheme, open = probe.open, "probed a loopback registry");
        probe
    }
}

/// Whether an HTTP answer, headers whole, is a 200 without `WWW-Authenticate`.
fn answers_openly(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, _)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let mut lines = head.lines();
    let ok = lines
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    ok && !lines.any(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("www-authenticate"))
    })
}

impl Fetcher {
    /// Checks that the configured credentials open `registry`, as `docker login` does before it
    /// stores them: a bearer registry must hand out a token, a basic one must accept a request.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        use oci_client::errors::OciDistributionError as E;
        let probe = Reference::with_tag(
            registry.to_owned(),
            "wasm-oci/login".to_owned(),
            "latest".to_owned(),
        );
        let scheme = self.scheme(&probe);
        let client = self
            .client_settings(&probe)
            .build()
            .map_err(|e| Error::from_oci(e, &probe, scheme))?;
        let auth = self.auth(&probe)?.registry_auth();
        client
            .auth(&probe, &auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| Error::from_oci(e, &probe, scheme))?;
        match client.catalog(&probe, &auth, Some(1), None).await {
            Ok(_) => Ok(()),
            // Listing may be forbidden to anyone; the credentials themselves were accepted.
            Err(E::ServerError {
                code: 403 | 404, ..
            }) => Ok(()),
            Err(E::RegistryError { envelope, .. })
                if envelope.errors.iter().all(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::Denied
                            | oci_client::errors::OciErrorCode::Unsupported
                    )
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::from_oci(e, &probe, scheme)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::answers_openly;

    #[test]
    fn only_a_whole_unchallenged_200_is_open() {
        let open = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\r\n{}";
        assert!(answers_openly(open));
        let challenged =
            b"HTTP/1.0 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"r\"\r\n\r\n";
        assert!(!answers_openly(challenged));
        let odd = b"HTTP/1.0 200 OK\r\nwww-authenticate : Bearer realm=\"r\"\r\n\r\n";
        assert!(!answers_openly(odd));
        // Cut off before the headers end: nothing can be concluded.
        assert!(!answers_openly(b"HTTP/1.0 200 OK\r\nContent-Le"));
    }
}
