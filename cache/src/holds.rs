//! Holds: a shared lock on a blob, taken by whoever runs it or is about to record a
//! reference to it. A prune takes an exclusive lock without waiting, so a held blob is
//! skipped, never pulled from under its user. Blobs no reference uses are swept only after
//! [`SWEEP_GRACE`], as git's gc spares young unreachable objects.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::{Cache, Digest, Error, Result};

/// How young a blob that no reference uses may be and still be spared by a prune: it may be
/// a pull's, between its commit and its record (or a hold's conversion).
pub const SWEEP_GRACE: Duration = Duration::from_secs(10 * 60);

/// A shared lock on a blob, held while a guest made from it runs or while a pull records it.
#[derive(Debug)]
pub struct Hold {
    _file: File,
}

impl Hold {
    /// A shared lock on the blob at `path`, which must still be there once locked: a prune
    /// that held it exclusively meanwhile may have removed it.
    pub(crate) fn take(path: &Path) -> Result<Hold> {
        let io_err = |action, source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(|e| io_err("opening", e))?;
        file.lock_shared().map_err(|e| io_err("locking", e))?;
        let ours = file.metadata().map_err(|e| io_err("inspecting", e))?.ino();
        match fs::metadata(path) {
            Ok(m) if m.ino() == ours => Ok(Hold { _file: file }),
            Ok(_) => Err(io_err(
                "holding",
                io::Error::other("the blob was replaced while it was being locked"),
            )),
            Err(e) => Err(io_err("opening", e)),
        }
    }

    pub(crate) fn from_file(file: File) -> Hold {
        Hold { _file: file }
    }
}

impl Cache {
    /// Takes a shared lock on a blob so that pruning skips it until the hold is dropped.
    pub fn hold(&self, digest: &Digest) -> Result<Hold> {
        Hold::take(&self.blob_path(digest)).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Error::BlobNotFound {
                    digest: digest.clone(),
                }
            }
            other => other,
        })
    }

    /// Whether the blob `digest` is in the store and entered it so recently that no prune
    /// sweeps it within `margin` (it is young for [`SWEEP_GRACE`] from its rename): a writer
    /// that records a reference to it well within `margin` need not hold it. One `stat`,
    /// where a hold takes five system calls.
    pub fn is_young_for(&self, digest: &Digest, margin: Duration) -> bool {
        is_young(
            &self.blob_path(digest),
            SystemTime::now() + margin.min(SWEEP_GRACE),
        )
    }
}

/// Whether the blob at `path` entered the store within [`SWEEP_GRACE`] (its rename into
/// place changed its ctime).
pub(crate) fn is_young(path: &Path, now: SystemTime) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| {
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                m.ctime().max(0) as u64,
                m.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        now.duration_since(changed).unwrap_or_default() < SWEEP_GRACE
    })
}
