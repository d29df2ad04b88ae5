//! One fetcher's transport: the options, what each loopback registry speaks (probed once),
//! and the hosts of each registry with their clients, made once and shared by every pull,
//! push, login and signature of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use oci_client::Reference;
use oci_client::errors::OciDistributionError;

use super::endpoint::Endpoint;
use super::options::RegistryOptions;
use super::probe::Probe;
use super::registry::Registry;
use super::retry::with_retries;
use super::{auth, client, hosts};
use crate::error::{Error, Result};
use wasm_oci_artifact::reference::is_loopback;

/// How a fetcher speaks to registries.
pub(crate) struct Transport {
    options: RegistryOptions,
    /// What each loopback registry speaks, probed once; the lock is held only to find the
    /// cell, never across the probe.
    probes: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Probe>>>>,
    /// The hosts of each registry, mirrors first, for manifests and blobs.
    remotes: Mutex<HashMap<String, Arc<[Endpoint]>>>,
    /// The contents of `options.ca_files`, read on first use.
    roots: client::Roots,
    /// Where it may connect, when it pulls on someone else's behalf.
    egress: Option<Arc<crate::egress::Policy>>,
}

impl Transport {
    /// Speaks to registries as `options` say.
    pub(crate) fn new(options: RegistryOptions) -> Self {
        Self {
            options,
            probes: Mutex::default(),
            remotes: Mutex::default(),
            roots: client::Roots::default(),
            egress: None,
        }
    }

    /// Holds every connection to `policy` (see [`crate::egress`]).
    pub(crate) fn set_egress(&mut self, policy: Arc<crate::egress::Policy>) {
        self.egress = Some(policy);
    }

    /// The options it was made with.
    pub(crate) fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// `http` with `--plain-http`; for a loopback registry, whatever it speaks (docker tries
    /// TLS there and falls back to plain HTTP); else always `https`, never downgraded. A
    /// loopback registry's answer is known once a pull, push or login has probed it; until
    /// then it is taken to be plain HTTP, as the probe concludes of a registry it cannot reach.
    pub(crate) fn scheme(&self, reference: &Reference) -> &'static str {
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
    pub(crate) async fn probe(&self, registry: &str) -> Option<Probe> {
        if self.options.plain_http || !is_loopback(registry) {
            return None;
        }
        // The probe's connection is one too: only to a registry the operator named.
        if let Some(egress) = &self.egress
            && !egress.names_registry(registry)
        {
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
    pub(crate) async fn remote(&self, reference: &Reference) -> Result<Arc<Registry>> {
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
        if let Some(egress) = &self.egress {
            egress
                .check_registry(&registry)
                .map_err(|refusal| Error::Egress {
                    reference: reference.whole(),
                    reason: refusal.to_string(),
                })?;
        }
        if let Some(known) = self.remotes.lock().expect("remote map lock").get(&registry) {
            return Ok(known.clone());
        }
        let hosts = match &self.options.hosts_dir {
            Some(dir) => hosts::hosts_for(dir, &registry).map_err(|e| Error::HostsConfig {
                path: e.path,
                registry: registry.clone(),
                reason: Box::new(e.reason),
            })?,
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
        let registry_name = reference.registry();
        // Every connection of this host's clients is judged by the egress rule, if any.
        let guard = || {
            self.egress.as_ref().map(|policy| {
                crate::egress::Guard::new(policy.clone(), scheme, &name, host.scheme.is_some())
            })
        };
        let http = client::new_http(
            &self.options,
            &self.roots,
            host,
            registry_name,
            true,
            guard(),
        )?
        .map_err(client_err)?;
        // A host given headers of its own gets them only on its own origin, redirects
        // included: `Registry::send` follows those itself, with a client that does not.
        let direct = if host.header.is_empty() {
            None
        } else {
            Some(
                client::new_http(
                    &self.options,
                    &self.roots,
                    host,
                    registry_name,
                    false,
                    guard(),
                )?
                .map_err(client_err)?,
            )
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
        let credentials_from = self.options.credentials.source_for(&name);
        let remote = Registry::new(http, login, scheme, &name, &host.path, headers, ns, open)
            .map_err(|e| Error::from_oci(e, reference, scheme))?
            .with_direct(direct)
            .with_credentials_from(credentials_from);
        tracing::debug!(
            registry = reference.registry(),
            host = %name,
            mirror = host.mirror,
            pull = host.pull,
            resolve = host.resolve,
            "registry host"
        );
        Ok(Endpoint::new(
            Arc::new(remote),
            scheme,
            name,
            (host.pull, host.resolve, host.mirror),
        ))
    }

    /// What to present to the registry of `reference`.
    fn auth(&self, reference: &Reference) -> Result<auth::Login> {
        self.options.credentials.for_registry(reference.registry())
    }

    /// Checks that the configured credentials open `registry`, as `docker login` does before it
    /// stores them: a bearer registry must hand out a token, a basic one must accept a request.
    pub(crate) async fn check_login(&self, registry: &str) -> Result<()> {
        let probe = Reference::with_tag(
            registry.to_owned(),
            "wasm-oci/login".to_owned(),
            "latest".to_owned(),
        );
        let remote = self.remote(&probe).await?;
        let scheme = self.scheme(&probe);
        if scheme == "http" {
            tracing::warn!(
                "{} is spoken to over plain HTTP: the password crosses the network unencrypted",
                wasm_oci_artifact::text::printable(registry)
            );
        }
        with_retries("checking the login", || remote.check_login())
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
    use crate::remote::answer::{is_certificate_error, is_plain_http_answer};
    use crate::remote::client::{CONNECT_TIMEOUT, READ_TIMEOUT, base_builder, default_http};
    use crate::remote::failure::Failure;
    use crate::remote::retry::Transient;
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

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
        let fetcher = Transport::new(RegistryOptions::default());
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
        let reference = crate::reference::parse_reference(&format!("{open}/x:1")).unwrap();
        assert_eq!(fetcher.scheme(&reference), "http");
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
        let fetcher = Transport::new(RegistryOptions::default());
        let http = default_http(
            &fetcher.options,
            &fetcher.roots,
            base_builder(CONNECT_TIMEOUT, READ_TIMEOUT, true),
        )
        .unwrap();
        let addr = plain_http_server();
        let e = http
            .get(format!("https://{addr}/v2/"))
            .send()
            .await
            .unwrap_err();
        assert!(is_plain_http_answer(&e), "{e:?}");
        assert!(!is_certificate_error(&e), "{e:?}");
        let failure = Failure::from(e);
        assert!(matches!(failure, Failure::PlainHttp { .. }));
        assert!(!Transient::is_transient(&failure));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_loopback_port_is_not_worth_retrying() {
        let fetcher = Transport::new(RegistryOptions::default());
        let http = default_http(
            &fetcher.options,
            &fetcher.roots,
            base_builder(CONNECT_TIMEOUT, READ_TIMEOUT, true),
        )
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
            let failure = Failure::from(e);
            assert!(
                matches!(failure, Failure::Refused { .. }),
                "{host}: {failure:?}"
            );
            assert!(!Transient::is_transient(&failure));
        }
    }
}
