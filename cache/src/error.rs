//! The cache's error type.

use std::io;
use std::path::PathBuf;

use crate::Digest;

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
