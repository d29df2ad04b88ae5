//! `cache verify`: re-hash every blob, remove the damaged ones and the references that needed
//! them, so that nothing lists or runs them until they are pulled again.

use std::collections::BTreeSet;
use std::fs;
use std::io;

use crate::files::{hash_file, list};
use crate::prune::needs;
use crate::{Cache, Digest, Error, Result};

/// A blob found damaged by [`Cache::verify`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadBlob {
    /// The digest it is stored under.
    pub expected: Digest,
    /// What its content hashes to.
    pub actual: Digest,
}

/// What [`Cache::verify`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose content did not match their name; they were removed.
    pub removed: Vec<BadBlob>,
    /// References that needed a removed blob; they were removed too, so that nothing lists or
    /// runs them until they are pulled again.
    pub removed_refs: Vec<String>,
    /// References whose kept referrers (precompiled code a layout brought) needed a removed
    /// blob: they were dropped, and the reference kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_referrers: Vec<String>,
    /// Downloads in progress or interrupted (kept for resuming, never used as they are).
    pub partial: usize,
    /// Partial downloads reclaimed: nobody held them or touched them for a day.
    pub reclaimed_partials: usize,
}

impl Cache {
    /// Re-hashes every blob; removes (and reports) the ones whose content does not match.
    pub fn verify(&self) -> Result<VerifyReport> {
        let reclaimed_partials = self.reclaim_partials()?;
        let mut report = VerifyReport {
            partial: fs::read_dir(self.ingest_dir()).map_or(0, |d| d.count()),
            reclaimed_partials,
            ..VerifyReport::default()
        };
        let mut buf = vec![0; 1 << 20];
        for (name, path) in list(&self.blobs_dir())? {
            let expected = match format!("{}:{name}", Digest::ALGORITHM).parse::<Digest>() {
                Ok(d) => d,
                Err(_) => {
                    // Not a blob name at all: nothing else writes there, so it is debris.
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            let (actual, bytes) = hash_file(&path, &mut buf)?;
            report.checked += 1;
            report.bytes += bytes;
            if actual != expected {
                tracing::warn!(%expected, %actual, "removing a damaged blob");
                self.remove_blob(&expected)?;
                report.removed.push(BadBlob { expected, actual });
            }
        }
        if !report.removed.is_empty() {
            let removed: BTreeSet<&Digest> = report.removed.iter().map(|b| &b.expected).collect();
            let hit = |entry: &crate::RefEntry| needs(entry).iter().any(|d| removed.contains(d));
            for record in self.refs()? {
                // The module whole, only referrers kept with it damaged (a layout's
                // precompiled code): it loses them, not its place, which a node without a
                // registry could not pull again.
                let mut bare = record.entry.clone();
                if bare.referrers.take().is_some() && !hit(&bare) && hit(&record.entry) {
                    self.set_ref(&bare)?;
                    report.dropped_referrers.push(bare.reference);
                    continue;
                }
                if hit(&record.entry) {
                    match fs::remove_file(&record.path) {
                        Ok(()) => report.removed_refs.push(record.entry.reference),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(Error::Io {
                                action: "removing",
                                path: record.path,
                                source,
                            });
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::sample as add;

    #[test]
    fn verify_removes_damaged_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let good = add(&cache, "good", b"good bytes");
        let bad = add(&cache, "bad", b"bad bytes");
        let path = cache.blob_path(&bad.layer_digest);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"bit rot").unwrap();
        let report = cache.verify().unwrap();
        assert_eq!(report.checked, 4);
        assert_eq!(report.removed.len(), 1);
        assert_eq!(report.removed[0].expected, bad.layer_digest);
        assert!(!cache.contains(&bad.layer_digest));
        assert!(cache.contains(&good.layer_digest));
        assert_eq!(cache.get_ref(&bad.reference).unwrap(), None);
        assert_eq!(cache.verify().unwrap().removed.len(), 0);
    }

    #[test]
    fn verify_drops_damaged_kept_referrers_and_keeps_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut entry = add(&cache, "module", b"the module's layer");
        let code = cache.insert(b"precompiled code").unwrap();
        entry.referrers = Some(Box::new(crate::KeptReferrers {
            index: cache.insert(b"the referrers index").unwrap(),
            kept: vec![crate::KeptReferrer {
                manifest: cache.insert(b"its manifest").unwrap(),
                blobs: vec![code.clone()],
                signatures: None,
            }],
        }));
        cache.set_ref(&entry).unwrap();
        let path = cache.blob_path(&code);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"swapped code").unwrap();
        let report = cache.verify().unwrap();
        assert_eq!(report.dropped_referrers, vec![entry.reference.clone()]);
        assert!(report.removed_refs.is_empty(), "{report:?}");
        let kept = cache.get_ref(&entry.reference).unwrap().unwrap();
        assert_eq!(kept.referrers, None);
        assert_eq!(kept.layer_digest, entry.layer_digest);
    }

    #[test]
    fn verify_unlists_references_whose_blob_it_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let damaged = add(&cache, "damaged", b"good layer");
        let intact = add(&cache, "intact", b"other layer");
        let path = cache.blob_path(&damaged.layer_digest);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"evil layer").unwrap();
        let report = cache.verify().unwrap();
        assert_eq!(report.removed_refs, vec![damaged.reference.clone()]);
        let listed: Vec<String> = cache
            .refs()
            .unwrap()
            .into_iter()
            .map(|r| r.entry.reference)
            .collect();
        assert_eq!(listed, vec![intact.reference]);
    }
}
