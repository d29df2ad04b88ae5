//! Starting a guest: one engine per process, WASI preview 1 for modules, WASI 0.2 for components,
//! limits from the store, and compiled code kept in the cache for the next start.
//!
//! This room knows nothing of containerd or registries: the CLI and the shim both hand it
//! bytes (or a cache blob) and options.

mod compiled;
mod connection;
mod error;
mod http;
mod network;

pub use error::Error;
pub use http::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_CONNECTIONS, ServeOptions, Server,
};
pub use network::{ConnectRule, HttpPolicy, HttpPort, HttpRule, SocketPolicy};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::Result;

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// What the guest gets from the host, and the limits it runs under.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// `argv`, program name first.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Directories to preopen; none by default, so a guest sees nothing of the host.
    pub preopens: Vec<Preopen>,
    /// Cap on all the guest's linear memories and tables together, in bytes; a table element
    /// counts 8 bytes.
    pub max_memory: Option<usize>,
    /// Wall-clock limit; needs an engine made with [`EngineOptions::interruptible`].
    pub timeout: Option<Duration>,
    /// Fuel to give the guest; needs an engine made with [`EngineOptions::fuel`].
    pub fuel: Option<u64>,
    /// Standard input; the process's own when `None`.
    pub stdin: Option<std::fs::File>,
    /// Standard output; the process's own when `None`.
    pub stdout: Option<std::fs::File>,
    /// Standard error; the process's own when `None`.
    pub stderr: Option<std::fs::File>,
    /// Set to stop the guest (a container kill); needs [`EngineOptions::interruptible`].
    pub stop: Option<Arc<AtomicBool>>,
    /// Kept at the bytes of linear memory and table the guest holds, for stats.
    pub memory_gauge: Option<Arc<AtomicU64>>,
    /// The user the guest's file access is done as (a container's `process.user`); the
    /// process's own when `None`.
    pub identity: Option<Identity>,
    /// What a component may do with `wasi:sockets`; nothing by default.
    pub sockets: SocketPolicy,
}

/// A user, its group and its supplementary groups, as a container's spec names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// Makes the calling thread (only it: the kernel keeps credentials per thread) act as
    /// this user, for good: groups first, then the group, then the user, after which it
    /// cannot go back. Root's file capabilities leave the thread with its user id.
    fn become_on_this_thread(&self) -> std::io::Result<()> {
        use rustix::fs::{Gid, Uid};
        use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        set_thread_groups(&groups)?;
        let gid = Gid::from_raw(self.gid);
        set_thread_res_gid(gid, gid, gid)?;
        let uid = Uid::from_raw(self.uid);
        set_thread_res_uid(uid, uid, uid)?;
        Ok(())
    }
}

/// Engine settings that change the compiled code (and so the precompiled-cache key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Compile in epoch checks so that a guest can be stopped (`--timeout`, container kill).
    pub interruptible: bool,
    /// Compile in fuel accounting (`--fuel`).
    pub fuel: bool,
    /// Use the pooling instance allocator (pays off when one process starts many guests).
    pub pooling: bool,
}

impl EngineOptions {
    /// The containerd shim's engine: stoppable (container kill) and pooling (many guests per
    /// process). `wasm-oci compile` and `prefetch` compile for it too, so that edge nodes start
    /// without compiling.
    pub const SHIM: EngineOptions = EngineOptions {
        interruptible: true,
        fuel: false,
        pooling: true,
    };
}

/// How a guest ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Its exit code: 0 when `_start` returned, else what it passed to `proc_exit`.
    pub code: i32,
    /// The size in bytes of a memory or table growth `--max-memory` denied, if any.
    pub memory_denied: Option<usize>,
}

impl Outcome {
    /// The exit status: the low 8 bits of the guest's code, as the OS keeps them (and
    /// wasmtime passes them on).
    pub fn exit_code(&self) -> u8 {
        self.code as u8
    }
}

/// A compiled guest, ready to instantiate.
#[derive(Clone)]
pub enum Loaded {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

/// What a guest is for, by what it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// A core module with WASI preview 1: run to completion.
    Module,
    /// A `wasi:cli/command` component (it exports `wasi:cli/run`): run to completion.
    Command,
    /// A `wasi:http/proxy` component (it exports `wasi:http/incoming-handler`): served.
    Proxy,
    /// A component that exports neither.
    Other,
}

impl Loaded {
    /// The world the guest targets; a component that exports both `wasi:cli/run` and
    /// `wasi:http/incoming-handler` is served.
    pub fn world(&self, engine: &Engine) -> World {
        let Loaded::Component(component) = self else {
            return World::Module;
        };
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        let exports_0_2 = |interface: &str| {
            exports.iter().any(|name| {
                name.strip_prefix(interface)
                    .and_then(|v| v.strip_prefix("@0.2."))
                    .is_some()
            })
        };
        if exports_0_2("wasi:http/incoming-handler") {
            World::Proxy
        } else if exports_0_2("wasi:cli/run") {
            World::Command
        } else {
            World::Other
        }
    }
}

/// The wasm to load. Whatever the source, the bytes that are hashed are the bytes that are
/// validated and compiled: nothing is read twice, so a file swapped in between cannot plant
/// code under another module's digest in the compiled-code cache.
#[derive(Clone, Copy)]
pub enum Wasm<'a> {
    /// A blob of the cache, by digest: its compiled code is looked up first; on a miss the
    /// blob is read once, checked against its digest, and compiled from those bytes.
    Cached {
        /// The cache.
        cache: &'a wasm_oci_cache::Cache,
        /// The blob's digest.
        digest: &'a wasm_oci_cache::Digest,
    },
    /// Bytes the caller read (a module from a container's rootfs, a layout's verified blob, a
    /// local file). With a cache, their compiled code is kept under their digest, computed
    /// here from these very bytes.
    Bytes {
        /// The wasm.
        bytes: &'a [u8],
        /// Where compiled code may be kept.
        cache: Option<&'a wasm_oci_cache::Cache>,
    },
}

/// Runs guests; holds the process's one [`Engine`].
pub struct Runner {
    engine: Engine,
    engine_key: String,
    options: EngineOptions,
    ticker: OnceLock<()>,
}

/// Epoch ticks per second when a timeout is in force.
const TICKS_PER_SECOND: u64 = 100;

impl Runner {
    /// Sets up the engine.
    pub fn new(options: EngineOptions) -> Result<Self> {
        let mut config = Config::new();
        config
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
            .epoch_interruption(options.interruptible)
            .consume_fuel(options.fuel);
        if options.pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
        }
        let engine = Engine::new(&config).map_err(|source| Error::Engine { source })?;
        Ok(Self {
            engine_key: compatibility_key(&engine),
            engine,
            options,
            ticker: OnceLock::new(),
        })
    }

    /// The engine, e.g. to precompile with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A stable name for this engine's compiled-code format: wasmtime's compatibility hash
    /// (version, target, settings) as hex. Code compiled under another key is never loaded.
    pub fn engine_key(&self) -> &str {
        &self.engine_key
    }

    /// Refuses a component that imports an interface this host does not give its world,
    /// naming each; [`Runner::run`] and [`Runner::proxy`] check this too.
    pub fn check_imports(&self, path: &Path, loaded: &Loaded) -> Result<()> {
        match loaded {
            Loaded::Module(_) => Ok(()),
            Loaded::Component(component) => check_imports(
                path,
                component,
                &self.engine,
                loaded.world(&self.engine) == World::Proxy,
            ),
        }
    }

    /// Runs a loaded guest to its end; returns how it exited.
    ///
    /// The guest runs on this thread, in a runtime of its own: its host calls are
    /// asynchronous, so a guest waiting in one (a sleep, a read) can be stopped too, by
    /// dropping the call.
    pub fn run(&self, path: &Path, loaded: &Loaded, options: &RunOptions) -> Result<Outcome> {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_time().enable_io();
        if let Some(identity) = options.identity.clone() {
            // WASI's file operations run on this runtime's blocking pool: those threads act
            // as the guest's user from their start.
            builder.on_thread_start(move || {
                if let Err(e) = identity.become_on_this_thread() {
                    // A thread that cannot drop root must not serve the guest.
                    tracing::error!(error = %e, "cannot take the guest's user; aborting");
                    std::process::abort();
                }
            });
        }
        let runtime = builder
            .build()
            .map_err(|e| Error::Engine { source: e.into() })?;
        let outcome = runtime.block_on(self.run_async(path, loaded, options));
        // A read of a stopped guest's stdin may still wait on the blocking pool: it ends with
        // its input, and this thread does not wait for it.
        runtime.shutdown_background();
        outcome
    }

    async fn run_async(
        &self,
        path: &Path,
        loaded: &Loaded,
        options: &RunOptions,
    ) -> Result<Outcome> {
        // Preopens are opened first, as the process (the rootfs's parents may be closed to the
        // guest's user); what the guest does through them is done as its user.
        let mut wasi = wasi_ctx(options)?;
        if let Some(identity) = &options.identity {
            identity
                .become_on_this_thread()
                .map_err(|e| Error::Engine { source: e.into() })?;
        }
        let limits = Limits {
            max_memory: options.max_memory,
            gauge: options.memory_gauge.clone(),
            ..Limits::default()
        };
        let result = match loaded {
            Loaded::Module(module) => {
                let host = ModuleHost {
                    wasi: wasi.build_p1(),
                    limits,
                };
                let mut store = Store::new(&self.engine, host);
                store.limiter(|h| &mut h.limits);
                self.arm(&mut store, options)?;
                let r = until_stopped(self.run_module(path, module, &mut store), options).await;
                (r, store.data().limits.denied)
            }
            Loaded::Component(component) => {
                let host = ComponentHost {
                    ctx: wasi.build(),
                    table: ResourceTable::new(),
                    limits,
                };
                let mut store = Store::new(&self.engine, host);
                store.limiter(|h| &mut h.limits);
                self.arm(&mut store, options)?;
                let r =
                    until_stopped(self.run_component(path, component, &mut store), options).await;
                (r, store.data().limits.denied)
            }
        };
        let (result, memory_denied) = result;
        let code = match result {
            Ok(code) => code,
            Err(Failure::Setup(e)) => return Err(e),
            Err(Failure::Wasm(e)) => classify(e, options, memory_denied)?,
        };
        Ok(Outcome {
            code,
            memory_denied,
        })
    }

    /// Sets the store's fuel and deadline.
    fn arm<T>(&self, store: &mut Store<T>, options: &RunOptions) -> Result<()> {
        if let Some(fuel) = options.fuel {
            store
                .set_fuel(fuel)
                .map_err(|source| Error::Engine { source })?;
        }
        if self.options.interruptible {
            let deadline = options.timeout.map(|t| Instant::now() + t);
            let stop = options.stop.clone();
            if deadline.is_some() || stop.is_some() {
                self.start_ticker();
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| {
                    let expired = deadline.is_some_and(|d| Instant::now() >= d);
                    let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
                    if expired || stopped {
                        Err(Trap::Interrupt.into())
                    } else {
                        Ok(UpdateDeadline::Continue(1))
                    }
                });
            } else {
                store.set_epoch_deadline(u64::MAX);
                store.epoch_deadline_trap();
            }
        }
        Ok(())
    }

    /// One thread per process advances the engine's epoch; each store counts its own deadline.
    fn start_ticker(&self) {
        self.ticker.get_or_init(|| {
            let engine = self.engine.weak();
            std::thread::Builder::new()
                .name("wasm-oci-epoch".into())
                .spawn(move || {
                    while let Some(engine) = engine.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(Duration::from_millis(1000 / TICKS_PER_SECOND));
                    }
                })
                .expect("spawning the epoch thread");
        });
    }

    async fn run_module(
        &self,
        path: &Path,
        module: &Module,
        store: &mut Store<ModuleHost>,
    ) -> Result<i32, Failure> {
        let mut linker: Linker<ModuleHost> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h| &mut h.wasi)
            .map_err(|source| Failure::Setup(Error::Engine { source }))?;
        let link_err = |source| {
            Failure::Setup(Error::Link {
                path: path.to_owned(),
                source,
            })
        };
        let pre = linker.instantiate_pre(module).map_err(link_err)?;
        let instance = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failure::Wasm)?;
        let start = instance
            .get_typed_func::<(), ()>(&mut *store, "_start")
            .map_err(link_err)?;
        start
            .call_async(&mut *store, ())
            .await
            .map_err(Failure::Wasm)?;
        Ok(0)
    }

    async fn run_component(
        &self,
        path: &Path,
        component: &Component,
        store: &mut Store<ComponentHost>,
    ) -> Result<i32, Failure> {
        check_imports(path, component, &self.engine, false).map_err(Failure::Setup)?;
        let mut linker = wasmtime::component::Linker::<ComponentHost>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|source| Failure::Setup(Error::Engine { source }))?;
        let pre = linker.instantiate_pre(component).map_err(|source| {
            Failure::Setup(Error::Link {
                path: path.to_owned(),
                source,
            })
        })?;
        let pre = CommandPre::new(pre).map_err(|source| {
            Failure::Setup(Error::NotACommand {
                path: path.to_owned(),
                source,
            })
        })?;
        let command = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failure::Wasm)?;
        match command
            .wasi_cli_run()
            .call_run(&mut *store)
            .await
            .map_err(Failure::Wasm)?
        {
            Ok(()) => Ok(0),
            Err(()) => Ok(1),
        }
    }
}

/// Refuses a component that imports an interface this host does not provide, naming each.
fn check_imports(path: &Path, component: &Component, engine: &Engine, http: bool) -> Result<()> {
    let ty = component.component_type();
    let missing: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !provided(name, http))
        .map(str::to_owned)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingImports {
            path: path.to_owned(),
            missing,
        })
    }
}

/// Whether an import is one of the WASI 0.2 interfaces the linker gets
/// (`wasmtime_wasi::p2::add_to_linker_async`, and wasi:http for proxies). Anything it does not
/// know is left to the linker, whose error is the last word.
/// Of the imports an artifact's config lists, those this host does not provide; `target` is
/// the config's world (a `wasi:http/proxy` gets wasi:http too).
pub fn unsatisfied_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    target: Option<&str>,
) -> Vec<String> {
    let http = target.is_some_and(|t| t.starts_with("wasi:http/proxy@"));
    imports
        .into_iter()
        .filter(|name| !provided(name, http))
        .map(str::to_owned)
        .collect()
}

fn provided(import: &str, http: bool) -> bool {
    let Some((package, version)) = import.split_once('@') else {
        return false;
    };
    let Some((namespace_package, _interface)) = package.split_once('/') else {
        return false;
    };
    if !version.starts_with("0.2.") {
        return false;
    }
    match namespace_package {
        "wasi:cli" | "wasi:clocks" | "wasi:filesystem" | "wasi:io" | "wasi:random"
        | "wasi:sockets" => true,
        "wasi:http" => http,
        _ => false,
    }
}

/// Runs `guest` until it ends, or until the stop flag or the deadline ends it while it waits
/// in a host call (a sleep, a read that nothing answers): dropping the future abandons that
/// call. A guest running wasm is stopped by the epoch callback instead (see `Runner::arm`),
/// since this thread does not poll anything else until the guest yields.
async fn until_stopped<T>(
    guest: impl Future<Output = Result<T, Failure>>,
    options: &RunOptions,
) -> Result<T, Failure> {
    let stop = options.stop.clone();
    let deadline = options.timeout.map(|t| Instant::now() + t);
    if stop.is_none() && deadline.is_none() {
        return guest.await;
    }
    let ended = async {
        loop {
            let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
            if stopped || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    };
    tokio::select! {
        biased;
        result = guest => result,
        () = ended => Err(Failure::Wasm(Trap::Interrupt.into())),
    }
}

/// How often a guest waiting in a host call is checked for a stop or its deadline.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// Failures before the guest runs are ours; failures while it runs are classified.
enum Failure {
    Setup(Error),
    Wasm(wasmtime::Error),
}

/// Turns an error raised while the guest ran into its exit code or a user-facing error.
fn classify(e: wasmtime::Error, options: &RunOptions, denied: Option<usize>) -> Result<i32> {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    Err(match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt)
            if options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::SeqCst)) =>
        {
            Error::Stopped
        }
        Some(Trap::Interrupt) => Error::Timeout {
            timeout: options.timeout.unwrap_or_default(),
        },
        Some(Trap::OutOfFuel) => Error::OutOfFuel {
            fuel: options.fuel.unwrap_or_default(),
        },
        _ => match (denied, options.max_memory) {
            (Some(desired), Some(limit)) => Error::MemoryLimit {
                limit,
                desired,
                source: e,
            },
            _ => Error::Trap { source: e },
        },
    })
}

struct ModuleHost {
    wasi: WasiP1Ctx,
    limits: Limits,
}

struct ComponentHost {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: Limits,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// `--max-memory`: one budget for all of a guest's linear memories and tables together (a
/// table element counts 8 bytes), so a guest with four memories gets no more than one with
/// one. It remembers the growth it denied so the error can say so.
#[derive(Default)]
struct Limits {
    max_memory: Option<usize>,
    /// Bytes of memory and table the guest holds now.
    used: usize,
    denied: Option<usize>,
    gauge: Option<Arc<AtomicU64>>,
    /// The budget this guest shares with others (a server's instances), charged with `used`.
    shared: Option<Charge>,
}

/// One memory budget for many guests and what the host holds for them: a server's
/// instances together, so that a container's limit holds for the container as a whole
/// however many requests it serves at once.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` from the budget, or nothing when they do not fit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes of the budget in use now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What one holder has of a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Nothing yet of `budget`.
    pub(crate) fn empty(budget: Arc<Budget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// `bytes` of `budget`, or `None` when they do not fit.
    pub(crate) fn take(budget: &Arc<Budget>, bytes: usize) -> Option<Self> {
        budget.take(bytes).then(|| Self {
            budget: budget.clone(),
            bytes,
        })
    }

    /// Holds `bytes` instead of what it held: false (holding what it held) when the budget
    /// cannot give the difference.
    fn resize(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            if !self.budget.take(bytes - self.bytes) {
                return false;
            }
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.allow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.allow(current.saturating_mul(8), desired.saturating_mul(8)))
    }
}

impl Limits {
    /// Whether one memory or table may grow from `current` to `desired` bytes, given what
    /// all the others hold; counts it when it may.
    fn allow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        tracing::trace!(
            current,
            desired,
            total,
            limit = self.max_memory,
            "memory or table growing"
        );
        let shared_refused = match &mut self.shared {
            Some(charge) if self.max_memory.is_none_or(|limit| total <= limit) => {
                !charge.resize(total)
            }
            _ => false,
        };
        match self.max_memory {
            Some(limit) if total > limit => {
                self.denied = Some(total);
                false
            }
            _ if shared_refused => {
                self.denied = Some(total);
                false
            }
            _ => {
                self.used = total;
                if let Some(gauge) = &self.gauge {
                    gauge.store(total as u64, Ordering::Relaxed);
                }
                true
            }
        }
    }
}

fn wasi_ctx(options: &RunOptions) -> Result<WasiCtxBuilder> {
    use wasmtime_wasi::cli::{AsyncStdinStream, OutputFile};
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio().args(&options.args).envs(&options.env);
    let io_err = |e: std::io::Error| Error::Engine { source: e.into() };
    if let Some(f) = &options.stdin {
        // Read on tokio's blocking pool, not on the guest's thread, so that a guest waiting
        // for input can still be stopped (see `Runner::run`).
        let file = tokio::fs::File::from_std(f.try_clone().map_err(io_err)?);
        wasi.stdin(AsyncStdinStream::new(file));
    }
    if let Some(f) = &options.stdout {
        wasi.stdout(OutputFile::new(f.try_clone().map_err(io_err)?));
    }
    if let Some(f) = &options.stderr {
        wasi.stderr(OutputFile::new(f.try_clone().map_err(io_err)?));
    }
    let sockets = Arc::new(options.sockets.clone());
    // TCP and UDP are off unless a rule could allow them; then every address is checked.
    let any_socket = !sockets.connect.is_empty() || !sockets.bind.is_empty();
    wasi.allow_ip_name_lookup(sockets.dns)
        .allow_tcp(any_socket)
        .allow_udp(any_socket)
        .socket_addr_check(move |addr, use_| {
            let allowed = sockets.allows(addr, use_);
            if !allowed {
                tracing::warn!(%addr, ?use_, "socket use denied (see --allow-connect, --allow-bind)");
            }
            Box::pin(std::future::ready(allowed))
        });
    for p in &options.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|source| Error::Preopen {
                host: p.host.clone(),
                source,
            })?;
    }
    Ok(wasi)
}

/// Parses a byte size: a number with an optional binary unit (`KiB`, `MiB`, `GiB`; `K`, `M`,
/// `G` and `KB`, `MB`, `GB` mean the same, as wasmtime's flags do), as `--max-memory` and the
/// shim's config spell them.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number like 16MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("invalid size {text:?}: units are KiB, MiB, GiB")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Hex of wasmtime's compatibility hash, fed through SHA-256 so it is stable across processes.
fn compatibility_key(engine: &Engine) -> String {
    use sha2::Digest as _;
    use std::hash::{Hash, Hasher};

    struct Sha(sha2::Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            unreachable!("only written to")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}

impl std::str::FromStr for Preopen {
    type Err = String;

    /// `HOST[::GUEST][:ro|:rw]`, wasmtime's `--dir` syntax plus an access suffix; without
    /// `::GUEST` the guest sees the directory at the same path as the host.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (rest, read_only) = match spec.rsplit_once(':') {
            Some((rest, "ro")) if !rest.ends_with(':') => (rest, true),
            Some((rest, "rw")) if !rest.ends_with(':') => (rest, false),
            _ => (spec, false),
        };
        let (host, guest) = match rest.split_once("::") {
            Some((host, guest)) => (host, guest),
            // docker's -v HOST:GUEST, most likely: say how wasmtime spells it.
            None if rest.contains(':') && !Path::new(rest).exists() => {
                let (host, guest) = rest.split_once(':').expect("it has a colon");
                return Err(format!(
                    "invalid directory {spec:?}: host and guest paths are separated by two \
                     colons, as wasmtime's --dir does (docker's -v takes one): \
                     {host}::{guest}{}",
                    if read_only { ":ro" } else { "" }
                ));
            }
            None => (rest, rest),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!(
                "invalid directory {spec:?}: expected HOST[::GUEST][:ro], e.g. ./data::/data:ro"
            ));
        }
        Ok(Self {
            host: host.into(),
            guest: guest.to_owned(),
            read_only,
        })
    }
}

/// The start of a file that is not wasm, as text a terminal shows safely: up to 16 bytes,
/// to the first line break, escaped.
pub fn first_words(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(16)];
    let head = head
        .iter()
        .position(|b| *b == b'\n' || *b == b'\r')
        .map_or(head, |end| &head[..end]);
    head.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_specs_parse_like_wasmtime_dir() {
        let p = |s: &str| s.parse::<Preopen>().unwrap();
        assert_eq!(
            p("/srv"),
            Preopen {
                host: "/srv".into(),
                guest: "/srv".into(),
                read_only: false
            }
        );
        assert_eq!(
            p("./d::/data"),
            Preopen {
                host: "./d".into(),
                guest: "/data".into(),
                read_only: false
            }
        );
        assert_eq!(
            p("./d::/data:ro"),
            Preopen {
                host: "./d".into(),
                guest: "/data".into(),
                read_only: true
            }
        );
        assert_eq!(
            p("./d::/data:rw"),
            Preopen {
                host: "./d".into(),
                guest: "/data".into(),
                read_only: false
            }
        );
        assert_eq!(
            p("/srv:ro"),
            Preopen {
                host: "/srv".into(),
                guest: "/srv".into(),
                read_only: true
            }
        );
        assert!("::/data".parse::<Preopen>().is_err());
        let docker = "./no-such-dir:/data:ro".parse::<Preopen>().unwrap_err();
        assert!(docker.contains("./no-such-dir::/data:ro"), "{docker}");
        assert!("./d::".parse::<Preopen>().is_err());
    }
}
