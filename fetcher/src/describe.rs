//! A manifest as it is in the registry, without downloading a layer: an image manifest with
//! its config and layers, or an index with each of its entries, every one with its digest
//! and size.

use oci_client::Reference;
use serde::Serialize;

use crate::Fetcher;
use crate::error::{Error, Result};

/// Entries of an index read at most.
const MAX_ENTRIES: usize = 1024;

/// A manifest, or an index and its entries.
#[derive(Debug, Clone, Serialize)]
pub struct Described {
    /// The reference asked for.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The manifest itself, as JSON.
    pub manifest: serde_json::Value,
    /// For an index: its entries, each with its own manifest. Empty for an image manifest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<Entry>,
}

/// One entry of an index.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The entry's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The platform the index names for it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    /// The entry's manifest.
    pub manifest: serde_json::Value,
}

/// Whether `media_type` is an index (OCI's or Docker's list).
pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE
        || media_type == oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE
}

impl Fetcher {
    /// The manifest `reference` names, and for an index each of its entries; manifests only,
    /// no config or layer is downloaded.
    pub async fn describe(&self, reference: &Reference) -> Result<Described> {
        let (body, digest, media_type) = self.manifest_bytes_read(reference).await?;
        let invalid = |reason: String| Error::invalid_manifest(reference.whole(), reason);
        let manifest: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::new();
        if is_index(&media_type) {
            let listed = manifest["manifests"]
                .as_array()
                .ok_or_else(|| invalid("an index without `manifests`".into()))?;
            if listed.len() > MAX_ENTRIES {
                return Err(invalid(format!("an index of over {MAX_ENTRIES} entries")));
            }
            for listed in listed {
                let entry_digest = listed["digest"]
                    .as_str()
                    .ok_or_else(|| invalid("an index entry without a digest".into()))?;
                let size = listed["size"]
                    .as_u64()
                    .ok_or_else(|| invalid("an index entry without a size".into()))?;
                let at = Reference::with_digest(
                    reference.registry().to_owned(),
                    reference.repository().to_owned(),
                    entry_digest.to_owned(),
                );
                let (entry_body, _, entry_type) = self.manifest_bytes_read(&at).await?;
                if entry_body.len() as u64 != size {
                    return Err(invalid(format!(
                        "its entry {entry_digest} is {} bytes, not the {size} the index says",
                        entry_body.len()
                    )));
                }
                entries.push(Entry {
                    digest: entry_digest.to_owned(),
                    media_type: entry_type,
                    size,
                    platform: listed.get("platform").cloned(),
                    manifest: serde_json::from_slice(&entry_body)
                        .map_err(|e| invalid(e.to_string()))?,
                });
            }
        }
        Ok(Described {
            reference: reference.whole(),
            digest,
            media_type,
            size: body.len() as u64,
            manifest,
            entries,
        })
    }
}
