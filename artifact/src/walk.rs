//! The pure step of the artifact walk, written once for a registry's pull and a layout's
//! load: an index entry leads to an image manifest of the size the index says, never to
//! another index.

use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};

use crate::Error;
use crate::manifest::Choice;
use crate::text::printable;

/// The image manifest and wasm layer that `entry` of an index leads to: `bytes`, the
/// manifest read for it, which [`crate::manifest::choose`] made `choice` of.
///
/// Errors with [`Error::EntrySize`] when `bytes` is not the size the entry says, and with
/// [`Error::Nested`] when the entry is an index itself.
pub fn image_behind(
    entry: &ImageIndexEntry,
    bytes: &[u8],
    choice: Choice,
) -> Result<(Box<OciImageManifest>, OciDescriptor), Error> {
    if i64::try_from(bytes.len()) != Ok(entry.size) {
        return Err(Error::EntrySize {
            digest: printable(&entry.digest),
            says: entry.size,
            is: bytes.len(),
        });
    }
    match choice {
        Choice::Image { manifest, layer } => Ok((manifest, layer)),
        Choice::Index(_) => Err(Error::Nested),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: i64) -> ImageIndexEntry {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{:064}", 1),
            "size": size,
            "platform": {"os": "wasip1", "architecture": "wasm"},
        }))
        .unwrap()
    }

    fn image() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": format!("sha256:{:064}", 2), "size": 2},
            "layers": [{"mediaType": "application/wasm", "digest": format!("sha256:{:064}", 3), "size": 8}],
        }))
        .unwrap()
    }

    #[test]
    fn an_entry_leads_to_the_image_of_its_size() {
        let bytes = image();
        let choice = crate::manifest::choose(&bytes, "r").unwrap();
        let size = i64::try_from(bytes.len()).unwrap();
        let (_, layer) = image_behind(&entry(size), &bytes, choice.clone()).unwrap();
        assert_eq!(layer.digest, format!("sha256:{:064}", 3));
        let err = image_behind(&entry(size + 1), &bytes, choice).unwrap_err();
        assert_eq!(
            err,
            Error::EntrySize {
                digest: format!("sha256:{:064}", 1),
                says: size + 1,
                is: bytes.len(),
            }
        );
    }

    #[test]
    fn an_entry_never_leads_to_another_index() {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [serde_json::to_value(entry(1)).unwrap()],
        }))
        .unwrap();
        let choice = crate::manifest::choose(&index, "r").unwrap();
        let size = i64::try_from(index.len()).unwrap();
        assert_eq!(
            image_behind(&entry(size), &index, choice).unwrap_err(),
            Error::Nested
        );
    }
}
