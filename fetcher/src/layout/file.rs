//! Reading a layout's files: never through a symlink (neither the file nor a directory on the
//! way to it, as runc resolves paths in a rootfs), never blocking on a FIFO, only regular
//! files, documents capped by their size before a byte is read, blobs verified.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
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

/// Opens a file of a layout for reading: never through a symlink (neither the file nor a
/// directory on the way from `dir` to it, as runc resolves paths in a rootfs), never blocking
/// on a FIFO, and only when it is a regular file. Returns it with its size.
pub(crate) fn open_regular(dir: &Path, path: &Path) -> Result<(File, u64)> {
    let err = |source: io::Error| {
        layout_err(
            dir,
            LayoutError::Io {
                path: path.to_owned(),
                source,
            },
        )
    };
    let linked = || {
        layout_err(
            dir,
            LayoutError::Linked {
                path: path.to_owned(),
            },
        )
    };
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = match path.strip_prefix(dir) {
        Ok(inner) => {
            let root = layout_root(dir)?;
            let beneath =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&root, inner, flags, Mode::empty(), beneath) {
                Ok(fd) => File::from(fd),
                Err(Errno::LOOP | Errno::XDEV) => return Err(linked()),
                // A kernel older than 5.6: look at each directory on the way instead.
                Err(Errno::NOSYS) => {
                    let mut at = dir.to_owned();
                    for part in inner.parent().into_iter().flat_map(Path::components) {
                        at.push(part);
                        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                            return Err(linked());
                        }
                    }
                    open_nofollow(path, flags).map_err(|e| match e {
                        Errno::LOOP => linked(),
                        e => err(io::Error::from(e)),
                    })?
                }
                Err(e) => return Err(err(io::Error::from(e))),
            }
        }
        Err(_) => open_nofollow(path, flags).map_err(|e| match e {
            Errno::LOOP => linked(),
            e => err(io::Error::from(e)),
        })?,
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.file_type().is_file() {
        return Err(layout_err(
            dir,
            LayoutError::NotRegular {
                path: path.to_owned(),
                kind: kind(&meta.file_type()),
            },
        ));
    }
    // O_NONBLOCK only served the open: reads of a regular file never block, so it is left
    // set rather than cleared with one more system call per blob.
    Ok((file, meta.len()))
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

fn open_nofollow(path: &Path, flags: OFlags) -> std::result::Result<File, Errno> {
    rustix::fs::open(path, flags, Mode::empty()).map(File::from)
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

/// Verifies the layout's file `path` against `digest` (and `size`, when known).
pub(crate) fn verify_file(
    dir: &Path,
    path: &Path,
    digest: &Digest,
    size: Option<u64>,
) -> Result<()> {
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
