//! Writing a blob: stream into `ingest/`, verify size and digest, sync, rename into `blobs/`.
//!
//! The ingest file doubles as the writer's lock: one writer per digest across processes, and a
//! waiter that wakes after the writer committed finds the blob present instead of fetching again.
//! A download that is interrupted (an error, a kill) leaves its partial file; the next writer
//! of that digest continues from its end. Content proven wrong is removed.
//!
//! A waiter does not wait behind a writer that makes no progress (a registry that stalls
//! mid-blob): after [`STALL`] without a byte more in the shared file it writes a private file
//! of its own, which is not resumed, and whichever commits first provides the blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::{Cache, Digest, Error, Hold, Result};

/// How long a waiter waits for a writer whose file does not grow before writing on its own.
const STALL: std::time::Duration = std::time::Duration::from_secs(3);

/// How often a waiter looks at the writer's lock and file.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The outcome of [`Cache::ingest`].
#[derive(Debug)]
pub enum Ingested {
    /// The blob is in the store already; nothing to write. It is held (see
    /// [`Cache::hold`]) until the [`Hold`] is dropped, so that a prune cannot take it before
    /// the caller has recorded who uses it.
    Present(PathBuf, Hold),
    /// The caller holds the writer for this digest and must write the content.
    Writer(Box<Ingest>),
}

/// An exclusive, verifying writer of one blob.
///
/// Dropped without [`Ingest::commit`], it keeps what it wrote in `ingest/` for a later writer to
/// resume; nothing reaches `blobs/` unverified. Content known to be wrong (too long, or a
/// digest mismatch) is removed.
#[derive(Debug)]
pub struct Ingest {
    file: Option<File>,
    path: PathBuf,
    target: PathBuf,
    digest: Digest,
    expected_size: Option<u64>,
    written: u64,
    hasher: Sha256,
    discard: bool,
    /// Written content not yet handed to the file: network chunks are small, and a write
    /// call per chunk costs more than the copy.
    pending: Buffer,
    /// Writes full buffers on another thread while this one hashes the next; started once a
    /// blob is larger than one buffer.
    background: Option<Background>,
    /// A file of this writer's own, written because the shared one's writer stalled: removed
    /// when dropped (nobody resumes it), and it yields to a blob committed meanwhile.
    private: bool,
}

/// The thread that writes an ingest's full buffers to its file, in order, while the hashing
/// thread hashes the next buffer. It writes with `O_DIRECT` where it can (see [`Direct`]);
/// otherwise a second thread syncs what it wrote every [`FLUSH_EVERY`] bytes, so that the
/// final sync has little left.
#[derive(Debug)]
struct Background {
    buffers: std::sync::mpsc::SyncSender<Buffer>,
    /// Buffers written and emptied, for reuse: fresh ones would be faulted in page by page.
    emptied: std::sync::mpsc::Receiver<Buffer>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl Background {
    fn start(file: File) -> Background {
        let (buffers, full) = std::sync::mpsc::sync_channel::<Buffer>(4);
        let (give_back, emptied) = std::sync::mpsc::sync_channel::<Buffer>(4);
        let thread = std::thread::spawn(move || {
            let mut file = file;
            let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
            let sync_file = file.try_clone()?;
            // Whole aligned buffers at an aligned offset go to the disk directly: the page cache
            // would cost a copy now and a writeback later, on the cores that hash and receive.
            let mut direct = Direct::enable(&file);
            let syncer = std::thread::spawn(move || {
                while asked.recv().is_ok() {
                    // Errors surface in the final sync_all, which is checked.
                    let _ = sync_file.sync_data();
                }
            });
            let mut unsynced = 0;
            let mut result = Ok(());
            // On an error, stop: the sender sees the channel closed and asks for the error.
            for mut buf in full {
                if let Err(e) = direct.write(&mut file, buf.filled()) {
                    result = Err(e);
                    break;
                }
                unsynced += buf.filled().len() as u64;
                if !direct.on && unsynced >= FLUSH_EVERY {
                    unsynced = 0;
                    // A sync already queued covers this one too.
                    let _ = ask.try_send(());
                }
                buf.clear();
                let _ = give_back.try_send(buf);
            }
            drop(ask);
            let _ = syncer.join();
            // The tail and any later write go through the page cache again.
            direct.disable(&file);
            result
        });
        Background {
            buffers,
            emptied,
            thread,
        }
    }

    /// Waits until everything handed over is written; the first write error, if any.
    fn finish(self) -> io::Result<()> {
        drop(self.buffers);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the ingest writer panicked")))
    }
}

/// `O_DIRECT` on the ingest file while the background writer has it, when the file system
/// takes it and the file's offset is aligned; plain writes otherwise.
#[derive(Debug)]
struct Direct {
    on: bool,
}

impl Direct {
    fn enable(file: &File) -> Direct {
        let aligned = (&*file)
            .stream_position()
            .is_ok_and(|pos| pos % ALIGN as u64 == 0);
        let on = aligned
            && fcntl_getfl(file)
                .and_then(|flags| fcntl_setfl(file, flags | OFlags::DIRECT))
                .is_ok();
        Direct { on }
    }

    fn write(&mut self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused (a file system that takes the flag but not the write, or a short
                // write that left the offset unaligned): the rest goes through the page cache.
                Err(e) if self.on && Errno::from_io_error(&e) == Some(Errno::INVAL) => {
                    self.disable(file);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn disable(&mut self, file: &File) {
        if std::mem::take(&mut self.on) {
            let _ = fcntl_getfl(file).and_then(|flags| fcntl_setfl(file, flags - OFlags::DIRECT));
        }
    }
}

/// One write buffer: [`WRITE_BUFFER`] bytes (fewer for a small blob) starting at an
/// [`ALIGN`]ed address, as `O_DIRECT` wants them, carved out of a slightly larger allocation.
#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
    /// How much it holds; 0 until it is first needed.
    capacity: usize,
}

impl Buffer {
    /// A page-aligned buffer of `capacity` bytes.
    fn new(capacity: usize) -> Buffer {
        let bytes = vec![0; capacity + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Buffer {
            bytes,
            start,
            len: 0,
            capacity,
        }
    }

    /// Copies as much of `buf` as fits; how much that was.
    fn fill(&mut self, buf: &[u8]) -> usize {
        let room = &mut self.bytes[self.start + self.len..self.start + self.capacity];
        let n = room.len().min(buf.len());
        room[..n].copy_from_slice(&buf[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// Alignment of direct writes: the page size, which covers every block size in use.
const ALIGN: usize = 4096;

/// How much to write before asking the flusher for a sync.
const FLUSH_EVERY: u64 = 32 << 20;

/// How much to gather before writing to the file.
const WRITE_BUFFER: usize = 1 << 20;

impl Ingest {
    pub(crate) fn begin(
        cache: &Cache,
        digest: Digest,
        expected_size: Option<u64>,
    ) -> Result<Ingested> {
        // A blob found present is held; one pruned before it could be is written again.
        for _ in 0..3 {
            match Self::writer_or_present(cache, digest.clone(), expected_size)? {
                Ok(writer) => return Ok(Ingested::Writer(writer)),
                Err(path) => match Hold::take(&path) {
                    Ok(hold) => return Ok(Ingested::Present(path, hold)),
                    Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
            }
        }
        Err(Error::BlobNotFound { digest })
    }

    /// The writer of `digest`, or the path of the blob when it is present.
    fn writer_or_present(
        cache: &Cache,
        digest: Digest,
        expected_size: Option<u64>,
    ) -> Result<Result<Box<Ingest>, PathBuf>> {
        let target = cache.blob_path(&digest);
        if target.is_file() {
            return Ok(Err(target));
        }
        let path = cache.ingest_dir().join(format!("{}.partial", digest.hex()));
        let io_err = |action, source| Error::Io {
            action,
            path: path.clone(),
            source,
        };
        let mut progress: Option<(u64, std::time::Instant)> = None;
        let file = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_err("opening ingest file", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    if target.is_file() {
                        return Ok(Err(target));
                    }
                    // Another writer has it: wait while its file grows, not longer.
                    let len = file.metadata().map_err(|e| io_err("inspecting", e))?.len();
                    let now = std::time::Instant::now();
                    match progress {
                        Some((seen, since)) if seen == len => {
                            if now.duration_since(since) >= STALL {
                                tracing::warn!(
                                    %digest,
                                    bytes = len,
                                    "the writer of this blob made no progress for {STALL:?}; fetching it separately"
                                );
                                return Self::private(cache, digest, expected_size, target).map(Ok);
                            }
                        }
                        _ => progress = Some((len, now)),
                    }
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err("locking ingest file", e)),
            }
            // The previous holder may have renamed or removed the file while we waited: only a
            // lock on the inode that is still at `path` counts.
            let ours = file.metadata().map_err(|e| io_err("inspecting", e))?.ino();
            match fs::metadata(&path) {
                Ok(m) if m.ino() == ours => break file,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("inspecting", e)),
            }
        };
        if target.is_file() {
            // Someone committed while we waited; the file we created is an empty leftover.
            let _ = fs::remove_file(&path);
            return Ok(Err(target));
        }
        let mut ingest = Ingest::fresh(file, path, target, digest, expected_size, false);
        ingest.resume()?;
        Ok(Ok(Box::new(ingest)))
    }

    /// A writer on a file of its own, beside a shared one whose writer is stuck.
    fn private(
        cache: &Cache,
        digest: Digest,
        expected_size: Option<u64>,
        target: PathBuf,
    ) -> Result<Box<Ingest>> {
        let dir = cache.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}.", digest.hex()))
            .suffix(".private")
            .tempfile_in(&dir)
            .map_err(|source| Error::Io {
                action: "creating a private ingest file in",
                path: dir.clone(),
                source,
            })?;
        let (file, path) = tmp.keep().map_err(|e| Error::Io {
            action: "keeping",
            path: dir.clone(),
            source: e.error,
        })?;
        // Locked like any ingest file, so that reclaiming stale ones never takes it.
        file.lock().map_err(|source| Error::Io {
            action: "locking ingest file",
            path: path.clone(),
            source,
        })?;
        Ok(Box::new(Ingest::fresh(
            file,
            path,
            target,
            digest,
            expected_size,
            true,
        )))
    }

    /// A writer at the start of `file` (at `path`), for `digest`, to be renamed to `target`.
    fn fresh(
        file: File,
        path: PathBuf,
        target: PathBuf,
        digest: Digest,
        expected_size: Option<u64>,
        private: bool,
    ) -> Ingest {
        Ingest {
            file: Some(file),
            path,
            target,
            digest,
            expected_size,
            written: 0,
            hasher: Sha256::new(),
            discard: false,
            pending: Buffer::default(),
            background: None,
            private,
        }
    }

    /// Continues after what an earlier writer left: hashes it again, since a hasher's state
    /// cannot be kept on disk. Content longer than expected cannot be right and is dropped.
    fn resume(&mut self) -> Result<()> {
        let io_err = |action, path: &PathBuf, source| Error::Io {
            action,
            path: path.clone(),
            source,
        };
        let file = self
            .file
            .as_mut()
            .expect("ingest file is open until commit");
        let len = file
            .metadata()
            .map_err(|e| io_err("inspecting", &self.path, e))?
            .len();
        if len == 0 || self.expected_size.is_some_and(|size| len > size) {
            return self.restart();
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_err("reading", &self.path, e))?;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| io_err("reading", &self.path, e))?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            self.written += n as u64;
        }
        tracing::debug!(digest = %self.digest, offset = self.written, "resuming a partial download");
        Ok(())
    }

    /// Drops what was written so far and starts from the beginning (e.g. when a server ignored
    /// a range request and sends the whole blob).
    pub fn restart(&mut self) -> Result<()> {
        self.pending.clear();
        // What the writer still had is dropped with the rest; its errors do not matter now.
        if let Some(b) = self.background.take() {
            let _ = b.finish();
        }
        let file = self
            .file
            .as_mut()
            .expect("ingest file is open until commit");
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .map_err(|source| Error::Io {
                action: "truncating",
                path: self.path.clone(),
                source,
            })?;
        self.written = 0;
        self.hasher = Sha256::new();
        tracing::debug!(digest = %self.digest, "ingest started");
        Ok(())
    }

    /// The digest being written.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes written so far, including those resumed from an earlier writer: the offset to
    /// continue the download from.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `buf`, failing early when it goes past the expected size.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        if self.pending.capacity == 0 {
            self.pending = Buffer::new(self.first_buffer_size());
        }
        self.account(buf)?;
        let mut rest = buf;
        while !rest.is_empty() {
            let n = self.pending.fill(rest);
            rest = &rest[n..];
            if self.pending.is_full() {
                self.hand_over()?;
            }
        }
        Ok(())
    }

    /// A whole write buffer, unless all that is left of a known size fits in less: a manifest
    /// or a config should not cost a zeroed megabyte. The smaller one has room for a byte
    /// more than is left, so it never fills up and goes to a background writer.
    fn first_buffer_size(&self) -> usize {
        match self
            .expected_size
            .map(|size| size.saturating_sub(self.written))
        {
            Some(left) if left < WRITE_BUFFER as u64 => (left as usize / ALIGN + 1) * ALIGN,
            _ => WRITE_BUFFER,
        }
    }

    /// Checks the size and hashes `buf`, which is about to be written.
    fn account(&mut self, buf: &[u8]) -> Result<()> {
        let written = self.written + buf.len() as u64;
        if let Some(expected) = self.expected_size
            && written > expected
        {
            self.discard = true;
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

    fn write_error(&self, source: io::Error) -> Error {
        Error::Io {
            action: "writing",
            path: self.path.clone(),
            source,
        }
    }

    /// Gives the full buffer to the background writer (starting it) and takes an empty one.
    fn hand_over(&mut self) -> Result<()> {
        if self.background.is_none() {
            let file = self
                .file
                .as_ref()
                .expect("ingest file is open until commit");
            let clone = file.try_clone().map_err(|e| self.write_error(e))?;
            self.background = Some(Background::start(clone));
        }
        let b = self.background.as_ref().expect("started above");
        let next = b
            .emptied
            .try_recv()
            .unwrap_or_else(|_| Buffer::new(WRITE_BUFFER));
        let full = std::mem::replace(&mut self.pending, next);
        if b.buffers.send(full).is_err() {
            // The writer stopped on an error: that error is the answer.
            let e = self.background.take().expect("present").finish();
            return Err(self.write_error(
                e.err()
                    .unwrap_or_else(|| io::Error::other("the ingest writer stopped")),
            ));
        }
        Ok(())
    }

    /// Writes everything: waits for the background writer, then writes what is buffered.
    fn flush(&mut self) -> Result<()> {
        if let Some(b) = self.background.take() {
            b.finish().map_err(|e| self.write_error(e))?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .expect("ingest file is open until commit");
        file.write_all(self.pending.filled())
            .map_err(|e| self.write_error(e))?;
        self.pending.clear();
        Ok(())
    }

    /// Marks what was written as wrong (e.g. the source reported a digest mismatch): it is
    /// removed instead of kept for resuming.
    pub fn discard(&mut self) {
        self.discard = true;
    }

    /// Verifies what was written and moves it into the store; returns the blob's path.
    pub fn commit(self) -> Result<PathBuf> {
        self.commit_held().map(|(path, _)| path)
    }

    /// [`Ingest::commit`], and a [`Hold`] on the blob from the moment it is in the store, so
    /// that `cache prune` cannot take it before the caller has recorded who uses it.
    pub fn commit_held(mut self) -> Result<(PathBuf, Hold)> {
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
            self.pending.clear();
            self.discard = true;
            return Err(Error::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        self.flush()?;
        let io_err = |action, path: &PathBuf, source| Error::Io {
            action,
            path: path.clone(),
            source,
        };
        let file = self
            .file
            .as_ref()
            .expect("ingest file is open until commit");
        file.sync_all()
            .map_err(|e| io_err("syncing", &self.path, e))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| io_err("making read-only", &self.path, e))?;
        // Another writer (one that gave up waiting for us, or we for it) may have committed
        // meanwhile: theirs stays, as a blob in the store never changes inode under the locks
        // of those who hold it.
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.path,
            rustix::fs::CWD,
            &self.target,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let _ = fs::remove_file(&self.path);
                self.file.take();
                let hold = Hold::take(&self.target)?;
                return Ok((self.target.clone(), hold));
            }
            // A file system without RENAME_NOREPLACE: the content is the same anyway.
            Err(Errno::INVAL | Errno::NOSYS) => fs::rename(&self.path, &self.target)
                .map_err(|e| io_err("moving into the store", &self.target, e))?,
            Err(e) => return Err(io_err("moving into the store", &self.target, e.into())),
        }
        if let Some(dir) = self.target.parent() {
            // Make the rename itself durable.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err("syncing", &dir.to_owned(), e))?;
        }
        // The writer's exclusive lock, kept until after the rename, becomes a shared one: a
        // hold. (A prune that slips into the conversion finds a blob too young to sweep.)
        let file = self.file.take().expect("ingest file is open until commit");
        file.lock_shared()
            .map_err(|e| io_err("locking", &self.target, e))?;
        tracing::debug!(digest = %self.digest, bytes = self.written, "blob stored");
        Ok((self.target.clone(), Hold::from_file(file)))
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.is_none() {
            return;
        }
        if self.discard || self.private {
            // Proven wrong, or nobody's to resume: remove it while we still hold the lock.
            let _ = fs::remove_file(&self.path);
        } else {
            // Interrupted: keep what arrived for the next writer to resume from.
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        (dir, cache)
    }

    /// The writer of `digest`, which must not be in the cache yet.
    fn writer(cache: &Cache, digest: &Digest, size: Option<u64>) -> Box<Ingest> {
        match cache.ingest(digest, size).unwrap() {
            Ingested::Writer(w) => w,
            Ingested::Present(..) => panic!("{digest} is in the cache already"),
        }
    }

    fn ingest_is_empty(cache: &Cache) -> bool {
        fs::read_dir(cache.ingest_dir()).unwrap().next().is_none()
    }

    #[test]
    fn a_verified_blob_lands_read_only_in_the_store() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"hello");
        let mut w = writer(&cache, &digest, Some(5));
        w.write(b"hel").unwrap();
        w.write(b"lo").unwrap();
        let path = w.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert!(ingest_is_empty(&cache));
        assert!(matches!(
            cache.ingest(&digest, None).unwrap(),
            Ingested::Present(..)
        ));
    }

    #[test]
    fn wrong_content_is_a_digest_mismatch_and_leaves_nothing() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"hello");
        let mut w = writer(&cache, &digest, None);
        w.write(b"jello").unwrap();
        let err = w.commit().unwrap_err();
        match &err {
            Error::DigestMismatch { expected, actual } => {
                assert_eq!(expected, &digest);
                assert_eq!(actual, &Digest::of(b"jello"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&digest.to_string()));
        assert!(!cache.contains(&digest));
        assert!(ingest_is_empty(&cache));
    }

    #[test]
    fn content_longer_than_announced_fails_while_writing() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"hello");
        let mut w = writer(&cache, &digest, Some(3));
        assert!(matches!(
            w.write(b"hello"),
            Err(Error::SizeMismatch { expected: 3, .. })
        ));
        drop(w);
        assert!(!cache.contains(&digest));
        assert!(ingest_is_empty(&cache));
    }

    #[test]
    fn an_interrupted_write_is_resumed_from_where_it_stopped() {
        let (_dir, cache) = cache();
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let digest = Digest::of(&data);
        let size = Some(data.len() as u64);
        let mut w = writer(&cache, &digest, size);
        w.write(&data[..150_000]).unwrap();
        drop(w); // interrupted
        assert!(!cache.contains(&digest));
        let mut w = writer(&cache, &digest, size);
        assert_eq!(w.written(), 150_000);
        w.write(&data[150_000..]).unwrap();
        assert_eq!(fs::read(w.commit().unwrap()).unwrap(), data);
        assert!(ingest_is_empty(&cache));
    }

    /// A blob of several write buffers goes through the background writer, directly to the
    /// disk from an aligned offset and through the page cache from any other; breaks at both
    /// kinds of offset are resumed and the whole is right.
    #[test]
    fn a_large_write_resumes_from_aligned_and_unaligned_offsets() {
        let (_dir, cache) = cache();
        let data: Vec<u8> = (0..(5 * WRITE_BUFFER as u32 + 123) / 4 + 1)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        let digest = Digest::of(&data);
        let size = Some(data.len() as u64);
        let breaks = [0, 2 * WRITE_BUFFER + 4_099, 4 * WRITE_BUFFER, data.len()];
        for part in breaks.windows(2) {
            let mut w = writer(&cache, &digest, size);
            assert_eq!(w.written(), part[0] as u64);
            for chunk in data[part[0]..part[1]].chunks(65_537) {
                w.write(chunk).unwrap();
            }
            if part[1] == data.len() {
                assert_eq!(fs::read(w.commit().unwrap()).unwrap(), data);
            } else {
                drop(w); // interrupted
                assert!(!cache.contains(&digest));
            }
        }
        assert!(ingest_is_empty(&cache));
    }

    #[test]
    fn a_restarted_write_starts_from_nothing() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"hello");
        let mut w = writer(&cache, &digest, Some(5));
        w.write(b"hel").unwrap();
        w.restart().unwrap();
        assert_eq!(w.written(), 0);
        w.write(b"hello").unwrap();
        assert_eq!(fs::read(w.commit().unwrap()).unwrap(), b"hello");
    }

    #[test]
    fn a_waiter_writes_a_private_copy_when_the_writer_stalls_and_the_first_commit_wins() {
        let (_dir, cache) = cache();
        let data = b"stalled elsewhere".to_vec();
        let digest = Digest::of(&data);
        let size = Some(data.len() as u64);
        let mut stalled = writer(&cache, &digest, size);
        stalled.write(&data[..4]).unwrap();
        stalled.flush().unwrap();
        let started = std::time::Instant::now();
        let mut private = writer(&cache, &digest, size);
        assert!(started.elapsed() >= STALL, "{:?}", started.elapsed());
        assert!(private.private);
        assert_eq!(private.written(), 0);
        private.write(&data).unwrap();
        let (path, _hold) = private.commit_held().unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        // The stalled writer finishes after all: the blob already there stays as it is.
        let ino = fs::metadata(&path).unwrap().ino();
        stalled.write(&data[4..]).unwrap();
        assert_eq!(stalled.commit().unwrap(), path);
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
        assert!(ingest_is_empty(&cache));
    }

    #[test]
    fn a_committed_blob_is_held_until_the_hold_is_dropped() {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"fresh");
        let mut w = writer(&cache, &digest, Some(5));
        w.write(b"fresh").unwrap();
        let (path, hold) = w.commit_held().unwrap();
        let file = File::open(&path).unwrap();
        assert!(matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock)));
        drop(hold);
        file.try_lock().unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_digest_write_it_once() {
        let (_dir, cache) = cache();
        let data = vec![7u8; 1 << 20];
        let digest = Digest::of(&data);
        let writes = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(
                    || match cache.ingest(&digest, Some(data.len() as u64)).unwrap() {
                        Ingested::Present(p, _) => assert_eq!(fs::read(p).unwrap(), data),
                        Ingested::Writer(mut w) => {
                            writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            for chunk in data.chunks(4096) {
                                w.write(chunk).unwrap();
                            }
                            w.commit().unwrap();
                        }
                    },
                );
            }
        });
        assert_eq!(writes.into_inner(), 1);
        assert!(ingest_is_empty(&cache));
    }
}
