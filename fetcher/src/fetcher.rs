//! [`Fetcher`], the crate's central type: a cache, a transport to registries, and what the
//! caller asked of pulls (progress, a config check, the signature policy). Each operation
//! (pull, push, resolve, login) is a function of its own room, handed what it needs.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use oci_client::Reference;
use wasm_oci_cache::Cache;

use crate::error::Result;
use crate::progress::Progress;
use crate::pull::{ConfigCheck, Pull, Pulled, SignatureSource};
use crate::push::{Push, PushExtras, PushFormat, Pushed};
use crate::remote::options::RegistryOptions;
use crate::remote::registry::Registry;
use crate::remote::transport::Transport;
use crate::resolve::{PullPolicy, Resolved, resolve_cached};

/// Moves wasm artifacts between registries and a [`Cache`].
pub struct Fetcher {
    cache: Cache,
    /// How registries are spoken to: options, probes, the hosts of each registry.
    transport: Transport,
    progress: Option<Arc<dyn Progress>>,
    /// Looks at a pull's config before its layer is fetched.
    config_check: Option<ConfigCheck>,
    /// Which signatures a pulled reference needs.
    policy: Arc<wasm_oci_trust::Policy>,
    /// Fetch and keep signatures even when the policy needs none (prefetch, for nodes
    /// that verify later, offline).
    keep_signatures: bool,
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
            transport: Transport::new(options),
            progress: None,
            config_check: None,
            policy,
            keep_signatures: false,
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

    /// Holds every connection to `policy` (see [`crate::egress`]): for a fetcher that pulls on
    /// a pod's behalf.
    pub fn with_egress(mut self, policy: Arc<crate::egress::Policy>) -> Self {
        self.transport.set_egress(policy);
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
        self.transport.scheme(reference)
    }

    /// How to speak to `reference`'s registry itself (the origin, or the `server` its
    /// hosts.toml names): for push, login and signing, which never go to a mirror.
    pub(crate) async fn remote(&self, reference: &Reference) -> Result<Arc<Registry>> {
        self.transport.remote(reference).await
    }

    /// The transport: for operations that ask a registry's hosts in order (mirrors first).
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Whom to tell of blob transfers, if anyone.
    pub(crate) fn progress(&self) -> Option<&dyn Progress> {
        self.progress.as_deref()
    }

    /// Checks that the configured credentials open `registry`, as `docker login` does before it
    /// stores them: a bearer registry must hand out a token, a basic one must accept a request.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        self.transport.check_login(registry).await
    }

    /// Resolves `reference` in its registry and makes sure its wasm layer is in the cache.
    pub async fn pull(&self, reference: &Reference) -> Result<Pulled> {
        self.pull_context().pull(reference).await
    }

    /// `reference`'s artifact in the cache under `policy`: from the cache when it may, else
    /// pulled (and verified) from the registry.
    pub async fn resolve(&self, reference: &Reference, policy: PullPolicy) -> Result<Resolved> {
        if let Some(resolved) = resolve_cached(&self.cache, reference, policy, &self.policy)? {
            return Ok(resolved);
        }
        let pulled = self.pull(reference).await?;
        Ok(pulled.into_resolved())
    }

    /// `reference` pulled and verified from its registry with `local` as its wasm layer:
    /// the documents and signatures are read and judged first, then `local`'s bytes are
    /// stored as the layer, which is never downloaded. A manifest that names another layer
    /// is [`crate::Error::OtherLayer`], with nothing stored or downloaded.
    pub async fn pull_with_layer(
        &self,
        reference: &Reference,
        local: &crate::LocalLayer<'_>,
    ) -> Result<Resolved> {
        let mut pull = self.pull_context();
        pull.local_layer = Some(local);
        Ok(pull.pull(reference).await?.into_resolved())
    }

    /// Pushes the wasm file at `path` to `reference` in `format`.
    pub async fn push(
        &self,
        path: &std::path::Path,
        reference: &Reference,
        format: PushFormat,
    ) -> Result<Pushed> {
        self.push_with(path, reference, format, &PushExtras::default())
            .await
    }

    /// Pushes the wasm file at `path` to `reference` in `format`, its manifest carrying
    /// `extras` (annotations, an artifact type).
    pub async fn push_with(
        &self,
        path: &std::path::Path,
        reference: &Reference,
        format: PushFormat,
        extras: &PushExtras,
    ) -> Result<Pushed> {
        let push = Push {
            transport: &self.transport,
            progress: self.progress.as_deref(),
        };
        crate::push::push(&push, path, reference, format, extras).await
    }

    /// Pushes each `(os, file)` of `platforms` as a wasm manifest by digest, then one image
    /// index of them at `reference`, each entry naming `{os, architecture: wasm}`.
    pub async fn push_platforms(
        &self,
        platforms: &[(String, std::path::PathBuf)],
        reference: &Reference,
        format: PushFormat,
        extras: &PushExtras,
    ) -> Result<crate::PushedIndex> {
        let push = Push {
            transport: &self.transport,
            progress: self.progress.as_deref(),
        };
        crate::push::push_platforms(&push, platforms, reference, format, extras).await
    }

    /// What a pull needs of this fetcher.
    fn pull_context(&self) -> Pull<'_> {
        Pull {
            cache: &self.cache,
            transport: &self.transport,
            progress: self.progress.as_deref(),
            config_check: self.config_check.as_ref(),
            policy: &self.policy,
            keep_signatures: self.keep_signatures,
            signatures: self,
            local_layer: None,
        }
    }
}

/// A pull reads signatures through the fetcher's signing half, which holds their network code.
impl SignatureSource for Fetcher {
    fn fetch<'a>(
        &'a self,
        remote: &'a Registry,
        reference: &'a Reference,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Option<wasm_oci_trust::signatures::Fetched>>> {
        Box::pin(self.fetch_signatures(remote, reference, digest))
    }
}
