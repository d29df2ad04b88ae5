//! Compiling never kills a pod: the shim sits in its pod's cgroup, and a compile's peak (near
//! 270 MB for an 18 MB component) may be far above the pod's memory limit. So a module whose
//! code is not in the cache yet is compiled by a helper process, this same program started
//! with [`COMPILE_ARG`], placed in the cgroups the shim was started in (containerd's, where
//! the node's other work is charged) before it reads a byte. It compiles into the shared
//! cache, under the digest of the bytes it compiled, and exits; the shim then loads that
//! code, as it loads any code it compiled earlier (only this program's code is ever loaded).
//!
//! Outside the pod's cgroup, the helper is outside the pod's limits, and a pod author chooses
//! the module: so the helper has limits of its own, the operator's `[compile]` ([`config`]).
//! It is killed past its wall-clock `timeout`; its memory is capped at `max_memory` by a
//! memory cgroup of its own under the shim's (`wasm-oci-compile-SHIMPID-N`, where the kernel
//! counts the pages it really uses and its OOM killer picks the helper alone), or, where no
//! such cgroup can be made (cgroup v2 whose home cgroup holds processes, which may not have
//! children with controllers), by `RLIMIT_DATA`. It is killed when its container is killed or
//! deleted, and when the shim dies (`PR_SET_PDEATHSIG`); a helper stopped so leaves no
//! partial file in the cache, and the container fails with an error that names the limit.
//!
//! When the helper cannot be used (no cache, it could not start, it could not keep the code),
//! the shim compiles in process as before, and the helper's error is in the log; only when
//! the helper said so itself: never after a helper was stopped by a limit, found that the
//! module does not compile, or ended without saying why (killed from outside, crashed): the
//! same compile in process would only escape the limits.
//!
//! [`config`]: super::config

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasm_oci_cache::{Cache, Digest};

use super::config::{CompileLimits, ShimConfig};
use super::error::CompileError;
use crate::runner::{EngineOptions, Runner, Wasm};

/// The argument that makes `containerd-shim-wasmoci-v1` the compile helper:
/// `--compile-into-cache CACHE_DIR [DIGEST]` (the wasm on stdin when no digest is given).
pub const COMPILE_ARG: &str = "--compile-into-cache";

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The name of a helper's memory cgroup starts so; then the shim's pid, `-`, a number.
pub(crate) const CGROUP_PREFIX: &str = "wasm-oci-compile-";

/// The environment variable that gives the helper its memory limit in bytes, when no memory
/// cgroup holds it: `RLIMIT_DATA`, counted from what its engine has reserved.
const DATA_LIMIT_ENV: &str = "WASM_OCI_COMPILE_DATA_LIMIT";

/// What the helper says before why, when the module does not compile.
const DOES_NOT_COMPILE: &str = "the module does not compile";

/// What the helper says when its memory limit refused it memory.
const PAST_DATA_LIMIT: &str = "past its memory limit (RLIMIT_DATA)";

/// How every line the helper writes of its own failures starts (then what failed): a helper
/// that ends without such a line did not end by its own hand (a kill from outside the shim,
/// a crash), whatever its exit status, which the shim's reaper may have taken.
fn own_words() -> String {
    format!("{} {COMPILE_ARG}: ", super::BINARY)
}

/// Whether the helper said, by its own hand, why it failed.
fn said_why(said: &str) -> bool {
    let own = own_words();
    said.lines().any(|l| l.starts_with(&own))
}

/// Sets `RLIMIT_DATA` to the data this process holds now (`VmData`) and `limit` bytes more.
fn limit_data(limit: u64) -> std::io::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let held_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmData in /proc/self/status"))?;
    let total = held_kib.saturating_mul(1024).saturating_add(limit);
    rustix::process::setrlimit(
        rustix::process::Resource::Data,
        rustix::process::Rlimit {
            current: Some(total),
            maximum: Some(total),
        },
    )?;
    Ok(())
}

/// How often the shim looks whether its helper ended, ran out of time or lost its container.
const TICK: Duration = Duration::from_millis(10);

/// Where a helper goes: the cgroups this process was started in, read once at start.
#[derive(Debug, Default)]
struct Home {
    /// Their `cgroup.procs` files.
    procs: Vec<PathBuf>,
    /// The memory controller's directory among them, and whether it is cgroup v2's.
    memory: Option<(PathBuf, bool)>,
}

static HOME: OnceLock<Home> = OnceLock::new();

/// Notes the cgroups this process is in now (containerd's, before a pod's is joined), and
/// removes the memory cgroups of helpers whose shim died (killed, it could not).
pub(crate) fn remember_home() {
    let home = HOME.get_or_init(|| {
        let root = Path::new(CGROUP_ROOT);
        let procs = std::fs::read_to_string("/proc/self/cgroup")
            .map(|text| home_procs(&text, root))
            .unwrap_or_default();
        let memory = memory_home(&procs, root);
        Home { procs, memory }
    });
    if let Some((dir, _)) = &home.memory {
        remove_dead_shims_cgroups(dir);
    }
}

/// The `cgroup.procs` files, under `root`, of the cgroups `/proc/self/cgroup` lists:
/// the unified hierarchy's (`0::/path`) when it is mounted at `root`, else each v1
/// hierarchy's that counts processes (named ones and `cpu`/`cpuacct` aside).
fn home_procs(text: &str, root: &Path) -> Vec<PathBuf> {
    let unified = root.join("cgroup.controllers").exists();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let relative = path.trim_start_matches('/');
            if relative.split('/').any(|c| c == "..") {
                return None;
            }
            let dir = match (unified, controllers) {
                (true, "") => root.join(relative),
                (false, "") | (true, _) => return None,
                (false, c) if c.starts_with("name=") || c == "cpu" || c == "cpuacct" => {
                    return None;
                }
                (false, c) => root.join(c).join(relative),
            };
            Some(dir.join("cgroup.procs"))
        })
        .collect()
}

/// The directory of the memory controller's cgroup among `procs` (the unified one's, or v1's
/// `memory` hierarchy's), and whether it is cgroup v2's.
fn memory_home(procs: &[PathBuf], root: &Path) -> Option<(PathBuf, bool)> {
    let v2 = root.join("cgroup.controllers").exists();
    procs.iter().find_map(|p| {
        let dir = p.parent()?;
        (v2 || dir.starts_with(root.join("memory"))).then(|| (dir.to_owned(), v2))
    })
}

/// Removes the helpers' memory cgroups under `dir` whose shim is gone. A helper dies with its
/// shim (`PR_SET_PDEATHSIG`); one that has not yet is killed here (it is a helper of a dead
/// shim, by its cgroup's name), and its cgroup removed once empty.
fn remove_dead_shims_cgroups(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(shim) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if is_a_shim(shim) {
            continue;
        }
        let path = entry.path();
        for _ in 0..100 {
            let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            match std::fs::remove_dir(&path) {
                Ok(()) => {
                    tracing::debug!(dir = %path.display(), "removed a dead shim's compile cgroup");
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    tracing::debug!(dir = %path.display(), error = %e, "a dead shim's compile cgroup is not empty yet");
                    std::thread::sleep(TICK);
                }
            }
        }
    }
}

/// Whether process `pid` is a shim of this program's (not one whose pid was reused).
fn is_a_shim(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .next()
            .is_some_and(|arg0| arg0.ends_with(super::names::BINARY.as_bytes()))
    })
}

/// A helper's own memory cgroup, with the `[compile] max_memory` limit; removed when dropped.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// Makes a cgroup under the memory home `parent` whose limit is `limit` bytes.
    fn create(parent: &Path, v2: bool, limit: u64) -> std::io::Result<MemoryCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = parent.join(format!(
            "{CGROUP_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        let cgroup = MemoryCgroup { dir, v2 };
        let limit = limit.to_string();
        if v2 {
            // Best effort: the parent may have it on already, or may not (it holds processes).
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
            std::fs::write(cgroup.dir.join("memory.max"), &limit)?;
            // Swap would let it use more than the limit.
            let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
        } else {
            std::fs::write(cgroup.dir.join("memory.limit_in_bytes"), &limit)?;
            let memsw = cgroup.dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                std::fs::write(memsw, &limit)?;
            }
        }
        Ok(cgroup)
    }

    /// Whether the kernel's OOM killer acted in it.
    fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The helper has been reaped; the kernel may take a moment to let the cgroup go.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(TICK),
            }
        }
        tracing::warn!(dir = %self.dir.display(), "cannot remove the compile helper's cgroup");
    }
}

/// Compiles `wasm` into its cache in a helper process outside this process's cgroup, unless
/// its code is there already. On a failure of the helper's own (it could not start, the
/// compile failed) the caller's load compiles in process; a helper stopped by a limit, or by
/// `stop` (the container's kill or delete), is an error: the container does not run.
pub(crate) fn ahead(
    runner: &Runner,
    wasm: &Wasm<'_>,
    stop: Option<&AtomicBool>,
) -> Result<(), CompileError> {
    let (cache, digest, bytes, vouched_for) = match *wasm {
        Wasm::Cached {
            cache,
            digest,
            vouched_for,
        } => (cache, digest.clone(), None, vouched_for),
        Wasm::Bytes {
            bytes,
            cache: Some(cache),
        } => (cache, Digest::of(bytes), Some(bytes), None),
        Wasm::Bytes { cache: None, .. } => return Ok(()),
    };
    if runner.is_compiled(cache, &digest, vouched_for) {
        return Ok(());
    }
    let config = ShimConfig::get().ok();
    let limits = config.map(|c| c.compile).unwrap_or_default();
    let source = || config.map_or_else(|| ShimConfig::default().source_name(), |c| c.source_name());
    let home = HOME.get_or_init(Home::default);
    let compiled = || runner.is_compiled(cache, &digest, vouched_for);
    match helper(home, cache.base(), &digest, bytes, limits, stop, &compiled) {
        Ok(Ended::Compiled) => {
            tracing::debug!(%digest, "compiled by the helper, outside the pod's cgroup");
            Ok(())
        }
        Ok(Ended::Failed(why)) => {
            tracing::warn!(%digest, error = %why, "the compile helper failed: compiling in process");
            Ok(())
        }
        Ok(Ended::TimedOut) => Err(CompileError::Timeout {
            limit: duration_text(limits.timeout),
            config: source(),
        }),
        Ok(Ended::OutOfMemory) => Err(CompileError::Memory {
            limit: size_text(limits.max_memory),
            config: source(),
        }),
        Ok(Ended::Stopped) => Err(CompileError::Stopped),
        Ok(Ended::Killed(signal)) => Err(CompileError::Killed { signal }),
        Ok(Ended::Refused(why)) => Err(CompileError::Invalid { why }),
        Ok(Ended::Vanished(said)) => {
            tracing::warn!(%digest, stderr = said, "the compile helper ended without saying why");
            Err(CompileError::Vanished { said })
        }
        Err(e) => {
            tracing::warn!(%digest, error = %e, "the compile helper did not start: compiling in process");
            Ok(())
        }
    }
}

/// How a helper ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The code is in the cache.
    Compiled,
    /// It failed by itself (its error): the module does not compile, or the cache would not
    /// take the code.
    Failed(String),
    /// Killed at its `timeout`.
    TimedOut,
    /// Stopped at its `max_memory`.
    OutOfMemory,
    /// Killed because its container was.
    Stopped,
    /// Killed by this signal, not by a limit of this shim's.
    Killed(i32),
    /// The module does not compile: why.
    Refused(String),
    /// It ended without its code and without saying why (killed from outside the shim, or
    /// crashed, its status taken by the shim's reaper): what it said.
    Vanished(String),
}

/// How many compile helpers may run at once on the node: its CPUs online. Not what this
/// process may use (`available_parallelism` reads the CPU quota of the shim's cgroup, a pod's):
/// every shim of the node must count the same slots.
fn helper_slots() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| cpus_in(&list))
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// How many CPUs a kernel CPU list names (`0-3,6,8-9`: 7).
fn cpus_in(list: &str) -> Option<usize> {
    list.trim().split(',').try_fold(0usize, |count, part| {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
        Some(count + last.checked_sub(first)? + 1)
    })
}

/// What waiting for a slot came to.
enum Taken {
    Slot(Slot),
    Stopped,
    TimedOut,
}

/// One of the node's compile-helper slots, held while a helper runs: an exclusive `flock` on
/// `compile-slots/N` in the node's cache, which every shim shares (released with the
/// descriptor, also when the shim dies).
struct Slot(#[allow(dead_code)] File);

impl Slot {
    /// Waits for a free slot of `slots` until `stop` is set or `deadline` passes. The slots
    /// are in a directory of the cache only this user may open (made so, and checked: a
    /// directory anyone else could open would let them hold every slot), each a regular file
    /// opened without following a link or blocking (a planted FIFO).
    fn acquire(
        cache: &Path,
        slots: usize,
        stop: Option<&AtomicBool>,
        deadline: Instant,
    ) -> std::io::Result<Taken> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
        let dir = cache.join("compile-slots");
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(&dir)?;
        let me = rustix::process::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is not a directory only this user may open",
                dir.display()
            )));
        }
        loop {
            for n in 0..slots.max(1) {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(dir.join(n.to_string()))?;
                if !file.metadata()?.is_file() {
                    return Err(std::io::Error::other(format!(
                        "{} is not a regular file",
                        dir.join(n.to_string()).display()
                    )));
                }
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                {
                    Ok(()) => return Ok(Taken::Slot(Slot(file))),
                    Err(rustix::io::Errno::WOULDBLOCK) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Ok(Taken::Stopped);
            }
            if Instant::now() >= deadline {
                return Ok(Taken::TimedOut);
            }
            std::thread::sleep(TICK);
        }
    }
}

/// Runs the helper for `digest` and waits for it, within `limits` and until `stop`;
/// `compiled` says whether its code is in the cache.
///
/// The shim reaps every child of its own (it is a subreaper, for what it hands to runc): the
/// helper's exit status may be gone before this looks for it. So how the helper ended is
/// read from what it leaves: its code in the cache, its cgroup's OOM kills, what it said.
fn helper(
    home: &Home,
    cache: &Path,
    digest: &Digest,
    bytes: Option<&[u8]>,
    limits: CompileLimits,
    stop: Option<&AtomicBool>,
    compiled: &dyn Fn() -> bool,
) -> std::io::Result<Ended> {
    // At most as many helpers at once on the node as it has CPUs (a compile keeps one busy):
    // a pod of many containers, or many pods, cannot start a helper each, each allowed
    // `max_memory` outside every pod's cgroup. A helper waits for a slot within its
    // `timeout`, or until its stop; a slot that cannot be had for another reason fails the
    // container (it is not compiled in the shim instead, outside the limits).
    let waited = Instant::now();
    let _slot = match Slot::acquire(cache, helper_slots(), stop, waited + limits.timeout) {
        Ok(Taken::Slot(slot)) => slot,
        Ok(Taken::Stopped) => return Ok(Ended::Stopped),
        Ok(Taken::TimedOut) => return Ok(Ended::TimedOut),
        Err(e) => return Ok(Ended::Vanished(format!("no compile slot on the node: {e}"))),
    };
    let memory = match &home.memory {
        Some((dir, v2)) => MemoryCgroup::create(dir, *v2, limits.max_memory)
            .inspect_err(|e| {
                tracing::debug!(parent = %dir.display(), error = %e, "no memory cgroup for the compile helper: its limit is RLIMIT_DATA");
            })
            .ok(),
        None => None,
    };
    let mut command = Command::new("/proc/self/exe");
    command.arg(COMPILE_ARG).arg(cache);
    if bytes.is_none() {
        command.arg(digest.to_string());
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "0");
    let data_limit = memory.is_none().then_some(limits.max_memory);
    if let Some(limit) = data_limit {
        command.env(DATA_LIMIT_ENV, limit.to_string());
    }
    confine(&mut command);
    let started = Instant::now();
    let child = command.spawn()?;
    let mut helper = Helper::new(child);
    // The helper reads nothing until its stdin ends: it is moved before it compiles.
    let pid = helper.child.id().to_string();
    let mut moved: std::io::Result<()> = Ok(());
    for procs in &home.procs {
        let is_memory = home
            .memory
            .as_ref()
            .is_some_and(|(dir, _)| procs.parent() == Some(dir.as_path()));
        let target = match &memory {
            Some(cgroup) if is_memory => cgroup.dir.join("cgroup.procs"),
            _ => procs.clone(),
        };
        if let Err(e) = std::fs::write(&target, &pid) {
            tracing::debug!(procs = %target.display(), error = %e, "cannot move the compile helper");
            // Outside its memory cgroup the helper would have no memory limit at all.
            if is_memory && memory.is_some() {
                moved = Err(e);
            }
        }
    }
    let mut stdin = helper.child.stdin.take().expect("piped");
    // A helper that could not be moved because it is gone already (killed from outside
    // before it was moved) is no reason to compile in process, as one the kernel would not
    // move is.
    let gone = matches!(&moved, Err(e) if e.raw_os_error() == Some(libc::ESRCH));
    let not_moved = moved.is_err() && !gone;
    let written = match moved {
        Ok(()) => bytes.map_or(Ok(()), |b| stdin.write_all(b)),
        Err(e) => Err(std::io::Error::other(format!(
            "the helper could not join its memory cgroup: {e}"
        ))),
    };
    drop(stdin);
    // What it says when it fails, read beside it so that it never blocks on a full pipe.
    let stderr = helper.child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut pipe).take(64 << 10).read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    });
    let said = |stderr: Option<std::thread::JoinHandle<String>>| {
        stderr
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let out_of_memory = |said: &str| {
        memory.as_ref().is_some_and(MemoryCgroup::oom_killed)
            // An allocation refused past RLIMIT_DATA aborts it, saying so.
            || (data_limit.is_some()
                && (said.contains("memory allocation of") || said.contains(PAST_DATA_LIMIT)))
    };
    if let Err(e) = written {
        // It cannot have the module: it ends, and why it ended says more (a helper killed
        // at its memory limit while it read the module is a compile past that limit).
        helper.kill(cache);
        let said = said(stderr);
        if out_of_memory(&said) {
            return Ok(Ended::OutOfMemory);
        }
        // Killed from outside while it read the module: the same compile in process would
        // only escape what killed it.
        if !not_moved && !said_why(&said) {
            return Ok(Ended::Vanished(format!(
                "giving it the module: {e}: {said}"
            )));
        }
        return Ok(Ended::Failed(format!("giving it the module: {e}: {said}")));
    }
    let deadline = started + limits.timeout;
    let status = loop {
        if let Some(status) = helper.ended()? {
            break status;
        }
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            helper.kill(cache);
            return Ok(Ended::Stopped);
        }
        if Instant::now() >= deadline {
            helper.kill(cache);
            return Ok(Ended::TimedOut);
        }
        std::thread::sleep(TICK);
    };
    let said = said(stderr);
    if out_of_memory(&said) {
        return Ok(Ended::OutOfMemory);
    }
    if status.is_none_or(|s| s.success()) && compiled() {
        return Ok(Ended::Compiled);
    }
    // Compiled again in process, a module that failed after minutes of compiling would take
    // them again, in no limit at all.
    if let Some((_, why)) = said.split_once(&format!("{DOES_NOT_COMPILE}: ")) {
        return Ok(Ended::Refused(why.to_owned()));
    }
    use std::os::unix::process::ExitStatusExt as _;
    match status.and_then(|s| s.signal()) {
        // Killed, by no limit of this shim's: the same compile in process would only escape
        // whatever killed it.
        Some(signal) => {
            tracing::warn!(signal, stderr = said, "the compile helper was killed");
            Ok(Ended::Killed(signal))
        }
        // Its own failure (no cache, a cache that would not keep the code): it said so.
        None if said_why(&said) => Ok(Ended::Failed(match status {
            Some(status) => format!("it ended with {status}: {said}"),
            None => format!("it ended: {said}"),
        })),
        // Ended by no hand of its own, its status taken by the shim's reaper (a kill from
        // outside, a crash): as for a signal seen, never compiled again in process.
        None => Ok(Ended::Vanished(said)),
    }
}

/// A running helper, and a handle on it that outlives its pid (which the shim's reaper may
/// free at any time): signals go through it.
struct Helper {
    child: Child,
    pidfd: Option<rustix::fd::OwnedFd>,
}

impl Helper {
    fn new(child: Child) -> Helper {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&child),
            rustix::process::PidfdFlags::empty(),
        )
        .ok();
        Helper { child, pidfd }
    }

    /// Whether it has ended: `Some` with its status when this process reaped it, `Some(None)`
    /// when the shim's reaper did.
    fn ended(&mut self) -> std::io::Result<Option<Option<ExitStatus>>> {
        match self.child.try_wait() {
            Ok(Some(status)) => Ok(Some(Some(status))),
            Ok(None) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(Some(None)),
            Err(e) => Err(e),
        }
    }

    /// Sends `signal`, through its pidfd (never to a pid reused since).
    /// Without a pidfd (a kernel older than 5.3), to its pid.
    fn signal(&self, signal: rustix::process::Signal) {
        match &self.pidfd {
            Some(pidfd) => {
                let _ = rustix::process::pidfd_send_signal(pidfd, signal);
            }
            None => {
                let pid = rustix::process::Pid::from_child(&self.child);
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }

    /// Stops it for good: frozen first (SIGSTOP), so that the temporary files it holds in
    /// the cache can be named and it opens no more; killed and waited for; those files
    /// removed, so that a stopped compile leaves nothing in the cache.
    fn kill(&mut self, cache: &Path) {
        use rustix::process::Signal;
        self.signal(Signal::STOP);
        let partial = partial_files(self.child.id(), cache);
        self.signal(Signal::KILL);
        // Its pidfd reads as ready once it has exited, whoever reaps it.
        match &self.pidfd {
            Some(pidfd) => {
                let mut fds = [rustix::event::PollFd::new(
                    pidfd,
                    rustix::event::PollFlags::IN,
                )];
                let _ = rustix::event::poll(&mut fds, None);
                let _ = self.ended();
            }
            None => {
                let _ = self.child.wait();
            }
        }
        for file in partial {
            match std::fs::remove_file(&file) {
                Ok(()) => {
                    tracing::debug!(file = %file.display(), "removed a stopped compile's partial file")
                }
                Err(e) => {
                    tracing::debug!(file = %file.display(), error = %e, "cannot remove a stopped compile's partial file")
                }
            }
        }
    }
}

/// Makes the helper die with the shim (`PR_SET_PDEATHSIG`, and at once if the shim is gone
/// already).
fn confine(command: &mut Command) {
    use rustix::process::Signal;
    use std::os::unix::process::CommandExt as _;
    let parent = rustix::process::getpid();
    let hook = move || -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        if rustix::process::getppid() != Some(parent) {
            return Err(std::io::Error::other("the shim is gone"));
        }
        Ok(())
    };
    // SAFETY: between fork and exec the hook makes raw system calls only (prctl, getppid):
    // it allocates nothing and takes no lock.
    #[allow(
        unsafe_code,
        reason = "prctl between fork and exec, raw system calls only"
    )]
    unsafe {
        command.pre_exec(hook);
    }
}

/// The temporary files (`.tmp*`, as the cache writes a file before its rename) under `cache`
/// that process `pid` holds open.
fn partial_files(pid: u32, cache: &Path) -> Vec<PathBuf> {
    let cache = std::fs::canonicalize(cache).unwrap_or_else(|_| cache.to_owned());
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|path| {
            path.starts_with(&cache)
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".tmp"))
        })
        .collect()
}

/// A duration as the config spells it.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A size as the config spells it.
fn size_text(bytes: u64) -> String {
    match bytes {
        _ if bytes.is_multiple_of(1 << 30) => format!("{}GiB", bytes >> 30),
        _ if bytes.is_multiple_of(1 << 20) => format!("{}MiB", bytes >> 20),
        _ if bytes.is_multiple_of(1 << 10) => format!("{}KiB", bytes >> 10),
        _ => format!("{bytes} bytes"),
    }
}

/// The helper's `main`: compiles the wasm (stdin, or the cache's blob `DIGEST`) into the
/// cache at `CACHE_DIR`; its exit code.
pub(crate) fn helper_main(args: &[String]) -> i32 {
    use anyhow::Context as _;
    let data_limit: Option<u64> = std::env::var(DATA_LIMIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    // `Ok(Some(why))`: the module does not compile.
    let run = || -> anyhow::Result<Option<String>> {
        let (dir, digest) = match args {
            [dir] => (dir, None),
            [dir, digest] => (dir, Some(digest.parse::<Digest>()?)),
            _ => anyhow::bail!("usage: {COMPILE_ARG} CACHE_DIR [DIGEST]"),
        };
        // Waits for the shim to have moved this process out of the pod's cgroup.
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the wasm")?;
        let cache = Cache::open(dir).with_context(|| format!("opening the cache at {dir}"))?;
        let runner = Runner::new(EngineOptions::SHIM)?;
        // The engine's pools are address space reserved before any compile: the limit
        // counts from what the process holds now.
        if let Some(limit) = data_limit {
            limit_data(limit).context("setting RLIMIT_DATA")?;
        }
        let name = PathBuf::from("wasm");
        let wasm = match &digest {
            // Compiled here: code adopted from a referrer is not looked for.
            Some(digest) => Wasm::Cached {
                cache: &cache,
                digest,
                vouched_for: None,
            },
            None => Wasm::Bytes {
                bytes: &bytes,
                cache: Some(&cache),
            },
        };
        if let Err(e) = runner.load(&name, wasm) {
            return Ok(Some(format!("{e:#}")));
        }
        // Said, so that the shim tells this failure of its own (it compiles in process) from
        // an end by no hand of its own (it does not).
        let digest = digest.unwrap_or_else(|| Digest::of(&bytes));
        if !runner.is_compiled(&cache, &digest, None) {
            anyhow::bail!("the module compiled, but the cache did not keep its code");
        }
        Ok(None)
    };
    match run() {
        Ok(None) => 0,
        Ok(Some(why)) => {
            eprintln!("{}{DOES_NOT_COMPILE}: {why}", own_words());
            2
        }
        Err(e) => {
            // A mapping refused past RLIMIT_DATA is the limit, whichever call met it.
            let refused = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.raw_os_error() == Some(libc::ENOMEM))
                    || c.to_string().contains("os error 12")
            });
            if data_limit.is_some() && refused {
                eprintln!("{}{PAST_DATA_LIMIT}: {e:#}", own_words());
            } else {
                eprintln!("{}{e:#}", own_words());
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_runs_no_more_compile_helpers_than_its_slots_and_a_stop_ends_the_wait() {
        use super::{Slot, Taken};
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};
        let cache = tempfile::tempdir().unwrap();
        let later = || Instant::now() + Duration::from_secs(3600);
        let take = |slots, stop: Option<&AtomicBool>, deadline| {
            Slot::acquire(cache.path(), slots, stop, deadline).unwrap()
        };
        let Taken::Slot(first) = take(1, None, later()) else {
            panic!("a free slot is taken")
        };
        // The one slot is held: a second helper waits, and its container's stop ends that,
        // as the end of its time does.
        let stop = AtomicBool::new(true);
        assert!(matches!(take(1, Some(&stop), later()), Taken::Stopped));
        assert!(matches!(take(1, None, Instant::now()), Taken::TimedOut));
        // With two, the second takes the other; a third waits.
        let Taken::Slot(second) = take(2, None, later()) else {
            panic!("the second slot is taken")
        };
        assert!(matches!(take(2, Some(&stop), later()), Taken::Stopped));
        // A slot is free again when its helper's holder lets it go.
        drop(first);
        assert!(matches!(take(2, Some(&stop), later()), Taken::Slot(_)));
        drop(second);
    }

    #[test]
    fn the_nodes_cpus_are_read_from_the_kernels_list() {
        assert_eq!(cpus_in("0-1\n"), Some(2));
        assert_eq!(cpus_in("0-3,6,8-9"), Some(7));
        assert_eq!(cpus_in("0"), Some(1));
        assert_eq!(cpus_in("3-1"), None);
        assert_eq!(cpus_in("x"), None);
    }

    #[test]
    fn slots_in_a_directory_others_may_open_or_a_planted_fifo_are_refused() {
        use super::Slot;
        use std::os::unix::fs::PermissionsExt as _;
        use std::time::{Duration, Instant};
        let later = Instant::now() + Duration::from_secs(3600);
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("compile-slots");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Slot::acquire(cache.path(), 1, None, later).is_err());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("0"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Refused at once, never a blocked open.
        assert!(Slot::acquire(cache.path(), 1, None, later).is_err());
    }

    use super::*;

    #[test]
    fn limits_are_named_as_the_config_spells_them() {
        assert_eq!(duration_text(Duration::from_secs(300)), "5m");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_text(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text(Duration::from_secs(7200)), "2h");
        assert_eq!(size_text(2 << 30), "2GiB");
        assert_eq!(size_text(24 << 20), "24MiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    #[test]
    fn the_home_cgroups_are_the_ones_that_count_processes() {
        let v1 = tempfile::tempdir().unwrap();
        let text =
            "9:name=systemd:/\n8:pids:/a\n4:memory:/process_api/x\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        assert_eq!(
            home_procs(text, v1.path()),
            [
                v1.path().join("pids/a/cgroup.procs"),
                v1.path().join("memory/process_api/x/cgroup.procs"),
            ]
        );
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "memory").unwrap();
        assert_eq!(
            home_procs("0::/system.slice/containerd.service\n", v2.path()),
            [v2.path()
                .join("system.slice/containerd.service/cgroup.procs")]
        );
        assert!(home_procs("4:memory:/../../x\n", v1.path()).is_empty());
    }
}
