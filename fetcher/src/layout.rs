//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/`), for air-gapped
//! nodes: written from the cache, read back into it with every digest verified, or run from.
//!
//! Entries are named the way skopeo and containerd name them: `org.opencontainers.image.ref.name`
//! holds the tag (`oci:DIR:TAG`), `io.containerd.image.name` the full reference.
//!
//! A layout is data from elsewhere, never a set of paths to follow: every file of it is opened
//! without following a symlink and without blocking (a FIFO must not hang us), must be a
//! regular file, and documents are refused by their size before a byte is read. `save`
//! writes into a directory someone else may have prepared: only through temporary files it
//! created itself, renamed into place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use serde_json::json;
use wasm_oci_cache::{Cache, Digest, RefEntry};

use crate::manifest::Choice;
use crate::{Error, Result, parse_reference};
use wasm_oci_trust::{Fetched, Gate, Policy, SignatureBlob};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";
/// index.json and manifests are small; anything larger is refused before it is parsed.
const MAX_DOCUMENT: u64 = wasm_oci_artifact::media::MAX_DOCUMENT;

fn layout_err(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Layout {
        dir: dir.to_owned(),
        reason: reason.into(),
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join(Digest::ALGORITHM).join(digest.hex())
}

/// Opens a file of a layout for reading with the one reader of files others name
/// ([`wasm_oci_artifact::file`]): never through a symlink (neither the file nor a directory
/// on the way from `dir` to it, as runc resolves paths in a rootfs), and only when it is a
/// regular file, which is looked at through an `O_PATH` handle first: a FIFO or a device is
/// never opened. Returns it with its size.
fn open_regular(dir: &Path, path: &Path) -> Result<(File, u64)> {
    use wasm_oci_artifact::file::{self, ReadError, Within};
    let err = |what: String| layout_err(dir, format!("{}: {what}", path.display()));
    let linked = || {
        err("is a symlink or reached through one, not a regular file of the layout; refusing to follow it".into())
    };
    let opened = match path.strip_prefix(dir) {
        Ok(inner) => {
            let root = layout_root(dir)?;
            match file::open_in(std::os::fd::AsFd::as_fd(&*root), inner, Within::NoSymlinks) {
                // A kernel older than 5.6: look at each directory on the way instead.
                Err(ReadError::NoOpenat2) => {
                    let mut at = dir.to_owned();
                    for part in inner.parent().into_iter().flat_map(Path::components) {
                        at.push(part);
                        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                            return Err(linked());
                        }
                    }
                    file::open_nofollow(path)
                }
                other => other,
            }
        }
        Err(_) => file::open_nofollow(path),
    };
    match opened {
        Ok(opened) => Ok((opened.file, opened.len)),
        Err(ReadError::Symlink | ReadError::NotRegular { kind: "a symlink" }) => Err(linked()),
        Err(ReadError::NotRegular { kind }) => Err(err(format!(
            "is not a regular file ({kind}); refusing to read it"
        ))),
        Err(e) => Err(err(e.to_string())),
    }
}

/// The layout's directory, opened once per thread and layout rather than once per blob (a
/// load of 10,000 entries opens 20,000 blobs).
fn layout_root(dir: &Path) -> Result<std::sync::Arc<rustix::fd::OwnedFd>> {
    use std::cell::RefCell;
    use std::sync::Arc;
    thread_local! {
        static ROOT: RefCell<Option<(PathBuf, Arc<rustix::fd::OwnedFd>)>> = const { RefCell::new(None) };
    }
    if let Some(fd) = ROOT.with_borrow(|r| {
        r.as_ref()
            .filter(|(at, _)| at == dir)
            .map(|(_, fd)| fd.clone())
    }) {
        return Ok(fd);
    }
    let fd = Arc::new(
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| layout_err(dir, io::Error::from(e).to_string()))?,
    );
    ROOT.with_borrow_mut(|r| *r = Some((dir.to_owned(), fd.clone())));
    Ok(fd)
}

fn kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Reads a small document (index.json, a manifest), refusing one over [`MAX_DOCUMENT`] by its
/// size, before reading it.
fn read_document(dir: &Path, path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_regular(dir, path)?;
    if len > MAX_DOCUMENT {
        return Err(layout_err(
            dir,
            format!(
                "{} is {len} bytes; documents over {MAX_DOCUMENT} bytes are refused",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // The cap holds even if the file grows while it is read.
    file.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| layout_err(dir, format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(layout_err(
            dir,
            format!(
                "{} grew past {MAX_DOCUMENT} bytes while it was read",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

/// Writes `entries` (cached references) into the layout at `dir`, creating it or adding to it.
/// Blobs are copied first and `index.json` is replaced last, atomically.
pub fn save(cache: &Cache, dir: &Path, entries: &[RefEntry]) -> Result<()> {
    let blobs = dir.join("blobs").join(Digest::ALGORITHM);
    fs::create_dir_all(&blobs).map_err(|e| layout_err(dir, e.to_string()))?;
    // Blobs are written into these directories: a planted link would lead the writes elsewhere.
    for sub in [dir.join("blobs"), blobs.clone()] {
        if !fs::symlink_metadata(&sub).is_ok_and(|m| m.file_type().is_dir()) {
            return Err(layout_err(
                dir,
                format!(
                    "{} is a symlink or not a directory; save writes only into a real directory: remove it or save elsewhere",
                    sub.display()
                ),
            ));
        }
    }
    let index_path = dir.join("index.json");
    // Saving adds to a layout: an index that is there but cannot be read is refused rather
    // than replaced, which would drop its entries.
    let mut index = match fs::symlink_metadata(&index_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        }
        _ => {
            let bytes = read_document(dir, &index_path).map_err(|e| {
                layout_err(
                    dir,
                    format!("{e:#}; save adds to an existing index.json and will not replace one it cannot read: remove it or save elsewhere"),
                )
            })?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| layout_err(dir, format!("index.json: {e}")))?
        }
    };
    let mut manifests: Vec<serde_json::Value> =
        index["manifests"].as_array().cloned().unwrap_or_default();
    for entry in entries {
        let config = entry.config_digest.clone().ok_or_else(|| {
            layout_err(
                dir,
                format!(
                    "{} was cached without its config; pull it again",
                    entry.reference
                ),
            )
        })?;
        for digest in [&entry.layer_digest, &config, &entry.manifest_digest] {
            save_blob(cache, dir, digest)?;
        }
        // A reference that resolved to an image index was signed as the index: the layout's
        // entry is the index then (its chosen manifest beside it), so that `load` verifies
        // the digest that was signed, as the pull did. An entry cached before the index was
        // kept has only the manifest; its signatures cannot be verified from the layout.
        let index = entry
            .signatures
            .as_ref()
            .map(|s| &s.signed_digest)
            .filter(|d| **d != entry.manifest_digest && cache.contains(d));
        let top = match index {
            Some(index) => {
                save_blob(cache, dir, index)?;
                index
            }
            None => &entry.manifest_digest,
        };
        let manifest = cache.read_blob(top)?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_else(|| match index {
                Some(_) => oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
                None => OCI_IMAGE_MEDIA_TYPE.to_owned(),
            });
        let reference = parse_reference(&entry.reference)?;
        let mut annotations = BTreeMap::from([(IMAGE_NAME, entry.reference.clone())]);
        if let Some(tag) = reference.tag() {
            annotations.insert(REF_NAME, tag.to_owned());
        }
        // A tag names one manifest in a layout: the newest save of it wins.
        if let Some(tag) = annotations.get(REF_NAME) {
            manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag.as_str()));
        }
        manifests.push(json!({
            "mediaType": media_type,
            "digest": top,
            "size": manifest.len(),
            "annotations": annotations,
        }));
        // Its signatures as skopeo and oras copy them: the `sha256-<hex>.sig` manifest,
        // tagged in the index, so that a node loading the layout can verify them offline.
        if let Some(signatures) = &entry.signatures {
            for digest in std::iter::once(&signatures.manifest).chain(&signatures.payloads) {
                save_blob(cache, dir, digest)?;
            }
            let tag = wasm_oci_trust::payload::signature_tag(&signatures.signed_digest.to_string());
            let size = cache.read_blob(&signatures.manifest)?.len();
            manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag.as_str()));
            manifests.push(json!({
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "digest": signatures.manifest,
                "size": size,
                "annotations": {
                    REF_NAME: tag,
                    IMAGE_NAME: format!("{}/{}:{tag}", reference.registry(), reference.repository()),
                },
            }));
        }
    }
    index["manifests"] = json!(manifests);
    wasm_oci_cache::write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    wasm_oci_cache::write_atomic(
        &dir.join("index.json"),
        &serde_json::to_vec_pretty(&index).expect("json values serialize"),
    )?;
    Ok(())
}

/// Copies one blob into the layout, unless a regular file with the right content is there.
/// Whatever else is at its name (a planted symlink, a damaged file) is replaced by a rename,
/// which never writes through a link; the copy goes to a temporary file created anew.
fn save_blob(cache: &Cache, dir: &Path, digest: &Digest) -> Result<()> {
    let target = blob_path(dir, digest);
    let write_err = |e: io::Error| layout_err(dir, format!("writing {}: {e}", target.display()));
    match fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_file() => {
            let whole = open_regular(dir, &target)
                .ok()
                .and_then(|(f, _)| Digest::of_reader(f).ok())
                .is_some_and(|(actual, _)| &actual == digest);
            if whole {
                return Ok(());
            }
            tracing::warn!(path = %target.display(), "replacing a damaged blob in the layout");
        }
        Ok(m) => tracing::warn!(
            path = %target.display(),
            kind = kind(&m.file_type()),
            "replacing what is not a regular file in the layout"
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    let mut from = File::open(cache.blob_path(digest)).map_err(write_err)?;
    wasm_oci_cache::write_atomic_from(&target, &mut from, 0o644)?;
    Ok(())
}

/// One wasm artifact found in a layout.
#[derive(Debug, Clone)]
pub struct LayoutArtifact {
    /// `org.opencontainers.image.ref.name`, usually the tag.
    pub ref_name: Option<String>,
    /// `io.containerd.image.name`, the full reference, when the writer recorded it.
    pub image_name: Option<String>,
    /// The digest of the index entry itself, which signatures sign: an image index's when
    /// the entry is one, else the image manifest's.
    pub signed_digest: Digest,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// Its config's digest.
    pub config_digest: Digest,
    /// Its config's size, as the manifest says; at most 4 MiB.
    pub config_size: u64,
    /// The wasm layer.
    pub layer_digest: Digest,
    /// Its media type.
    pub layer_media_type: String,
    /// Its size.
    pub size: u64,
    /// The manifest's bytes, read and verified once.
    manifest: Vec<u8>,
}

/// Lists the wasm artifacts of the layout at `dir`; entries that are not wasm are errors.
pub fn artifacts(dir: &Path) -> Result<Vec<LayoutArtifact>> {
    let layout = read_document(dir, &dir.join("oci-layout"))?;
    let version: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| layout_err(dir, format!("oci-layout: {e}")))?;
    if version["imageLayoutVersion"] != "1.0.0" {
        return Err(layout_err(
            dir,
            "oci-layout is not imageLayoutVersion 1.0.0",
        ));
    }
    let index: serde_json::Value =
        serde_json::from_slice(&read_document(dir, &dir.join("index.json"))?)
            .map_err(|e| layout_err(dir, format!("index.json: {e}")))?;
    let mut found = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let annotation = |k: &str| entry["annotations"][k].as_str().map(str::to_owned);
        let ref_name = annotation(REF_NAME);
        // Printed in messages: a layout's text is escaped like a registry's.
        let label = crate::text::printable(
            &ref_name
                .clone()
                .unwrap_or_else(|| entry["digest"].to_string()),
        );
        let mut digest = parse_digest(dir, entry["digest"].as_str().unwrap_or_default())?;
        // What a signature of this entry signs: the entry itself, an index when it is one.
        let signed_digest = digest.clone();
        // The choice a pull makes; a parse error names the layout as well as the entry.
        let choose = |bytes: &[u8]| {
            crate::manifest::choose(bytes, &label).map_err(|e| match e {
                Error::InvalidManifest { reason, .. } => {
                    layout_err(dir, format!("manifest of {label}: {reason}"))
                }
                other => other,
            })
        };
        // The image manifest's bytes, read and verified once.
        let mut manifest = read_verified(dir, &digest)?;
        // Signatures saved beside the artifacts are not artifacts.
        if serde_json::from_slice::<OciImageManifest>(&manifest)
            .is_ok_and(|m| is_signature_manifest(&m))
        {
            continue;
        }
        let (image, layer) = match choose(&manifest)? {
            Choice::Image {
                manifest: image,
                layer,
            } => (image, layer),
            Choice::Index(chosen) => {
                digest = parse_digest(dir, &chosen.digest)?;
                manifest = read_verified(dir, &digest)?;
                match choose(&manifest)? {
                    Choice::Image {
                        manifest: image,
                        layer,
                    } => (image, layer),
                    Choice::Index(_) => {
                        return Err(layout_err(
                            dir,
                            format!("{label}: nested indexes are not followed"),
                        ));
                    }
                }
            }
        };
        // A pull refuses a large config; so does a layout, before importing a byte of it.
        let config_size = u64::try_from(image.config.size)
            .ok()
            .filter(|s| *s <= MAX_DOCUMENT)
            .ok_or_else(|| {
                layout_err(
                    dir,
                    format!(
                        "{label}: its config {} claims {} bytes; configs over {MAX_DOCUMENT} bytes are refused",
                        image.config.digest, image.config.size
                    ),
                )
            })?;
        found.push(LayoutArtifact {
            ref_name,
            image_name: annotation(IMAGE_NAME),
            signed_digest,
            manifest_digest: digest,
            config_digest: parse_digest(dir, &image.config.digest)?,
            config_size,
            layer_digest: parse_digest(dir, &layer.digest)?,
            layer_media_type: layer.media_type.clone(),
            size: u64::try_from(layer.size).map_err(|_| layout_err(dir, "negative layer size"))?,
            manifest,
        });
    }
    Ok(found)
}

/// Whether a manifest holds cosign signatures (its layers are simple-signing payloads)
/// rather than an artifact.
fn is_signature_manifest(image: &OciImageManifest) -> bool {
    !image.layers.is_empty()
        && image
            .layers
            .iter()
            .all(|l| l.media_type == wasm_oci_trust::payload::SIMPLESIGNING_MEDIA_TYPE)
}

/// The signatures a layout holds for `digest`: the `sha256-<hex>.sig` entry of its index,
/// its manifest and payloads read and verified against their digests.
fn layout_signatures(dir: &Path, digest: &Digest) -> Result<Option<Fetched>> {
    let tag = wasm_oci_trust::payload::signature_tag(&digest.to_string());
    let index: serde_json::Value =
        serde_json::from_slice(&read_document(dir, &dir.join("index.json"))?)
            .map_err(|e| layout_err(dir, format!("index.json: {e}")))?;
    let Some(entry) = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag.as_str()))
    else {
        return Ok(None);
    };
    let manifest_digest = parse_digest(dir, entry["digest"].as_str().unwrap_or_default())?;
    let manifest = read_verified(dir, &manifest_digest)?;
    let layers = wasm_oci_trust::signatures::signature_layers(&manifest)
        .map_err(|e| layout_err(dir, format!("{tag}: {e}")))?;
    let mut blobs = Vec::new();
    for wasm_oci_trust::signatures::SignatureLayer {
        digest: payload_digest,
        size,
        signature,
    } in layers
    {
        let payload = read_verified(dir, &payload_digest)?;
        if payload.len() as u64 != size {
            return Err(layout_err(
                dir,
                format!(
                    "{tag}: payload {payload_digest} is not the {size} bytes its manifest says"
                ),
            ));
        }
        blobs.push((payload_digest, SignatureBlob { payload, signature }));
    }
    Ok(Some(Fetched {
        manifest,
        manifest_digest,
        layers: blobs,
    }))
}

/// A reference that a load would point at other content than the cache has for it.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// The reference.
    pub reference: String,
    /// The manifest the cache had for it.
    pub was: Digest,
    /// The manifest the layout has for it.
    pub now: Digest,
}

/// Imports the layout at `dir` into `cache`, verifying every blob, and records each artifact
/// under its full name: `io.containerd.image.name`, else the ref name when it is a full
/// reference, else `repository:TAG`. Returns the references recorded and those it replaced.
///
/// A layout is data from elsewhere: a name it claims that the cache already holds for other
/// content (pulled from its registry, or loaded before) is refused unless `force` is set, and
/// then nothing at all is imported.
///
/// Every artifact is checked against `policy` first, with the signatures the layout holds for
/// it (the `sha256-<hex>.sig` entries `save` writes): one the policy refuses fails the load,
/// and nothing is recorded.
pub fn load(
    cache: &Cache,
    dir: &Path,
    repository: Option<&str>,
    force: bool,
    policy: &Policy,
) -> Result<(Vec<RefEntry>, Vec<Replaced>)> {
    let mut named = Vec::new();
    let mut replaced = Vec::new();
    for artifact in artifacts(dir)? {
        let name = match (&artifact.image_name, &artifact.ref_name, repository) {
            (Some(name), _, _) => name.clone(),
            (None, Some(r), _) if r.contains('/') => r.clone(),
            (None, Some(tag), Some(repo)) => format!("{repo}:{tag}"),
            (None, None, Some(repo)) => format!("{repo}@{}", artifact.manifest_digest),
            (None, _, None) => {
                return Err(layout_err(
                    dir,
                    format!(
                        "the entry {} has no full reference name; pass --repository REGISTRY/REPO to name it",
                        crate::text::printable(
                            artifact.ref_name.as_deref().unwrap_or("without a name")
                        )
                    ),
                ));
            }
        };
        let parsed = parse_reference(&name)?;
        let reference = parsed.whole();
        let (signatures, valid) = check_policy(dir, &parsed, &artifact, policy)?;
        let signatures = signatures.map(|f| {
            Box::new(wasm_oci_cache::Signatures {
                signed_digest: artifact.signed_digest.clone(),
                manifest: f.manifest_digest,
                payloads: f.layers.into_iter().map(|(d, _)| d).collect(),
                valid,
            })
        });
        if let Some(cached) = cache.get_ref(&reference)?
            && cached.manifest_digest != artifact.manifest_digest
        {
            replaced.push(Replaced {
                reference: reference.clone(),
                was: cached.manifest_digest,
                now: artifact.manifest_digest.clone(),
            });
        }
        named.push((reference, artifact, signatures));
    }
    if !force && let Some(r) = replaced.first() {
        return Err(layout_err(
            dir,
            format!(
                "it would replace {} (cached as {}) with other content ({}){}; nothing was loaded. \
                 Pass --force to replace it",
                r.reference,
                r.was,
                r.now,
                match replaced.len() {
                    1 => String::new(),
                    n => format!(" and {} other cached references", n - 1),
                }
            ),
        ));
    }
    // Every blob of every artifact first, verified and made durable a batch at a time (one
    // sync per batch, not per blob); the references only once all of them are in: a layout
    // that fails halfway records nothing.
    let mut batch = cache.blob_batch();
    // Blobs the cache had before; the rest this load stores.
    let mut had = std::collections::BTreeSet::new();
    for (_, artifact, signatures) in &named {
        for (digest, size) in needed_blobs(artifact, signatures.as_deref()) {
            let content = (digest == &artifact.manifest_digest).then_some(&artifact.manifest[..]);
            if import_blob(&mut batch, dir, digest, size, content)? {
                had.insert(digest.clone());
            }
        }
        if batch.len() >= BATCH {
            std::mem::replace(&mut batch, cache.blob_batch()).commit()?;
        }
    }
    batch.commit()?;
    // Then the references, a batch at a time, none recorded without its blobs, though a
    // concurrent `cache prune` may have taken some since they were looked at above (a
    // catalogue's blobs are too many files to hold open all along): one the cache had, from
    // an old reference pruned, or one stored above and swept once older than SWEEP_GRACE (a
    // long load). See [`hold_blobs`].
    let mut loaded = Vec::with_capacity(named.len());
    let mut named = named.into_iter().peekable();
    while named.peek().is_some() {
        let chunk: Vec<_> = named.by_ref().take(REFS_BATCH).collect();
        let holds = hold_blobs(cache, dir, &chunk, &had)?;
        let entries: Vec<RefEntry> = chunk
            .into_iter()
            .map(|(reference, artifact, signatures)| RefEntry {
                reference,
                manifest_digest: artifact.manifest_digest,
                layer_digest: artifact.layer_digest,
                layer_media_type: artifact.layer_media_type,
                size: artifact.size,
                config_digest: Some(artifact.config_digest),
                signatures,
                sources: Default::default(),
            })
            .collect();
        cache.set_refs(&entries)?;
        drop(holds);
        loaded.extend(entries);
    }
    Ok((loaded, replaced))
}

/// Checks `artifact`, named `reference`, against `policy` with the signatures the layout
/// holds for it (the `sha256-<hex>.sig` entries `save` writes), as a pull checks what a
/// registry holds: its signatures, and the verdicts when the scope needs signatures.
fn check_policy(
    dir: &Path,
    reference: &oci_client::Reference,
    artifact: &LayoutArtifact,
    policy: &Policy,
) -> Result<(Option<Fetched>, Vec<wasm_oci_cache::Verdict>)> {
    let gate = Gate::new(policy, reference);
    let untrusted = |reason: String| Error::Untrusted {
        reference: reference.whole(),
        scope: gate.describe(),
        reason,
    };
    gate.admit().map_err(|r| untrusted(r.to_string()))?;
    // Signatures are of the entry's own digest (an index's, when it is one), as a pull
    // verifies them: the index is read from the layout and names the manifest chosen.
    let signatures = layout_signatures(dir, &artifact.signed_digest)?;
    let valid = gate
        .judge(&artifact.signed_digest.to_string(), signatures.as_ref())
        .map_err(|reason| untrusted(format!("{reason} (in the layout {})", dir.display())))?;
    Ok((signatures, valid))
}

/// The wasm file and digest that `oci:DIR:TAG` names, verified, and allowed by `policy` as
/// `load` would allow it: the entry's name (`io.containerd.image.name`, or a ref name that is
/// a full reference) picks the scope, checked with the layout's signatures. An entry without
/// a name runs only under a policy that accepts anything everywhere. `tag` may be omitted
/// when the layout holds one artifact.
pub fn resolve_trusted(
    dir: &Path,
    tag: Option<&str>,
    policy: &Policy,
) -> Result<(PathBuf, Digest)> {
    let chosen = choose_artifact(dir, tag)?;
    let name = chosen
        .image_name
        .clone()
        .or_else(|| chosen.ref_name.clone().filter(|r| r.contains('/')));
    match name {
        Some(name) => {
            let reference = parse_reference(&name)?;
            check_policy(dir, &reference, &chosen, policy)?;
        }
        None if wasm_oci_trust::admit_unnamed(policy).is_ok() => {}
        None => {
            return Err(layout_err(
                dir,
                format!(
                    "its entry {} has no reference name (io.containerd.image.name), so no scope \
                     of the signature policy {} can be checked for it, and that policy does not \
                     accept anything everywhere; load it with `wasm-oci load --repository \
                     REGISTRY/REPO` to name it, or run a signed reference",
                    crate::text::printable(chosen.ref_name.as_deref().unwrap_or("without a name")),
                    policy
                        .source()
                        .map_or("(none)".into(), |p| p.display().to_string())
                ),
            ));
        }
    }
    verified_layer(dir, &chosen)
}

fn verified_layer(dir: &Path, chosen: &LayoutArtifact) -> Result<(PathBuf, Digest)> {
    let path = blob_path(dir, &chosen.layer_digest);
    verify_file(dir, &path, &chosen.layer_digest, Some(chosen.size))?;
    Ok((path, chosen.layer_digest.clone()))
}

fn choose_artifact(dir: &Path, tag: Option<&str>) -> Result<LayoutArtifact> {
    let all = artifacts(dir)?;
    match tag {
        Some(tag) => all.into_iter().find(|a| a.ref_name.as_deref() == Some(tag)),
        None if all.len() == 1 => all.into_iter().next(),
        None => {
            return Err(layout_err(
                dir,
                "it holds several artifacts: name one as oci:DIR:TAG",
            ));
        }
    }
    .ok_or_else(|| {
        layout_err(
            dir,
            format!("no artifact named {}", tag.unwrap_or_default()),
        )
    })
}

fn parse_digest(dir: &Path, digest: &str) -> Result<Digest> {
    digest
        .parse()
        .map_err(|e: wasm_oci_cache::Error| layout_err(dir, e.to_string()))
}

fn read_verified(dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let bytes = read_document(dir, &blob_path(dir, digest))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(layout_err(dir, format!("blob {digest} hashes to {actual}")));
    }
    Ok(bytes)
}

fn verify_file(dir: &Path, path: &Path, digest: &Digest, size: Option<u64>) -> Result<()> {
    let (file, len) = open_regular(dir, path)?;
    if let Some(size) = size
        && len != size
    {
        return Err(layout_err(
            dir,
            format!("blob {digest} is {len} bytes; its manifest says {size}"),
        ));
    }
    let (actual, total) = Digest::of_reader(file.take(len))
        .map_err(|e| layout_err(dir, format!("{}: {e}", path.display())))?;
    if &actual != digest || size.is_some_and(|s| s != total) {
        return Err(layout_err(
            dir,
            format!("blob {digest} hashes to {actual} ({total} bytes)"),
        ));
    }
    Ok(())
}

/// Makes sure every blob the artifacts of `chunk` use stays in the cache until they are
/// recorded: those the cache had before (`had`) are held first (a hold may wait for a
/// prune); then each this load stored is held unless it is so young that no prune can sweep
/// it before the chunk is recorded ([`Cache::is_young_for`], one `stat` against a hold's
/// five, which is most of a large load's blobs). A blob gone meanwhile is stored again from
/// the layout at `dir`, and held.
fn hold_blobs(
    cache: &Cache,
    dir: &Path,
    chunk: &[(
        String,
        LayoutArtifact,
        Option<Box<wasm_oci_cache::Signatures>>,
    )],
    had: &std::collections::BTreeSet<Digest>,
) -> Result<Vec<wasm_oci_cache::Hold>> {
    let removed = |digest: &Digest, e: wasm_oci_cache::Error| {
        layout_err(
            dir,
            format!(
                "blob {digest} was removed while loading (a concurrent prune?): {e}; run load again"
            ),
        )
    };
    let mut blobs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (_, artifact, signatures) in chunk {
        for (digest, size) in needed_blobs(artifact, signatures.as_deref()) {
            if seen.insert(digest) {
                blobs.push((digest, size, artifact));
            }
        }
    }
    // Those that may wait first, so that the young are looked at just before recording.
    blobs.sort_by_key(|(digest, _, _)| !had.contains(*digest));
    let mut holds = Vec::new();
    let mut gone = Vec::new();
    for (digest, size, artifact) in blobs {
        if !had.contains(digest) && cache.is_young_for(digest, YOUNG_ENOUGH) {
            continue;
        }
        match cache.hold(digest) {
            Ok(hold) => holds.push(hold),
            Err(wasm_oci_cache::Error::BlobNotFound { .. }) => gone.push((digest, size, artifact)),
            Err(e) => return Err(removed(digest, e)),
        }
    }
    if gone.is_empty() {
        return Ok(holds);
    }
    tracing::warn!(
        blobs = gone.len(),
        "blobs were removed by a concurrent prune while loading; storing them again"
    );
    let mut batch = cache.blob_batch();
    for (digest, size, artifact) in &gone {
        let content = (*digest == &artifact.manifest_digest).then_some(&artifact.manifest[..]);
        import_blob(&mut batch, dir, digest, *size, content)?;
    }
    batch.commit()?;
    for (digest, _, _) in gone {
        holds.push(cache.hold(digest).map_err(|e| removed(digest, e))?);
    }
    Ok(holds)
}

/// Stages the layout's blob `digest` (from `content` when it was read already) unless the
/// batch or the cache has it; returns whether the cache had it before.
fn import_blob(
    batch: &mut wasm_oci_cache::BlobBatch<'_>,
    dir: &Path,
    digest: &Digest,
    size: Option<u64>,
    content: Option<&[u8]>,
) -> Result<bool> {
    // One the cache (or this batch) has already is not read again: a shared config once.
    if batch.staged(digest) {
        return Ok(false);
    }
    if batch.cache().contains(digest) {
        return Ok(true);
    }
    let mismatch = |e| match e {
        wasm_oci_cache::Error::DigestMismatch { expected, actual } => layout_err(
            dir,
            format!("blob {expected} hashes to {actual}; nothing was imported from it"),
        ),
        other => other.into(),
    };
    if let Some(content) = content {
        batch.add(digest, size, content).map_err(mismatch)?;
        return Ok(false);
    }
    let path = blob_path(dir, digest);
    let (file, len) = open_regular(dir, &path)?;
    if let Some(size) = size
        && len != size
    {
        return Err(layout_err(
            dir,
            format!("blob {digest} is {len} bytes; its manifest says {size}"),
        ));
    }
    batch.add(digest, Some(len), file).map_err(mismatch)?;
    Ok(false)
}

/// The blobs of an artifact with their sizes, when the manifest gives them.
fn artifact_blobs(artifact: &LayoutArtifact) -> [(&Digest, Option<u64>); 3] {
    [
        (&artifact.layer_digest, Some(artifact.size)),
        (&artifact.config_digest, Some(artifact.config_size)),
        // Read and verified already, and small.
        (&artifact.manifest_digest, None),
    ]
}

/// The blobs a loaded reference needs: its artifact's and, with signatures, the `.sig`
/// manifest, its payloads and the index they sign (kept as a pull keeps it).
fn needed_blobs<'a>(
    artifact: &'a LayoutArtifact,
    signatures: Option<&'a wasm_oci_cache::Signatures>,
) -> Vec<(&'a Digest, Option<u64>)> {
    let mut blobs = artifact_blobs(artifact).to_vec();
    if let Some(s) = signatures {
        if artifact.signed_digest != artifact.manifest_digest {
            blobs.push((&artifact.signed_digest, None));
        }
        blobs.push((&s.manifest, None));
        blobs.extend(s.payloads.iter().map(|d| (d, None)));
    }
    blobs
}

/// How long after looking a blob this load stored need not be held: recording a chunk of
/// references takes seconds; a prune sweeps it only once older than SWEEP_GRACE.
const YOUNG_ENOUGH: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Blobs written per sync by `load`.
const BATCH: usize = 3000;
/// References recorded per sync by `load`; each holds its three blobs open meanwhile, which
/// stays well under the usual limit of 1,024 open files.
const REFS_BATCH: usize = 250;

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout whose index.json is a FIFO would block the reader until a writer came; one
    /// whose index.json leads to `/dev/zero` would be read forever: both are refused at once,
    /// never opened.
    #[test]
    fn a_fifo_or_a_device_in_a_layout_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &dir.path().join("index.json"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = artifacts(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        // Outside the layout's own tree (a path named directly), a device is refused the
        // same way.
        let e = open_regular(dir.path(), Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a regular file (a character device)"),
            "{e}"
        );
        // Inside it, a symlink to a device is not followed at all.
        fs::remove_file(dir.path().join("index.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("index.json")).unwrap();
        let e = read_document(dir.path(), &dir.path().join("index.json")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
