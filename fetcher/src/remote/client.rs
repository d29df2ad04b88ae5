//! The HTTP clients of registry hosts: timeouts (shorter for a mirror), user agent, the
//! redirect rule, trust roots and client certificates from the options and hosts.toml.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::hosts::{self, HostsError};
use super::options::RegistryOptions;
use super::tls;
use crate::error::Error;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);
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

/// The PEM certificate authorities of `--ca-file` and `SSL_CERT_FILE`, those readable;
/// read once, for both clients of every registry.
#[derive(Debug, Default)]
pub(crate) struct Roots(OnceLock<Vec<Vec<u8>>>);

impl Roots {
    /// The roots `options` names, read on first use.
    pub(crate) fn get(&self, options: &RegistryOptions) -> &[Vec<u8>] {
        self.0.get_or_init(|| {
            options
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
}

/// The one HTTP client of a registry host, for manifests, blobs and tokens, with the
/// trust roots, client certificate and verification its hosts.toml gives it. The system's
/// trust roots are read on the first TLS handshake (see [`tls`]), so a plain-HTTP registry
/// works on a host without a trust store. Redirects are followed (blobs often live
/// elsewhere), never from HTTPS to plain HTTP; reqwest drops `Authorization` on a redirect
/// to another origin.
/// A mirror gets shorter timeouts than the origin; `dial_timeout` sets either's connect
/// timeout. With `follow` false, redirects are not followed (see [`super::redirect::follow`]).
pub(crate) fn new_http(
    options: &RegistryOptions,
    roots: &Roots,
    host: &hosts::Host,
    registry: &str,
    follow: bool,
    guard: Option<crate::egress::Guard>,
) -> Result<Result<reqwest::Client, reqwest::Error>, Error> {
    let unusable = |path: &Path, reason: HostsError| Error::HostsConfig {
        path: path.to_owned(),
        registry: registry.to_owned(),
        reason: Box::new(reason),
    };
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| unusable(path, HostsError::Unreadable(e)));
    let (connect, silence) = if host.mirror {
        (MIRROR_CONNECT_TIMEOUT, MIRROR_READ_TIMEOUT)
    } else {
        (CONNECT_TIMEOUT, READ_TIMEOUT)
    };
    let mut builder = base_builder(host.dial_timeout.unwrap_or(connect), silence, follow);
    if let Some(guard) = guard {
        builder = guard.install(builder);
    }
    if host.ca.is_empty() && host.client.is_empty() && !host.skip_verify {
        return Ok(default_http(options, roots, builder));
    }
    let mut pems = roots.get(options).to_vec();
    for ca in &host.ca {
        pems.push(read(ca)?);
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
                    .map_err(|e| unusable(cert, HostsError::NotCertificate(e)))?,
            )
        }
    };
    let skip_verify = host.skip_verify || options.insecure_skip_tls_verify;
    let config = tls::client_config(&pems, identity, skip_verify).map_err(|e| {
        unusable(
            host.ca.first().map_or(Path::new(""), |p| p),
            HostsError::Tls(e),
        )
    })?;
    Ok(builder.tls_backend_preconfigured(config).build())
}

/// The HTTP client of a host without a hosts.toml of its own: `--ca-file` and
/// `--insecure-skip-tls-verify` as given.
pub(crate) fn default_http(
    options: &RegistryOptions,
    roots: &Roots,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, reqwest::Error> {
    if options.insecure_skip_tls_verify {
        // Nothing is verified, so there are no roots to load.
        return builder.danger_accept_invalid_certs(true).build();
    }
    match tls::lazy_roots(roots.get(options)) {
        Ok(config) => builder.tls_backend_preconfigured(config).build(),
        // A CA file that is not PEM: reqwest's own parser says so, as before.
        Err(e) => {
            tracing::debug!(error = %e, "falling back to reqwest's TLS setup");
            let roots = roots
                .get(options)
                .iter()
                .map(|pem| reqwest::Certificate::from_pem(pem))
                .collect::<Result<Vec<_>, _>>()?;
            builder.tls_certs_merge(roots).build()
        }
    }
}

/// What every client shares: timeouts, user agent, redirects (followed unless not `follow`).
pub(crate) fn base_builder(
    connect: Duration,
    read: Duration,
    follow: bool,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(read)
        .user_agent(USER_AGENT)
        .redirect(if follow {
            super::redirect::policy()
        } else {
            reqwest::redirect::Policy::none()
        })
        // Where a blob was redirected from is nobody else's business.
        .referer(false)
}
