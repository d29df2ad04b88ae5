//! Loading a layout into the cache: every artifact checked against the policy first, every
//! blob verified and made durable a batch at a time, and only then the references recorded,
//! none without its blobs (held against a concurrent prune).

use std::path::Path;

use wasm_oci_cache::{Cache, Digest, RefEntry};

use super::error::LayoutError;
use super::file::{import_blob, layout_err};
use super::kept::{ReferrersIndexes, import_referrers};
use super::read::{LayoutArtifact, artifacts, read_index};
use super::trusted::check_policy;
use crate::error::Result;
use crate::reference::parse_reference;
use crate::walk::{Record, signatures_record};
use wasm_oci_trust::Policy;

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
///
/// The precompiled code the layout holds for an artifact (signed referrers of its manifest)
/// is kept with its reference, for `run` and the shim to adopt without a registry, verified
/// then as a registry's is; one that cannot be kept whole is left out, with a warning.
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
                    LayoutError::Unnamed {
                        label: wasm_oci_artifact::text::printable(
                            artifact.ref_name.as_deref().unwrap_or("without a name"),
                        ),
                    },
                ));
            }
        };
        let parsed = parse_reference(&name)?;
        let reference = parsed.whole();
        let (signatures, valid) = check_policy(dir, &parsed, &artifact, policy)?;
        let signatures = signatures
            .map(|found| signatures_record(artifact.signed_digest.clone(), &found, valid));
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
            LayoutError::WouldReplace {
                reference: r.reference.clone(),
                was: r.was.clone(),
                now: r.now.clone(),
                others: replaced.len() - 1,
            },
        ));
    }
    // Every blob of every artifact first, verified and made durable a batch at a time (one
    // sync per batch, not per blob); the references only once all of them are in: a layout
    // that fails halfway records nothing.
    let mut batch = cache.blob_batch();
    // Blobs the cache had before; the rest this load stores.
    let mut had = std::collections::BTreeSet::new();
    let indexes = ReferrersIndexes::of(&read_index(dir)?);
    let mut named: Vec<Named> = named
        .into_iter()
        .map(|(reference, artifact, signatures)| Named {
            reference,
            artifact,
            signatures,
            referrers: None,
        })
        .collect();
    for one in &mut named {
        let (artifact, signatures) = (&one.artifact, one.signatures.as_deref());
        for (digest, size) in needed_blobs(artifact, signatures, None) {
            let content = (digest == &artifact.manifest_digest).then_some(&artifact.manifest[..]);
            if import_blob(&mut batch, dir, digest, size, content)? {
                had.insert(digest.clone());
            }
        }
        one.referrers = import_referrers(&mut batch, dir, &indexes, artifact, &mut had);
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
        let lease = hold_blobs(cache, dir, &chunk, &had)?;
        let entries: Vec<RefEntry> = chunk
            .into_iter()
            .map(|one| {
                let Named {
                    reference,
                    artifact,
                    signatures,
                    referrers,
                } = one;
                let mut entry = Record {
                    manifest_digest: artifact.manifest_digest,
                    config_digest: artifact.config_digest,
                    layer_digest: artifact.layer_digest,
                    layer_media_type: artifact.layer_media_type,
                    size: artifact.size,
                }
                .entry(reference, signatures, Default::default());
                entry.referrers = referrers;
                entry
            })
            .collect();
        lease.record_all(&entries)?;
        loaded.extend(entries);
    }
    Ok((loaded, replaced))
}

/// A lease that keeps every blob the artifacts of `chunk` use in the cache until they are
/// recorded through it: those the cache had before (`had`) are held first (a hold may wait for
/// a prune); then each this load stored is protected ([`wasm_oci_cache::Lease::protect`]:
/// held unless so young that no prune can sweep it before the chunk is recorded). A blob gone
/// meanwhile is stored again from the layout at `dir`, and held.
fn hold_blobs(
    cache: &Cache,
    dir: &Path,
    chunk: &[Named],
    had: &std::collections::BTreeSet<Digest>,
) -> Result<wasm_oci_cache::Lease> {
    let removed = |digest: &Digest, source: wasm_oci_cache::Error| {
        layout_err(
            dir,
            LayoutError::Removed {
                digest: digest.clone(),
                source,
            },
        )
    };
    let mut blobs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for one in chunk {
        let artifact = &one.artifact;
        for (digest, size) in needed_blobs(
            artifact,
            one.signatures.as_deref(),
            one.referrers.as_deref(),
        ) {
            if seen.insert(digest) {
                blobs.push((digest, size, artifact));
            }
        }
    }
    // Those that may wait first, so that the young are looked at just before recording.
    blobs.sort_by_key(|(digest, _, _)| !had.contains(*digest));
    let lease = cache.begin();
    let mut gone = Vec::new();
    for (digest, size, artifact) in blobs {
        let protected = if had.contains(digest) {
            lease.hold(digest)
        } else {
            lease.protect(digest, YOUNG_ENOUGH)
        };
        match protected {
            Ok(()) => {}
            Err(wasm_oci_cache::Error::BlobNotFound { .. }) => gone.push((digest, size, artifact)),
            Err(e) => return Err(removed(digest, e)),
        }
    }
    if gone.is_empty() {
        return Ok(lease);
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
        lease.hold(digest).map_err(|e| removed(digest, e))?;
    }
    Ok(lease)
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
/// manifest, its payloads and the index they sign (kept as a pull keeps it), and the
/// referrers kept with it.
fn needed_blobs<'a>(
    artifact: &'a LayoutArtifact,
    signatures: Option<&'a wasm_oci_cache::Signatures>,
    referrers: Option<&'a wasm_oci_cache::KeptReferrers>,
) -> Vec<(&'a Digest, Option<u64>)> {
    let mut blobs = artifact_blobs(artifact).to_vec();
    if let Some(s) = signatures {
        if artifact.signed_digest != artifact.manifest_digest {
            blobs.push((&artifact.signed_digest, None));
        }
        blobs.push((&s.manifest, None));
        blobs.extend(s.payloads.iter().map(|d| (d, None)));
    }
    if let Some(r) = referrers {
        blobs.extend(r.blobs().map(|d| (d, None)));
    }
    blobs
}

/// An artifact of the layout on its way into the cache: its name, its signatures and the
/// referrers kept with it.
struct Named {
    reference: String,
    artifact: LayoutArtifact,
    signatures: Option<Box<wasm_oci_cache::Signatures>>,
    referrers: Option<Box<wasm_oci_cache::KeptReferrers>>,
}

/// How long after looking a blob this load stored need not be held: recording a chunk of
/// references takes seconds; a prune sweeps it only once older than SWEEP_GRACE.
const YOUNG_ENOUGH: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Blobs written per sync by `load`.
const BATCH: usize = 3000;
/// References recorded per sync by `load`; each holds its three blobs open meanwhile, which
/// stays well under the usual limit of 1,024 open files.
const REFS_BATCH: usize = 250;
