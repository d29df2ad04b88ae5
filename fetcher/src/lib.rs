//! The wasm-oci fetcher: from an OCI reference to a verified wasm blob in the cache, and back.
//!
//! It resolves a reference to a manifest (choosing the wasm entry of an index), finds the wasm
//! layer by media type and streams it into [`wasm_oci_cache`]; `push` writes the CNCF or the
//! wasm-to-oci layout. It knows nothing of wasmtime.

#![deny(missing_docs)]

mod error;
mod inspect;
pub mod layout;
mod manifest;
mod pull;
mod push;
mod reference;
mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use wasm_oci_cache::Cache;

pub use error::Error;
pub use inspect::{Interface, interface};
pub use manifest::{
    CNCF_CONFIG_MEDIA_TYPE, CNCF_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPES,
    WASM_TO_OCI_CONFIG_MEDIA_TYPE, WASM_TO_OCI_LAYER_MEDIA_TYPE,
};
pub use oci_client::Reference as OciReference;
pub use pull::Pulled;
pub use push::{PushFormat, Pushed, WasmKind};
pub use reference::{is_loopback, parse_reference};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Speak plain HTTP to every registry, not only to loopback ones.
    pub plain_http: bool,
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
    fn finish(self: Box<Self>);
}

/// Moves wasm artifacts between registries and a [`Cache`].
pub struct Fetcher {
    cache: Cache,
    options: RegistryOptions,
    progress: Option<Arc<dyn Progress>>,
    /// One client per registry, so connections and tokens are reused across pulls.
    clients: Mutex<HashMap<String, Client>>,
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
            clients: Mutex::default(),
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

    /// `http` for loopback registries and with `--plain-http`, as docker and oras do; else `https`.
    pub fn scheme(&self, reference: &Reference) -> &'static str {
        if self.options.plain_http || is_loopback(reference.registry()) {
            "http"
        } else {
            "https"
        }
    }

    fn client(&self, reference: &Reference) -> Client {
        let mut clients = self.clients.lock().expect("client map lock");
        clients
            .entry(reference.registry().to_owned())
            .or_insert_with(|| self.new_client(reference))
            .clone()
    }

    fn new_client(&self, reference: &Reference) -> Client {
        let protocol = match self.scheme(reference) {
            "http" => ClientProtocol::Http,
            _ => ClientProtocol::Https,
        };
        Client::new(ClientConfig {
            protocol,
            // Index entries are chosen by `manifest::select_platform`, not by the host's platform.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("wasm-oci/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        })
    }
}
