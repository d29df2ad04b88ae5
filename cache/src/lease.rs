//! A lease: what a writer stores for a reference stays out of `prune`'s reach until the
//! reference is recorded. The cache owns this safety, as containerd's content store owns its
//! leases: a caller stores through the lease and records through it, and cannot forget a hold.
//!
//! Every blob stored or found present through a lease is held (a shared lock, see
//! [`Cache::hold`]) until [`Lease::record`] has written the reference that uses it; dropped
//! without recording, the lease lets them go, and a prune may sweep them once they are older
//! than [`crate::SWEEP_GRACE`]. A lease is cheap to clone and may be shared by the concurrent
//! downloads of one pull.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Cache, Digest, Hold, Ingest, Ingested, RefEntry, Result};

/// Blobs held for references not recorded yet; see the module's doc.
#[derive(Debug, Clone)]
pub struct Lease {
    cache: Cache,
    holds: Arc<Mutex<BTreeMap<Digest, Hold>>>,
}

impl Cache {
    /// Starts a lease: store and record through it (see [`Lease`]).
    pub fn begin(&self) -> Lease {
        Lease {
            cache: self.clone(),
            holds: Arc::default(),
        }
    }
}

impl Lease {
    /// The cache it writes to.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn keep(&self, digest: Digest, hold: Hold) {
        self.holds
            .lock()
            .expect("lease lock")
            .entry(digest)
            .or_insert(hold);
    }

    /// Stores small bytes (a manifest, a config, a signature) under their digest, held.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let (digest, hold) = self.cache.insert_held(bytes)?;
        self.keep(digest.clone(), hold);
        Ok(digest)
    }

    /// Starts writing the blob `digest` (see [`Cache::ingest`]); `Ok(None)` when it is
    /// present, and then held. Hand the writer back to [`Lease::commit`].
    pub fn ingest(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Option<Box<Ingest>>> {
        match self.cache.ingest(digest, expected_size)? {
            Ingested::Present(_, hold) => {
                self.keep(digest.clone(), hold);
                Ok(None)
            }
            Ingested::Writer(writer) => Ok(Some(writer)),
        }
    }

    /// Verifies what `writer` wrote and moves it into the store, held; its path.
    pub fn commit(&self, writer: Ingest) -> Result<PathBuf> {
        let digest = writer.digest().clone();
        let (path, hold) = writer.commit_held()?;
        self.keep(digest, hold);
        Ok(path)
    }

    /// Holds the blob `digest`, which the store has already (a blob a batch stored).
    pub fn hold(&self, digest: &Digest) -> Result<()> {
        let hold = self.cache.hold(digest)?;
        self.keep(digest.clone(), hold);
        Ok(())
    }

    /// Makes sure the blob `digest` survives until a record within `margin`: held, unless it
    /// entered the store so recently that no prune sweeps it in that time (one `stat`, where
    /// a hold takes five: most of a large load's blobs). [`crate::Error::BlobNotFound`] when it is
    /// gone (a concurrent prune took it): store it again, then [`Lease::hold`] it.
    pub fn protect(&self, digest: &Digest, margin: Duration) -> Result<()> {
        if self.holds.lock().expect("lease lock").contains_key(digest)
            || self.cache.is_young_for(digest, margin)
        {
            return Ok(());
        }
        self.hold(digest)
    }

    /// Whether the lease holds the blob `digest`.
    pub fn holds(&self, digest: &Digest) -> bool {
        self.holds.lock().expect("lease lock").contains_key(digest)
    }

    /// Records `entry` and ends the lease: every hold is let go but the one on the entry's
    /// layer, returned so that what was pulled can still be read or run (taken now if the
    /// lease did not have it).
    pub fn record(self, entry: &RefEntry) -> Result<Hold> {
        self.cache.set_ref(entry)?;
        let layer = self
            .holds
            .lock()
            .expect("lease lock")
            .remove(&entry.layer_digest);
        match layer {
            Some(hold) => Ok(hold),
            None => self.cache.hold(&entry.layer_digest),
        }
    }

    /// Records every entry with one sync ([`Cache::set_refs`]) and ends the lease, letting
    /// every hold go.
    pub fn record_all(self, entries: &[RefEntry]) -> Result<()> {
        self.cache.set_refs(entries)
    }

    /// How many blobs it holds.
    pub fn len(&self) -> usize {
        self.holds.lock().expect("lease lock").len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, PrunePolicy};

    fn entry(name: &str, manifest: Digest, layer: Digest) -> RefEntry {
        RefEntry {
            reference: format!("localhost:5000/{name}:v1"),
            manifest_digest: manifest,
            layer_digest: layer,
            layer_media_type: "application/wasm".into(),
            size: 8,
            config_digest: None,
            signatures: None,
            sources: Default::default(),
            referrers: None,
        }
    }

    /// A prune as eager as can be: everything unused, however young, would go but for holds.
    fn prune_everything(cache: &Cache) -> crate::PruneReport {
        cache
            .prune(&PrunePolicy {
                max_size: Some(0),
                older_than: Some(Duration::ZERO),
                ..PrunePolicy::default()
            })
            .unwrap()
    }

    #[test]
    fn what_a_lease_stored_is_held_until_recorded_and_the_layer_after() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let lease = cache.begin();
        let manifest = lease.put(b"a manifest").unwrap();
        let layer = Digest::of(b"\0asm\x01\0\0\0");
        let mut w = lease.ingest(&layer, Some(8)).unwrap().expect("a writer");
        w.write(b"\0asm\x01\0\0\0").unwrap();
        lease.clone().commit(*w).unwrap();
        assert!(lease.holds(&manifest) && lease.holds(&layer));
        // Present already: held all the same.
        let again = cache.begin();
        assert!(again.ingest(&layer, Some(8)).unwrap().is_none());
        assert!(again.holds(&layer));
        drop(again);
        let file = std::fs::File::open(cache.blob_path(&manifest)).unwrap();
        assert!(matches!(
            file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        let hold = lease
            .record(&entry("hello", manifest.clone(), layer.clone()))
            .unwrap();
        // The manifest is let go, the layer is not.
        file.try_lock().unwrap();
        file.unlock().unwrap();
        let layer_file = std::fs::File::open(cache.blob_path(&layer)).unwrap();
        assert!(matches!(
            layer_file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        // Recorded, and in use: a prune keeps it all.
        let report = prune_everything(&cache);
        assert_eq!(report.in_use, vec!["localhost:5000/hello:v1".to_owned()]);
        assert!(cache.contains(&layer) && cache.contains(&manifest));
        drop(hold);
        let report = prune_everything(&cache);
        assert_eq!(
            report.removed_refs,
            vec!["localhost:5000/hello:v1".to_owned()]
        );
    }

    #[test]
    fn a_blob_gone_before_it_was_protected_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let lease = cache.begin();
        let missing = Digest::of(b"never stored");
        assert!(matches!(
            lease.protect(&missing, Duration::from_secs(60)),
            Err(Error::BlobNotFound { .. })
        ));
        let young = cache.insert(b"just stored").unwrap();
        lease.protect(&young, Duration::from_secs(60)).unwrap();
        // Young enough: no hold was needed.
        assert!(lease.is_empty());
        lease
            .record_all(&[entry("young", young.clone(), young.clone())])
            .unwrap();
        assert!(cache.get_ref("localhost:5000/young:v1").unwrap().is_some());
    }
}
