//! Reading a layout's files: never through a symlink (neither the file nor a directory on the
//! way to it, as runc resolves paths in a rootfs), never opening a FIFO or a device, only
//! regular files, documents capped by their size before a byte is read, blobs verified.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use wasm_oci_cache::Digest;

use super::error::{LayoutError, MAX_DOCUMENT};
use crate::error::{Error, Result};

/// The crate's error for what is wrong with the layout at `dir`.
pub(crate) fn layout_err(dir: &Path, reason: LayoutError) -> Error {
    Error::Layout {
        dir: dir.to_owned(),
        reason: Box::new(reason),
    }
}

/// Where the blob `digest` is in the layout at `dir`.
pub(crate) fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join(Digest::ALGORITHM).join(digest.hex())
}

/// Opens a file of a layout for reading with the one reader of files others name
/// ([`wasm_oci_artifact::file`]): never through a symlink (neither the file nor a directory
/// on the way from `dir` to it, as runc resolves paths in a rootfs), and only when it is a
/// regular file, which is looked at through an `O_PATH` handle first: a FIFO or a device is
/// never opened. Returns it with its size.
pub(crate) fn open_regular(dir: &Path, path: &Path) -> Result<(File, u64)> {
    use wasm_oci_artifact::file::{self as named, ReadError, Within};
    let linked = || {
        layout_err(
            dir,
            LayoutError::Linked {
                path: path.to_owned(),
            },
        )
    };
    let opened = match path.strip_prefix(dir) {
        Ok(inner) => {
            let root = layout_root(dir)?;
            match named::open_in(std::os::fd::AsFd::as_fd(&*root), inner, Within::NoSymlinks) {
                // A kernel older than 5.6: look at each directory on the way instead.
                Err(ReadError::NoOpenat2) => {
                    let mut at = dir.to_owned();
                    for part in inner.parent().into_iter().flat_map(Path::components) {
                        at.push(part);
                        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                            return Err(linked());
                        }
                    }
                    named::open_nofollow(path)
                }
                other => other,
            }
        }
        Err(_) => named::open_nofollow(path),
    };
    match opened {
        Ok(opened) => Ok((opened.file, opened.len)),
        Err(ReadError::Symlink | ReadError::NotRegular { kind: "a symlink" }) => Err(linked()),
        Err(ReadError::NotRegular { kind }) => Err(layout_err(
            dir,
            LayoutError::NotRegular {
                path: path.to_owned(),
                kind: kind.strip_prefix("a ").unwrap_or(kind),
            },
        )),
        Err(e) => Err(layout_err(
            dir,
            LayoutError::Io {
                path: path.to_owned(),
                source: match e {
                    ReadError::Io(e) => e,
                    ReadError::NotFound => io::ErrorKind::NotFound.into(),
                    e => io::Error::other(e),
                },
            },
        )),
    }
}

/// The layout's directory, opened once per thread and layout rather than once per blob (a
/// load of 10,000 entries opens 20,000 blobs).
fn layout_root(dir: &Path) -> Result<std::sync::Arc<rustix::fd::OwnedFd>> {
    use std::cell::RefCell;
    use std::sync::Arc;
    thread_local! {
        static ROOT: RefCell<Option<(PathBuf, Arc<rustix::fd::OwnedFd>)>> = const { RefCell::new(None) };
    }
    if let Some(fd) = ROOT.with_borrow(|r| {
        r.as_ref()
            .filter(|(at, _)| at == dir)
            .map(|(_, fd)| fd.clone())
    }) {
        return Ok(fd);
    }
    let fd = Arc::new(
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            layout_err(
                dir,
                LayoutError::Dir {
                    source: io::Error::from(e),
                },
            )
        })?,
    );
    ROOT.with_borrow_mut(|r| *r = Some((dir.to_owned(), fd.clone())));
    Ok(fd)
}

pub(crate) fn kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Reads a small document (index.json, a manifest), refusing one over [`MAX_DOCUMENT`] by its
/// size, before reading it.
pub(crate) fn read_document(dir: &Path, path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_regular(dir, path)?;
    if len > MAX_DOCUMENT {
        return Err(layout_err(
            dir,
            LayoutError::TooLarge {
                path: path.to_owned(),
                len,
            },
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // The cap holds even if the file grows while it is read.
    file.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| {
            layout_err(
                dir,
                LayoutError::Io {
                    path: path.to_owned(),
                    source,
                },
            )
        })?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(layout_err(
            dir,
            LayoutError::Grew {
                path: path.to_owned(),
            },
        ));
    }
    Ok(bytes)
}

/// A document blob of the layout, read whole and verified against its digest.
pub(crate) fn read_verified(dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let bytes = read_document(dir, &blob_path(dir, digest))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(layout_err(
            dir,
            LayoutError::HashMismatch {
                digest: digest.clone(),
                actual,
                bytes: None,
            },
        ));
    }
    Ok(bytes)
}

/// Opens the layout's regular file `path`, the blob `digest`, and its length, which must be
/// `size` when that is known.
fn open_blob_file(
    dir: &Path,
    path: &Path,
    digest: &Digest,
    size: Option<u64>,
) -> Result<(File, u64)> {
    let (file, len) = open_regular(dir, path)?;
    if let Some(size) = size
        && len != size
    {
        return Err(layout_err(
            dir,
            LayoutError::SizeMismatch {
                digest: digest.clone(),
                len,
                size,
            },
        ));
    }
    Ok((file, len))
}

/// Verifies the layout's file `path` against `digest` (and `size`, when known).
pub(crate) fn verify_file(
    dir: &Path,
    path: &Path,
    digest: &Digest,
    size: Option<u64>,
) -> Result<()> {
    let (file, len) = open_blob_file(dir, path, digest, size)?;
    let (actual, total) = Digest::of_reader(file.take(len)).map_err(|source| {
        layout_err(
            dir,
            LayoutError::Io {
                path: path.to_owned(),
                source,
            },
        )
    })?;
    if &actual != digest || size.is_some_and(|s| s != total) {
        return Err(layout_err(
            dir,
            LayoutError::HashMismatch {
                digest: digest.clone(),
                actual,
                bytes: Some(total),
            },
        ));
    }
    Ok(())
}

/// Stages the layout's blob `digest` (from `content` when it was read already) unless the
/// batch or the cache has it; returns whether the cache had it before.
pub(super) fn import_blob(
    batch: &mut wasm_oci_cache::BlobBatch<'_>,
    dir: &Path,
    digest: &Digest,
    size: Option<u64>,
    content: Option<&[u8]>,
) -> Result<bool> {
    // One the cache (or this batch) has already is not read again: a shared config once.
    if batch.staged(digest) {
        return Ok(false);
    }
    if batch.cache().contains(digest) {
        return Ok(true);
    }
    let mismatch = |e| match e {
        wasm_oci_cache::Error::DigestMismatch { expected, actual } => {
            layout_err(dir, LayoutError::ImportMismatch { expected, actual })
        }
        other => other.into(),
    };
    if let Some(content) = content {
        batch.add(digest, size, content).map_err(mismatch)?;
        return Ok(false);
    }
    let path = blob_path(dir, digest);
    let (file, len) = open_blob_file(dir, &path, digest, size)?;
    batch.add(digest, Some(len), file).map_err(mismatch)?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::artifacts;

    /// A layout whose index.json is a FIFO would block the reader until a writer came; one
    /// whose index.json leads to `/dev/zero` would be read forever: both are refused at once,
    /// never opened.
    #[test]
    fn a_fifo_or_a_device_in_a_layout_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("index.json"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = artifacts(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        // Outside the layout's own tree (a path named directly), a device is refused the
        // same way.
        let e = open_regular(dir.path(), Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a regular file (a character device)"),
            "{e}"
        );
        // Inside it, a symlink to a device is not followed at all.
        fs::remove_file(dir.path().join("index.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("index.json")).unwrap();
        let e = read_document(dir.path(), &dir.path().join("index.json")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
