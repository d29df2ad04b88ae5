//! The cache's central type: a handle on a cache directory and where things live in it. What
//! the cache does is in the rooms that extend it (ingest, refs, lease, prune, ...).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::digest::Digest;
use crate::error::{self, Error, Result};

/// The layout version; a format change bumps it so old data is never misread.
const LAYOUT_VERSION: &str = "v1";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by wasm-oci.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// A handle on a cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    base: PathBuf,
    pub(crate) root: PathBuf,
}

impl Cache {
    /// Opens the cache at `base`, creating its layout when missing.
    pub fn open(base: impl Into<PathBuf>) -> Result<Self> {
        let base = base.into();
        let root = base.join(LAYOUT_VERSION);
        let cache = Self { base, root };
        for dir in [cache.blobs_dir(), cache.ingest_dir(), cache.refs_dir()] {
            fs::create_dir_all(&dir).map_err(|source| Error::Io {
                action: "creating cache directory",
                path: dir.clone(),
                source,
            })?;
        }
        let tag = cache.base.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Best effort: a missing tag only means backup tools may copy the cache.
            let _ = write_atomic(&tag, CACHEDIR_TAG.as_bytes());
        }
        Ok(cache)
    }

    /// Opens the cache read-only at `base` if it exists, without creating anything.
    ///
    /// This is the warm path of `run`: it must not touch the disk more than needed.
    pub fn open_existing(base: impl Into<PathBuf>) -> Option<Self> {
        let base = base.into();
        let root = base.join(LAYOUT_VERSION);
        root.is_dir().then_some(Self { base, root })
    }

    /// The directory the cache was opened at (the one holding `CACHEDIR.TAG`).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Path of a blob in the store; it may not exist.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Whether the store holds the blob.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob; meant for small ones such as manifests.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound {
                digest: digest.clone(),
            },
            _ => Error::Io {
                action: "reading blob",
                path,
                source,
            },
        })
    }

    /// An error of the file at `path` in this cache; a full disk says which cache it is.
    pub(crate) fn io_error(&self, action: &'static str, path: &Path, source: io::Error) -> Error {
        if error::is_no_space(&source) {
            return Error::NoSpace {
                cache: self.base.clone(),
                action,
                path: path.to_owned(),
                source,
            };
        }
        Error::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// `e`, as [`Error::NoSpace`] when it says the disk is full.
    pub(crate) fn no_space(&self, e: Error) -> Error {
        match e {
            Error::Io {
                action,
                path,
                source,
            } => self.io_error(action, &path, source),
            other => other,
        }
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join(Digest::ALGORITHM)
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }
}

/// The node's cache directory: the shim's (unless `WASM_OCI_CACHE` names another), and the
/// CLI's when it runs as root with no home, as under a systemd unit. Not under `/var/cache`:
/// modules loaded from a file (`wasm-oci load`) may not be fetched again.
pub const SYSTEM_DIR: &str = "/var/lib/wasm-oci";

/// The default cache directory: `$XDG_CACHE_HOME/wasm-oci`, else `~/.cache/wasm-oci`, else,
/// for root with no `HOME` (a systemd unit has none), [`SYSTEM_DIR`].
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")));
    match base {
        Some(base) => Some(base.join("wasm-oci")),
        None if rustix::process::geteuid().is_root() => Some(PathBuf::from(SYSTEM_DIR)),
        None => None,
    }
}
