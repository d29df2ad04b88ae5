//! The precompiled code a layout carries for its modules (OCI referrers of a module's
//! manifest, listed by the index tagged `sha256-<hex>` as `save` and `copy` write it), kept in
//! the cache by `load` so that a node without a registry adopts it, checked then exactly as a
//! registry's ([`crate::Fetcher::adopt_precompiled`]).
//!
//! Nothing here is trusted: a referrer is kept only whole (each blob verified against its
//! digest as it is stored) and with its signatures, none verified against the policy yet:
//! that is the gate's, when the code is adopted. One that cannot be kept is left out and
//! said: precompiled code is an extra, never a reason to refuse a layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use wasm_oci_artifact::media::{COMPILED_ARTIFACT_TYPE, MAX_COMPILED};
use wasm_oci_cache::{BlobBatch, Digest, KeptReferrer, KeptReferrers, Signatures};

use super::error::MAX_DOCUMENT;
use super::file::{import_blob, read_verified};
use super::read::{LayoutArtifact, REF_NAME, is_referrers_tag, layout_signatures, parse_digest};
use crate::referrers::{referrers_of, referrers_tag};

/// Precompiled referrers kept per module at most: a fleet attaches two per target (`run`'s
/// engine and the shim's); a layout that lists many more is not worth a disk full.
pub(crate) const MAX_KEPT: usize = 16;
/// Precompiled referrers looked at per module at most, kept or not: a list of thousands that
/// all fail must not make `load` read thousands of documents.
pub(crate) const MAX_LOOKED_AT: usize = 2 * MAX_KEPT;

/// The referrers indexes of a layout (`sha256-<hex>` tags), by tag: read once per load.
pub(crate) struct ReferrersIndexes(BTreeMap<String, String>);

impl ReferrersIndexes {
    /// The `sha256-<hex>` entries of the layout's `index.json` (as `artifacts` read it).
    pub(crate) fn of(index: &serde_json::Value) -> Self {
        let tags = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let tag = m["annotations"][REF_NAME].as_str()?;
                let digest = m["digest"].as_str()?;
                is_referrers_tag(tag).then(|| (tag.to_owned(), digest.to_owned()))
            })
            .collect();
        Self(tags)
    }
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

/// Stages in `batch` the precompiled referrers the layout at `dir` holds for `artifact`, with
/// their signatures and the index that lists them; what is kept, or `None`. The digests the
/// cache had before are added to `had`.
pub(crate) fn import_referrers(
    batch: &mut BlobBatch<'_>,
    dir: &Path,
    indexes: &ReferrersIndexes,
    artifact: &LayoutArtifact,
    had: &mut BTreeSet<Digest>,
) -> Option<Box<KeptReferrers>> {
    let subject = artifact.manifest_digest.to_string();
    let tag = referrers_tag(&subject);
    let index_digest = indexes.0.get(&tag)?;
    let listed = parse_digest(dir, index_digest)
        .and_then(|digest| Ok((read_verified(dir, &digest)?, digest)))
        .map_err(|e| e.to_string())
        .and_then(|(body, digest)| {
            let listed = referrers_of(&body).map_err(|e| e.to_string())?;
            Ok((body, digest, listed))
        });
    let (body, index, listed) = match listed {
        Ok(found) => found,
        Err(reason) => {
            tracing::warn!(%subject, %tag, %reason, "the layout's referrers of a module cannot be read; its precompiled code is not kept");
            return None;
        }
    };
    let mut kept = Vec::new();
    for (looked_at, referrer) in listed
        .iter()
        .filter(|r| r.artifact_type.as_deref() == Some(COMPILED_ARTIFACT_TYPE))
        .enumerate()
    {
        if kept.len() == MAX_KEPT || looked_at == MAX_LOOKED_AT {
            tracing::warn!(%subject, kept = kept.len(), looked_at, "the layout lists more precompiled code for a module than is looked at; the rest is not kept");
            break;
        }
        match keep(batch, dir, &subject, &referrer.digest, had) {
            Ok(one) => kept.push(one),
            Err(reason) => {
                tracing::warn!(%subject, referrer = %wasm_oci_artifact::text::printable(&referrer.digest), %reason, "precompiled code of the layout not kept")
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    match import_blob(batch, dir, &index, None, Some(&body)) {
        Ok(true) => {
            had.insert(index.clone());
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%subject, %tag, reason = %e, "the layout's referrers of a module cannot be kept");
            return None;
        }
    }
    tracing::debug!(%subject, kept = kept.len(), "precompiled code of the layout kept");
    Some(Box::new(KeptReferrers { index, kept }))
}

/// A blob to stage: its digest, its size when a manifest gives it, its bytes when read
/// already.
type Staged<'a> = (&'a Digest, Option<u64>, Option<&'a [u8]>);

/// One referrer, staged whole with its signatures; or why not.
fn keep(
    batch: &mut BlobBatch<'_>,
    dir: &Path,
    subject: &str,
    digest: &str,
    had: &mut BTreeSet<Digest>,
) -> Result<KeptReferrer, String> {
    let digest = parse_digest(dir, digest).map_err(|e| e.to_string())?;
    let body = read_verified(dir, &digest).map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if manifest.artifact_type.as_deref() != Some(COMPILED_ARTIFACT_TYPE) {
        return Err("its manifest is not of precompiled code".into());
    }
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject) {
        return Err("its subject is not this module's manifest".into());
    }
    let [layer] = &manifest.layers[..] else {
        return Err(format!("it has {} layers, not one", manifest.layers.len()));
    };
    if layer.size > MAX_COMPILED || manifest.config.size > MAX_DOCUMENT {
        return Err("its blobs are larger than any compiled code's".into());
    }
    // Unsigned code is never adopted: not worth its room.
    let signatures = layout_signatures(dir, &digest)
        .map_err(|e| e.to_string())?
        .ok_or("it is not signed")?;
    let config = parse_digest(dir, &manifest.config.digest).map_err(|e| e.to_string())?;
    let code = parse_digest(dir, &layer.digest).map_err(|e| e.to_string())?;
    let mut blobs: Vec<Staged<'_>> = vec![
        (&config, Some(manifest.config.size), None),
        (&code, Some(layer.size), None),
        (&digest, None, Some(&body[..])),
        (
            &signatures.manifest_digest,
            None,
            Some(&signatures.manifest[..]),
        ),
    ];
    for (payload, blob) in &signatures.layers {
        blobs.push((payload, None, Some(&blob.payload[..])));
    }
    for (blob, size, content) in blobs {
        if import_blob(batch, dir, blob, size, content).map_err(|e| e.to_string())? {
            had.insert(blob.clone());
        }
    }
    Ok(KeptReferrer {
        blobs: vec![config, code],
        signatures: Some(Signatures {
            signed_digest: digest.clone(),
            manifest: signatures.manifest_digest.clone(),
            payloads: signatures.layers.iter().map(|(d, _)| d.clone()).collect(),
            valid: Vec::new(),
        }),
        manifest: digest,
    })
}
