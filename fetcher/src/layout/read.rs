//! Reading a layout: its index's entries, each walked to its wasm artifact as a pull walks a
//! registry's (one index at most, the same choice of platform and layer), and the
//! `sha256-<hex>.sig` entries that hold their signatures.

use std::path::Path;

use oci_client::manifest::OciImageManifest;
use wasm_oci_cache::Digest;

use super::error::{LayoutError, MAX_DOCUMENT};
use super::file::{layout_err, read_document, read_verified};
use crate::error::{Error, Result};
use wasm_oci_artifact::manifest::Choice;
use wasm_oci_artifact::walk::image_behind;
use wasm_oci_trust::SignatureBlob;

/// The annotation that holds an entry's tag (`oci:DIR:TAG`), as skopeo writes it.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation that holds an entry's full reference, as containerd writes it.
pub(crate) const IMAGE_NAME: &str = "io.containerd.image.name";

/// The layout's `index.json`, parsed.
pub(crate) fn read_index(dir: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(&read_document(dir, &dir.join("index.json"))?).map_err(|source| {
        layout_err(
            dir,
            LayoutError::Json {
                file: "index.json",
                source,
            },
        )
    })
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
    pub(crate) manifest: Vec<u8>,
}

/// Lists the wasm artifacts of the layout at `dir`; entries that are not wasm are errors.
pub fn artifacts(dir: &Path) -> Result<Vec<LayoutArtifact>> {
    let layout = read_document(dir, &dir.join("oci-layout"))?;
    let version: serde_json::Value = serde_json::from_slice(&layout).map_err(|source| {
        layout_err(
            dir,
            LayoutError::Json {
                file: "oci-layout",
                source,
            },
        )
    })?;
    if version["imageLayoutVersion"] != "1.0.0" {
        return Err(layout_err(dir, LayoutError::Version));
    }
    let index = read_index(dir)?;
    let entries = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parts = parts_of_indexes(dir, entries)?;
    let mut found = Vec::new();
    for entry in entries {
        let annotation = |k: &str| entry["annotations"][k].as_str().map(str::to_owned);
        let ref_name = annotation(REF_NAME);
        // An unnamed entry that an index of the layout names is a part of that artifact, not
        // one of its own (oras-go lists every manifest it holds, an index's entries too: the
        // Linux image beside the wasm that `push` writes).
        if ref_name.is_none()
            && annotation(IMAGE_NAME).is_none()
            && entry["digest"].as_str().is_some_and(|d| parts.contains(d))
        {
            continue;
        }
        // Printed in messages: a layout's text is escaped like a registry's.
        let label = wasm_oci_artifact::text::printable(
            &ref_name
                .clone()
                .unwrap_or_else(|| entry["digest"].to_string()),
        );
        let mut digest = parse_digest(dir, entry["digest"].as_str().unwrap_or_default())?;
        // What a signature of this entry signs: the entry itself, an index when it is one.
        let signed_digest = digest.clone();
        // The choice a pull makes; a parse error names the layout as well as the entry.
        let choose = |bytes: &[u8]| {
            wasm_oci_artifact::choose(bytes, &label).map_err(|e| match e {
                wasm_oci_artifact::Error::InvalidManifest { reason, .. } => layout_err(
                    dir,
                    LayoutError::Manifest {
                        label: label.clone(),
                        reason,
                    },
                ),
                other => Error::from(other),
            })
        };
        // The image manifest's bytes, read and verified once.
        let mut manifest = read_verified(dir, &digest)?;
        // Signatures saved beside the artifacts are not artifacts, nor are referrers (an
        // artifact with a `subject`) or the index of them tagged `sha256-<hex>`.
        if serde_json::from_slice::<OciImageManifest>(&manifest)
            .is_ok_and(|m| is_signature_manifest(&m))
            || ref_name.as_deref().is_some_and(is_referrers_tag)
            || serde_json::from_slice::<serde_json::Value>(&manifest)
                .is_ok_and(|m| m.get("subject").is_some())
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
                image_behind(&chosen, &manifest, choose(&manifest)?).map_err(|source| {
                    layout_err(
                        dir,
                        LayoutError::Walk {
                            label: label.clone(),
                            source,
                        },
                    )
                })?
            }
        };
        // A pull refuses a large config; so does a layout, before importing a byte of it.
        let config_size = u64::try_from(image.config.size)
            .ok()
            .filter(|s| *s <= MAX_DOCUMENT)
            .ok_or_else(|| {
                layout_err(
                    dir,
                    LayoutError::ConfigTooLarge {
                        label: label.clone(),
                        digest: wasm_oci_artifact::text::printable(&image.config.digest),
                        size: image.config.size,
                    },
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
            size: u64::try_from(layer.size)
                .map_err(|_| layout_err(dir, LayoutError::NegativeLayerSize))?,
            manifest,
        });
    }
    Ok(found)
}

/// The digests the image indexes among `entries` name: the manifests that are parts of
/// another entry.
fn parts_of_indexes(
    dir: &Path,
    entries: &[serde_json::Value],
) -> Result<std::collections::HashSet<String>> {
    let mut parts = std::collections::HashSet::new();
    let mut read = std::collections::HashSet::new();
    for entry in entries {
        if entry["mediaType"] != oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE {
            continue;
        }
        let digest = parse_digest(dir, entry["digest"].as_str().unwrap_or_default())?;
        // Each index once, however often index.json lists it.
        if !read.insert(digest.clone()) {
            continue;
        }
        let bytes = read_verified(dir, &digest)?;
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        for child in value["manifests"].as_array().into_iter().flatten() {
            if let Some(d) = child["digest"].as_str() {
                parts.insert(d.to_owned());
            }
        }
    }
    Ok(parts)
}

/// Whether `name` is a referrers tag, `<algorithm>-<hex>` (see [`crate::referrers_tag`]).
pub(crate) fn is_referrers_tag(name: &str) -> bool {
    name.split_once('-').is_some_and(|(algorithm, hex)| {
        matches!(algorithm, "sha256" | "sha384" | "sha512")
            && hex.len() >= 64
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
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
pub(crate) fn layout_signatures(
    dir: &Path,
    digest: &Digest,
) -> Result<Option<wasm_oci_trust::Fetched>> {
    let tag = wasm_oci_trust::payload::signature_tag(&digest.to_string());
    let index = read_index(dir)?;
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
    let layers = wasm_oci_trust::signatures::signature_layers(&manifest).map_err(|e| {
        layout_err(
            dir,
            LayoutError::Signatures {
                tag: tag.clone(),
                reason: e.to_string(),
            },
        )
    })?;
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
                LayoutError::PayloadSize {
                    tag,
                    digest: payload_digest,
                    size,
                },
            ));
        }
        blobs.push((payload_digest, SignatureBlob { payload, signature }));
    }
    Ok(Some(wasm_oci_trust::Fetched {
        manifest,
        manifest_digest,
        layers: blobs,
    }))
}

/// The artifact `oci:DIR:TAG` names; without a tag, the layout's only one.
pub(crate) fn choose_artifact(dir: &Path, tag: Option<&str>) -> Result<LayoutArtifact> {
    let all = artifacts(dir)?;
    match tag {
        Some(tag) => all.into_iter().find(|a| a.ref_name.as_deref() == Some(tag)),
        None if all.len() == 1 => all.into_iter().next(),
        None => return Err(layout_err(dir, LayoutError::Several)),
    }
    .ok_or_else(|| {
        layout_err(
            dir,
            LayoutError::NoArtifact {
                tag: tag.unwrap_or_default().to_owned(),
            },
        )
    })
}

/// A digest the layout names, as the cache parses one.
pub(crate) fn parse_digest(dir: &Path, digest: &str) -> Result<Digest> {
    digest
        .parse()
        .map_err(|e: wasm_oci_cache::Error| layout_err(dir, LayoutError::Digest(e)))
}
