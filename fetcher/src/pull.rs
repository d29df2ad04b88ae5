//! Pull: reference -> manifest -> wasm layer, streamed into the cache and verified on the way.

use std::path::PathBuf;

use futures_util::StreamExt;
use oci_client::Reference;
use oci_client::manifest::OciDescriptor;
use wasm_oci_cache::{Cache, Digest, Hold, Ingest, Lease, RefEntry};

use crate::error::{Error, Result, TrustRefusal};
use crate::progress::{Blob, Progress, Transfer};
use crate::remote::client::{MIRROR_DOCUMENT_TIMEOUT, MIRROR_MIN_BYTES, MIRROR_PACE_WINDOW};
use crate::remote::endpoint::{Capability, Endpoint, in_order, skipped};
use crate::remote::registry::Registry;
use crate::remote::retry::{Backoff, Transient, io_in_words, seconds, wait_for, with_retries};
use crate::remote::transport::Transport;
use crate::walk::{Record, signatures_record};
use wasm_oci_artifact::manifest::{Choice, choose};
use wasm_oci_artifact::walk::image_behind;
use wasm_oci_trust::Policy;
use wasm_oci_trust::signatures::Fetched;

// The documents a pull asks for, and their cap: the transport's, here at their old path.
pub(crate) use crate::remote::registry::{MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE};

/// Looks at an artifact's config (its bytes) and refuses it, saying why, before its layer is
/// downloaded.
pub type ConfigCheck = std::sync::Arc<
    dyn Fn(&[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
>;

/// Where a pull reads the signatures of a digest from one host: the signing half of the
/// fetcher, which holds their network code.
pub(crate) trait SignatureSource: Sync {
    /// The signatures of `digest` in `reference`'s repository at `remote`; `None` when it
    /// has none.
    fn fetch<'a>(
        &'a self,
        remote: &'a Registry,
        reference: &'a Reference,
        digest: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<Fetched>>>;
}

/// What a pull needs, handed to it by the fetcher: where to store, how to reach registries,
/// whom to tell of progress, what to check before a layer is downloaded, and which
/// signatures to ask for.
pub(crate) struct Pull<'a> {
    pub(crate) cache: &'a Cache,
    pub(crate) transport: &'a Transport,
    pub(crate) progress: Option<&'a dyn Progress>,
    /// Looks at the config before the layer is fetched.
    pub(crate) config_check: Option<&'a ConfigCheck>,
    /// Which signatures the reference needs.
    pub(crate) policy: &'a Policy,
    /// Fetch and keep signatures even when the policy needs none.
    pub(crate) keep_signatures: bool,
    pub(crate) signatures: &'a dyn SignatureSource,
    /// The layer's bytes, had already (a module containerd unpacked): the pull takes them
    /// instead of downloading the layer, stores nothing until the signatures are judged,
    /// and fails, downloading nothing, when the manifest names another layer.
    pub(crate) local_layer: Option<&'a LocalLayer<'a>>,
}

/// A layer's bytes, had before the pull, and their digest.
pub struct LocalLayer<'a> {
    digest: Digest,
    bytes: &'a [u8],
}

impl<'a> LocalLayer<'a> {
    /// `bytes`, under their sha256.
    pub fn of(bytes: &'a [u8]) -> Self {
        LocalLayer {
            digest: Digest::of(bytes),
            bytes,
        }
    }

    /// Their digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// What a pull left in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The index entry recorded for the reference.
    pub entry: RefEntry,
    /// Path of the wasm blob in the cache.
    pub path: PathBuf,
    /// Whether the blob had to be downloaded (false when the cache had it).
    pub downloaded: bool,
    /// The layer's `org.opencontainers.image.title` annotation, if any.
    pub title: Option<String>,
    /// The host (`host[:port]`) each manifest and blob downloaded just now came from, by
    /// digest: a mirror of the hosts.toml, or the registry itself.
    pub sources: std::collections::BTreeMap<String, String>,
    /// Keeps `cache prune` off the layer while this value (or a clone) lives, so that what was
    /// pulled can still be read, copied or run.
    _hold: std::sync::Arc<Hold>,
}

impl Pulled {
    /// As the resolver's answer, its hold kept.
    pub(crate) fn into_resolved(self) -> crate::Resolved {
        crate::Resolved::new(self.entry, self.downloaded, self._hold)
    }
}

impl Pull<'_> {
    /// Resolves `reference` in its registry and makes sure its wasm layer is in the cache.
    #[tracing::instrument(skip(self), fields(reference = %reference))]
    pub(crate) async fn pull(&self, reference: &Reference) -> Result<Pulled> {
        let hosts = self.transport.endpoints(reference).await?;
        let name = reference.whole();
        let sources = std::sync::Mutex::new(std::collections::BTreeMap::new());

        // A manifest's bytes, digest and what it leads to; its size is checked before parsing. A
        // tag is asked of the hosts that may resolve, a digest of those that may pull.
        let fetch = async |at: &Reference| -> Result<(Vec<u8>, String, Choice)> {
            let capability = match at.digest() {
                Some(_) => Capability::Pull,
                None => Capability::Resolve,
            };
            let mut found = None;
            for (host, last) in in_order(&hosts, reference, capability)? {
                if last {
                    let answer = with_retries("fetching the manifest", || {
                        host.remote
                            .manifest(at, MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE)
                    })
                    .await
                    .map_err(|f| f.into_error(reference, host.scheme))?;
                    check_document_size(&answer.0, &name)?;
                    let parsed = choose(&answer.0, &name)?;
                    found = Some((answer, parsed, host));
                    break;
                }
                // One attempt, with a deadline: a mirror that is down, slow or lacks it costs
                // no backoff. Its answer is checked here (size, digest, JSON), so a bad one
                // moves on to the next host rather than failing the pull.
                let asked = tokio::time::timeout(
                    MIRROR_DOCUMENT_TIMEOUT,
                    host.remote
                        .manifest(at, MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE),
                )
                .await;
                let answer = match asked {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => {
                        skipped(host, &name, "manifest", &e);
                        host.failed(&e);
                        continue;
                    }
                    Err(_) => {
                        let why = format!(
                            "no whole answer within {}s",
                            MIRROR_DOCUMENT_TIMEOUT.as_secs()
                        );
                        skipped(host, &name, "manifest", &why);
                        host.give_up(&why);
                        continue;
                    }
                };
                match check_document_size(&answer.0, &name)
                    .and_then(|()| choose(&answer.0, &name).map_err(Error::from))
                {
                    Ok(parsed) => {
                        found = Some((answer, parsed, host));
                        break;
                    }
                    Err(e) => skipped(host, &name, "manifest", &e),
                }
            }
            let ((bytes, digest), parsed, host) =
                found.expect("the last host answers or fails the pull");
            tracing::debug!(reference = %name, %digest, host = %host.host, mirror = host.mirror, "manifest served");
            sources
                .lock()
                .expect("sources lock")
                .insert(digest.clone(), host.host.clone());
            Ok((bytes, digest, parsed))
        };
        let (top_bytes, top_digest, top) = fetch(reference).await?;
        // What the signature policy asks of this reference, decided before anything is
        // downloaded; signatures are of the digest the reference resolves to (an index's own).
        let gate = wasm_oci_trust::Gate::new(self.policy, reference);
        let untrusted = |reason| Error::Untrusted {
            reference: name.clone(),
            scope: gate.describe(),
            reason,
        };
        gate.admit()
            .map_err(|r| untrusted(TrustRefusal::Refused(r)))?;
        let want_signatures = gate.needs_signatures() || self.keep_signatures;
        let signed_digest = top_digest.clone();
        // The index a reference resolved to, kept with its signatures: `save` writes it so
        // that a node loading the layout verifies the digest that was signed, as this pull.
        let mut index_bytes = None;
        let (bytes, digest, manifest, layer) = match (top_bytes, top_digest, top) {
            (bytes, digest, Choice::Image { manifest, layer }) => (bytes, digest, manifest, layer),
            (top_bytes, _, Choice::Index(entry)) => {
                index_bytes = Some(top_bytes);
                tracing::debug!(digest = %entry.digest, "chose index entry");
                let (bytes, digest, choice) =
                    fetch(&reference.clone_with_digest(entry.digest.clone())).await?;
                let (manifest, layer) = image_behind(&entry, &bytes, choice)
                    .map_err(|e| Error::invalid_manifest(name.clone(), e.to_string()))?;
                (bytes, digest, manifest, layer)
            }
        };
        let layer = &layer;
        let layer_digest = parse_digest(&layer.digest, &name)?;
        let size = u64::try_from(layer.size).map_err(|_| {
            Error::invalid_manifest(
                name.clone(),
                format!("layer {} has a negative size", layer.digest),
            )
        })?;
        if let Some(max) = self.transport.options().max_layer_size
            && size > max
        {
            return Err(Error::invalid_manifest(
                name.clone(),
                format!("its wasm layer is {size} bytes, over this node's limit of {max} bytes"),
            ));
        }
        if let Some(local) = self.local_layer
            && local.digest != layer_digest
        {
            return Err(Error::OtherLayer {
                reference: name.clone(),
                layer: layer_digest.to_string(),
                local: local.digest.to_string(),
            });
        }
        let manifest_digest = parse_digest(&digest, &name)?;

        // The config too, so that the cache holds the whole artifact (for save and inspect),
        // fetched alongside the layer: on a slow link a round trip saved is worth more than
        // the bandwidth the small config takes from the layer.
        let config_digest = parse_digest(&manifest.config.digest, &name)?;
        let config_size = u64::try_from(manifest.config.size)
            .ok()
            .filter(|s| *s <= MAX_CONFIG_SIZE)
            .ok_or_else(|| Error::invalid_manifest(name.clone(), format!(
                    "its config claims {} bytes; configs over {MAX_CONFIG_SIZE} bytes are refused",
                    manifest.config.size
                )))?;
        // The signatures of the digest signed, and the gate's verdicts on them.
        let signatures_of = async || {
            if want_signatures {
                self.signatures_from(&hosts, reference, &signed_digest)
                    .await
            } else {
                Ok(None)
            }
        };
        let judged = |found: Result<Option<Fetched>>| {
            let found = match found {
                Ok(found) => found,
                Err(e) if gate.needs_signatures() => {
                    return Err(untrusted(TrustRefusal::Unreadable(Box::new(e))));
                }
                Err(e) => {
                    tracing::warn!(reference = %name, error = %e, "signatures not kept");
                    None
                }
            };
            let valid = gate
                .judge(&signed_digest, found.as_ref())
                .map_err(|r| untrusted(TrustRefusal::Refused(r)))?;
            Ok((found, valid))
        };
        // With the layer's bytes at hand, the signatures are judged before anything is
        // stored: bytes no signature vouches for never enter the cache.
        let judged_first = match self.local_layer {
            Some(_) => Some(judged(signatures_of().await)?),
            None => None,
        };
        // Everything this pull stores is held by the lease until the reference is recorded.
        let lease = self.cache.begin();
        let layer_fetch = async {
            match self.local_layer {
                Some(local) => {
                    let stored = lease.put(local.bytes)?;
                    Ok((self.cache.blob_path(&stored), false, None))
                }
                None => {
                    self.fetch_blob(
                        &lease,
                        &hosts,
                        reference,
                        (Blob::Layer, layer),
                        &layer_digest,
                        size,
                    )
                    .await
                }
            }
        };
        let config_fetch = self.fetch_blob(
            &lease,
            &hosts,
            reference,
            (Blob::Config, &manifest.config),
            &config_digest,
            config_size,
        );
        let blobs = async {
            match &self.config_check {
                None => Ok::<_, Error>(tokio::join!(layer_fetch, config_fetch)),
                // The config first, and the layer only once the caller has accepted it.
                Some(check) => {
                    let config_fetched = config_fetch.await;
                    if let Ok((path, _, _)) = &config_fetched {
                        let config = tokio::fs::read(path).await.unwrap_or_default();
                        check(&config).map_err(|reason| Error::Refused {
                            reference: name.clone(),
                            reason: reason.to_string(),
                        })?;
                    }
                    Ok((layer_fetch.await, config_fetched))
                }
            }
        };
        // The signatures alongside the blobs: on a slow link they cost one round trip more
        // than an unsigned pull, not two.
        let signatures = async {
            match judged_first {
                Some(_) => None,
                None => Some(signatures_of().await),
            }
        };
        let (blobs, signatures) = tokio::join!(blobs, signatures);
        let (layer_fetched, config_fetched) = blobs?;
        let (signatures, valid) = match (judged_first, signatures) {
            (Some(judged_first), _) => judged_first,
            (None, Some(found)) => judged(found)?,
            (None, None) => unreachable!("signatures are fetched unless judged first"),
        };
        let (path, downloaded, layer_host) = layer_fetched?;
        let (_, _, config_host) = config_fetched?;
        let mut sources = sources.into_inner().expect("sources lock");
        // Only what was downloaded just now: a manifest fetched again by tag is kept too.
        for (digest, host) in [(&layer_digest, layer_host), (&config_digest, config_host)] {
            if let Some(host) = host {
                sources.insert(digest.to_string(), host);
            }
        }
        let entry = Record {
            manifest_digest,
            config_digest: config_digest.clone(),
            layer_digest: layer_digest.clone(),
            layer_media_type: layer.media_type.clone(),
            size,
        }
        .entry(
            name,
            signatures.as_ref().map(|found| {
                let signed = signed_digest
                    .parse()
                    .expect("the registry's digest was computed here");
                signatures_record(signed, found, valid)
            }),
            sources.clone(),
        );
        // Each waits for a sync: off the runtime's threads, which other pulls are using.
        let recorded = entry.clone();
        let layer_hold = tokio::task::spawn_blocking(move || {
            lease.put(&bytes)?;
            // The signatures are kept as blobs so that a run without the network, or under a
            // changed policy, can check them again.
            if let Some(f) = &signatures {
                if let Some(index) = &index_bytes {
                    lease.put(index)?;
                }
                lease.put(&f.manifest)?;
                for (_, blob) in &f.layers {
                    lease.put(&blob.payload)?;
                }
            }
            lease.record(&recorded)
        })
        .await
        .expect("recording a pull does not panic")?;
        tracing::info!(digest = %entry.manifest_digest, layer_digest = %entry.layer_digest, bytes = size, downloaded, "pulled");
        Ok(Pulled {
            entry,
            path,
            downloaded,
            title: layer
                .annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.title").cloned()),
            sources,
            _hold: std::sync::Arc::new(layer_hold),
        })
    }

    /// The signatures of `digest`, asked of the hosts that may resolve tags (a `.sig` is a
    /// tag) in order: a mirror that fails, or lacks them, passes to the next host. What any
    /// host sends is verified against the policy's keys, so a mirror cannot forge them.
    async fn signatures_from(
        &self,
        hosts: &[Endpoint],
        reference: &Reference,
        digest: &str,
    ) -> Result<Option<Fetched>> {
        for (host, last) in in_order(hosts, reference, Capability::Resolve)? {
            match self.signatures.fetch(&host.remote, reference, digest).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) if !last => {}
                Err(e) if !last => skipped(host, &reference.whole(), "signatures", &e),
                last_answer => return last_answer,
            }
        }
        unreachable!("the last host answers")
    }

    /// The blob `digest` in the cache: present already, or downloaded from the first host
    /// that may pull it and sends it whole and correct. A mirror gets one attempt; the
    /// last host is retried with backoff. Also says which host sent it, when one did.
    async fn fetch_blob(
        &self,
        lease: &Lease,
        hosts: &[Endpoint],
        reference: &Reference,
        (blob, layer): (Blob, &OciDescriptor),
        digest: &Digest,
        size: u64,
    ) -> Result<(PathBuf, bool, Option<String>)> {
        let name = reference.whole();
        for (host, is_last) in in_order(hosts, reference, Capability::Pull)? {
            // Taking the writer may wait for another process fetching the same blob.
            let held = lease.clone();
            let d = digest.clone();
            let ingested = tokio::task::spawn_blocking(move || held.ingest(&d, Some(size)))
                .await
                .expect("ingest task does not panic")?;
            let writer = match ingested {
                None => return Ok((self.cache.blob_path(digest), false, None)),
                Some(w) => *w,
            };
            match self
                .fetch_from(lease, host, reference, (blob, layer), size, writer, is_last)
                .await
            {
                Ok(path) => {
                    tracing::debug!(reference = %name, digest = %digest, host = %host.host, mirror = host.mirror, bytes = size, "blob served");
                    return Ok((path, true, Some(host.host.clone())));
                }
                Err(e) if !is_last => skipped(host, &name, "blob", &e),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last host returns")
    }

    /// Downloads the blob into `writer` from `host` and commits it: resuming with backoff
    /// when `retries`, else in one attempt (a mirror, which is not worth waiting for), whose
    /// partial content is then dropped rather than resumed from another host.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_from(
        &self,
        lease: &Lease,
        host: &Endpoint,
        reference: &Reference,
        (blob, layer): (Blob, &OciDescriptor),
        size: u64,
        mut writer: Ingest,
        retries: bool,
    ) -> Result<PathBuf> {
        let name = reference.whole();
        let transfer = self
            .progress
            .as_ref()
            .map(|p| p.transfer(&name, blob, &layer.digest, Some(size)));
        let mut backoff = Backoff::new();
        let mut attempts = 1;
        let result = loop {
            let (returned, outcome) = self
                .download(host, reference, layer, size, writer, transfer.as_deref())
                .await;
            writer = returned;
            match outcome {
                Ok(()) => {
                    // The commit syncs: off the runtime's threads, as the writing was.
                    let lease = lease.clone();
                    break tokio::task::spawn_blocking(move || lease.commit(writer))
                        .await
                        .expect("committing a blob does not panic")
                        .map_err(Error::from);
                }
                Err(Attempt::Retry(source, retry_after)) => match backoff.next_wait() {
                    Some(wait) if retries => {
                        let wait = wait_for(wait, retry_after);
                        tracing::debug!(reference = %name, error = %source, "download broke off");
                        let from = match writer.written() {
                            0 => String::new(),
                            n => format!(" from byte {n}"),
                        };
                        tracing::warn!(
                            "retrying in {}{from}: {}",
                            seconds(wait),
                            io_in_words(&source)
                        );
                        tokio::time::sleep(wait).await;
                        attempts += 1;
                    }
                    _ => {
                        if !retries {
                            writer.discard();
                        }
                        break Err(Error::Interrupted {
                            reference: name.clone(),
                            bytes: writer.written(),
                            attempts,
                            source,
                        });
                    }
                },
                Err(Attempt::Fail(e)) => {
                    if !retries {
                        writer.discard();
                    }
                    break Err(e);
                }
            }
        };
        if let Some(t) = transfer {
            t.finish();
        }
        match result {
            Ok(held) => Ok(held),
            Err(Error::Cache(wasm_oci_cache::Error::DigestMismatch { expected, actual })) => {
                Err(Error::DigestMismatch {
                    reference: name,
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// One attempt at the rest of a blob: from where `writer` stands, with a range request
    /// (even from 0, so a 206 is hashed once, by the ingest). A registry that ignores the
    /// range sends it all, and we start over. Hashing and writing run on a blocking thread
    /// while the network keeps receiving.
    async fn download(
        &self,
        host: &Endpoint,
        reference: &Reference,
        layer: &OciDescriptor,
        size: u64,
        mut writer: Ingest,
        transfer: Option<&dyn Transfer>,
    ) -> (Ingest, Result<(), Attempt>) {
        let name = reference.whole();
        let offset = writer.written();
        if offset == size {
            return (writer, Ok(()));
        }
        let asked = host.remote.blob(reference, &layer.digest, offset, size);
        let asked = if host.mirror {
            // A mirror's answer must begin within the deadline of a whole manifest, however
            // slowly it drips its head.
            match tokio::time::timeout(MIRROR_DOCUMENT_TIMEOUT, asked).await {
                Ok(asked) => asked,
                Err(_) => {
                    let why = format!("no answer within {}s", MIRROR_DOCUMENT_TIMEOUT.as_secs());
                    host.give_up(&why);
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, why);
                    return (writer, Err(Attempt::Retry(e, None)));
                }
            }
        } else {
            asked.await
        };
        let response = match asked {
            Ok((response, partial)) => {
                if !partial && offset > 0 {
                    tracing::debug!(reference = %name, "the registry ignored the range; starting over");
                    if let Err(e) = writer.restart() {
                        return (writer, Err(Attempt::Fail(e.into())));
                    }
                }
                response
            }
            Err(f) => {
                host.failed(&f);
                let retry = f.is_transient();
                let retry_after = f.retry_after();
                let attempt = match (retry, f.into_error(reference, host.scheme)) {
                    (true, Error::Unreachable { source, .. } | Error::Registry { source, .. }) => {
                        Attempt::Retry(std::io::Error::other(source), retry_after)
                    }
                    (_, e) => Attempt::Fail(e),
                };
                return (writer, Err(attempt));
            }
        };
        if let Some(t) = transfer {
            t.set_position(writer.written());
        }
        // Each chunk is copied into the ingest's buffer as soon as it arrives, so the HTTP
        // client gets its read buffer back; batching chunks here measured slower for that reason.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let sink = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = writer.write(&chunk) {
                    return (writer, Err(e));
                }
            }
            (writer, Ok(()))
        });
        let mut outcome = Ok(());
        let mut stream = response.bytes_stream();
        // A mirror must keep a pace (or finish): one that trickles is given up for the next
        // host, as one that cannot be connected to is. The origin is waited for.
        let mut pace = host.mirror.then(|| Pace::new(size - offset));
        loop {
            let chunk = match &mut pace {
                None => stream.next().await,
                Some(pace) => match tokio::time::timeout(pace.left(), stream.next()).await {
                    Ok(chunk) => chunk,
                    Err(_) => match pace.next_window() {
                        Ok(()) => continue,
                        Err(why) => {
                            host.give_up(&why.to_string());
                            outcome = Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why));
                            break;
                        }
                    },
                },
            };
            let Some(chunk) = chunk else { break };
            if let (Some(pace), Ok(chunk)) = (&mut pace, &chunk) {
                pace.arrived(chunk.len() as u64);
            }
            match chunk {
                Ok(chunk) => {
                    let n = chunk.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is below
                    }
                    if let Some(t) = transfer {
                        t.advance(n);
                    }
                }
                Err(e) => {
                    // A mirror silent for longer than its read timeout is passed over.
                    if e.is_timeout() {
                        host.give_up(&e.to_string());
                    }
                    outcome = Err(std::io::Error::other(e));
                    break;
                }
            }
        }
        drop(tx);
        let (writer, written) = sink.await.expect("the blob writer does not panic");
        if let Err(e) = written {
            return (writer, Err(Attempt::Fail(e.into())));
        }
        match outcome {
            // A response that ends early without an error (its Content-Length was short) is a
            // break like any other: what arrived is kept and the rest is asked for.
            Ok(()) if writer.written() < size => {
                let got = writer.written();
                (
                    writer,
                    Err(Attempt::Retry(
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the response ended after {got} of {size} bytes"),
                        ),
                        None,
                    )),
                )
            }
            Ok(()) => (writer, Ok(())),
            Err(e) => (writer, Err(Attempt::Retry(e, None))),
        }
    }
}

/// The pace a mirror must keep sending a blob at: in each window of
/// [`MIRROR_PACE_WINDOW`], [`MIRROR_MIN_BYTES`] or whatever was left.
struct Pace {
    started: tokio::time::Instant,
    /// Bytes the blob still lacked when the window began, and bytes that came in it.
    left_at_start: u64,
    came: u64,
}

impl Pace {
    fn new(left: u64) -> Pace {
        Pace {
            started: tokio::time::Instant::now(),
            left_at_start: left,
            came: 0,
        }
    }

    /// How long the current window has yet to run.
    fn left(&self) -> std::time::Duration {
        (self.started + MIRROR_PACE_WINDOW).saturating_duration_since(tokio::time::Instant::now())
    }

    fn arrived(&mut self, bytes: u64) {
        self.came += bytes;
    }

    /// At the end of a window: the next one when this one's pace was kept, else why not.
    fn next_window(&mut self) -> Result<(), TooSlow> {
        let due = MIRROR_MIN_BYTES.min(self.left_at_start);
        if self.came < due {
            return Err(TooSlow {
                came: self.came,
                due,
                window: MIRROR_PACE_WINDOW.as_secs(),
            });
        }
        *self = Pace::new(self.left_at_start.saturating_sub(self.came));
        Ok(())
    }
}

/// A mirror that did not keep [`Pace`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the mirror sent {came} bytes in {window}s, under the {due} a mirror must send in that time"
)]
struct TooSlow {
    came: u64,
    due: u64,
    window: u64,
}

/// How one download attempt ended badly.
enum Attempt {
    /// The transfer broke (connection, 5xx, 429): worth resuming, after the wait the
    /// registry asked for, if it did.
    Retry(std::io::Error, Option<std::time::Duration>),
    /// It cannot succeed by trying again.
    Fail(Error),
}

/// Manifests are small JSON documents; a registry that sends megabytes is not to be trusted.
fn check_document_size(bytes: &[u8], reference: &str) -> Result<()> {
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(Error::invalid_manifest(
            reference.to_owned(),
            format!(
                "it is {} bytes; manifests over {MAX_CONFIG_SIZE} bytes are refused",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

fn parse_digest(digest: &str, reference: &str) -> Result<Digest> {
    digest.parse().map_err(|e: wasm_oci_cache::Error| {
        Error::invalid_manifest(
            reference.to_owned(),
            wasm_oci_artifact::text::printable(&e.to_string()),
        )
    })
}
