//! The reference record, written once for a registry's pull and a layout's load: what a pull
//! or a load leaves in the cache for a reference is made by [`Record::entry`]. The walk's pure
//! step (an index entry leads to an image manifest of the size the index says, never to
//! another index) is [`wasm_oci_artifact::walk::image_behind`].

use std::collections::BTreeMap;

use wasm_oci_cache::{Digest, RefEntry, Signatures, Verdict};

/// What the cache records of an artifact.
pub(crate) struct Record {
    /// The image manifest's digest.
    pub(crate) manifest_digest: Digest,
    /// Its config's.
    pub(crate) config_digest: Digest,
    /// Its wasm layer's.
    pub(crate) layer_digest: Digest,
    /// The layer's media type.
    pub(crate) layer_media_type: String,
    /// The layer's size.
    pub(crate) size: u64,
}

impl Record {
    /// The cache's entry for `reference`, with its signatures and the hosts that served
    /// its blobs.
    pub(crate) fn entry(
        self,
        reference: String,
        signatures: Option<Box<Signatures>>,
        sources: BTreeMap<String, String>,
    ) -> RefEntry {
        RefEntry {
            reference,
            manifest_digest: self.manifest_digest,
            layer_digest: self.layer_digest,
            layer_media_type: self.layer_media_type,
            size: self.size,
            config_digest: Some(self.config_digest),
            signatures,
            sources,
            referrers: None,
        }
    }
}

/// The cache's record of the signatures `found` of `signed_digest`, with the verdicts the
/// policy gave them.
pub(crate) fn signatures_record(
    signed_digest: Digest,
    found: &wasm_oci_trust::signatures::Fetched,
    valid: Vec<Verdict>,
) -> Box<Signatures> {
    Box::new(Signatures {
        signed_digest,
        manifest: found.manifest_digest.clone(),
        payloads: found.layers.iter().map(|(d, _)| d.clone()).collect(),
        valid,
    })
}
