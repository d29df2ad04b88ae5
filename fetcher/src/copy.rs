//! Copy: an artifact moved from a registry or an OCI image layout to another, byte for byte
//! (the same digests), with every entry of an index, and by default the cosign signatures
//! (`sha256-<hex>.sig`) and the OCI 1.1 referrers of everything it copies, recursively.
//!
//! Reads go through the hosts a pull asks (a hosts.toml's mirrors, then the origin), writes
//! to the destination's registry itself. A blob the destination has is not sent again; one
//! in another repository of the same registry is mounted. Blobs are streamed, never held
//! whole, and each is verified against its digest with the digest's own algorithm on the
//! way. Everything a manifest names is in the destination before the manifest, and the tag
//! is written last: a copy stopped halfway leaves no tag pointing at missing content.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _};
use oci_client::Reference;
use oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE;
use serde::Serialize;
use serde_json::json;
use sha2::Digest as _;
use wasm_oci_cache::Digest;

use crate::Fetcher;
use crate::error::{Error, Result};
use crate::layout::LayoutError;
use crate::layout::file::{blob_path, layout_err, open_regular, read_verified};
use crate::layout::read::{IMAGE_NAME, REF_NAME, is_referrers_tag, read_index};
use crate::layout::save::{index_to_add_to, write_index};
use crate::progress::{Blob, Transfer};
use crate::referrers::{Referrer, referrers_of, referrers_tag};
use crate::remote::endpoint::{Capability, Endpoint, ask_in_order};
use crate::remote::failure::{Failure, violation};
use crate::remote::registry::{MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE, Registry};
use crate::remote::retry::{Backoff, Transient as _, wait_for, with_retries};
use crate::tags::{is_valid_tag, media_type_of};
use wasm_oci_artifact::text::printable;

/// Manifests one copy moves at most (index entries, signatures and referrers included).
const MAX_MANIFESTS: usize = 100_000;
/// Entries of one index followed at most.
const MAX_ENTRIES: usize = 10_000;

/// One end of a copy: a reference in a registry, or an OCI image layout (`oci:DIR[:TAG]`).
#[derive(Debug, Clone)]
pub enum Place {
    /// A reference in a registry.
    Registry(Reference),
    /// An OCI image layout directory and, if given, the tag (`org.opencontainers.image.ref.name`).
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag in it.
        tag: Option<String>,
    },
}

impl Place {
    /// `oci:DIR[:TAG]` as skopeo and oras name a layout (a `DIR` that exists as a whole is
    /// taken without a tag), else a registry reference.
    pub fn parse(text: &str) -> Result<Place> {
        let Some(spec) = text.strip_prefix("oci:") else {
            return Ok(Place::Registry(crate::parse_reference(text)?));
        };
        let (dir, tag) = match spec.rsplit_once(':') {
            Some((dir, tag)) if !Path::new(spec).is_dir() && !dir.is_empty() => {
                if !is_valid_tag(tag) {
                    return Err(Error::invalid_reference(
                        printable(text),
                        "the tag of oci:DIR:TAG is up to 128 letters, digits, '_', '.' and '-'",
                    ));
                }
                (dir, Some(tag.to_owned()))
            }
            _ => (spec, None),
        };
        if dir.is_empty() {
            return Err(Error::invalid_reference(
                printable(text),
                "oci: names no directory",
            ));
        }
        Ok(Place::Layout {
            dir: PathBuf::from(dir),
            tag,
        })
    }

    /// The registry it names, if any.
    pub fn registry(&self) -> Option<&str> {
        match self {
            Place::Registry(reference) => Some(reference.registry()),
            Place::Layout { .. } => None,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Registry(reference) => write!(f, "{}", reference.whole()),
            Place::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Place::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
        }
    }
}

/// What a copy does beyond the artifact itself.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Copy the signatures and referrers of what is copied, recursively.
    pub referrers: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self { referrers: true }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Copied {
    /// Where from.
    pub source: String,
    /// Where to.
    pub destination: String,
    /// The digest of the manifest (or index) copied.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Manifests put in the destination (indexes, entries, signatures, referrers).
    pub manifests: usize,
    /// Blobs sent.
    pub blobs_sent: usize,
    /// Bytes of the blobs sent.
    pub bytes_sent: u64,
    /// Blobs the destination had already.
    pub blobs_present: usize,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: usize,
    /// Signature manifests (`sha256-<hex>.sig`) copied.
    pub signatures: usize,
    /// Referrers copied.
    pub referrers: usize,
}

/// A manifest as read: its bytes, digest and media type.
struct Doc {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
}

/// Where a copy reads.
enum Source<'a> {
    Registry {
        reference: &'a Reference,
        hosts: Arc<[Endpoint]>,
    },
    Layout {
        dir: &'a Path,
        index: serde_json::Value,
    },
}

/// Where a copy writes.
enum Destination<'a> {
    Registry {
        reference: &'a Reference,
        remote: Arc<Registry>,
        scheme: &'static str,
        /// The source repository, when it is another of the same registry: blobs are
        /// mounted from it.
        mount_from: Option<String>,
        /// Whether the registry has the referrers API, once asked.
        referrers_api: Option<bool>,
    },
    Layout {
        dir: &'a Path,
        /// The repository the entries come from (`registry/repository`), named in each
        /// tag's `io.containerd.image.name`, as `save` names it, for `load`.
        image_name: Option<String>,
        /// Index entries to add, written last, with `index.json`.
        tags: Vec<(String, serde_json::Value)>,
        /// Referrers of each subject, written as `sha256-<hex>` indexes at the end.
        referrers: BTreeMap<String, Vec<Referrer>>,
    },
}

impl Fetcher {
    /// Copies what `source` names to `destination`: see the module's documentation. The
    /// signature policy is not consulted: nothing is run, and the signatures travel along.
    pub async fn copy(
        &self,
        source: &Place,
        destination: &Place,
        options: CopyOptions,
    ) -> Result<Copied> {
        let src = match source {
            Place::Registry(reference) => Source::Registry {
                reference,
                hosts: self.transport().endpoints(reference).await?,
            },
            Place::Layout { dir, .. } => Source::Layout {
                dir,
                index: read_index(dir)?,
            },
        };
        let dst = match destination {
            Place::Registry(reference) => Destination::Registry {
                reference,
                remote: self.remote(reference).await?,
                scheme: self.scheme(reference),
                mount_from: match source {
                    Place::Registry(from)
                        if from.registry() == reference.registry()
                            && from.repository() != reference.repository() =>
                    {
                        Some(from.repository().to_owned())
                    }
                    _ => None,
                },
                referrers_api: None,
            },
            Place::Layout { dir, .. } => {
                prepare_layout(dir)?;
                Destination::Layout {
                    dir,
                    image_name: match source {
                        Place::Registry(from) => {
                            Some(format!("{}/{}", from.registry(), from.repository()))
                        }
                        Place::Layout { .. } => None,
                    },
                    tags: Vec::new(),
                    referrers: BTreeMap::new(),
                }
            }
        };
        let top = match source {
            Place::Registry(reference) => match reference.digest() {
                Some(digest) => Name::Digest(digest.to_owned()),
                None => Name::Tag(reference.tag().unwrap_or("latest").to_owned()),
            },
            Place::Layout { tag: Some(tag), .. } => Name::Tag(tag.clone()),
            Place::Layout { dir, tag: None } => Name::Digest(only_entry(dir, &src)?),
        };
        let mut walk = Walk {
            fetcher: self,
            src,
            dst,
            options,
            seen: HashSet::new(),
            copied: Copied {
                source: source.to_string(),
                destination: destination.to_string(),
                ..Copied::default()
            },
        };
        let doc = walk
            .src
            .manifest(&top)
            .await?
            .ok_or_else(|| Error::NotFound {
                reference: source.to_string(),
            })?;
        walk.copied.digest = doc.digest.clone();
        walk.copied.media_type = doc.media_type.clone();
        walk.manifest(doc_clone(&doc), true).await?;
        // The tag last: everything it points to is in place by now.
        let tag = match destination {
            Place::Registry(reference) => match reference.digest() {
                Some(digest) if digest != walk.copied.digest => {
                    return Err(Error::DigestMismatch {
                        reference: destination.to_string(),
                        expected: digest.to_owned(),
                        actual: walk.copied.digest.clone(),
                    });
                }
                Some(_) => None,
                None => Some(reference.tag().unwrap_or("latest").to_owned()),
            },
            Place::Layout { tag, .. } => tag.clone().or_else(|| match &top {
                Name::Tag(tag) => Some(tag.clone()),
                Name::Digest(_) => None,
            }),
        };
        walk.dst.finish(&doc, tag.as_deref()).await?;
        tracing::info!(digest = %walk.copied.digest, manifests = walk.copied.manifests,
            blobs_sent = walk.copied.blobs_sent, bytes = walk.copied.bytes_sent, "copied");
        Ok(walk.copied)
    }
}

/// What names a manifest in the source.
enum Name {
    Tag(String),
    Digest(String),
}

fn doc_clone(doc: &Doc) -> Doc {
    Doc {
        bytes: doc.bytes.clone(),
        digest: doc.digest.clone(),
        media_type: doc.media_type.clone(),
    }
}

/// The digest of a layout's only entry that is not a signature or a referrers index.
fn only_entry(dir: &Path, src: &Source<'_>) -> Result<String> {
    let Source::Layout { index, .. } = src else {
        unreachable!("only for a layout source")
    };
    let entries: Vec<&str> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            let name = m["annotations"][REF_NAME].as_str().unwrap_or_default();
            !name.ends_with(".sig") && !is_referrers_tag(name)
        })
        .filter_map(|m| m["digest"].as_str())
        .collect();
    match entries[..] {
        [one] => Ok(one.to_owned()),
        [] => Err(layout_err(
            dir,
            LayoutError::NoArtifact { tag: String::new() },
        )),
        _ => Err(layout_err(dir, LayoutError::Several)),
    }
}

/// Makes `dir` a layout to write into (its `blobs/sha256`, never through a link).
fn prepare_layout(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs").join(Digest::ALGORITHM);
    std::fs::create_dir_all(&blobs)
        .map_err(|source| layout_err(dir, LayoutError::Dir { source }))?;
    for sub in [dir.to_owned(), dir.join("blobs"), blobs] {
        if !std::fs::symlink_metadata(&sub).is_ok_and(|m| m.file_type().is_dir()) {
            return Err(layout_err(dir, LayoutError::NotADirectory { path: sub }));
        }
    }
    Ok(())
}

impl Source<'_> {
    /// The manifest `name` names; `None` when there is none.
    async fn manifest(&self, name: &Name) -> Result<Option<Doc>> {
        match self {
            Source::Registry { reference, hosts } => {
                let (at, capability) = match name {
                    Name::Tag(tag) => (
                        Reference::with_tag(
                            reference.registry().to_owned(),
                            reference.repository().to_owned(),
                            tag.clone(),
                        ),
                        Capability::Resolve,
                    ),
                    Name::Digest(digest) => (
                        Reference::with_digest(
                            reference.registry().to_owned(),
                            reference.repository().to_owned(),
                            digest.clone(),
                        ),
                        Capability::Pull,
                    ),
                };
                let at = &at;
                let found = ask_in_order(hosts, at, capability, "manifest", |host| {
                    let remote = host.remote.clone();
                    async move {
                        match remote
                            .manifest(at, MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE)
                            .await
                        {
                            Ok((bytes, digest)) => {
                                if bytes.len() as u64 > MAX_CONFIG_SIZE {
                                    return Err(violation(format!(
                                        "a manifest is over {MAX_CONFIG_SIZE} bytes"
                                    )));
                                }
                                let media_type = media_type_of(&bytes).ok_or_else(|| {
                                    violation("a manifest is not a JSON object".into())
                                })?;
                                Ok(Some(Doc {
                                    bytes,
                                    digest,
                                    media_type,
                                }))
                            }
                            Err(f) if f.is_not_found() => Ok(None),
                            Err(f) => Err(f),
                        }
                    }
                })
                .await?;
                Ok(found)
            }
            Source::Layout { dir, index } => {
                let (digest, listed_type) = match name {
                    Name::Digest(digest) => (digest.clone(), None),
                    Name::Tag(tag) => {
                        let Some(entry) = index["manifests"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag.as_str()))
                        else {
                            return Ok(None);
                        };
                        (
                            entry["digest"].as_str().unwrap_or_default().to_owned(),
                            entry["mediaType"].as_str().map(str::to_owned),
                        )
                    }
                };
                let parsed = crate::layout::read::parse_digest(dir, &digest)?;
                if !blob_path(dir, &parsed).exists() {
                    return Ok(None);
                }
                let bytes = read_verified(dir, &parsed)?;
                let media_type =
                    listed_type
                        .or_else(|| media_type_of(&bytes))
                        .ok_or_else(|| {
                            layout_err(
                                dir,
                                LayoutError::Manifest {
                                    label: printable(&digest),
                                    reason: "it is not a JSON object".into(),
                                },
                            )
                        })?;
                Ok(Some(Doc {
                    bytes,
                    digest,
                    media_type,
                }))
            }
        }
    }

    /// Whether reads go to mirrors before the origin.
    fn has_mirrors(&self) -> bool {
        matches!(self, Source::Registry { hosts, .. } if hosts.iter().any(|h| h.mirror))
    }

    /// The blob `digest` of `size` bytes from its start, as a stream.
    async fn blob(
        &self,
        digest: &str,
        size: u64,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        match self {
            Source::Registry { reference, hosts } => {
                let response = ask_in_order(hosts, reference, Capability::Pull, "blob", |host| {
                    let remote = host.remote.clone();
                    async move {
                        let (response, _) = remote.blob(reference, digest, 0, size).await?;
                        Ok(Some(response))
                    }
                })
                .await?
                .expect("a blob or an error");
                Ok(response
                    .bytes_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed())
            }
            Source::Layout { dir, .. } => {
                let parsed = crate::layout::read::parse_digest(dir, digest)?;
                let (file, _) = open_regular(dir, &blob_path(dir, &parsed))?;
                Ok(tokio_util::io::ReaderStream::with_capacity(
                    tokio::fs::File::from_std(file),
                    1 << 20,
                )
                .boxed())
            }
        }
    }

    /// The referrers of `digest`.
    async fn referrers(&self, fetcher: &Fetcher, digest: &str) -> Result<Vec<Referrer>> {
        match self {
            Source::Registry { reference, hosts } => {
                let name = reference.whole();
                for (host, last) in
                    crate::remote::endpoint::in_order(hosts, reference, Capability::Resolve)?
                {
                    match fetcher
                        .list_referrers(&host.remote, reference, digest)
                        .await
                    {
                        Ok((found, _)) => return Ok(found),
                        Err(e) if !last => {
                            crate::remote::endpoint::skipped(host, &name, "referrers", &e)
                        }
                        Err(e) => return Err(e),
                    }
                }
                unreachable!("the last host answers")
            }
            Source::Layout { dir, index } => {
                // The referrers tag schema, as `copy` writes a layout...
                let mut found = match self.manifest(&Name::Tag(referrers_tag(digest))).await? {
                    Some(doc) => referrers_of(&doc.bytes).map_err(|reason| {
                        layout_err(
                            dir,
                            LayoutError::Manifest {
                                label: referrers_tag(digest),
                                reason: reason.to_string(),
                            },
                        )
                    })?,
                    None => Vec::new(),
                };
                // ...and the untagged entries whose `subject` it is, as oras writes one.
                for entry in index["manifests"].as_array().into_iter().flatten() {
                    if entry["annotations"][REF_NAME].is_string() {
                        continue;
                    }
                    let Some(entry_digest) = entry["digest"].as_str() else {
                        continue;
                    };
                    if found.iter().any(|r| r.digest == entry_digest) {
                        continue;
                    }
                    let Some(doc) = self
                        .manifest(&Name::Digest(entry_digest.to_owned()))
                        .await?
                    else {
                        continue;
                    };
                    if let Some(referrer) = referrer_of(&doc, digest) {
                        found.push(referrer);
                    }
                }
                Ok(found)
            }
        }
    }
}

impl Destination<'_> {
    /// What an error of the destination's registry is about.
    fn failed(&self, f: Failure) -> Error {
        match self {
            Destination::Registry {
                reference, scheme, ..
            } => f.into_error(reference, scheme),
            Destination::Layout { .. } => unreachable!("a layout has no registry"),
        }
    }

    /// Whether the destination has the blob `digest`.
    async fn has_blob(&self, digest: &str) -> Result<bool> {
        match self {
            Destination::Registry {
                reference, remote, ..
            } => with_retries("checking for a blob", || {
                remote.blob_exists(reference, digest)
            })
            .await
            .map_err(|f| self.failed(f)),
            Destination::Layout { dir, .. } => {
                let parsed = crate::layout::read::parse_digest(dir, digest)?;
                let path = blob_path(dir, &parsed);
                // Only a regular file that hashes right counts; anything else is replaced.
                Ok(
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file())
                        && open_regular(dir, &path)
                            .ok()
                            .and_then(|(file, _)| Digest::of_reader(file).ok())
                            .is_some_and(|(actual, _)| actual == parsed),
                )
            }
        }
    }

    /// Mounts the blob `digest` from the source repository of the same registry, if any.
    async fn mount(&self, digest: &str) -> bool {
        let Destination::Registry {
            reference,
            remote,
            mount_from: Some(from),
            ..
        } = self
        else {
            return false;
        };
        match remote.mount_blob(reference, digest, from).await {
            Ok(mounted) => mounted,
            Err(e) => {
                tracing::debug!(error = %e, "mount refused; the blob is sent");
                false
            }
        }
    }

    /// Writes the blob `digest` of `size` bytes from `body` (verified on the way).
    async fn put_blob(
        &self,
        digest: &str,
        size: u64,
        body: BoxStream<'static, std::io::Result<Bytes>>,
    ) -> std::result::Result<(), BlobFailure> {
        match self {
            Destination::Registry {
                reference, remote, ..
            } => {
                let body = Mutex::new(Some(body));
                remote
                    .upload_blob(reference, digest, size, || {
                        match body.lock().expect("body lock").take() {
                            Some(stream) => reqwest::Body::wrap_stream(stream),
                            // Sent once already (a renewed token): this try fails, the next
                            // streams afresh.
                            None => reqwest::Body::from(Vec::new()),
                        }
                    })
                    .await
                    .map_err(BlobFailure::Registry)
            }
            Destination::Layout { dir, .. } => {
                let parsed =
                    crate::layout::read::parse_digest(dir, digest).map_err(BlobFailure::Error)?;
                let path = blob_path(dir, &parsed);
                let parent = path.parent().expect("a blob path has a parent");
                let io = |source: std::io::Error| {
                    BlobFailure::Error(Error::Io {
                        action: "writing",
                        path: path.clone(),
                        source,
                    })
                };
                let mut file = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
                let mut body = body;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(io)?;
                    file.write_all(&chunk).map_err(io)?;
                }
                file.as_file().sync_all().map_err(io)?;
                // A rename replaces whatever is at the name, and never writes through a link.
                file.persist(&path).map_err(|e| io(e.error))?;
                Ok(())
            }
        }
    }

    /// Puts the manifest `doc` by its digest.
    async fn put_manifest(&self, doc: &Doc) -> Result<()> {
        match self {
            Destination::Registry {
                reference, remote, ..
            } => {
                let at = Reference::with_digest(
                    reference.registry().to_owned(),
                    reference.repository().to_owned(),
                    doc.digest.clone(),
                );
                with_retries("putting a manifest", || {
                    remote.put_manifest(&at, &doc.bytes, &doc.media_type)
                })
                .await
                .map_err(|f| self.failed(f))
            }
            Destination::Layout { dir, .. } => {
                let parsed = crate::layout::read::parse_digest(dir, &doc.digest)?;
                wasm_oci_cache::write_atomic(&blob_path(dir, &parsed), &doc.bytes)?;
                Ok(())
            }
        }
    }

    /// Puts the manifest `doc` under `tag` (it is in the destination by digest already).
    async fn put_tag(&mut self, doc: &Doc, tag: &str) -> Result<()> {
        match self {
            Destination::Registry {
                reference,
                remote,
                scheme,
                ..
            } => {
                let at = Reference::with_tag(
                    reference.registry().to_owned(),
                    reference.repository().to_owned(),
                    tag.to_owned(),
                );
                let scheme = *scheme;
                with_retries("putting the tag", || {
                    remote.put_manifest(&at, &doc.bytes, &doc.media_type)
                })
                .await
                .map_err(|f| f.into_error(&at, scheme))
            }
            Destination::Layout {
                tags, image_name, ..
            } => {
                let mut annotations = BTreeMap::from([(REF_NAME, tag.to_owned())]);
                if let Some(name) = image_name {
                    annotations.insert(IMAGE_NAME, format!("{name}:{tag}"));
                }
                tags.retain(|(t, _)| t != tag);
                tags.push((
                    tag.to_owned(),
                    json!({
                        "mediaType": doc.media_type,
                        "digest": doc.digest,
                        "size": doc.bytes.len(),
                        "annotations": annotations,
                    }),
                ));
                Ok(())
            }
        }
    }

    /// Makes `added` known as referrers of `subject` in the destination: its referrers API
    /// lists them from their `subject` already; else the `sha256-<hex>` index.
    async fn add_referrers(
        &mut self,
        fetcher: &Fetcher,
        subject: &str,
        added: Vec<Referrer>,
    ) -> Result<()> {
        if added.is_empty() {
            return Ok(());
        }
        match self {
            Destination::Registry {
                reference,
                remote,
                referrers_api,
                ..
            } => {
                let api = match referrers_api {
                    Some(api) => *api,
                    None => {
                        let api = fetcher
                            .has_referrers_api(remote, reference, subject)
                            .await?;
                        *referrers_api = Some(api);
                        api
                    }
                };
                if !api {
                    fetcher
                        .add_to_referrers_tag(remote, reference, subject, &added)
                        .await?;
                }
                Ok(())
            }
            Destination::Layout { referrers, .. } => {
                let list = referrers.entry(subject.to_owned()).or_default();
                for r in added {
                    if !list.iter().any(|had| had.digest == r.digest) {
                        list.push(r);
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes what is written last: the tag (a registry's), or a layout's `index.json`.
    async fn finish(&mut self, top: &Doc, tag: Option<&str>) -> Result<()> {
        if let Destination::Layout { dir, referrers, .. } = self {
            // The referrers indexes, each merged with the one the layout has.
            let existing = index_to_add_to(dir)?;
            let mut indexes = Vec::new();
            for (subject, added) in std::mem::take(referrers) {
                let tag = referrers_tag(&subject);
                let mut list = existing_referrers(dir, &existing, &tag)?;
                for r in added {
                    if !list.iter().any(|had| had.digest == r.digest) {
                        list.push(r);
                    }
                }
                let body = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
                    "manifests": list,
                }))
                .expect("json values serialize");
                let doc = Doc {
                    digest: Digest::of(&body).to_string(),
                    bytes: body,
                    media_type: OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
                };
                indexes.push((doc, tag));
            }
            for (doc, tag) in indexes {
                self.put_manifest(&doc).await?;
                self.put_tag(&doc, &tag).await?;
            }
        }
        if let Some(tag) = tag {
            self.put_tag(top, tag).await?;
        }
        if let Destination::Layout { dir, tags, .. } = self {
            let mut index = index_to_add_to(dir)?;
            let mut manifests = index["manifests"].as_array().cloned().unwrap_or_default();
            for (tag, entry) in tags.drain(..) {
                manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag.as_str()));
                manifests.push(entry);
            }
            // Copied by digest only: listed untagged, so that the layout holds it.
            if tag.is_none() && !manifests.iter().any(|m| m["digest"] == top.digest.as_str()) {
                manifests.push(json!({
                    "mediaType": top.media_type,
                    "digest": top.digest,
                    "size": top.bytes.len(),
                }));
            }
            index["manifests"] = json!(manifests);
            write_index(dir, &index)?;
        }
        Ok(())
    }
}

/// `doc` as a referrer of `subject`, as the distribution spec has a registry list one: its
/// `artifactType`, else (a manifest's) its config's media type, and its annotations; `None`
/// when its `subject` is not `subject`.
fn referrer_of(doc: &Doc, subject: &str) -> Option<Referrer> {
    let value: serde_json::Value = serde_json::from_slice(&doc.bytes).ok()?;
    if value["subject"]["digest"].as_str() != Some(subject) {
        return None;
    }
    let artifact_type = match value["artifactType"].as_str().filter(|t| !t.is_empty()) {
        Some(t) => Some(t),
        None if value["manifests"].is_array() => None,
        None => value["config"]["mediaType"].as_str(),
    };
    Some(Referrer {
        digest: doc.digest.clone(),
        media_type: doc.media_type.clone(),
        size: doc.bytes.len() as u64,
        artifact_type: artifact_type.map(str::to_owned),
        annotations: serde_json::from_value(value["annotations"].clone()).unwrap_or_default(),
    })
}

/// The referrers the layout's index tagged `tag` lists.
fn existing_referrers(dir: &Path, index: &serde_json::Value, tag: &str) -> Result<Vec<Referrer>> {
    let Some(entry) = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
    else {
        return Ok(Vec::new());
    };
    let digest = crate::layout::read::parse_digest(dir, entry["digest"].as_str().unwrap_or(""))?;
    let bytes = read_verified(dir, &digest)?;
    referrers_of(&bytes).map_err(|reason| {
        layout_err(
            dir,
            LayoutError::Manifest {
                label: tag.to_owned(),
                reason: reason.to_string(),
            },
        )
    })
}

/// Why a blob did not arrive.
enum BlobFailure {
    /// The destination registry refused it or could not be reached.
    Registry(Failure),
    /// Anything else.
    Error(Error),
}

/// One copy's state: the ends, what was seen, what was done.
struct Walk<'a> {
    fetcher: &'a Fetcher,
    src: Source<'a>,
    dst: Destination<'a>,
    options: CopyOptions,
    seen: HashSet<String>,
    copied: Copied,
}

impl Walk<'_> {
    /// Copies the manifest `doc` after everything it names (index entries, config, layers),
    /// then, when `follow`, its signatures and referrers.
    fn manifest(&mut self, doc: Doc, follow: bool) -> BoxFuture<'_, Result<()>> {
        async move {
            if !self.seen.insert(doc.digest.clone()) {
                return Ok(());
            }
            if self.seen.len() > MAX_MANIFESTS {
                return Err(
                    self.invalid(&doc, format!("it leads to over {MAX_MANIFESTS} manifests"))
                );
            }
            let value: serde_json::Value = serde_json::from_slice(&doc.bytes)
                .map_err(|e| self.invalid(&doc, e.to_string()))?;
            if let Some(entries) = value["manifests"].as_array() {
                if entries.len() > MAX_ENTRIES {
                    return Err(self.invalid(&doc, format!("over {MAX_ENTRIES} entries")));
                }
                for entry in entries {
                    let (digest, size) = self.descriptor(&doc, entry)?;
                    let child = self
                        .src
                        .manifest(&Name::Digest(digest.clone()))
                        .await?
                        .ok_or_else(|| Error::NotFound {
                            reference: format!("{}@{digest}", self.copied.source),
                        })?;
                    if child.bytes.len() as u64 != size {
                        return Err(self.invalid(
                            &doc,
                            format!("its entry {digest} is not the {size} bytes it says"),
                        ));
                    }
                    self.manifest(child, follow).await?;
                }
            } else {
                let blobs = std::iter::once(&value["config"])
                    .chain(value["layers"].as_array().into_iter().flatten())
                    .filter(|d| !d.is_null());
                let mut list = Vec::new();
                for (i, descriptor) in blobs.enumerate() {
                    let (digest, size) = self.descriptor(&doc, descriptor)?;
                    list.push((
                        if i == 0 { Blob::Config } else { Blob::Layer },
                        digest,
                        size,
                    ));
                }
                for (kind, digest, size) in list {
                    self.blob(kind, &digest, size).await?;
                }
            }
            self.dst.put_manifest(&doc).await?;
            self.copied.manifests += 1;
            if follow && self.options.referrers {
                self.signatures_and_referrers(&doc).await?;
            }
            Ok(())
        }
        .boxed()
    }

    /// The signatures (`sha256-<hex>.sig`) and the referrers of `doc`, copied.
    async fn signatures_and_referrers(&mut self, doc: &Doc) -> Result<()> {
        let sig_tag = wasm_oci_trust::payload::signature_tag(&doc.digest);
        let sig = match self.src.manifest(&Name::Tag(sig_tag.clone())).await {
            Ok(sig) => sig,
            // A mirror said it has none, and the origin cannot be asked: nothing to copy
            // that could be read, said rather than failing the copy.
            Err(Error::Unreachable { .. }) if self.src.has_mirrors() => {
                tracing::warn!(digest = %doc.digest, "the origin cannot be reached to ask for signatures a mirror lacks; none copied");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(sig) = sig {
            let kept = doc_clone(&sig);
            self.manifest(sig, false).await?;
            self.dst.put_tag(&kept, &sig_tag).await?;
            self.copied.signatures += 1;
        }
        let referrers = self.src.referrers(self.fetcher, &doc.digest).await?;
        let mut copied = Vec::new();
        for listed in referrers {
            if copied.iter().any(|r: &Referrer| r.digest == listed.digest) {
                continue;
            }
            let Some(found) = self
                .src
                .manifest(&Name::Digest(listed.digest.clone()))
                .await?
            else {
                tracing::warn!(digest = %listed.digest, "a listed referrer is missing; not copied");
                continue;
            };
            // The list is the source's word (a referrers API's answer, a tag anyone who may
            // push can write); the manifest, fetched by its digest, is what refers or not.
            // One whose `subject` is another manifest is not copied (a destination without
            // the API would list it under this one), and the destination's list says what
            // each manifest says of itself, not what the source's list said of it.
            let Some(referrer) = referrer_of(&found, &doc.digest) else {
                tracing::warn!(
                    digest = %listed.digest,
                    subject = %doc.digest,
                    "a listed referrer does not name this manifest as its subject; not copied"
                );
                continue;
            };
            self.manifest(found, true).await?;
            self.copied.referrers += 1;
            copied.push(referrer);
        }
        self.dst
            .add_referrers(self.fetcher, &doc.digest, copied)
            .await
    }

    /// Copies the blob `digest` of `size` bytes, unless the destination has it.
    async fn blob(&mut self, kind: Blob, digest: &str, size: u64) -> Result<()> {
        if !self.seen.insert(digest.to_owned()) {
            return Ok(());
        }
        if self.dst.has_blob(digest).await? {
            self.copied.blobs_present += 1;
            return Ok(());
        }
        if self.dst.mount(digest).await {
            self.copied.blobs_mounted += 1;
            return Ok(());
        }
        let transfer: Option<Arc<dyn Transfer>> = self
            .fetcher
            .progress()
            .map(|p| Arc::from(p.transfer(&self.copied.source, kind, digest, Some(size))));
        let result = self.send_blob(digest, size, transfer.clone()).await;
        if let Some(t) = &transfer {
            t.finish();
        }
        result?;
        self.copied.blobs_sent += 1;
        self.copied.bytes_sent += size;
        Ok(())
    }

    /// Streams the blob from the source to the destination, verifying it on the way; a
    /// destination that fails for a while is tried again, from the start.
    async fn send_blob(
        &self,
        digest: &str,
        size: u64,
        transfer: Option<Arc<dyn Transfer>>,
    ) -> Result<()> {
        let mut backoff = Backoff::new();
        loop {
            if let Some(t) = &transfer {
                t.set_position(0);
            }
            let mismatch = Arc::new(Mutex::new(None));
            let stream = self.src.blob(digest, size).await?;
            let body = verified(stream, digest, size, mismatch.clone(), transfer.clone())?;
            let sent = self.dst.put_blob(digest, size, body).await;
            if let Some(actual) = mismatch.lock().expect("mismatch lock").take() {
                return Err(Error::DigestMismatch {
                    reference: format!("{}@{digest}", self.copied.source),
                    expected: digest.to_owned(),
                    actual,
                });
            }
            match sent {
                Ok(()) => return Ok(()),
                Err(BlobFailure::Error(e)) => return Err(e),
                Err(BlobFailure::Registry(f)) => match backoff.next_wait() {
                    Some(wait) if f.is_transient() => {
                        let wait = wait_for(wait, f.retry_after());
                        tracing::warn!(
                            "retrying in {}: {}",
                            crate::remote::retry::seconds(wait),
                            f.cause()
                        );
                        tokio::time::sleep(wait).await;
                    }
                    _ => return Err(self.dst.failed(f)),
                },
            }
        }
    }

    /// The digest and size of `descriptor`, checked.
    fn descriptor(&self, doc: &Doc, descriptor: &serde_json::Value) -> Result<(String, u64)> {
        let digest = descriptor["digest"]
            .as_str()
            .ok_or_else(|| self.invalid(doc, "a descriptor without a digest".into()))?;
        wasm_oci_artifact::reference::check_digest(digest)
            .map_err(|e| self.invalid(doc, format!("{}: {e}", printable(digest))))?;
        let size = descriptor["size"]
            .as_u64()
            .ok_or_else(|| self.invalid(doc, format!("{digest} has no size")))?;
        Ok((digest.to_owned(), size))
    }

    fn invalid(&self, doc: &Doc, reason: String) -> Error {
        Error::invalid_manifest(format!("{}@{}", self.copied.source, doc.digest), reason)
    }
}

/// A hasher of a digest's own algorithm.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn of(digest: &str) -> Option<Hasher> {
        Some(match digest.split_once(':')?.0 {
            "sha256" => Hasher::Sha256(sha2::Sha256::new()),
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => return None,
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// `stream`, which must be the `size` bytes of `digest`: hashed with the digest's own
/// algorithm as it passes, and ended with an error (the digest it had, in `mismatch`) when
/// it is not, so that the write it feeds fails rather than completes.
fn verified(
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    digest: &str,
    size: u64,
    mismatch: Arc<Mutex<Option<String>>>,
    transfer: Option<Arc<dyn Transfer>>,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
    let hasher = Hasher::of(digest).ok_or_else(|| Error::UnsupportedDigest {
        reference: String::new(),
        digest: printable(digest),
    })?;
    struct State {
        inner: BoxStream<'static, std::io::Result<Bytes>>,
        hasher: Option<Hasher>,
        seen: u64,
        size: u64,
        expected: String,
        mismatch: Arc<Mutex<Option<String>>>,
        transfer: Option<Arc<dyn Transfer>>,
    }
    let state = State {
        inner: stream,
        hasher: Some(hasher),
        seen: 0,
        size,
        expected: digest.to_owned(),
        mismatch,
        transfer,
    };
    Ok(futures_util::stream::unfold(state, |mut s| async move {
        let hasher = s.hasher.as_mut()?;
        match s.inner.next().await {
            Some(Ok(chunk)) => {
                s.seen += chunk.len() as u64;
                if s.seen > s.size {
                    s.hasher = None;
                    *s.mismatch.lock().expect("mismatch lock") =
                        Some(format!("over {} bytes", s.size));
                    let e = std::io::Error::other("the blob is longer than its descriptor says");
                    return Some((Err(e), s));
                }
                hasher.update(&chunk);
                if let Some(t) = &s.transfer {
                    t.advance(chunk.len() as u64);
                }
                Some((Ok(chunk), s))
            }
            Some(Err(e)) => {
                s.hasher = None;
                Some((Err(e), s))
            }
            None => {
                let actual = s.hasher.take().expect("checked above").finish();
                if s.seen == s.size && actual.eq_ignore_ascii_case(&s.expected) {
                    return None;
                }
                let actual = if s.seen == s.size {
                    actual
                } else {
                    format!("{} of {} bytes", s.seen, s.size)
                };
                *s.mismatch.lock().expect("mismatch lock") = Some(actual);
                let e = std::io::Error::other("the blob is not what its digest says");
                Some((Err(e), s))
            }
        }
    })
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_blob_that_is_not_its_digest_ends_in_an_error() {
        let body = Bytes::from_static(b"hello");
        let good = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&body)));
        for (digest, size, ok) in [
            (good.clone(), 5, true),
            (good.clone(), 6, false),
            (good.clone(), 4, false),
            (format!("sha256:{}", "0".repeat(64)), 5, false),
        ] {
            let mismatch = Arc::new(Mutex::new(None));
            let stream = futures_util::stream::iter([Ok(body.clone())]).boxed();
            let out: Vec<_> = verified(stream, &digest, size, mismatch.clone(), None)
                .unwrap()
                .collect()
                .await;
            assert_eq!(out.iter().all(|c| c.is_ok()), ok, "{digest} {size}");
            assert_eq!(mismatch.lock().unwrap().is_none(), ok, "{digest} {size}");
        }
    }

    #[test]
    fn layouts_are_named_as_skopeo_names_them() {
        match Place::parse("oci:/nonexistent/dir:v1").unwrap() {
            Place::Layout { dir, tag } => {
                assert_eq!(dir, Path::new("/nonexistent/dir"));
                assert_eq!(tag.as_deref(), Some("v1"));
            }
            other => panic!("{other:?}"),
        }
        let here = tempfile::tempdir().unwrap();
        match Place::parse(&format!("oci:{}", here.path().display())).unwrap() {
            Place::Layout { tag, .. } => assert_eq!(tag, None),
            other => panic!("{other:?}"),
        }
        assert!(Place::parse("oci:").is_err());
        assert!(Place::parse("oci:/x:a/b").is_err());
        assert!(matches!(
            Place::parse("localhost:5000/a:v1").unwrap(),
            Place::Registry(_)
        ));
        assert!(is_referrers_tag(&format!("sha256-{}", "a".repeat(64))));
        assert!(!is_referrers_tag("sha256-abc"));
        assert!(!is_referrers_tag("v1"));
    }
}
