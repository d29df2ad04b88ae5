//! Precompiled native code, kept apart from blobs and keyed by the wasm digest and an opaque
//! engine key (the runner derives it from the engine's compatibility hash).
//!
//! Native code runs as whoever loads it, so it is loaded only from a file that nobody but this
//! process's user could have written: the file is opened once, by walking from `/` one
//! directory at a time without following links, and every directory on the way and the file
//! itself are checked on the descriptor that was opened (owner, mode), not looked up again by
//! name. A directory another user can write anywhere on the way (a shared cache directory, a
//! home directory of someone else) makes the code untrusted: the runner then compiles afresh,
//! in memory, and keeps nothing.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::{Cache, Digest, Error, Result, Untrusted, write_atomic_from};

/// Compiled code found in the cache and checked, open: see [`Cache::open_compiled`].
#[derive(Debug)]
pub struct CompiledCode {
    file: File,
    path: PathBuf,
}

impl CompiledCode {
    /// Where it was found, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, whose owner and mode were checked on this very descriptor.
    pub fn into_file(self) -> File {
        self.file
    }
}

/// One compiled file, as `cache ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompiledEntry {
    /// The digest of the wasm it was compiled from.
    pub digest: Digest,
    /// `module` or `component`.
    pub kind: String,
    /// The engine key it was compiled for (engine settings such as fuel make their own).
    pub engine: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The engine key under which code someone else compiled is kept once the signature policy
/// vouched for it for `repository` (the whole reference that ran, as the fetcher writes it):
/// the runner's own key and that name's digest. Only a run of that reference looks there
/// ([`CompiledCode`] of the runner's own key is what every run may load: this process compiled
/// it). Another module with the same wasm never loads it: its policy may trust other keys, or
/// none, and native code is the whole of what the guest does.
pub fn vouched_engine_key(engine_key: &str, repository: &str) -> String {
    let digest = Digest::of(repository.as_bytes());
    format!("{engine_key}v{}", &digest.hex()[..32])
}

impl Cache {
    /// Where the code compiled for `digest` by the engine `engine_key` lives; `kind` tells a
    /// module from a component (`"module"`, `"component"`). The file may not exist.
    pub fn compiled_path(&self, engine_key: &str, digest: &Digest, kind: &str) -> PathBuf {
        debug_assert!(
            engine_key.bytes().all(|b| b.is_ascii_alphanumeric()) && !engine_key.is_empty(),
            "engine keys are plain names"
        );
        debug_assert!(matches!(kind, "module" | "component"), "a kind of code");
        self.compiled_dir()
            .join(engine_key)
            .join(format!("{}.{kind}", digest.hex()))
    }

    /// The code compiled for `digest` earlier, opened once and checked on that descriptor:
    /// the file and every directory from `/` to it (see the module's doc). `Ok(None)` when
    /// there is none; [`Error::UntrustedCode`] when anyone else could have written it.
    pub fn open_compiled(
        &self,
        engine_key: &str,
        digest: &Digest,
        kind: &str,
    ) -> Result<Option<CompiledCode>> {
        let path = self.compiled_path(engine_key, digest, kind);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(None);
        };
        let Some(dir_fd) = open_trusted_dir(dir)? else {
            return Ok(None);
        };
        let fd = match rustix::fs::openat(
            &dir_fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(untrusted(&path, &path, Untrusted::Symlink)),
            Err(e) => return Err(io_err("opening", &path, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err("inspecting", &path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(untrusted(&path, &path, Untrusted::NotRegular));
        }
        let euid = rustix::process::geteuid().as_raw();
        // The code itself must be this user's own: what root compiled is not what we did.
        if stat.st_uid != euid {
            return Err(untrusted(
                &path,
                &path,
                Untrusted::Owner {
                    owner: stat.st_uid,
                    euid,
                },
            ));
        }
        check_mode(&stat).map_err(|why| untrusted(&path, &path, why))?;
        // Its last use, for `prune --older-than` (best effort: a read-only cache keeps none).
        let now = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        let _ = rustix::fs::futimens(&fd, &now);
        Ok(Some(CompiledCode {
            file: File::from(fd),
            path,
        }))
    }

    /// Keeps `code`, compiled for `digest` by the engine `engine_key`, atomically (concurrent
    /// first runs each write a whole file, and the last rename wins), read-only like blobs.
    /// Refuses ([`Error::UntrustedCode`]) to keep it where [`Cache::open_compiled`] would
    /// not load it from; fails as the file system does when it is read-only or full.
    pub fn store_compiled(
        &self,
        engine_key: &str,
        digest: &Digest,
        kind: &str,
        code: &[u8],
    ) -> Result<PathBuf> {
        let path = self.compiled_path(engine_key, digest, kind);
        let dir = path.parent().expect("compiled code lives in a directory");
        // Nothing is made inside a directory someone else could write, either.
        let existing = dir
            .ancestors()
            .find(|d| d.exists())
            .unwrap_or(Path::new("/"));
        open_trusted_dir(existing)?;
        // Writable by us alone whatever the umask.
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| self.io_error("creating", dir, source))?;
        if open_trusted_dir(dir)?.is_none() {
            return Err(Error::Io {
                action: "opening",
                path: dir.to_owned(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        write_atomic_from(&path, &mut &code[..], 0o444).map_err(|e| self.no_space(e))?;
        Ok(path)
    }

    /// Every compiled file in the cache, in no particular order.
    pub fn compiled(&self) -> Vec<CompiledEntry> {
        let mut found = Vec::new();
        for key in read_dir(&self.compiled_dir()) {
            let Some(engine) = key.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            for file in read_dir(&key.path()) {
                let name = file.file_name();
                let Some((hex, kind)) = name.to_str().and_then(|n| n.split_once('.')) else {
                    continue;
                };
                let Ok(digest) = format!("{}:{hex}", Digest::ALGORITHM).parse::<Digest>() else {
                    continue;
                };
                if !matches!(kind, "module" | "component") {
                    continue;
                }
                found.push(CompiledEntry {
                    digest,
                    kind: kind.to_owned(),
                    engine: engine.clone(),
                    size: file.metadata().map_or(0, |m| m.len()),
                });
            }
        }
        found
    }

    fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }
}

fn read_dir(dir: &Path) -> impl Iterator<Item = fs::DirEntry> {
    fs::read_dir(dir).into_iter().flatten().flatten()
}

/// The directory `dir`, opened by walking from `/` without following links, every directory
/// on the way checked on its descriptor; `None` when part of it does not exist.
fn open_trusted_dir(dir: &Path) -> Result<Option<OwnedFd>> {
    // Links in the name given (a home directory behind one) are resolved first; the walk
    // then checks what it opens, so a link swapped in meanwhile fails it.
    let dir = match fs::canonicalize(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                action: "resolving",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = Path::new("/");
    let mut fd = rustix::fs::openat(rustix::fs::CWD, root, flags, Mode::empty())
        .map_err(|e| io_err("opening", root, e))?;
    check_dir(&fd, root, &dir)?;
    let mut walked = PathBuf::from("/");
    for part in dir.components() {
        let name: &OsStr = match part {
            Component::Normal(name) => name,
            Component::RootDir => continue,
            // A canonical path has no other kind.
            _ => return Err(untrusted(&dir, &dir, Untrusted::Symlink)),
        };
        walked.push(name);
        fd = match rustix::fs::openat(&fd, name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(untrusted(&walked, &dir, Untrusted::Symlink));
            }
            Err(e) => return Err(io_err("opening", &walked, e)),
        };
        check_dir(&fd, &walked, &dir)?;
    }
    Ok(Some(fd))
}

/// A directory on the way to compiled code: root's or ours, and writable by nobody else
/// unless sticky (as `/tmp` is: others cannot rename or remove what is not theirs).
fn check_dir(fd: &OwnedFd, path: &Path, code: &Path) -> Result<()> {
    let stat = rustix::fs::fstat(fd).map_err(|e| io_err("inspecting", path, e))?;
    let euid = rustix::process::geteuid().as_raw();
    if stat.st_uid != 0 && stat.st_uid != euid {
        return Err(untrusted(
            path,
            code,
            Untrusted::Owner {
                owner: stat.st_uid,
                euid,
            },
        ));
    }
    if stat.st_mode & 0o1000 == 0 {
        check_mode(&stat).map_err(|why| untrusted(path, code, why))?;
    }
    Ok(())
}

fn check_mode(stat: &Stat) -> Result<(), Untrusted> {
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { mode });
    }
    Ok(())
}

fn untrusted(path: &Path, code: &Path, why: Untrusted) -> Error {
    Error::UntrustedCode {
        code: code.to_owned(),
        path: path.to_owned(),
        why,
    }
}

fn io_err(action: &'static str, path: &Path, e: Errno) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The compiled code in the cache by the digest of the wasm it was compiled from, listed once.
pub(crate) struct CompiledFiles(std::collections::HashMap<String, Vec<PathBuf>>);

impl CompiledFiles {
    pub(crate) fn list(cache: &Cache) -> CompiledFiles {
        let mut by_digest: std::collections::HashMap<String, Vec<PathBuf>> = Default::default();
        for entry in cache.compiled() {
            let path = cache.compiled_path(&entry.engine, &entry.digest, &entry.kind);
            by_digest
                .entry(entry.digest.hex().to_owned())
                .or_default()
                .push(path);
        }
        CompiledFiles(by_digest)
    }

    pub(crate) fn of(&self, digest: &Digest) -> &[PathBuf] {
        self.0.get(digest.hex()).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, chown};

    fn cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        (dir, cache)
    }

    const KEY: &str = "0123abcd";

    #[test]
    fn code_kept_is_found_again_and_listed() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"\0asm\x01\0\0\0");
        assert!(
            cache
                .open_compiled(KEY, &digest, "module")
                .unwrap()
                .is_none()
        );
        let path = cache
            .store_compiled(KEY, &digest, "module", b"native")
            .unwrap();
        let found = cache
            .open_compiled(KEY, &digest, "module")
            .unwrap()
            .unwrap();
        assert_eq!(found.path(), path);
        assert_eq!(fs::read(&path).unwrap(), b"native");
        assert_eq!(
            cache.compiled(),
            vec![CompiledEntry {
                digest,
                kind: "module".into(),
                engine: KEY.into(),
                size: 6,
            }]
        );
    }

    /// Only root can give a file to another user; elsewhere the mode checks are tested.
    fn as_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn code_anyone_else_could_have_written_is_refused_on_the_descriptor_opened() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"\0asm\x01\0\0\0");
        let path = cache
            .store_compiled(KEY, &digest, "module", b"native")
            .unwrap();
        let key_dir = path.parent().unwrap().to_owned();
        let compiled_dir = key_dir.parent().unwrap().to_owned();
        // A directory others can write, two levels up: they could swap the one below it.
        fs::set_permissions(&compiled_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = cache.open_compiled(KEY, &digest, "module").unwrap_err();
        match &err {
            Error::UntrustedCode { path, why, .. } => {
                assert_eq!(path, &fs::canonicalize(&compiled_dir).unwrap());
                assert_eq!(why, &Untrusted::Writable { mode: 0o777 });
            }
            other => panic!("unexpected {other:?}"),
        }
        // Nor is anything kept there.
        assert!(matches!(
            cache.store_compiled(KEY, &digest, "component", b"x"),
            Err(Error::UntrustedCode { .. })
        ));
        fs::set_permissions(&compiled_dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            cache
                .open_compiled(KEY, &digest, "module")
                .unwrap()
                .is_some()
        );
        // A link where the code was.
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(matches!(
            cache.open_compiled(KEY, &digest, "module"),
            Err(Error::UntrustedCode {
                why: Untrusted::Symlink,
                ..
            })
        ));
        if !as_root() {
            return;
        }
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"someone else's").unwrap();
        chown(&path, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            cache.open_compiled(KEY, &digest, "module"),
            Err(Error::UntrustedCode {
                why: Untrusted::Owner { owner: 65534, .. },
                ..
            })
        ));
        fs::remove_file(&path).unwrap();
        cache
            .store_compiled(KEY, &digest, "module", b"native")
            .unwrap();
        chown(&compiled_dir, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            cache.open_compiled(KEY, &digest, "module"),
            Err(Error::UntrustedCode {
                why: Untrusted::Owner { owner: 65534, .. },
                ..
            })
        ));
    }
}
