//! Starting a guest: one engine per process, WASI preview 1 for modules, WASI 0.2 for components,
//! limits from the store, and compiled code kept in the cache for the next start.
//!
//! This room knows nothing of containerd or registries: the CLI and the shim both hand it
//! bytes (or a cache blob) and options.

mod compiled;
mod connection;
mod error;
mod fields;
pub mod http;
mod identity;
mod limits;
mod network;
pub mod precompiled;
mod run;

pub use error::{Error, OptionError, Result};
pub use identity::Identity;
pub use network::{ConnectRule, HttpPolicy, HttpPort, HttpRule, SocketPolicy};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, Module};

// `http.rs` counts a request's memory with the same budget as a command's.
use limits::{Budget, Charge, Limits};

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
        // The rule `inspect` and the configs `push` writes use too.
        match wasm_oci_artifact::world::world_of(exports.iter().copied()) {
            Some(world) if wasm_oci_artifact::world::is_proxy(&world) => World::Proxy,
            Some(_) => World::Command,
            None => World::Other,
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
        /// The reference the blob was pulled for, when it was (as
        /// `wasm_oci_fetcher::vouched_for` names it): code the signature policy vouched for
        /// there, compiled by someone else, is looked up too (see
        /// [`wasm_oci_cache::vouched_engine_key`]); never for another reference.
        vouched_for: Option<&'a str>,
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
        let config = engine_config(options);
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
}

/// The engine configuration of `options`: what [`Runner::new`] runs with, and what
/// precompiled code for it is compiled with (`precompiled.rs`).
fn engine_config(options: EngineOptions) -> Config {
    let mut config = Config::new();
    config
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
        .epoch_interruption(options.interruptible)
        .consume_fuel(options.fuel);
    if options.pooling {
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
    }
    config
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

use wasm_oci_artifact::world::provided;
/// Of the imports an artifact's config lists, those this host does not provide; `target` is
/// the config's world (a `wasi:http/proxy` gets wasi:http too). The rule is
/// [`wasm_oci_artifact::world`]'s, shared with the fetcher's config check, `inspect` and the shim.
pub use wasm_oci_artifact::world::unsatisfied_imports;

/// Parses a byte size: a number with an optional binary unit (`KiB`, `MiB`, `GiB`; `K`, `M`,
/// `G` and `KB`, `MB`, `GB` mean the same, as wasmtime's flags do), as `--max-memory` and the
/// shim's config spell them.
pub fn parse_size(text: &str) -> Result<usize, OptionError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: usize = number.parse().map_err(|_| OptionError::SizeNumber {
        text: text.to_owned(),
    })?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(OptionError::SizeUnit {
                text: text.to_owned(),
            });
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| OptionError::SizeTooLarge {
            text: text.to_owned(),
        })
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
    type Err = OptionError;

    /// `HOST[::GUEST][:ro|:rw]`, wasmtime's `--dir` syntax plus an access suffix; without
    /// `::GUEST` the guest sees the directory at the same path as the host.
    fn from_str(spec: &str) -> Result<Self, OptionError> {
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
                return Err(OptionError::PreopenOneColon {
                    spec: spec.to_owned(),
                    host: host.to_owned(),
                    guest: guest.to_owned(),
                    read_only,
                });
            }
            None => (rest, rest),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(OptionError::Preopen {
                spec: spec.to_owned(),
            });
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
        let docker = "./no-such-dir:/data:ro"
            .parse::<Preopen>()
            .unwrap_err()
            .to_string();
        assert!(docker.contains("./no-such-dir::/data:ro"), "{docker}");
        assert!("./d::".parse::<Preopen>().is_err());
    }
}
