//! A container's guest on its thread: the module loaded (from the rootfs's bytes or the
//! cache), its memory limit what the cgroup leaves, run to its end; or an HTTP component
//! served in the container's network until a kill.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cgroup::Cgroup;
use super::config::ShimConfig;
use super::container::{GuestUsage, Module, thread_cpu};
use super::error::CompileError;
use super::netns::{self, Network};
use super::state::SIGKILL;
use super::store::{SharedStore, Store};
use crate::runner::http::ServeOptions;
use crate::runner::{Loaded, RunOptions, Runner, Wasm, World};

/// Opens the stdin fifo without waiting for a writer (there is none without `ctr run -i`),
/// then makes reads block again; with no writer the guest reads end-of-file.
fn open_read(path: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ok()?;
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty()).ok()?;
    Some(file)
}

/// Opens a container's stdout or stderr (a fifo of containerd's, or a file), waiting for its
/// reader.
pub(crate) fn open_write(path: &str) -> Option<std::fs::File> {
    if path.is_empty() {
        return None;
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => Some(file),
        Err(e) => {
            // The guest still runs; what it writes is lost, and this says why.
            tracing::warn!(path, error = %e, "cannot open the container's output; it is dropped");
            None
        }
    }
}

/// How long a guest's end waits at most for its output to be read.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Waits until the reader of `file`, a fifo of containerd's, has read what the guest wrote
/// (for [`OUTPUT_DRAIN`] at most); at once when it is not a fifo, or has no reader.
///
/// containerd's client opens its end of a task's fifos on a goroutine of its own, and its
/// `Delete` after the exit cancels an open that goroutine has not yet marked done, closing
/// the fifo with the output unread: on a loaded node, `ctr run` of a guest that ends within
/// milliseconds printed nothing and exited 0. Output that has been read cannot be lost so,
/// and the exit is reported only then.
fn wait_drained(file: &std::fs::File) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use std::os::unix::fs::FileTypeExt;
    if !file.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        return;
    }
    let deadline = Instant::now() + OUTPUT_DRAIN;
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    loop {
        match rustix::io::ioctl_fionread(file) {
            Ok(0) | Err(_) => return,
            Ok(unread) if Instant::now() >= deadline => {
                tracing::debug!(
                    unread,
                    "the container's output is still unread; ending anyway"
                );
                return;
            }
            Ok(_) => {}
        }
        // Wakes at once when the last reader goes (an error on the write end), else at the
        // next tick to look again.
        let mut fds = [PollFd::new(file, PollFlags::empty())];
        if rustix::event::poll(&mut fds, Some(&tick)).is_ok_and(|n| n > 0)
            && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
        {
            return;
        }
    }
}

/// What a started container's thread needs to run its guest.
pub(crate) struct Guest {
    pub(crate) options: RunOptions,
    pub(crate) stdin: Option<String>,
    pub(crate) module: Module,
    /// The container's cgroup, whose memory limit is the guest's too.
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    pub(crate) signal: Arc<Mutex<u32>>,
    /// Set by a SIGKILL.
    pub(crate) abort: Arc<AtomicBool>,
    pub(crate) usage: Arc<GuestUsage>,
    /// The container's network, where an HTTP component listens.
    pub(crate) network: Network,
}

/// The exit status of a container whose module's compile ran past a limit: what a module
/// that does not compile gets.
const COMPILE_STOPPED: u32 = 125;

/// Room left in a container's memory limit for what the shim allocates beside the guest's
/// linear memory while it runs (WASI buffers, the runtime's own).
const SHIM_MARGIN: usize = 4 << 20;

impl Guest {
    /// Runs the guest to its end; returns the container's exit status.
    pub(crate) fn run(mut self, runner: &Runner, store: &SharedStore) -> u32 {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        self.usage.tid.store(tid, Ordering::SeqCst);
        let code = self.run_guest(runner, store);
        self.usage
            .cpu_at_exit
            .store(thread_cpu(tid), Ordering::SeqCst);
        self.usage.tid.store(0, Ordering::SeqCst);
        // The task ends once what the guest wrote has been read (a SIGKILL does not wait).
        if !self.abort.load(Ordering::SeqCst) {
            for file in [&self.options.stdout, &self.options.stderr]
                .into_iter()
                .flatten()
            {
                wait_drained(file);
            }
        }
        code
    }

    fn run_guest(&mut self, runner: &Runner, store: &SharedStore) -> u32 {
        if let Some(path) = &self.stdin {
            self.options.stdin = open_read(path);
        }
        // Adopted code is looked up for the reference's own repository only.
        let vouched = match &self.module {
            Module::Cached { artifact, .. } => wasm_oci_fetcher::vouched_for(&artifact.entry),
            Module::Rootfs { .. } => None,
        };
        // A module from the rootfs is compiled once too, keyed by the digest of the bytes read.
        let (name, wasm) = match &self.module {
            Module::Rootfs { name, bytes } => (
                name.clone(),
                Wasm::Bytes {
                    bytes,
                    cache: Store::of(store).ok().map(|s| &s.cache),
                },
            ),
            Module::Cached { cache, artifact } => {
                let digest = &artifact.entry.layer_digest;
                let wasm = Wasm::Cached {
                    cache,
                    digest,
                    vouched_for: vouched.as_deref(),
                };
                (cache.blob_path(digest), wasm)
            }
        };
        let stopped = self.options.stop.clone();
        // Compiled by the shim, as containerd unpacks an image: outside the container's CPU
        // limit, so that a kill never waits for a compile throttled at the guest's quota.
        // Compiled outside the pod's memory cgroup first, when it is not in the cache: a
        // compile's peak never counts against the pod's limit, and the operator's compile
        // limits hold instead (see `compile`).
        if let Err(e) = super::compile::ahead(runner, &wasm, stopped.as_deref()) {
            if matches!(e, CompileError::Stopped) {
                return 128 + *self.signal.lock().expect("signal lock");
            }
            tracing::warn!(error = %e, "the module's compile was stopped");
            if let Some(mut f) = self.options.stderr.as_ref() {
                use std::io::Write;
                let _ = writeln!(f, "wasm-oci: {e}");
            }
            return COMPILE_STOPPED;
        }
        let loaded = runner.load(&name, wasm);
        // From here this thread, and every thread it starts, runs the guest: it takes the
        // container's CPU limit, which the shim's own threads never share.
        if let Some(cgroup) = &self.cgroup {
            let alone = cgroup.enter_thread();
            self.usage.cpu_in_cgroup.store(alone, Ordering::SeqCst);
        }
        // Killed while it compiled: it never runs.
        if stopped.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            return 128 + *self.signal.lock().expect("signal lock");
        }
        // Compiled: a module read from the rootfs is not needed any more.
        if let Module::Rootfs { bytes, .. } = &mut self.module {
            *bytes = Vec::new();
        }
        // The container's limit covers everything charged to its cgroup: this process's own
        // allocations there too (the compile just now, above all). The guest gets what is
        // left, so that it is refused memory before the kernel kills the shim.
        if let (Some(limit), Some(used)) = (
            self.options.max_memory,
            self.cgroup.as_ref().and_then(|c| c.memory_usage()),
        ) {
            let used = usize::try_from(used).unwrap_or(usize::MAX);
            self.options.max_memory = Some(limit.saturating_sub(used.saturating_add(SHIM_MARGIN)));
            tracing::debug!(limit, used, guest = ?self.options.max_memory, "guest memory within the cgroup's limit");
        }
        let outcome = loaded.and_then(|loaded| {
            if loaded.world(runner.engine()) == World::Proxy
                && let Loaded::Component(component) = &loaded
            {
                return self.serve(runner, &name, component);
            }
            runner.run(&name, &loaded, &self.options)
        });
        match outcome {
            Ok(outcome) => u32::from(outcome.exit_code()),
            // Stopped by a kill: the status names its signal, as for any container.
            Err(_) if stopped.is_some_and(|s| s.load(Ordering::SeqCst)) => {
                128 + *self.signal.lock().expect("signal lock")
            }
            Err(e) => {
                let code = e.exit_code();
                if let Some(mut f) = self.options.stderr.as_ref() {
                    use std::io::Write;
                    let _ = writeln!(f, "wasm-oci: {:#}", anyhow::Error::from(e));
                }
                u32::from(code)
            }
        }
    }
}

/// Where a pod's HTTP component listens unless its env says `WASM_OCI_HTTP_ADDR`, as
/// runwasi's wasmtime shim takes it.
const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

impl Guest {
    /// Serves a `wasi:http/proxy` component on `WASM_OCI_HTTP_ADDR` in the container's
    /// network until the container is killed; a SIGTERM lets the requests in flight finish
    /// (for 10 s at most), a SIGKILL ends them at once.
    ///
    /// The requests run on a runtime of the guest's own, whose threads this thread starts
    /// (so they are in the container's CPU cgroup): a guest that loops never holds a thread
    /// of the task service, which must answer the kill.
    fn serve(
        &self,
        runner: &Runner,
        name: &Path,
        component: &wasmtime::component::Component,
    ) -> crate::Result<crate::Outcome> {
        let addr = self
            .options
            .env
            .iter()
            .find(|(k, _)| k == "WASM_OCI_HTTP_ADDR")
            .map_or(DEFAULT_HTTP_ADDR, |(_, v)| v.as_str());
        let addr: std::net::SocketAddr = addr.parse().map_err(|e| crate::Error::Listen {
            addr: format!("{addr:?} (WASM_OCI_HTTP_ADDR)"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let listener = netns::listen_in(&self.network, addr)?;
        // The operator's limits for pods' HTTP servers (a request's run, idle connections,
        // slow heads and bodies, connections at once); the defaults without a config.
        let http = ShimConfig::get()
            .map(|c| c.http.clone())
            .unwrap_or_default();
        let server = runner.proxy(
            name,
            component,
            ServeOptions {
                env: self.options.env.clone(),
                max_memory: self.options.max_memory,
                drain: Duration::from_secs(10),
                timeout: Some(http.request_timeout),
                idle_timeout: http.idle_timeout,
                header_timeout: http.header_timeout,
                body_timeout: http.body_timeout,
                max_connections: http.max_connections,
                // What the guests print goes to the container's log.
                stdout: self
                    .options
                    .stdout
                    .as_ref()
                    .and_then(|f| f.try_clone().ok())
                    .map(Arc::new),
                stderr: self
                    .options
                    .stderr
                    .as_ref()
                    .and_then(|f| f.try_clone().ok())
                    .map(Arc::new),
                ..ServeOptions::default()
            },
        )?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("wasm-oci-guest")
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Io {
                what: "starting the guest's HTTP runtime",
                source,
            })?;
        if let Some(mut f) = self.options.stderr.as_ref() {
            use std::io::Write;
            let _ = writeln!(f, "Serving HTTP on http://{addr}/");
        }
        let flag = |flag: Option<Arc<AtomicBool>>| async move {
            while !flag.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let stopped = flag(self.options.stop.clone());
        let aborted = flag(Some(self.abort.clone()));
        // A SIGKILL (even after a SIGTERM) stops the requests in flight at once.
        let served = runtime.block_on(server.serve_until(listener, stopped, aborted));
        runtime.shutdown_background();
        served?;
        // A server that drained after its SIGTERM ended well; a SIGKILL is still a kill.
        let code = match *self.signal.lock().expect("signal lock") {
            SIGKILL => 137,
            _ => 0,
        };
        Ok(crate::Outcome {
            code,
            memory_denied: None,
        })
    }
}
