//! The cache's error type.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The content did not hash to the digest it was announced with.
    #[error(
        "digest mismatch: expected {expected}, got {actual}; the content was discarded and nothing was stored"
    )]
    DigestMismatch {
        /// The digest the content was announced with.
        expected: Digest,
        /// The digest of what actually arrived.
        actual: Digest,
    },
    /// The content was longer or shorter than announced.
    #[error(
        "size mismatch for {digest}: expected {expected} bytes, got {actual}; the content was discarded"
    )]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// How many bytes arrived (a lower bound when the content was too long).
        actual: u64,
    },
    /// A string that is not a valid `sha256:<hex>` digest.
    #[error("invalid digest {digest:?}: expected sha256: followed by 64 lowercase hex characters")]
    InvalidDigest {
        /// The rejected text.
        digest: String,
    },
    /// The blob is not in the cache.
    #[error("blob {digest} is not in the cache")]
    BlobNotFound {
        /// The missing blob.
        digest: Digest,
    },
    /// An index entry could not be parsed.
    #[error("cache index entry {path} is corrupt")]
    CorruptEntry {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: serde_json::Error,
    },
    /// The file system holding the cache is full (or the user's quota is spent). What the
    /// failed write had stored so far was dropped, so that the next attempt has that room.
    #[error(
        "no space left for the cache {cache} ({action} {path}); free some space, or run \
         `wasm-oci cache prune` (`--partials` drops every partial download at once)"
    )]
    NoSpace {
        /// The cache's directory.
        cache: PathBuf,
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error (`ENOSPC` or `EDQUOT`).
        source: io::Error,
    },
    /// Compiled code that someone other than this process's user could have written: it is
    /// not loaded, and nothing is kept there.
    #[error("{path} is {why}, so another user could replace compiled code in {code}")]
    UntrustedCode {
        /// The compiled file.
        code: PathBuf,
        /// What on its way is untrusted (the file, or a directory).
        path: PathBuf,
        /// What is wrong with it.
        why: Untrusted,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Whether `e` says the file system (or the user's quota) is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
    )
}

/// What is wrong with a file or directory that native code would be loaded from or kept in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Untrusted {
    /// Owned by a user who is neither this process's nor root.
    #[error("owned by uid {owner}, neither this process's user ({euid}) nor root")]
    Owner {
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        euid: u32,
    },
    /// Its group or anyone may write it (a directory without the sticky bit).
    #[error("writable by its group or by others (mode {mode:o})")]
    Writable {
        /// Its permission bits.
        mode: u32,
    },
    /// A symbolic link where a directory or the code was expected.
    #[error("a symbolic link")]
    Symlink,
    /// Not a regular file (a device, a FIFO, a directory).
    #[error("not a regular file")]
    NotRegular,
}

/// Parsing a digest fails with this crate's error; written here, beside the error it names,
/// so that `digest` depends on nothing in the crate.
impl std::str::FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s).ok_or_else(|| Error::InvalidDigest {
            digest: s.to_owned(),
        })
    }
}
