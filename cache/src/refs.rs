//! The reference index: what a reference (`registry/repo:tag`) resolved to when it was pulled.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::{Cache, Digest, Error, Result, write_atomic};

/// What the cache knows about a reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefEntry {
    /// The fully qualified reference, e.g. `docker.io/library/hello:latest`.
    pub reference: String,
    /// Digest of the image manifest the reference resolved to.
    pub manifest_digest: Digest,
    /// Digest of the wasm layer in that manifest.
    pub layer_digest: Digest,
    /// Media type of the wasm layer.
    pub layer_media_type: String,
    /// Size of the wasm layer in bytes.
    pub size: u64,
}

impl Cache {
    /// Records what `entry.reference` resolved to; replaces any earlier entry atomically.
    pub fn set_ref(&self, entry: &RefEntry) -> Result<()> {
        let json = serde_json::to_vec_pretty(entry).expect("a RefEntry always serializes");
        write_atomic(&self.ref_path(&entry.reference), &json)
    }

    /// Looks a fully qualified reference up; `None` when it was never pulled or its blob is gone.
    pub fn get_ref(&self, reference: &str) -> Result<Option<RefEntry>> {
        let path = self.ref_path(reference);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        let entry: RefEntry = serde_json::from_slice(&bytes)
            .map_err(|source| Error::CorruptEntry { path, source })?;
        // A hash collision of names is impossible in practice, but a stale entry whose blob was
        // removed must not be taken as a hit.
        if entry.reference != reference || !self.contains(&entry.layer_digest) {
            return Ok(None);
        }
        Ok(Some(entry))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let key = Digest::of(reference.as_bytes());
        self.refs_dir().join(format!("{}.json", key.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_resolves_only_while_its_blob_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let layer = cache.insert(b"\0asm\x01\0\0\0").unwrap();
        let entry = RefEntry {
            reference: "localhost:5000/hello:v1".into(),
            manifest_digest: Digest::of(b"{}"),
            layer_digest: layer.clone(),
            layer_media_type: "application/wasm".into(),
            size: 8,
        };
        assert_eq!(cache.get_ref(&entry.reference).unwrap(), None);
        cache.set_ref(&entry).unwrap();
        assert_eq!(
            cache.get_ref(&entry.reference).unwrap(),
            Some(entry.clone())
        );
        assert_eq!(cache.get_ref("localhost:5000/hello:v2").unwrap(), None);
        fs::remove_file(cache.blob_path(&layer)).unwrap();
        assert_eq!(cache.get_ref(&entry.reference).unwrap(), None);
    }
}
