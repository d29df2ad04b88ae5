//! Partial downloads in `ingest/`: kept for the next writer of the same digest to resume,
//! and reclaimed once nobody holds them (a live writer keeps its file locked) and nobody wrote
//! to them for [`STALE_PARTIAL`], or at once when asked (`cache prune --partials`, for a full
//! disk).

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use crate::files::list;
use crate::{Cache, Result};

/// How long a partial download nobody holds is kept for resuming.
pub const STALE_PARTIAL: Duration = Duration::from_secs(24 * 60 * 60);

impl Cache {
    /// Removes partial downloads that nobody holds (a live writer keeps its file locked) and
    /// nobody wrote to for [`STALE_PARTIAL`]; returns how many.
    pub fn reclaim_partials(&self) -> Result<usize> {
        self.partials(Some(STALE_PARTIAL), true)
    }

    /// Removes every partial download that nobody holds, however recent: what an interrupted
    /// pull would resume from is given up for the room; returns how many.
    pub fn reclaim_all_partials(&self) -> Result<usize> {
        self.partials(None, true)
    }

    /// Counts the partial downloads nobody holds and nobody wrote to for `older_than` (any,
    /// with `None`); removes them when `remove` says so.
    pub(crate) fn partials(&self, older_than: Option<Duration>, remove: bool) -> Result<usize> {
        let now = SystemTime::now();
        let mut reclaimed = 0;
        for (_, path) in list(&self.ingest_dir())? {
            let stale = fs::symlink_metadata(&path).is_ok_and(|m| {
                m.file_type().is_file()
                    && older_than.is_none_or(|age| {
                        m.modified()
                            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > age)
                    })
            });
            if !stale {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue; // a writer holds it: live, however old
            }
            if !remove {
                reclaimed += 1;
                continue;
            }
            // Only the inode still at the path: a writer may have renamed it meanwhile.
            let ours = file.metadata().ok().map(|m| m.ino());
            if fs::metadata(&path).ok().map(|m| m.ino()) == ours && fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), "reclaimed a partial download");
                reclaimed += 1;
            }
        }
        Ok(reclaimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_partials_are_reclaimed_unless_held_or_recent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let old = SystemTime::now() - STALE_PARTIAL - Duration::from_secs(60);
        let partial = |name: &str, modified: SystemTime| {
            let path = cache.ingest_dir().join(name);
            let file = File::create(&path).unwrap();
            file.set_modified(modified).unwrap();
            (path, file)
        };
        let (abandoned, _) = partial("a.partial", old);
        let (held, held_file) = partial("b.partial", old);
        held_file.lock().unwrap();
        let (recent, _) = partial("c.partial", SystemTime::now());
        assert_eq!(cache.reclaim_partials().unwrap(), 1);
        assert!(!abandoned.exists());
        assert!(held.exists() && recent.exists());
        drop(held_file);
        let report = cache.verify().unwrap();
        assert_eq!((report.reclaimed_partials, report.partial), (1, 1));
    }
}
