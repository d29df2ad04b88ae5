//! `cache prune` and `cache rm`: remove what is least recently used, never what a running
//! process holds.
//!
//! A process that runs a blob holds a shared lock on it ([`Cache::hold`]); removing a blob
//! takes an exclusive lock without waiting, so a blob in use is skipped, not pulled from under
//! its user. A writer holds each blob under its [`crate::Lease`] until its reference is
//! recorded, and a prune reads the references again once it has its locks, so a blob is never
//! taken between the two. Blobs no reference uses are swept only after [`crate::SWEEP_GRACE`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::compiled::CompiledFiles as Compiled;
use crate::files::list;
use crate::holds::is_young;
use crate::partials::STALE_PARTIAL;
use crate::{Cache, Digest, Error, Result};

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    /// Remove references (least recently used first) until the cache is at most this large.
    pub max_size: Option<u64>,
    /// Remove references not used for this long.
    pub older_than: Option<Duration>,
    /// Remove these references (fully qualified), however recently used. Asked alone (no size
    /// or age), only they and the blobs only they use are removed, as `docker rmi` does: no
    /// sweep of unused blobs or partial downloads.
    pub references: Vec<String>,
    /// Say what would be removed and freed, and remove nothing.
    pub dry_run: bool,
    /// Remove every partial download nobody is writing now, however recent, instead of only
    /// those untouched for [`STALE_PARTIAL`]: the room a full disk needs. Asked alone, only
    /// they go.
    pub partials: bool,
}

impl PrunePolicy {
    /// Whether only named references are to go.
    fn only_named(&self) -> bool {
        self.max_size.is_none() && self.older_than.is_none()
    }
}

/// What [`Cache::prune`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    /// References removed from the index.
    pub removed_refs: Vec<String>,
    /// Blobs removed.
    pub removed_blobs: usize,
    /// Bytes freed, compiled code included.
    pub freed: u64,
    /// Compiled files removed on their own: code of wasm the store does not hold (a local
    /// file's, a container's module's) not loaded for `older_than`. (Code compiled from a
    /// removed blob goes with it, and is counted in `freed` only.)
    pub removed_compiled: usize,
    /// References kept because a running process uses their blob.
    pub in_use: Vec<String>,
    /// Partial downloads reclaimed: nobody held them and nobody touched them for a day (any,
    /// with [`PrunePolicy::partials`]).
    pub reclaimed_partials: usize,
    /// The cache's size afterwards (with `dry_run`, what it would be).
    pub size: u64,
    /// Nothing was removed: this says what would have been.
    pub dry_run: bool,
}

impl Cache {
    /// Removes least-recently-used references and the blobs only they use, as `policy` asks.
    /// Blobs that no reference uses are removed too. A blob held by a running process (see
    /// [`Cache::hold`]) is never removed, and neither is its reference.
    ///
    /// The index is read once. Removals go in batches: the blobs of a batch are locked, then
    /// the references recorded since the index was read (found by listing it again: a
    /// recorded reference is a new file) keep theirs, then the rest is removed. A batch is
    /// as large as the open-file limit allows, so a prune of 100,000 references lists the
    /// index a few dozen times, not once per reference.
    ///
    /// With `policy.dry_run`, the same choices are made (locks included, so that what is in
    /// use is reported as such) and nothing is removed.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport> {
        let dry_run = policy.dry_run;
        let mut report = PruneReport {
            reclaimed_partials: if policy.partials {
                self.partials(None, !dry_run)?
            } else if policy.only_named() {
                0
            } else {
                self.partials(Some(STALE_PARTIAL), !dry_run)?
            },
            dry_run,
            ..PruneReport::default()
        };
        // Listed before it is read: whatever is recorded after this is seen as new.
        let mut watch = RefsWatch::new(self)?;
        let refs = self.refs()?;
        let compiled = Compiled::list(self);
        let now = SystemTime::now();
        let start_size = self.size();
        let mut size = start_size;
        let batch_limit = lock_batch();
        let mut users: BTreeMap<Digest, usize> = BTreeMap::new();
        for r in &refs {
            for d in needs(&r.entry) {
                *users.entry(d).or_default() += 1;
            }
        }
        let mut kept: Vec<crate::RefRecord> = Vec::new();
        // With `dry_run`, the blobs counted with the references that would go: still on disk,
        // they must not be counted again as unused blobs.
        let mut counted: BTreeSet<Digest> = BTreeSet::new();
        let mut batch = Batch::default();
        let mut planned = size;
        let mut refs = refs.into_iter().peekable();
        while let Some(record) = refs.next() {
            let too_old = policy
                .older_than
                .is_some_and(|age| now.duration_since(record.last_used).unwrap_or_default() > age);
            let too_big = policy.max_size.is_some_and(|max| planned > max);
            let named = policy.references.contains(&record.entry.reference);
            if too_old || too_big || named {
                // Blobs this reference alone uses go with it; one in use keeps it all.
                let only_ours: Vec<Digest> = needs(&record.entry)
                    .into_iter()
                    .filter(|d| users.get(d) == Some(&1))
                    .collect();
                match self.lock_for_removal(&only_ours)? {
                    None => {
                        report.in_use.push(record.entry.reference.clone());
                        kept.push(record);
                    }
                    Some(locks) => {
                        for d in needs(&record.entry) {
                            if let Some(n) = users.get_mut(&d) {
                                *n -= 1;
                            }
                        }
                        // What removing it will free, at least (compiled code comes on top).
                        planned = planned.saturating_sub(
                            only_ours
                                .iter()
                                .map(|d| fs::metadata(self.blob_path(d)).map_or(0, |m| m.len()))
                                .sum(),
                        );
                        batch.locks += locks.len();
                        if dry_run {
                            counted.extend(only_ours.iter().cloned());
                        }
                        batch.victims.push((record, only_ours, locks));
                    }
                }
            } else {
                kept.push(record);
            }
            if batch.locks >= batch_limit || (refs.peek().is_none() && !batch.victims.is_empty()) {
                let freed = self.remove_batch(
                    std::mem::take(&mut batch),
                    &mut watch,
                    &compiled,
                    &mut report,
                    dry_run,
                )?;
                size = size.saturating_sub(freed);
                // From what was freed, not what was planned.
                planned = size;
            }
        }
        if !batch.victims.is_empty() {
            self.remove_batch(batch, &mut watch, &compiled, &mut report, dry_run)?;
        }
        if policy.only_named() {
            report.size = start_size.saturating_sub(report.freed);
            return Ok(report);
        }
        // Blobs no remaining reference uses: debris of failed pulls or removed references;
        // young ones may be a pull's that is about to record its reference.
        let wanted: BTreeSet<Digest> = kept.iter().flat_map(|r| needs(&r.entry)).collect();
        let mut debris = Vec::new();
        for (name, path) in list(&self.blobs_dir())? {
            let Ok(d) = format!("{}:{name}", Digest::ALGORITHM).parse::<Digest>() else {
                continue;
            };
            if wanted.contains(&d) || counted.contains(&d) || is_young(&path, now) {
                continue;
            }
            debris.push(d);
        }
        for chunk in debris.chunks(batch_limit.max(1)) {
            let mut locked = Vec::new();
            for d in chunk {
                if let Some(locks) = self.lock_for_removal(std::slice::from_ref(d))? {
                    locked.push((d, locks));
                }
            }
            // With the locks taken, references recorded since the index was read are final.
            let wanted = watch.recorded_since(self)?.clone();
            for (d, locks) in locked {
                if wanted.contains(d) {
                    continue;
                }
                let freed = if dry_run {
                    self.footprint(d, &compiled)
                } else {
                    self.remove_blob_with(d, &compiled)?
                };
                report.freed += freed;
                report.removed_blobs += 1;
                drop(locks);
            }
        }
        // Compiled code of wasm the store does not hold (local files, containers' modules)
        // goes by its own last use, which loading it records.
        if let Some(age) = policy.older_than {
            for entry in self.compiled() {
                if self.contains(&entry.digest) {
                    continue;
                }
                let path = self.compiled_path(&entry.engine, &entry.digest, &entry.kind);
                let unused = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > age);
                if unused && (dry_run || fs::remove_file(&path).is_ok()) {
                    report.freed += entry.size;
                    report.removed_compiled += 1;
                }
            }
        }
        // Counted, not walked again: a walk of 300,000 files costs seconds. What other
        // processes added meanwhile is not in it.
        report.size = start_size.saturating_sub(report.freed);
        Ok(report)
    }

    /// Removes a batch of references and the blobs only they use, whose locks it holds; a
    /// blob that a reference recorded since the index was read needs stays. Returns the
    /// bytes freed.
    fn remove_batch(
        &self,
        batch: Batch,
        watch: &mut RefsWatch,
        compiled: &Compiled,
        report: &mut PruneReport,
        dry_run: bool,
    ) -> Result<u64> {
        // A pull holds its blobs until its reference is recorded, so with the locks taken,
        // the references listed now are all that use them.
        let recorded_since = watch.recorded_since(self)?.clone();
        let mut freed = 0;
        for (record, only_ours, locks) in batch.victims {
            // Recorded again since (pulled again): used just now, so kept.
            if !watch.unchanged(&record.path) {
                continue;
            }
            let removed = if dry_run {
                Ok(())
            } else {
                fs::remove_file(&record.path)
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "removing",
                        path: record.path.clone(),
                        source,
                    });
                }
            }
            for d in only_ours.iter().filter(|d| !recorded_since.contains(d)) {
                let bytes = if dry_run {
                    self.footprint(d, compiled)
                } else {
                    self.remove_blob_with(d, compiled)?
                };
                freed += bytes;
                report.freed += bytes;
                report.removed_blobs += 1;
            }
            drop(locks);
            report.removed_refs.push(record.entry.reference);
        }
        Ok(freed)
    }

    /// Exclusive locks on all of `digests`, or `None` when any is in use.
    fn lock_for_removal(&self, digests: &[Digest]) -> Result<Option<Vec<File>>> {
        let mut locks = Vec::new();
        for d in digests {
            let path = self.blob_path(d);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        action: "opening",
                        path,
                        source,
                    });
                }
            };
            match file.try_lock() {
                Ok(()) => locks.push(file),
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(source)) => {
                    return Err(Error::Io {
                        action: "locking",
                        path,
                        source,
                    });
                }
            }
        }
        Ok(Some(locks))
    }

    /// Removes a blob and the code compiled from it; returns the bytes freed.
    pub(crate) fn remove_blob(&self, digest: &Digest) -> Result<u64> {
        self.remove_blob_with(digest, &Compiled::list(self))
    }

    /// What removing a blob would free: its size and its compiled code's.
    fn footprint(&self, digest: &Digest, compiled: &Compiled) -> u64 {
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        size(&self.blob_path(digest)) + compiled.of(digest).iter().map(|p| size(p)).sum::<u64>()
    }

    /// [`Cache::remove_blob`] with the compiled code listed once for many removals, rather
    /// than the compiled directories listed again for every blob.
    fn remove_blob_with(&self, digest: &Digest, compiled: &Compiled) -> Result<u64> {
        let path = self.blob_path(digest);
        let mut freed = fs::metadata(&path).map_or(0, |m| m.len());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "removing",
                    path,
                    source,
                });
            }
        }
        for compiled in compiled.of(digest) {
            if let Ok(m) = fs::metadata(compiled) {
                freed += m.len();
                let _ = fs::remove_file(compiled);
            }
        }
        Ok(freed)
    }
}

/// The blobs a reference needs, each once (its referrers may share one, the empty config).
pub(crate) fn needs(e: &crate::RefEntry) -> Vec<Digest> {
    let unique: BTreeSet<&Digest> = e.blobs().collect();
    unique.into_iter().cloned().collect()
}

/// References chosen for removal, with the exclusive locks on the blobs only they use.
#[derive(Default)]
struct Batch {
    victims: Vec<(crate::RefRecord, Vec<Digest>, Vec<File>)>,
    locks: usize,
}

/// How many blobs a prune locks at once: a share of the open-file limit, so that a prune
/// never runs out of descriptors, and large enough that the index is listed rarely.
fn lock_batch() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (limit.saturating_sub(128) / 2).clamp(64, 4096) as usize
}

/// The index files as listed (name and inode), to tell which references were recorded
/// since: recording one writes a new file and renames it into place.
struct RefsWatch {
    dir: PathBuf,
    /// As listed before the index was read.
    first: std::collections::HashMap<std::ffi::OsString, u64>,
    /// As last listed.
    known: std::collections::HashMap<std::ffi::OsString, u64>,
    /// What the references recorded since the first listing need.
    needed: BTreeSet<Digest>,
}

impl RefsWatch {
    fn new(cache: &Cache) -> Result<RefsWatch> {
        let dir = cache.refs_dir();
        let first = Self::listing(&dir)?;
        Ok(RefsWatch {
            dir,
            known: first.clone(),
            first,
            needed: BTreeSet::new(),
        })
    }

    /// Whether the index file at `path` was still the one listed first (not recorded again)
    /// when the index was last listed.
    fn unchanged(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|name| self.known.get(name) == self.first.get(name))
    }

    fn listing(dir: &Path) -> Result<std::collections::HashMap<std::ffi::OsString, u64>> {
        use std::os::unix::fs::DirEntryExt;
        let entries = fs::read_dir(dir).map_err(|source| Error::Io {
            action: "listing",
            path: dir.to_owned(),
            source,
        })?;
        Ok(entries
            .flatten()
            .map(|e| (e.file_name(), e.ino()))
            .collect())
    }

    /// The blobs needed by references recorded (or recorded again) since the first listing.
    /// Only new and changed entries are read (and remembered): listing the index again is a
    /// directory read, with no allocation per unchanged entry.
    fn recorded_since(&mut self, _cache: &Cache) -> Result<&BTreeSet<Digest>> {
        use std::os::unix::fs::DirEntryExt;
        let entries = fs::read_dir(&self.dir).map_err(|source| Error::Io {
            action: "listing",
            path: self.dir.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let (name, ino) = (e.file_name(), e.ino());
            if self.known.get(&name) == Some(&ino) {
                continue;
            }
            self.known.insert(name.clone(), ino);
            let path = self.dir.join(&name);
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            if let Ok(bytes) = fs::read(&path)
                && let Ok(entry) = serde_json::from_slice::<crate::RefEntry>(&bytes)
            {
                self.needed.extend(needs(&entry));
            }
        }
        Ok(&self.needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::{sample as add, used_ago};

    #[test]
    fn prune_removes_least_recently_used_first_and_skips_blobs_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let old = add(&cache, "old", &vec![1; 100_000]);
        let held = add(&cache, "held", &vec![2; 100_000]);
        let new = add(&cache, "new", &vec![3; 100_000]);
        used_ago(&cache, &old, Duration::from_secs(3 * 3600));
        used_ago(&cache, &held, Duration::from_secs(2 * 3600));
        used_ago(&cache, &new, Duration::from_secs(3600));
        let hold = cache.hold(&held.layer_digest).unwrap();

        let report = cache
            .prune(&PrunePolicy {
                max_size: Some(150_000),
                older_than: None,
                ..PrunePolicy::default()
            })
            .unwrap();
        // The held one is skipped, so the newest goes too to get under the limit.
        assert_eq!(
            report.removed_refs,
            vec![old.reference.clone(), new.reference.clone()]
        );
        assert_eq!(report.in_use, vec![held.reference.clone()]);
        assert!(cache.contains(&held.layer_digest));
        assert!(!cache.contains(&new.layer_digest));
        assert!(!cache.contains(&old.layer_digest));
        drop(hold);

        let report = cache
            .prune(&PrunePolicy {
                max_size: Some(150_000),
                older_than: None,
                ..PrunePolicy::default()
            })
            .unwrap();
        assert!(report.removed_refs.is_empty(), "{report:?}");
        assert!(report.size <= 150_000, "{report:?}");
        assert!(cache.get_ref(&held.reference).unwrap().is_some());
    }

    /// The referrers kept with a reference (a layout's precompiled code) are its blobs: kept
    /// with it, removed with it, even the one its referrers share (the empty config).
    #[test]
    fn kept_referrers_stay_and_go_with_their_reference() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut entry = add(&cache, "module", b"the module's layer");
        let empty = cache.insert(b"{}").unwrap();
        let kept = |name: &str| crate::KeptReferrer {
            manifest: cache.insert(format!("{name} manifest").as_bytes()).unwrap(),
            blobs: vec![
                empty.clone(),
                cache.insert(format!("{name} code").as_bytes()).unwrap(),
            ],
            signatures: Some(crate::Signatures {
                signed_digest: Digest::of(format!("{name} manifest").as_bytes()),
                manifest: cache.insert(format!("{name} sig").as_bytes()).unwrap(),
                payloads: vec![cache.insert(format!("{name} payload").as_bytes()).unwrap()],
                valid: Vec::new(),
            }),
        };
        entry.referrers = Some(Box::new(crate::KeptReferrers {
            index: cache.insert(b"the referrers index").unwrap(),
            kept: vec![kept("run"), kept("shim")],
        }));
        cache.set_ref(&entry).unwrap();
        let blobs: BTreeSet<Digest> = entry.blobs().cloned().collect();
        assert_eq!(blobs.len(), 2 + 1 + 2 * 4 + 1, "{blobs:?}");

        // Unused blobs of any age go; these are used.
        let report = cache
            .prune(&PrunePolicy {
                older_than: Some(Duration::from_secs(3600)),
                ..PrunePolicy::default()
            })
            .unwrap();
        assert!(report.removed_refs.is_empty(), "{report:?}");
        assert!(blobs.iter().all(|d| cache.contains(d)));

        let report = cache
            .prune(&PrunePolicy {
                references: vec![entry.reference.clone()],
                ..PrunePolicy::default()
            })
            .unwrap();
        assert_eq!(report.removed_refs, vec![entry.reference.clone()]);
        assert_eq!(report.removed_blobs, blobs.len(), "{report:?}");
        assert!(blobs.iter().all(|d| !cache.contains(d)));
    }

    #[test]
    fn prune_spares_young_unreferenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let young = cache.insert(b"a pull's, not recorded yet").unwrap();
        let report = cache
            .prune(&PrunePolicy {
                max_size: Some(0),
                older_than: Some(Duration::ZERO),
                ..PrunePolicy::default()
            })
            .unwrap();
        assert_eq!(report.removed_blobs, 0);
        assert!(cache.contains(&young));
    }

    #[test]
    fn prune_by_age_keeps_what_was_used_recently() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let old = add(&cache, "old", b"old layer");
        let recent = add(&cache, "recent", b"recent layer");
        used_ago(&cache, &old, Duration::from_secs(2 * 24 * 3600));
        let report = cache
            .prune(&PrunePolicy {
                max_size: None,
                older_than: Some(Duration::from_secs(24 * 3600)),
                ..PrunePolicy::default()
            })
            .unwrap();
        assert_eq!(report.removed_refs, vec![old.reference]);
        assert!(cache.get_ref(&recent.reference).unwrap().is_some());
    }

    #[test]
    fn a_dry_run_removes_nothing_and_says_what_a_prune_would() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let old = add(&cache, "old", &vec![1; 100_000]);
        let new = add(&cache, "new", &vec![2; 100_000]);
        used_ago(&cache, &old, Duration::from_secs(2 * 3600));
        used_ago(&cache, &new, Duration::from_secs(3600));
        let policy = |dry_run| PrunePolicy {
            max_size: Some(150_000),
            dry_run,
            ..PrunePolicy::default()
        };
        let before = cache.size();
        let dry = cache.prune(&policy(true)).unwrap();
        assert!(dry.dry_run);
        assert_eq!(dry.removed_refs, vec![old.reference.clone()]);
        assert_eq!(cache.size(), before);
        assert!(cache.get_ref(&old.reference).unwrap().is_some());
        let real = cache.prune(&policy(false)).unwrap();
        assert_eq!(
            (
                &real.removed_refs,
                real.removed_blobs,
                real.freed,
                real.size
            ),
            (&dry.removed_refs, dry.removed_blobs, dry.freed, dry.size)
        );
        assert!(cache.get_ref(&old.reference).unwrap().is_none());
        assert!(cache.get_ref(&new.reference).unwrap().is_some());
    }

    #[test]
    fn removing_a_named_reference_keeps_what_others_share() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let a = add(&cache, "a", b"shared layer");
        let b = add(&cache, "b", b"shared layer");
        let stray = cache.insert(b"no reference uses me").unwrap();
        let report = cache
            .prune(&PrunePolicy {
                references: vec![a.reference.clone()],
                ..PrunePolicy::default()
            })
            .unwrap();
        assert_eq!(report.removed_refs, vec![a.reference.clone()]);
        assert!(cache.get_ref(&a.reference).unwrap().is_none());
        // b's layer is a's too, and stays; a's own manifest goes; the stray blob is not swept.
        assert!(cache.get_ref(&b.reference).unwrap().is_some());
        assert!(!cache.contains(&a.manifest_digest));
        assert!(cache.contains(&stray));
    }

    #[test]
    fn compiled_code_of_wasm_not_in_the_store_goes_by_its_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let pulled = add(&cache, "pulled", b"a layer");
        let key = "0123abcd";
        let store = |digest: &Digest| {
            cache
                .store_compiled(key, digest, "module", b"code")
                .unwrap()
        };
        let of_pulled = store(&pulled.layer_digest);
        let (old, recent) = (
            Digest::of(b"old local file"),
            Digest::of(b"recent local file"),
        );
        let (of_old, of_recent) = (store(&old), store(&recent));
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        for path in [&of_old, &of_recent, &of_pulled] {
            File::open(path).unwrap().set_modified(long_ago).unwrap();
        }
        // Loading it is a use.
        assert!(
            cache
                .open_compiled(key, &recent, "module")
                .unwrap()
                .is_some()
        );
        let policy = |dry_run| PrunePolicy {
            older_than: Some(Duration::from_secs(3600)),
            dry_run,
            ..PrunePolicy::default()
        };
        let dry = cache.prune(&policy(true)).unwrap();
        assert_eq!((dry.removed_compiled, dry.freed), (1, 4));
        assert!(of_old.exists());
        let report = cache.prune(&policy(false)).unwrap();
        assert_eq!((report.removed_compiled, report.freed), (1, 4));
        assert!(!of_old.exists());
        // A reference used recently keeps its code, however old the file.
        assert!(of_recent.exists() && of_pulled.exists());
    }
}
