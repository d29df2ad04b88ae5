//! Many small blobs and references written with one sync for all instead of one each, for
//! `load` of a catalogue of thousands: at 3 ms a sync, a sync per file made 100,000 references
//! take many minutes.
//!
//! Nothing changes in what a reader may see: a blob is verified (size and digest) before it
//! is staged, and reaches `blobs/` by a rename only after one `syncfs` has made every staged
//! file durable, so a blob in `blobs/` is whole and correct, always; a reference file is
//! renamed into place only once it is durable, too.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::store::{Placed, Verifier, place, seal, sync_dir, sync_fs};
use crate::{Cache, Digest, Error, RefEntry, Result};

/// Verified blobs waiting for one sync before they enter the store. Dropped without
/// [`BlobBatch::commit`], its staged files are removed and nothing enters the store.
#[derive(Debug)]
pub struct BlobBatch<'a> {
    cache: &'a Cache,
    /// Staged files in `ingest/` and where they go.
    staged: Vec<(PathBuf, PathBuf)>,
    digests: BTreeSet<Digest>,
}

impl Cache {
    /// A batch of blobs to add with one sync; see [`BlobBatch`].
    pub fn blob_batch(&self) -> BlobBatch<'_> {
        BlobBatch {
            cache: self,
            staged: Vec::new(),
            digests: BTreeSet::new(),
        }
    }

    /// [`Cache::set_ref`] for many entries with one sync: each file is written beside its
    /// place, all are made durable at once, then each is renamed into place (replacing an
    /// earlier entry atomically). A failure before the renames records none of them.
    pub fn set_refs(&self, entries: &[RefEntry]) -> Result<()> {
        let dir = self.refs_dir();
        let mut staged = Staged::default();
        for entry in entries {
            let json = serde_json::to_vec_pretty(entry).expect("a RefEntry always serializes");
            let target = self.ref_path(&entry.reference);
            let io_err = |action, source| self.io_error(action, &target, source);
            let mut tmp = tempfile::Builder::new()
                .prefix(".batch-")
                .tempfile_in(&dir)
                .map_err(|e| io_err("creating", e))?;
            tmp.write_all(&json).map_err(|e| io_err("writing", e))?;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(|e| io_err("setting permissions of", e))?;
            let (_, path) = tmp.keep().map_err(|e| io_err("keeping", e.error))?;
            staged.0.push((path, target));
        }
        sync_fs(&dir)?;
        for (tmp, target) in std::mem::take(&mut staged.0) {
            fs::rename(&tmp, &target).map_err(|source| {
                let _ = fs::remove_file(&tmp);
                Error::Io {
                    action: "renaming into place",
                    path: target,
                    source,
                }
            })?;
        }
        sync_dir(&dir)
    }
}

impl BlobBatch<'_> {
    /// Stages the blob `digest` read from `content`, verified: exactly `size` bytes when
    /// given, hashing to `digest`. Returns whether it was staged (false: this batch has it
    /// already). One the store has is staged and then left as it is: ask [`Self::has`] first
    /// to save the reading. Content that fails is not kept.
    pub fn add(&mut self, digest: &Digest, size: Option<u64>, content: impl Read) -> Result<bool> {
        if self.staged(digest) {
            return Ok(false);
        }
        let dir = self.cache.ingest_dir();
        let io_err = |action, source| Error::Io {
            action,
            path: dir.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".batch-")
            .tempfile_in(&dir)
            .map_err(|e| io_err("creating a file in", e))?;
        let mut check = Verifier::new(digest.clone(), size);
        // One byte past the size tells a longer content from an exact one.
        let mut content = content.take(size.map_or(u64::MAX, |s| s + 1));
        let mut buf = [0u8; 64 << 10];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("reading a blob for", e)),
            };
            check.update(&buf[..n])?;
            tmp.write_all(&buf[..n])
                .map_err(|e| self.cache.io_error("writing a blob in", &dir, e))?;
        }
        check.finish()?;
        seal(tmp.as_file()).map_err(|e| io_err("making read-only a blob in", e))?;
        let (_, path) = tmp
            .keep()
            .map_err(|e| io_err("keeping a blob in", e.error))?;
        self.staged.push((path, self.cache.blob_path(digest)));
        self.digests.insert(digest.clone());
        Ok(true)
    }

    /// Whether the store or this batch has the blob `digest` already.
    pub fn has(&self, digest: &Digest) -> bool {
        self.staged(digest) || self.cache.contains(digest)
    }

    /// Whether this batch has staged the blob `digest`.
    pub fn staged(&self, digest: &Digest) -> bool {
        self.digests.contains(digest)
    }

    /// The cache the batch writes to.
    pub fn cache(&self) -> &Cache {
        self.cache
    }

    /// How many blobs are staged.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Makes every staged blob durable with one sync, then moves each into the store (one
    /// that another writer stored meanwhile stays as it is). Returns how many were staged.
    pub fn commit(mut self) -> Result<usize> {
        let staged = std::mem::take(&mut self.staged);
        let count = staged.len();
        if staged.is_empty() {
            return Ok(0);
        }
        let mut guard = Staged(staged);
        sync_fs(&self.cache.ingest_dir())?;
        let blobs = self.cache.blobs_dir();
        for (tmp, target) in std::mem::take(&mut guard.0) {
            match place(&tmp, &target) {
                Ok(Placed::Moved) => {}
                Ok(Placed::Existed) => {
                    let _ = fs::remove_file(&tmp);
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        sync_dir(&blobs)?;
        tracing::debug!(blobs = count, "stored a batch of blobs");
        Ok(count)
    }
}

impl Drop for BlobBatch<'_> {
    fn drop(&mut self) {
        drop(Staged(std::mem::take(&mut self.staged)));
    }
}

/// Staged files not yet renamed into place; removed when dropped.
#[derive(Default)]
struct Staged(Vec<(PathBuf, PathBuf)>);

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.0 {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cache: &Cache, name: &str, layer: &Digest) -> RefEntry {
        RefEntry {
            reference: format!("localhost:5000/{name}:v1"),
            manifest_digest: cache.insert(name.as_bytes()).unwrap(),
            layer_digest: layer.clone(),
            layer_media_type: "application/wasm".into(),
            size: 8,
            config_digest: None,
            signatures: None,
            sources: Default::default(),
            referrers: None,
        }
    }

    #[test]
    fn a_batch_stores_only_verified_blobs_and_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let a = Digest::of(b"\0asm\x01\0\0\0");
        let mut batch = cache.blob_batch();
        assert!(batch.add(&a, Some(8), &b"\0asm\x01\0\0\0"[..]).unwrap());
        assert!(!batch.add(&a, Some(8), &b"\0asm\x01\0\0\0"[..]).unwrap());
        assert!(batch.has(&a) && batch.staged(&a));
        // Staged is not stored.
        assert!(!cache.contains(&a));
        let wrong = batch
            .add(&Digest::of(b"x"), Some(1), &b"y"[..])
            .unwrap_err();
        assert!(matches!(wrong, Error::DigestMismatch { .. }), "{wrong}");
        let long = batch
            .add(&Digest::of(b"xy"), Some(1), &b"xy"[..])
            .unwrap_err();
        assert!(matches!(long, Error::SizeMismatch { .. }), "{long}");
        assert_eq!(batch.commit().unwrap(), 1);
        assert_eq!(cache.read_blob(&a).unwrap(), b"\0asm\x01\0\0\0");
        let mode = fs::metadata(cache.blob_path(&a))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        // Nothing is left behind, and a batch dropped uncommitted leaves nothing either.
        let mut batch = cache.blob_batch();
        batch
            .add(&Digest::of(b"later"), None, &b"later"[..])
            .unwrap();
        drop(batch);
        assert!(!cache.contains(&Digest::of(b"later")));
        assert_eq!(fs::read_dir(cache.ingest_dir()).unwrap().count(), 0);

        let entries = [entry(&cache, "one", &a), entry(&cache, "two", &a)];
        cache.set_refs(&entries).unwrap();
        for e in &entries {
            assert_eq!(cache.get_ref(&e.reference).unwrap().as_ref(), Some(e));
        }
        assert_eq!(cache.refs().unwrap().len(), 2);
    }
}
