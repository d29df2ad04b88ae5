//! The fast half of writing a blob: gather network-sized chunks into large aligned buffers and
//! write them on a thread of their own (with `O_DIRECT` where the file system takes it) while
//! the caller hashes the next. It knows nothing of digests, locks or the store: the ingest
//! protocol ([`crate::ingest`]) drives it.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::Errno;

/// A file being appended to through large buffers.
#[derive(Debug)]
pub(crate) struct BlobFile {
    file: File,
    /// Written content not yet handed to the file: network chunks are small, and a write
    /// call per chunk costs more than the copy.
    pending: Buffer,
    /// Writes full buffers on another thread while this one hashes the next; started once a
    /// blob is larger than one buffer.
    background: Option<Background>,
}

impl BlobFile {
    /// Appends to `file` from its current offset.
    pub(crate) fn new(file: File) -> BlobFile {
        BlobFile {
            file,
            pending: Buffer::default(),
            background: None,
        }
    }

    /// The file, e.g. to read back what an earlier writer left or to sync.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The file, for reading back what an earlier writer left.
    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// The file, once everything is written ([`BlobFile::flush`]).
    pub(crate) fn into_file(self) -> File {
        debug_assert!(self.pending.is_empty() && self.background.is_none());
        self.file
    }

    /// Appends `buf`; `left` is how much at most remains to be written, counting `buf`, when
    /// known: a manifest or a config should not cost a zeroed megabyte.
    pub(crate) fn write(&mut self, buf: &[u8], left: Option<u64>) -> io::Result<()> {
        if self.pending.capacity == 0 {
            self.pending = Buffer::new(first_buffer_size(left));
        }
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

    /// Gives the full buffer to the background writer (starting it) and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        if self.background.is_none() {
            let clone = self.file.try_clone()?;
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
            return Err(e
                .err()
                .unwrap_or_else(|| io::Error::other("the ingest writer stopped")));
        }
        Ok(())
    }

    /// Writes everything: waits for the background writer, then writes what is buffered.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some(b) = self.background.take() {
            b.finish()?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(self.pending.filled())?;
        self.pending.clear();
        Ok(())
    }

    /// Forgets what is buffered and not yet written (content known to be wrong).
    pub(crate) fn forget_pending(&mut self) {
        self.pending.clear();
    }

    /// Drops everything, written or buffered, and starts again from an empty file.
    pub(crate) fn truncate(&mut self) -> io::Result<()> {
        self.pending.clear();
        // What the writer still had is dropped with the rest; its errors do not matter now.
        if let Some(b) = self.background.take() {
            let _ = b.finish();
        }
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0)).map(drop)
    }
}

/// A whole write buffer, unless all that is left (`left`) fits in less. The smaller one has
/// room for a byte more than is left, so it never fills up and goes to a background writer.
fn first_buffer_size(left: Option<u64>) -> usize {
    match left {
        Some(left) if left < WRITE_BUFFER as u64 => (left as usize / ALIGN + 1) * ALIGN,
        _ => WRITE_BUFFER,
    }
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
pub(crate) const WRITE_BUFFER: usize = 1 << 20;
