//! Small helpers over directories that the cache's rooms share.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::{Cache, Digest, Error, Result};

impl Cache {
    /// Bytes used by blobs, compiled code and partial downloads.
    pub fn size(&self) -> u64 {
        dir_size(&self.root)
    }
}

pub(crate) fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = fs::read_dir(dir).map_err(|source| Error::Io {
        action: "listing",
        path: dir.to_owned(),
        source,
    })?;
    Ok(entries
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect())
}

pub(crate) fn hash_file(path: &Path, buf: &mut [u8]) -> Result<(Digest, u64)> {
    File::open(path)
        .and_then(|f| Digest::of_reader_with(f, buf))
        .map_err(|source| Error::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_size(&e.path()),
                Ok(_) => e.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    })
}
