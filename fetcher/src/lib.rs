//! The wasm-oci fetcher: from an OCI reference to a verified wasm blob in the cache, and back.
//!
//! It resolves a reference to a manifest (choosing the wasm entry of an index), finds the wasm
//! layer by media type and streams it into [`wasm_oci_cache`]; `push` writes the CNCF or the
//! wasm-to-oci layout. It knows nothing of wasmtime.

#![deny(missing_docs)]

pub mod auth;
mod error;
pub mod hosts;
mod inspect;
pub mod layout;
mod manifest;
mod pull;
mod push;
mod registry;
mod resolve;
mod retry;
mod signatures;
mod tls;
pub mod trust;

/// References and registry names: [`wasm_oci_artifact::reference`], where they live now.
pub(crate) use wasm_oci_artifact::reference;
/// Text made safe to print: [`wasm_oci_artifact::text`], where it lives now.
pub use wasm_oci_artifact::text;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use oci_client::Reference;
use oci_client::errors::OciDistributionError;
use wasm_oci_cache::Cache;

pub use error::Error;
pub use inspect::{ComponentConfig, Interface, interface, interface_of_file};
pub use manifest::{
    CNCF_CONFIG_MEDIA_TYPE, CNCF_LAYER_MEDIA_TYPE, Choice, WASM_LAYER_MEDIA_TYPES,
    WASM_TO_OCI_CONFIG_MEDIA_TYPE, WASM_TO_OCI_LAYER_MEDIA_TYPE, choose,
};
pub use oci_client::Reference as OciReference;
pub use pull::Pulled;
pub use push::{PushFormat, Pushed, WasmKind};
pub use resolve::{PullPolicy, Resolved, resolve_cached};
pub use signatures::Signed;
use wasm_oci_artifact::is_loopback;
pub use wasm_oci_artifact::{canonical_registry, is_node_local, registry_host, registry_key};

/// Parses `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` ([`wasm_oci_artifact::parse_reference`]),
/// with this crate's error.
pub fn parse_reference(text: &str) -> Result<Reference> {
    Ok(wasm_oci_artifact::parse_reference(text)?)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A mirror is less trusted, and not worth waiting for, than the origin it stands in for:
/// connecting to one may take this long unless its hosts.toml's `dial_timeout` says otherwise,
const MIRROR_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// it may be silent (no byte, the response's head included) for this long,
const MIRROR_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// a manifest from it (at most 4 MiB) must come whole within this,
pub(crate) const MIRROR_DOCUMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// and a blob from it must come at [`MIRROR_MIN_BYTES`] per window of this (or whole), else
/// the mirror is given up for the rest of the process and the next host asked.
pub(crate) const MIRROR_PACE_WINDOW: Duration = Duration::from_secs(10);
/// See [`MIRROR_PACE_WINDOW`]: 6.4 KiB/s.
pub(crate) const MIRROR_MIN_BYTES: u64 = 64 << 10;
const USER_AGENT: &str = concat!("wasm-oci/", env!("CARGO_PKG_VERSION"));
/// Redirects followed before giving up, as browsers and reqwest's default policy do.
pub(crate) const MAX_REDIRECTS: usize = 10;

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
    /// Refuse a wasm layer larger than this before downloading any of it (the shim's
    /// `limits.max_module_size`); `None`: no limit.
    pub max_layer_size: Option<u64>,
    /// containerd's registry host configuration directory (`hosts.toml` per registry): the
    /// mirrors tried before each registry, and the TLS and headers of each host.
    pub hosts_dir: Option<std::path::PathBuf>,
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
            max_layer_size: None,
            hosts_dir: hosts::hosts_dir(None),
        }
    }
}

/// Looks at an artifact's config (its bytes) and refuses it, saying why, before its layer is
/// downloaded.
pub type ConfigCheck = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// Receives progress of blob transfers; the CLI draws bars with it, libraries never print.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (when known) of `digest`, `reference`'s `blob`, begins.
    fn transfer(
        &self,
        reference: &str,
        blob: Blob,
        digest: &str,
        total: Option<u64>,
    ) -> Box<dyn Transfer>;
}

/// Which blob of an artifact a transfer moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// The config document.
    Config,
    /// The wasm layer.
    Layer,
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
    /// Looks at a pull's config before its layer is fetched.
    config_check: Option<ConfigCheck>,
    /// Which signatures a pulled reference needs.
    policy: Arc<wasm_oci_trust::Policy>,
    /// Fetch and keep signatures even when the policy needs none (prefetch, for nodes
    /// that verify later, offline).
    keep_signatures: bool,
    /// What each loopback registry speaks, probed once; the lock is held only to find the
    /// cell, never across the probe.
    probes: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Probe>>>>,
    /// The hosts of each registry, mirrors first, for manifests and blobs.
    remotes: Mutex<HashMap<String, Arc<[Endpoint]>>>,
    /// The contents of `options.ca_files`, read on first use.
    extra_roots: OnceLock<Vec<Vec<u8>>>,
}

impl Fetcher {
    /// A fetcher storing into `cache` that enforces `policy` on every pull: a reference it
    /// refuses is never recorded in the cache. There is no default: a caller that means to
    /// accept anything says so ([`wasm_oci_trust::Policy::accept_anything`]).
    pub fn new(
        cache: Cache,
        options: RegistryOptions,
        policy: Arc<wasm_oci_trust::Policy>,
    ) -> Self {
        // reqwest is built without a default TLS provider; pick ring once per process. An error
        // only means another part of the process installed one first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            cache,
            options,
            progress: None,
            config_check: None,
            policy,
            keep_signatures: false,
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

    /// Fetches a pull's config before its layer and hands it to `check`, which may refuse the
    /// artifact (with the reason) before any of its layer is downloaded.
    pub fn with_config_check(mut self, check: ConfigCheck) -> Self {
        self.config_check = Some(check);
        self
    }

    /// Fetches and keeps signatures on every pull, even when the policy needs none.
    pub fn keeping_signatures(mut self) -> Self {
        self.keep_signatures = true;
        self
    }

    /// The signature policy this fetcher enforces.
    pub fn policy(&self) -> &wasm_oci_trust::Policy {
        &self.policy
    }

    /// The cache this fetcher stores into.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// `http` with `--plain-http`; for a loopback registry, whatever it speaks (docker tries
    /// TLS there and falls back to plain HTTP); else always `https`, never downgraded. A
    /// loopback registry's answer is known once a pull, push or login has probed it; until
    /// then it is taken to be plain HTTP, as the probe concludes of a registry it cannot reach.
    pub fn scheme(&self, reference: &Reference) -> &'static str {
        let registry = reference.registry();
        if self.options.plain_http {
            return "http";
        }
        if !is_loopback(registry) {
            return "https";
        }
        let probes = self.probes.lock().expect("probe map lock");
        probes
            .get(registry)
            .and_then(|cell| cell.get())
            .map_or("http", |probe| probe.scheme)
    }

    /// What a loopback registry answered when asked what it speaks, asked once; `None` for
    /// another registry, or with `--plain-http`, where nothing is asked. The probe runs with
    /// no lock held; concurrent callers for one registry wait for the same probe.
    async fn probe(&self, registry: &str) -> Option<Probe> {
        if self.options.plain_http || !is_loopback(registry) {
            return None;
        }
        let cell = self
            .probes
            .lock()
            .expect("probe map lock")
            .entry(registry.to_owned())
            .or_default()
            .clone();
        Some(*cell.get_or_init(|| Probe::new(registry)).await)
    }

    /// How to speak to `reference`'s registry itself (the origin, or the `server` its
    /// hosts.toml names): for push and login, which never go to a mirror.
    async fn remote(&self, reference: &Reference) -> Result<Arc<registry::Registry>> {
        let endpoints = self.endpoints(reference).await?;
        let origin = endpoints
            .iter()
            .rev()
            .find(|e| !e.mirror)
            .or(endpoints.last())
            .expect("a registry has at least its origin");
        Ok(origin.remote.clone())
    }

    /// The hosts to ask for `reference`'s content, in order: the mirrors its hosts.toml
    /// lists, then the origin (probing a loopback one first).
    pub(crate) async fn endpoints(&self, reference: &Reference) -> Result<Arc<[Endpoint]>> {
        let registry = reference.registry().to_owned();
        if let Some(known) = self.remotes.lock().expect("remote map lock").get(&registry) {
            return Ok(known.clone());
        }
        let hosts = match &self.options.hosts_dir {
            Some(dir) => hosts::hosts_for(dir, &registry)?,
            None => vec![hosts::Host::origin()],
        };
        let mut endpoints = Vec::with_capacity(hosts.len());
        for host in &hosts {
            endpoints.push(self.endpoint(reference, host).await?);
        }
        if endpoints.is_empty() {
            return Err(Error::NoCapableHost {
                reference: reference.whole(),
                registry,
                operation: "pull",
            });
        }
        let endpoints: Arc<[Endpoint]> = endpoints.into();
        let mut remotes = self.remotes.lock().expect("remote map lock");
        Ok(remotes.entry(registry).or_insert(endpoints).clone())
    }

    /// How to speak to one host of `reference`'s registry: its TLS, its headers, and the
    /// credentials docker's config holds for that host itself, never another's.
    async fn endpoint(&self, reference: &Reference, host: &hosts::Host) -> Result<Endpoint> {
        let (scheme, name, open, login) = match host.scheme {
            // The origin as it is spoken to without a hosts file.
            None => {
                let open = self
                    .probe(reference.registry())
                    .await
                    .is_some_and(|p| p.open);
                let scheme = self.scheme(reference);
                let login = self.auth(reference)?;
                (scheme, reference.resolve_registry().to_owned(), open, login)
            }
            Some(scheme) => {
                // The server docker.io resolves to keeps docker.io's credentials.
                let login = if host.host == reference.resolve_registry() {
                    self.auth(reference)?
                } else {
                    self.options.credentials.for_registry(&host.host)?
                };
                (scheme, host.host.clone(), false, login)
            }
        };
        let client_err =
            |e| Error::from_oci(OciDistributionError::RequestError(e), reference, scheme);
        let http = self.new_http(host, reference, true)?.map_err(client_err)?;
        // A host given headers of its own gets them only on its own origin, redirects
        // included: `Registry::send` follows those itself, with a client that does not.
        let direct = if host.header.is_empty() {
            None
        } else {
            Some(self.new_http(host, reference, false)?.map_err(client_err)?)
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for (key, value) in &host.header {
            // Checked when the file was read.
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.append(k, v);
            }
        }
        let ns = host.mirror.then(|| reference.registry().to_owned());
        let remote =
            registry::Registry::new(http, login, scheme, &name, &host.path, headers, ns, open)
                .map_err(|e| Error::from_oci(e, reference, scheme))?
                .with_direct(direct);
        tracing::debug!(
            registry = reference.registry(),
            host = %name,
            mirror = host.mirror,
            pull = host.pull,
            resolve = host.resolve,
            "registry host"
        );
        Ok(Endpoint {
            remote: Arc::new(remote),
            scheme,
            host: name,
            pull: host.pull,
            resolve: host.resolve,
            mirror: host.mirror,
            down: Default::default(),
        })
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

    /// The one HTTP client of a registry host, for manifests, blobs and tokens, with the
    /// trust roots, client certificate and verification its hosts.toml gives it. The system's
    /// trust roots are read on the first TLS handshake (see [`tls`]), so a plain-HTTP registry
    /// works on a host without a trust store. Redirects are followed (blobs often live
    /// elsewhere), never from HTTPS to plain HTTP; reqwest drops `Authorization` on a redirect
    /// to another origin.
    /// A mirror gets shorter timeouts than the origin; `dial_timeout` sets either's connect
    /// timeout. With `follow` false, redirects are not followed (see [`Fetcher::endpoint`]).
    fn new_http(
        &self,
        host: &hosts::Host,
        reference: &Reference,
        follow: bool,
    ) -> Result<Result<reqwest::Client, reqwest::Error>> {
        let unusable = |path: &Path, reason: String| Error::HostsConfig {
            path: path.to_owned(),
            registry: reference.registry().to_owned(),
            reason,
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| unusable(path, format!("cannot read it: {e}")))
        };
        let (connect, silence) = if host.mirror {
            (MIRROR_CONNECT_TIMEOUT, MIRROR_READ_TIMEOUT)
        } else {
            (CONNECT_TIMEOUT, READ_TIMEOUT)
        };
        let builder = base_builder(host.dial_timeout.unwrap_or(connect), silence, follow);
        if host.ca.is_empty() && host.client.is_empty() && !host.skip_verify {
            return Ok(self.default_http(builder));
        }
        let mut roots = self.extra_roots().to_vec();
        for ca in &host.ca {
            roots.push(read(ca)?);
        }
        // rustls presents one client certificate; containerd's first pair is the one used.
        let identity = match host.client.first() {
            None => None,
            Some((cert, key)) => {
                let chain = read(cert)?;
                let key = match key {
                    Some(key) => read(key)?,
                    None => chain.clone(),
                };
                Some(
                    tls::identity(&chain, &key)
                        .map_err(|e| unusable(cert, format!("not a certificate and key: {e}")))?,
                )
            }
        };
        let skip_verify = host.skip_verify || self.options.insecure_skip_tls_verify;
        let config = tls::client_config(&roots, identity, skip_verify)
            .map_err(|e| unusable(host.ca.first().map_or(Path::new(""), |p| p), e.to_string()))?;
        Ok(builder.tls_backend_preconfigured(config).build())
    }

    /// The HTTP client of a host without a hosts.toml of its own: `--ca-file` and
    /// `--insecure-skip-tls-verify` as given.
    fn default_http(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, reqwest::Error> {
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
}

/// What every client shares: timeouts, user agent, redirects (followed unless not `follow`).
fn base_builder(connect: Duration, read: Duration, follow: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(read)
        .user_agent(USER_AGENT)
        .redirect(if follow {
            redirect_policy()
        } else {
            reqwest::redirect::Policy::none()
        })
        // Where a blob was redirected from is nobody else's business.
        .referer(false)
}

/// One host a registry's content may be asked of.
pub(crate) struct Endpoint {
    /// How to speak to it.
    pub(crate) remote: Arc<registry::Registry>,
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// `host[:port]`, as logs and `inspect` name it.
    pub(crate) host: String,
    /// May be asked for manifests and blobs by digest.
    pub(crate) pull: bool,
    /// May be asked what a tag points to.
    pub(crate) resolve: bool,
    /// A mirror, not the registry itself: one attempt, then the next host.
    pub(crate) mirror: bool,
    /// A mirror that could not be connected to, or timed out: not asked again by this
    /// process, so a fleet pulling a catalogue pays for a dead or stalled mirror once, not
    /// once per blob.
    down: std::sync::atomic::AtomicBool,
}

impl Endpoint {
    /// Whether this host may be asked now: a mirror found unreachable is not.
    pub(crate) fn usable(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes note of a failed request to this host: a mirror that cannot be connected to, or
    /// that timed out, is passed over from now on.
    pub(crate) fn failed(&self, failure: &registry::Failure) {
        if failure.is_unreachable() {
            self.give_up(&failure.to_string());
        }
    }

    /// A mirror that is too slow (`why`) is passed over from now on; the origin never is.
    pub(crate) fn give_up(&self, why: &str) {
        if self.mirror && !self.down.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(host = %self.host, reason = why, "mirror {} is unreachable or too slow; this process asks the next host instead", self.host);
        }
    }
}

/// Follows up to [`MAX_REDIRECTS`] redirects, none of them from HTTPS to plain HTTP: what
/// TLS protected must not continue in clear, where anyone on the path could answer.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|url| url.scheme() == "https");
        if downgrade {
            let to = text::printable(attempt.url().as_str());
            return attempt.error(format!(
                "refused a redirect from HTTPS to plain HTTP ({to}): what TLS protects is not \
                 continued in clear"
            ));
        }
        attempt.follow()
    })
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
    async fn new(registry: &str) -> Probe {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const WAIT: Duration = Duration::from_secs(2);
        let addr = match wasm_oci_artifact::split_host_port(registry) {
            (_, Some(port)) if port.bytes().all(|b| b.is_ascii_digit()) => registry.to_owned(),
            (host, _) => format!("{host}:443"),
        };
        let answer = async {
            let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").await?;
            let mut answer = Vec::new();
            // A TLS server closes or sends an alert; Go's even answers in HTTP that it wants
            // HTTPS. One that says nothing is given two seconds, and what came is kept.
            let _ =
                tokio::time::timeout(WAIT, (&mut stream).take(1024).read_to_end(&mut answer)).await;
            Ok::<_, std::io::Error>(answer)
        }
        .await;
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
        let probe = Reference::with_tag(
            registry.to_owned(),
            "wasm-oci/login".to_owned(),
            "latest".to_owned(),
        );
        let remote = self.remote(&probe).await?;
        let scheme = self.scheme(&probe);
        retry::with_retries("checking the login", || remote.check_login())
            .await
            .map_err(|f| match f.into_error(&probe, scheme) {
                // Not "log in with wasm-oci login": that is what is being done.
                Error::Unauthorized {
                    registry, source, ..
                } => Error::CredentialsRefused { registry, source },
                other => other,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::time::Instant;

    /// A loopback server that accepts connections and never says a word (a TLS server waits
    /// like this for a client hello).
    fn silent() -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (_held, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        (addr, handle)
    }

    /// A loopback registry that answers `/v2/` with 200 and no challenge.
    fn open_registry() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        });
        addr
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_registry_does_not_hold_up_the_probe_of_another() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(
            Cache::open(dir.path()).unwrap(),
            RegistryOptions::default(),
            Arc::new(wasm_oci_trust::Policy::accept_anything()),
        );
        let (quiet, _server) = silent();
        let open = open_registry();
        let start = Instant::now();
        // On one thread: a blocking probe, or one under a lock, would hold the other up for
        // the two seconds the silent one is given.
        let (slow, fast) = tokio::join!(fetcher.probe(&quiet), async {
            let probe = fetcher.probe(&open).await;
            (probe, start.elapsed())
        });
        let (fast, fast_took) = fast;
        assert!(fast_took < Duration::from_millis(1500), "{fast_took:?}");
        let fast = fast.unwrap();
        assert_eq!((fast.scheme, fast.open), ("http", true));
        // Saying nothing in two seconds is not HTTP: TLS, as docker concludes.
        assert_eq!(slow.unwrap().scheme, "https");
        let reference = parse_reference(&format!("{open}/x:1")).unwrap();
        assert_eq!(fetcher.scheme(&reference), "http");
    }

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

    /// A loopback server that answers anything with a plain-HTTP 400, as a registry without
    /// TLS answers a client hello.
    fn plain_http_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = std::io::Read::read(&mut stream, &mut [0; 512]);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        });
        addr
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tls_handshake_answered_in_plain_http_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(
            Cache::open(dir.path()).unwrap(),
            RegistryOptions::default(),
            Arc::new(wasm_oci_trust::Policy::accept_anything()),
        );
        let http = fetcher
            .default_http(base_builder(CONNECT_TIMEOUT, READ_TIMEOUT, true))
            .unwrap();
        let addr = plain_http_server();
        let e = http
            .get(format!("https://{addr}/v2/"))
            .send()
            .await
            .unwrap_err();
        assert!(error::is_plain_http_answer(&e), "{e:?}");
        assert!(!error::is_certificate_error(&e), "{e:?}");
        let failure = registry::Failure::from(e);
        assert!(matches!(failure, registry::Failure::PlainHttp { .. }));
        assert!(!retry::Transient::is_transient(&failure));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_loopback_port_is_not_worth_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(
            Cache::open(dir.path()).unwrap(),
            RegistryOptions::default(),
            Arc::new(wasm_oci_trust::Policy::accept_anything()),
        );
        let http = fetcher
            .default_http(base_builder(CONNECT_TIMEOUT, READ_TIMEOUT, true))
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for host in ["127.0.0.1", "localhost"] {
            let e = http
                .get(format!("http://{host}:{port}/v2/"))
                .send()
                .await
                .unwrap_err();
            let failure = registry::Failure::from(e);
            assert!(
                matches!(failure, registry::Failure::Refused { .. }),
                "{host}: {failure:?}"
            );
            assert!(!retry::Transient::is_transient(&failure));
        }
    }
}
