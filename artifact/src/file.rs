//! The one reader for files that someone else names: a layout's blobs and documents, keys
//! and policies, hosts files, a module in a container's rootfs.
//!
//! Every path is first opened `O_PATH`, which opens nothing: a FIFO, a socket or a device is
//! refused by what `fstat` says of that handle before it is ever opened (some devices act on
//! an open alone, a FIFO blocks it, `/dev/zero` never ends). Only a regular file is then
//! opened for reading, through the very handle looked at, and read up to a cap.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a named file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Opening or reading it failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Nothing is there.
    #[error("no such file or directory")]
    NotFound,
    /// It is not a regular file, and was not opened.
    #[error("it is {kind}, not a regular file")]
    NotRegular {
        /// What it is: `a directory`, `a FIFO`, `a character device` ...
        kind: &'static str,
    },
    /// It is a symlink, or the path goes through one, where none may be followed.
    #[error("it is a symlink or is reached through one; refusing to follow it")]
    Symlink,
    /// It is larger than the cap.
    #[error("it is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// It grew past the cap while it was read.
    #[error("it grew over the limit of {max} bytes while it was read")]
    Grew {
        /// The cap.
        max: u64,
    },
    /// Resolving inside a directory needs `openat2` (Linux 5.6).
    #[error("this kernel has no openat2 (Linux 5.6 or later is needed to read it safely)")]
    NoOpenat2,
}

impl ReadError {
    fn from_errno(e: Errno) -> Self {
        match e {
            Errno::NOENT => Self::NotFound,
            Errno::LOOP | Errno::XDEV => Self::Symlink,
            Errno::NOSYS => Self::NoOpenat2,
            e => Self::Io(e.into()),
        }
    }
}

/// How a path relative to a directory is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// As if the directory were `/`: `..` and absolute symlinks stay inside it (a rootfs).
    Root,
    /// Beneath the directory, and through no symlink at all (a layout).
    NoSymlinks,
}

/// A regular file, opened for reading, and its size.
#[derive(Debug)]
pub struct Opened {
    /// The file.
    pub file: File,
    /// Its size when it was opened.
    pub len: u64,
}

impl Opened {
    /// Its content, refused without a read when it is over `max` bytes; the cap holds even if
    /// the file grows while it is read.
    pub fn read(self, max: u64) -> Result<Vec<u8>, ReadError> {
        if self.len > max {
            return Err(ReadError::TooLarge {
                size: self.len,
                max,
            });
        }
        let mut bytes = Vec::with_capacity(self.len as usize);
        self.file.take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(ReadError::Grew { max });
        }
        Ok(bytes)
    }
}

/// Opens the regular file at `path` (symlinks followed: keys mounted from a Kubernetes
/// secret are reached through them); anything else is refused unopened.
pub fn open(path: &Path) -> Result<Opened, ReadError> {
    let handle = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(ReadError::from_errno)?;
    reopen(handle)
}

/// Opens the regular file at `path`, refusing a symlink there (a directory on the way is
/// followed); anything else is refused unopened.
pub fn open_nofollow(path: &Path) -> Result<Opened, ReadError> {
    let handle = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(ReadError::from_errno)?;
    reopen(handle)
}

/// Reads the regular file at `path`, at most `max` bytes (see [`open`]).
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    open(path)?.read(max)
}

/// Opens the regular file at `relative` inside the directory `dir`, resolved as `within`
/// says; anything else is refused unopened.
pub fn open_in(dir: BorrowedFd<'_>, relative: &Path, within: Within) -> Result<Opened, ReadError> {
    let resolve = match within {
        Within::Root => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        Within::NoSymlinks => {
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
        }
    };
    // The kernel asks for a retry when a rename raced the lookup.
    let mut attempts = 0;
    let handle = loop {
        match rustix::fs::openat2(
            dir,
            relative,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            Err(e) => return Err(ReadError::from_errno(e)),
            Ok(fd) => break fd,
        }
    };
    reopen(handle)
}

/// Reads the regular file at `relative` inside `dir`, at most `max` bytes (see [`open_in`]).
pub fn read_in(
    dir: BorrowedFd<'_>,
    relative: &Path,
    within: Within,
    max: u64,
) -> Result<Vec<u8>, ReadError> {
    open_in(dir, relative, within)?.read(max)
}

/// Opens a directory to read files beneath it with [`open_in`]; opening it opens nothing.
pub fn open_dir(path: &Path) -> Result<OwnedFd, ReadError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(ReadError::from_errno)
}

/// What `handle` (an `O_PATH` descriptor) is; only a regular file is opened for reading,
/// through `/proc/self/fd`, so that the file read is the very one looked at.
fn reopen(handle: OwnedFd) -> Result<Opened, ReadError> {
    let stat = rustix::fs::fstat(&handle).map_err(ReadError::from_errno)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(ReadError::NotRegular {
            kind: match kind {
                FileType::Directory => "a directory",
                FileType::Fifo => "a FIFO",
                FileType::CharacterDevice => "a character device",
                FileType::BlockDevice => "a block device",
                FileType::Socket => "a socket",
                FileType::Symlink => "a symlink",
                _ => "a special file",
            },
        });
    }
    let fd = rustix::fs::open(
        format!("/proc/self/fd/{}", handle.as_fd().as_raw_fd()),
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(ReadError::from_errno)?;
    Ok(Opened {
        file: File::from(fd),
        len: u64::try_from(stat.st_size).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        path
    }

    /// A FIFO would block the open until a writer comes; `/dev/zero` would be read forever:
    /// both are refused at once, unopened.
    #[test]
    fn fifos_and_devices_are_refused_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(dir.path());
        let e = read(&fifo, 100).unwrap_err();
        assert!(e.to_string().contains("a FIFO, not a regular file"), "{e}");
        for device in ["/dev/zero", "/dev/null"] {
            let e = read(Path::new(device), 100).unwrap_err();
            assert!(
                e.to_string()
                    .contains("a character device, not a regular file"),
                "{device}: {e}"
            );
        }
        let e = read(dir.path(), 100).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let root = open_dir(dir.path()).unwrap();
        for within in [Within::Root, Within::NoSymlinks] {
            let e = read_in(root.as_fd(), Path::new("fifo"), within, 100).unwrap_err();
            assert!(e.to_string().contains("a FIFO"), "{e}");
        }
    }

    #[test]
    fn reads_are_capped_and_symlinks_followed_only_where_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"12345").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        assert_eq!(read(&dir.path().join("l"), 5).unwrap(), b"12345");
        let e = read(&dir.path().join("f"), 4).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { size: 5, max: 4 }), "{e}");
        assert!(matches!(
            read(&dir.path().join("none"), 4),
            Err(ReadError::NotFound)
        ));
        let root = open_dir(dir.path()).unwrap();
        let e = read_in(root.as_fd(), Path::new("l"), Within::NoSymlinks, 9).unwrap_err();
        assert!(matches!(e, ReadError::Symlink), "{e}");
        assert_eq!(
            read_in(root.as_fd(), Path::new("l"), Within::Root, 9).unwrap(),
            b"12345"
        );
    }
}
