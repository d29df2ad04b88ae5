//! The wasm-oci cache: a small content-addressed database on disk.
//!
//! Blobs (wasm layers, manifests) live at `<root>/v1/blobs/sha256/<hex>` and are always whole and
//! correct: they are streamed into `<root>/v1/ingest/` first, checked for size and digest, synced
//! and atomically renamed into place. A small index maps references to what they resolved to, so
//! a cached reference starts without asking the registry. This crate knows nothing of HTTP.
//!
//! A writer stores what a reference needs under a [`Lease`] ([`Cache::begin`]), which keeps
//! `prune` off it until the reference is recorded. The rooms: [`ingest`](Ingest) (the protocol
//! of one blob) over `writer` (its buffers) and `store` (the steps into `blobs/`, shared with
//! `batch`); `holds`, `lease`, `refs`; the care of the cache in `verify`, `prune` and
//! `partials`; and `compiled`, native code kept beside the blobs.

#![deny(missing_docs)]

mod batch;
mod compiled;
mod digest;
mod error;
mod files;
mod holds;
mod ingest;
mod lease;
mod partials;
mod prune;
mod refs;
mod store;
mod verify;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use batch::BlobBatch;
pub use compiled::{CompiledCode, CompiledEntry, Untrusted};
pub use digest::Digest;
pub use error::Error;
pub use holds::{Hold, SWEEP_GRACE};
pub use ingest::{Ingest, Ingested};
pub use lease::Lease;
pub use partials::STALE_PARTIAL;
pub use prune::{PrunePolicy, PruneReport};
pub use refs::{RefEntry, RefRecord, Signatures, Verdict};
pub use verify::{BadBlob, VerifyReport};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The layout version; a format change bumps it so old data is never misread.
const LAYOUT_VERSION: &str = "v1";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by wasm-oci.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// A handle on a cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    base: PathBuf,
    root: PathBuf,
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

    /// Starts writing the blob `digest`, or says it is present already and holds it.
    ///
    /// One writer per digest runs at a time, across processes: a second caller waits for the
    /// first and then finds the blob present, unless the first makes no progress for a few
    /// seconds (a stalled registry); then the second writes a private copy. `expected_size`,
    /// when known, is enforced while writing.
    pub fn ingest(&self, digest: &Digest, expected_size: Option<u64>) -> Result<Ingested> {
        Ingest::begin(self, digest.clone(), expected_size)
    }

    /// Stores small bytes (a manifest, a config) under their digest and returns it.
    pub fn insert(&self, bytes: &[u8]) -> Result<Digest> {
        self.insert_held(bytes).map(|(digest, _)| digest)
    }

    /// [`Cache::insert`], holding the blob (see [`Cache::hold`]) until the caller has recorded
    /// the reference that uses it.
    pub fn insert_held(&self, bytes: &[u8]) -> Result<(Digest, Hold)> {
        let digest = Digest::of(bytes);
        let hold = match self.ingest(&digest, Some(bytes.len() as u64))? {
            Ingested::Writer(mut writer) => {
                writer.write(bytes)?;
                writer.commit_held()?.1
            }
            Ingested::Present(_, hold) => hold,
        };
        Ok((digest, hold))
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

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join(Digest::ALGORITHM)
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/wasm-oci`, else `~/.cache/wasm-oci`.
pub fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasm-oci"))
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_from(path, &mut &bytes[..], 0o644)
}

/// Writes what `content` reads to `path`, with permission bits `mode`, so that readers see the
/// old file or the new one, never a mix: a temporary file beside it (private until renamed),
/// synced, then renamed into place. The one way this workspace replaces a file.
pub fn write_atomic_from(path: &Path, content: &mut dyn io::Read, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io_err = |action, source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    };
    // NamedTempFile creates it 0600: nobody reads it before it is whole.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err("creating", e))?;
    io::copy(content, tmp.as_file_mut()).map_err(|e| io_err("writing", e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("setting permissions of", e))?;
    tmp.as_file().sync_all().map_err(|e| io_err("syncing", e))?;
    tmp.persist(path)
        .map_err(|e| io_err("renaming into place", e.error))?;
    Ok(())
}
