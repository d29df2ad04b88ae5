//! Waiting on what a test can observe: a condition polled until it holds, and the file locks
//! processes hold or wait for (`/proc/locks`), which is how the cache says a blob is in use.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `done` until it holds; panics naming `what` when it has not within 30 s (a hang, not
/// a slow machine: no test asserts how long anything took).
pub fn wait_until(what: &str, done: impl FnMut() -> bool) {
    wait_until_within(what, Duration::from_secs(30), done);
}

/// How long the tests of a server (`wasm-oci serve`, a pod's) wait for it: their guests are
/// compiled and run, behind deadlines of their own.
pub const SERVER_PATIENCE: Duration = Duration::from_secs(60);

/// [`wait_until`] with a patience of its own, for what takes longer than most on a loaded
/// machine (a server's guests, compiled and run, behind its deadlines): still a hang detector,
/// never a measure of how long something took.
pub fn wait_until_within(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {patience:?} for this: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One line of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLock {
    /// The process that holds (or waits for) the lock.
    pub pid: u32,
    /// The locked file's inode number.
    pub inode: u64,
    /// Whether the process is blocked waiting for it (`->` in `/proc/locks`).
    pub waiting: bool,
    /// `WRITE` (exclusive) rather than `READ` (shared).
    pub exclusive: bool,
}

/// Every file lock of the machine, as `/proc/locks` lists them.
pub fn file_locks() -> Vec<FileLock> {
    let text = fs::read_to_string("/proc/locks").unwrap();
    text.lines()
        .filter_map(|line| {
            // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF", or "1: -> FLOCK ..." for a
            // process waiting for that lock.
            let mut fields = line.split_whitespace().skip(1).peekable();
            let waiting = fields.next_if_eq(&"->").is_some();
            let _kind = fields.next()?;
            let _advisory = fields.next()?;
            let exclusive = fields.next()? == "WRITE";
            let pid = fields.next()?.parse().ok()?;
            let inode = fields.next()?.rsplit(':').next()?.parse().ok()?;
            Some(FileLock {
                pid,
                inode,
                waiting,
                exclusive,
            })
        })
        .collect()
}

/// The locks process `pid` holds or waits for on files directly in `dir`.
pub fn locks_in(dir: &Path, pid: u32) -> Vec<FileLock> {
    let inodes: Vec<u64> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.metadata().ok()?.ino()))
                .collect()
        })
        .unwrap_or_default();
    file_locks()
        .into_iter()
        .filter(|l| l.pid == pid && inodes.contains(&l.inode))
        .collect()
}

/// Counts the reads of a file (inotify `IN_ACCESS`, one event per read that returned data,
/// merged when consecutive) from its creation on, whichever process makes them.
pub struct Reads {
    watch: rustix::fd::OwnedFd,
}

impl Reads {
    pub fn of(path: &Path) -> Reads {
        use rustix::fs::inotify;
        let watch =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(&watch, path, inotify::WatchFlags::ACCESS).unwrap();
        Reads { watch }
    }

    /// Read events since the last call.
    pub fn count(&self) -> usize {
        let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
        let mut events = rustix::fs::inotify::Reader::new(&self.watch, &mut buf);
        let mut n = 0;
        while events.next().is_ok() {
            n += 1;
        }
        n
    }
}
