//! Writing a blob: stream into `ingest/`, verify size and digest, sync, rename into `blobs/`.
//!
//! The ingest file doubles as the writer's lock: one writer per digest across processes, and a
//! waiter that wakes after the writer committed finds the blob present instead of fetching again.
//! A download that is interrupted (an error, a kill) leaves its partial file; the next writer
//! of that digest continues from its end. Content proven wrong is removed, and so is what a
//! write that found the disk full had written: kept, it would fill the disk for every later
//! pull. How bytes reach the file is [`crate::writer`]'s business; the steps into the store are
//! [`crate::store`]'s.
//!
//! A waiter does not wait behind a writer that makes no progress (a registry that stalls
//! mid-blob): after [`STALL`] without a byte more in the shared file it writes a private file
//! of its own, which is not resumed, and whichever commits first provides the blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::is_no_space;
use crate::store::{Placed, Verifier, place, seal, sync_dir};
use crate::writer::BlobFile;
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
/// digest mismatch), and content a full disk interrupted, is removed.
#[derive(Debug)]
pub struct Ingest {
    file: Option<BlobFile>,
    path: PathBuf,
    target: PathBuf,
    /// The cache's directory, for errors.
    cache: PathBuf,
    check: Verifier,
    discard: bool,
    /// A file of this writer's own, written because the shared one's writer stalled: removed
    /// when dropped (nobody resumes it), and it yields to a blob committed meanwhile.
    private: bool,
}

impl Cache {
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
}

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
                                return Self::private(cache, digest, expected_size).map(Ok);
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
        let mut ingest = Ingest::fresh(cache, file, path, digest, expected_size, false);
        ingest.resume()?;
        Ok(Ok(Box::new(ingest)))
    }

    /// A writer on a file of its own, beside a shared one whose writer is stuck.
    fn private(cache: &Cache, digest: Digest, expected_size: Option<u64>) -> Result<Box<Ingest>> {
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
            cache,
            file,
            path,
            digest,
            expected_size,
            true,
        )))
    }

    /// A writer at the start of `file` (at `path`), for `digest`.
    fn fresh(
        cache: &Cache,
        file: File,
        path: PathBuf,
        digest: Digest,
        expected_size: Option<u64>,
        private: bool,
    ) -> Ingest {
        Ingest {
            file: Some(BlobFile::new(file)),
            path,
            target: cache.blob_path(&digest),
            cache: cache.base().to_owned(),
            check: Verifier::new(digest, expected_size),
            discard: false,
            private,
        }
    }

    /// An error of the ingest file; a full disk is said so, and what was written is dropped.
    fn io_error(&mut self, action: &'static str, source: io::Error) -> Error {
        if is_no_space(&source) {
            self.discard = true;
            return Error::NoSpace {
                cache: self.cache.clone(),
                action,
                path: self.path.clone(),
                source,
            };
        }
        Error::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    fn blob_file(&mut self) -> &mut BlobFile {
        self.file
            .as_mut()
            .expect("ingest file is open until commit")
    }

    /// Continues after what an earlier writer left: hashes it again, since a hasher's state
    /// cannot be kept on disk. Content longer than expected cannot be right and is dropped.
    fn resume(&mut self) -> Result<()> {
        let io_err = |path: &PathBuf, source| Error::Io {
            action: "reading",
            path: path.clone(),
            source,
        };
        let len = self
            .blob_file()
            .file()
            .metadata()
            .map_err(|e| io_err(&self.path, e))?
            .len();
        if len == 0 || self.check.too_long(len) {
            return self.restart();
        }
        let file = self
            .file
            .as_mut()
            .expect("ingest file is open until commit")
            .file_mut();
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_err(&self.path, e))?;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| io_err(&self.path, e))?;
            if n == 0 {
                break;
            }
            self.check.update(&buf[..n])?;
        }
        tracing::debug!(digest = %self.check.digest(), offset = self.check.written(), "resuming a partial download");
        Ok(())
    }

    /// Drops what was written so far and starts from the beginning (e.g. when a server ignored
    /// a range request and sends the whole blob).
    pub fn restart(&mut self) -> Result<()> {
        if let Err(e) = self.blob_file().truncate() {
            return Err(self.io_error("truncating", e));
        }
        self.check.reset();
        tracing::debug!(digest = %self.check.digest(), "ingest started");
        Ok(())
    }

    /// The digest being written.
    pub fn digest(&self) -> &Digest {
        self.check.digest()
    }

    /// Bytes written so far, including those resumed from an earlier writer: the offset to
    /// continue the download from.
    pub fn written(&self) -> u64 {
        self.check.written()
    }

    /// Appends `buf`, failing early when it goes past the expected size.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        let left = self.check.left();
        if let Err(e) = self.check.update(buf) {
            self.discard = true;
            return Err(e);
        }
        if let Err(e) = self.blob_file().write(buf, left) {
            return Err(self.io_error("writing", e));
        }
        Ok(())
    }

    /// Writes everything handed over so far to the file.
    fn flush(&mut self) -> Result<()> {
        match self.blob_file().flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.io_error("writing", e)),
        }
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
        if let Err(e) = self.check.finish() {
            if matches!(e, Error::DigestMismatch { .. }) {
                self.blob_file().forget_pending();
                self.discard = true;
            }
            return Err(e);
        }
        self.flush()?;
        let file = self.blob_file().file();
        if let Err(e) = file.sync_all() {
            return Err(self.io_error("syncing", e));
        }
        seal(file).map_err(|source| Error::Io {
            action: "making read-only",
            path: self.path.clone(),
            source,
        })?;
        if place(&self.path, &self.target)? == Placed::Existed {
            let _ = fs::remove_file(&self.path);
            self.file.take();
            let hold = Hold::take(&self.target)?;
            return Ok((self.target.clone(), hold));
        }
        if let Some(dir) = self.target.parent() {
            // Make the rename itself durable.
            sync_dir(dir)?;
        }
        // The writer's exclusive lock, kept until after the rename, becomes a shared one: a
        // hold. (A prune that slips into the conversion finds a blob too young to sweep.)
        let file = self
            .file
            .take()
            .expect("ingest file is open until commit")
            .into_file();
        file.lock_shared().map_err(|source| Error::Io {
            action: "locking",
            path: self.target.clone(),
            source,
        })?;
        tracing::debug!(digest = %self.check.digest(), bytes = self.check.written(), "blob stored");
        Ok((self.target.clone(), Hold::from_file(file)))
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if !self.discard && !self.private {
            // Interrupted: keep what arrived for the next writer to resume from, unless the
            // disk is full, where it would keep every later write from having the room.
            match file.flush() {
                Ok(()) => return,
                Err(e) if !is_no_space(&e) => return,
                Err(_) => {}
            }
        }
        // Proven wrong, nobody's to resume, or filling a full disk: remove it while we still
        // hold the lock.
        let _ = fs::remove_file(&self.path);
        if !self.private && !self.discard {
            tracing::info!(path = %self.path.display(), "dropped a partial download: the disk is full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::WRITE_BUFFER;
    use std::os::unix::fs::PermissionsExt;

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
