//! Starting a guest: one engine per process, WASI preview 1 for modules, WASI 0.2 for components.

use std::path::{Path, PathBuf};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::{Error, Result};

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

/// What the guest gets from the host.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `argv`, program name first.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Directories to preopen; none by default, so a guest sees nothing of the host.
    pub preopens: Vec<Preopen>,
}

/// Runs guests; holds the process's one [`Engine`].
pub struct Runner {
    engine: Engine,
}

impl Runner {
    /// Sets up the engine.
    pub fn new() -> Result<Self> {
        let mut config = Config::new();
        config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
        let engine = Engine::new(&config).map_err(|source| Error::Engine { source })?;
        Ok(Self { engine })
    }

    /// Runs the module or component at `path`; returns the guest's exit code.
    #[tracing::instrument(skip(self, options), fields(path = %path.display()))]
    pub fn run(&self, path: &Path, options: &RunOptions) -> Result<i32> {
        let bytes = std::fs::read(path).map_err(|e| Error::InvalidWasm {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let wasi = wasi_ctx(options)?;
        if wasmparser::Parser::is_component(&bytes) {
            let component =
                Component::new(&self.engine, &bytes).map_err(|source| Error::InvalidWasm {
                    path: path.to_owned(),
                    source,
                })?;
            self.run_component(path, &component, wasi)
        } else {
            let module =
                Module::new(&self.engine, &bytes).map_err(|source| Error::InvalidWasm {
                    path: path.to_owned(),
                    source,
                })?;
            self.run_module(path, &module, wasi)
        }
    }

    fn run_module(&self, path: &Path, module: &Module, mut wasi: WasiCtxBuilder) -> Result<i32> {
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)
            .map_err(|source| Error::Engine { source })?;
        let mut store = Store::new(&self.engine, wasi.build_p1());
        let link_err = |source| Error::Link {
            path: path.to_owned(),
            source,
        };
        let instance = match linker.instantiate(&mut store, module) {
            Ok(instance) => instance,
            Err(e) => return exit_or(e, link_err),
        };
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(link_err)?;
        match start.call(&mut store, ()) {
            Ok(()) => Ok(0),
            Err(e) => exit_code(e),
        }
    }

    fn run_component(
        &self,
        path: &Path,
        component: &Component,
        mut wasi: WasiCtxBuilder,
    ) -> Result<i32> {
        let mut linker = wasmtime::component::Linker::<ComponentHost>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|source| Error::Engine { source })?;
        let host = ComponentHost {
            ctx: wasi.build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, host);
        let pre = linker
            .instantiate_pre(component)
            .map_err(|source| Error::Link {
                path: path.to_owned(),
                source,
            })?;
        let command =
            wasmtime_wasi::p2::bindings::sync::CommandPre::new(pre).map_err(|source| {
                Error::NotACommand {
                    path: path.to_owned(),
                    source,
                }
            })?;
        let command: Command = match command.instantiate(&mut store) {
            Ok(command) => command,
            Err(e) => {
                return exit_or(e, |source| Error::Link {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        match command.wasi_cli_run().call_run(&mut store) {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => exit_code(e),
        }
    }
}

struct ComponentHost {
    ctx: WasiCtx,
    table: ResourceTable,
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
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio().args(&options.args).envs(&options.env);
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

/// A guest's `proc_exit` arrives as an error carrying its code; anything else is a trap.
fn exit_code(e: wasmtime::Error) -> Result<i32> {
    match e.downcast_ref::<I32Exit>() {
        Some(exit) => Ok(exit.0),
        None => Err(Error::Trap { source: e }),
    }
}

/// Start functions may exit during instantiation too; any other failure there is `other`.
fn exit_or(e: wasmtime::Error, other: impl FnOnce(wasmtime::Error) -> Error) -> Result<i32> {
    match e.downcast_ref::<I32Exit>() {
        Some(exit) => Ok(exit.0),
        None => Err(other(e)),
    }
}
