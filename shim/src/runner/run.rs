//! Running a command to its end: a module with WASI preview 1, a component with WASI 0.2, on
//! the calling thread in a runtime of its own, stopped by a kill, a deadline or its fuel, and
//! its end told apart (exit code, trap, limit, stop).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Linker, Module, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::error::Result;
use super::limits::Limits;
use super::{Error, Loaded, Outcome, RunOptions, Runner, TICKS_PER_SECOND, check_imports};

impl Runner {
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
                    // A thread that cannot take the guest's user must not serve the guest:
                    // it ends here, before it runs a task, and the guest's call waits for the
                    // pool's next thread (or its kill). Never the process, which holds every
                    // other container of its group.
                    tracing::error!(error = %e, "cannot take the guest's user; this thread ends");
                    panic!("cannot take the guest's user on a thread of its blocking pool: {e}");
                }
            });
        }
        let runtime = builder.build().map_err(|source| Error::Io {
            what: "starting the guest's runtime",
            source,
        })?;
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
                .map_err(|source| Error::Io {
                    what: "taking the guest's user on its thread",
                    source,
                })?;
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
    /// It starts on first need, on the calling thread's side of any per-thread cgroup; a
    /// process that runs guests in CPU-limited cgroups starts it early, from a thread of its
    /// own, so that the ticks which stop a guest are never throttled with it.
    pub fn start_ticker(&self) {
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

fn wasi_ctx(options: &RunOptions) -> Result<WasiCtxBuilder> {
    use wasmtime_wasi::cli::{AsyncStdinStream, OutputFile};
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio().args(&options.args).envs(&options.env);
    let io_err = |source| Error::Io {
        what: "copying the guest's standard streams",
        source,
    };
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
