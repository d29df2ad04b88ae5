//! The steps every way into `blobs/` shares, written once: check the size and digest while the
//! content streams, make the file read-only, move it into place without replacing a blob that
//! is there already, and make the rename durable. The ingest protocol (one blob, resumable)
//! and the batch (many small blobs, one sync) both end here.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::{Digest, Error, Result};

/// Checks content against the digest and size it was announced with, as it streams.
#[derive(Debug)]
pub(crate) struct Verifier {
    digest: Digest,
    expected_size: Option<u64>,
    written: u64,
    hasher: Sha256,
}

impl Verifier {
    pub(crate) fn new(digest: Digest, expected_size: Option<u64>) -> Verifier {
        Verifier {
            digest,
            expected_size,
            written: 0,
            hasher: Sha256::new(),
        }
    }

    /// The digest the content must hash to.
    pub(crate) fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes seen so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// How much is left to come at most, when the size is known.
    pub(crate) fn left(&self) -> Option<u64> {
        self.expected_size
            .map(|size| size.saturating_sub(self.written))
    }

    /// Whether `len` bytes are more than the content may be.
    pub(crate) fn too_long(&self, len: u64) -> bool {
        self.expected_size.is_some_and(|size| len > size)
    }

    /// Hashes `buf`, the next part of the content; fails as soon as it goes past the size.
    pub(crate) fn update(&mut self, buf: &[u8]) -> Result<()> {
        let written = self.written + buf.len() as u64;
        if let Some(expected) = self.expected_size
            && written > expected
        {
            return Err(Error::SizeMismatch {
                digest: self.digest.clone(),
                expected,
                actual: written,
            });
        }
        self.hasher.update(buf);
        self.written = written;
        Ok(())
    }

    /// Starts again from nothing.
    pub(crate) fn reset(&mut self) {
        self.written = 0;
        self.hasher = Sha256::new();
    }

    /// Whether the whole content was exactly as announced: its size, then its digest.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Some(expected) = self.expected_size
            && self.written != expected
        {
            return Err(Error::SizeMismatch {
                digest: self.digest.clone(),
                expected,
                actual: self.written,
            });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Where [`place`] left a verified file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// It is the blob now.
    Moved,
    /// Another writer stored the blob first; theirs stays (a blob in the store never changes
    /// inode under the locks of those who hold it) and the file is still at `tmp`.
    Existed,
}

/// Makes `file` read-only like every blob: nothing should edit the store in place.
pub(crate) fn seal(file: &File) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o444))
}

/// Moves the verified, synced file at `tmp` to `target` in the store, never replacing a blob
/// there already. The caller syncs the directory ([`sync_dir`]) to make it durable.
pub(crate) fn place(tmp: &Path, target: &Path) -> Result<Placed> {
    let io_err = |source| Error::Io {
        action: "moving into the store",
        path: target.to_owned(),
        source,
    };
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        tmp,
        rustix::fs::CWD,
        target,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(Placed::Moved),
        Err(Errno::EXIST) => Ok(Placed::Existed),
        // A file system without RENAME_NOREPLACE: the content is the same anyway.
        Err(Errno::INVAL | Errno::NOSYS) => fs::rename(tmp, target)
            .map(|()| Placed::Moved)
            .map_err(io_err),
        Err(e) => Err(io_err(e.into())),
    }
}

/// Makes the renames into `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            action: "syncing",
            path: dir.to_owned(),
            source,
        })
}

/// Makes everything written to the file system holding `dir` durable: one sync for a batch.
pub(crate) fn sync_fs(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from))
        .map_err(|source| Error::Io {
            action: "syncing the file system of",
            path: dir.to_owned(),
            source,
        })
}
