//! Writing a layout from the cache: blobs first, each through a temporary file created anew
//! and renamed into place (a planted symlink is replaced, never written through), then
//! `index.json`, atomically. A reference signed as an index is saved as that index.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use serde_json::json;
use wasm_oci_cache::{Cache, Digest, RefEntry};

use super::error::LayoutError;
use super::file::{blob_path, kind, layout_err, open_regular, read_document};
use super::read::{IMAGE_NAME, REF_NAME};
use crate::error::{Error, Result};
use crate::reference::parse_reference;

/// Writes `entries` (cached references) into the layout at `dir`, creating it or adding to it.
/// Blobs are copied first and `index.json` is replaced last, atomically.
pub fn save(cache: &Cache, dir: &Path, entries: &[RefEntry]) -> Result<()> {
    let blobs = dir.join("blobs").join(Digest::ALGORITHM);
    fs::create_dir_all(&blobs).map_err(|source| layout_err(dir, LayoutError::Dir { source }))?;
    // Blobs are written into these directories: a planted link would lead the writes elsewhere.
    for sub in [dir.join("blobs"), blobs.clone()] {
        if !fs::symlink_metadata(&sub).is_ok_and(|m| m.file_type().is_dir()) {
            return Err(layout_err(dir, LayoutError::NotADirectory { path: sub }));
        }
    }
    let mut index = index_to_add_to(dir)?;
    let mut manifests: Vec<serde_json::Value> =
        index["manifests"].as_array().cloned().unwrap_or_default();
    for entry in entries {
        let config = entry.config_digest.clone().ok_or_else(|| {
            layout_err(
                dir,
                LayoutError::NoConfig {
                    reference: entry.reference.clone(),
                },
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
    write_index(dir, &index)
}

/// The layout's index to add entries to: a new, empty one where there is none. Writing adds
/// to a layout: an index that is there but cannot be read is refused rather than replaced,
/// which would drop its entries.
pub(crate) fn index_to_add_to(dir: &Path) -> Result<serde_json::Value> {
    let index_path = dir.join("index.json");
    match fs::symlink_metadata(&index_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [],
        })),
        _ => {
            let bytes = read_document(dir, &index_path).map_err(|e| match e {
                Error::Layout { reason, .. } => {
                    layout_err(dir, LayoutError::UnreadableIndex { source: reason })
                }
                other => other,
            })?;
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|source| {
                layout_err(
                    dir,
                    LayoutError::Json {
                        file: "index.json",
                        source,
                    },
                )
            })
        }
    }
}

/// Replaces the layout's `index.json` with `index` (and writes its `oci-layout`), each
/// atomically: a reader sees the old index or the new one, never half of one.
pub(crate) fn write_index(dir: &Path, index: &serde_json::Value) -> Result<()> {
    wasm_oci_cache::write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    wasm_oci_cache::write_atomic(
        &dir.join("index.json"),
        &serde_json::to_vec_pretty(index).expect("json values serialize"),
    )?;
    Ok(())
}

/// Copies one blob into the layout, unless a regular file with the right content is there.
/// Whatever else is at its name (a planted symlink, a damaged file) is replaced by a rename,
/// which never writes through a link; the copy goes to a temporary file created anew.
fn save_blob(cache: &Cache, dir: &Path, digest: &Digest) -> Result<()> {
    let target = blob_path(dir, digest);
    let write_err = |source: io::Error| {
        layout_err(
            dir,
            LayoutError::Write {
                path: target.clone(),
                source,
            },
        )
    };
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
