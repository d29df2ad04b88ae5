//! The runner's error type.

use std::path::PathBuf;

/// Result type of the runner (and of the crate).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong starting or running a guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not valid WebAssembly, or use features this engine does not support.
    #[error("{} is not a valid WebAssembly module or component", path.display())]
    InvalidWasm {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
    /// The bytes do not even start like WebAssembly: say so, not what the parser expected.
    #[error("{} is not a WebAssembly module (it starts with \"{start}\")", path.display())]
    NotWasm {
        /// The file.
        path: PathBuf,
        /// Its first bytes, escaped.
        start: String,
    },
    /// A component that does not export `wasi:cli/run`.
    #[error(
        "{} is a component but not a WASI command (it does not export wasi:cli/run); only commands can be run",
        path.display()
    )]
    NotACommand {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
    /// A component served over HTTP that does not export `wasi:http/incoming-handler`.
    #[error(
        "{} is not a wasi:http/proxy component (it does not export wasi:http/incoming-handler@0.2); only proxies can be served",
        path.display()
    )]
    NotAProxy {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
    /// A cached blob no longer hashes to its digest: the cache was damaged on disk.
    #[error(
        "{} is damaged in the cache: it hashes to {actual}, not {expected}; run `wasm-oci cache verify`",
        path.display()
    )]
    Corrupt {
        /// What it was loaded as.
        path: PathBuf,
        /// The digest it is stored under.
        expected: wasm_oci_cache::Digest,
        /// What its bytes hash to.
        actual: wasm_oci_cache::Digest,
    },
    /// The guest needs an import the host does not provide.
    #[error("cannot instantiate {}: it imports something wasm-oci does not provide", path.display())]
    Link {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
    /// A component imports interfaces this host does not provide.
    #[error(
        "cannot run {}: it imports {}, which wasm-oci does not provide (it provides wasi:cli, \
         wasi:clocks, wasi:filesystem, wasi:io, wasi:random and wasi:sockets 0.2, and wasi:http \
         0.2 to wasi:http/proxy components)",
        path.display(),
        missing.join(", ")
    )]
    MissingImports {
        /// The file.
        path: PathBuf,
        /// The imports, by name (e.g. `example:kv/store@1.0.0`).
        missing: Vec<String>,
    },
    /// A preopened directory could not be opened.
    #[error("cannot preopen {} for the guest", host.display())]
    Preopen {
        /// The host directory.
        host: PathBuf,
        /// Why.
        #[source]
        source: wasmtime::Error,
    },
    /// The guest trapped.
    #[error("the guest trapped")]
    Trap {
        /// The trap with its wasm backtrace.
        #[source]
        source: wasmtime::Error,
    },
    /// The guest ran past its `--timeout`.
    #[error("the guest was stopped after running longer than its timeout of {timeout:?}")]
    Timeout {
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The guest was stopped from outside (a container kill).
    #[error("the guest was stopped")]
    Stopped,
    /// The guest used up its `--fuel`.
    #[error("the guest ran out of fuel (it was given {fuel})")]
    OutOfFuel {
        /// The fuel it was given.
        fuel: u64,
    },
    /// The guest trapped after being denied memory beyond `--max-memory`.
    #[error(
        "the guest asked for {desired} bytes of memory, over its limit of {limit} bytes, and stopped"
    )]
    MemoryLimit {
        /// The limit in bytes.
        limit: usize,
        /// What it asked for.
        desired: usize,
        /// The trap that followed.
        #[source]
        source: wasmtime::Error,
    },
    /// The engine could not be set up, or failed to do what only it does (link the host's
    /// interfaces, load the code it compiled).
    #[error("cannot set up the wasmtime engine")]
    Engine {
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
    /// Something of the host's that the guest needs could not be had: a copy of its standard
    /// streams, a runtime for its host calls, a place for its compiled code.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. "starting the guest's runtime".
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A server's socket could not be made.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address, as it was given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A network namespace for the guest could not be made, opened or entered.
    #[error("cannot {action} the guest's network namespace{}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    NetworkNamespace {
        /// What was being done: "make", "open", "enter", "bring lo up in".
        action: &'static str,
        /// The namespace's path, when it has one.
        path: Option<PathBuf>,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit status this error gives a run, the same for `wasm-oci run` and a container:
    /// 124 for a timeout, as timeout(1); 134 for a trap or a limit the guest ran into, as
    /// wasmtime (an abort); 137 for a guest stopped from outside (a container's kill names its
    /// own signal instead); 125 when the guest could not be started at all, as `docker run`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Timeout { .. } => 124,
            Error::Trap { .. } | Error::MemoryLimit { .. } | Error::OutOfFuel { .. } => 134,
            Error::Stopped => 137,
            Error::InvalidWasm { .. }
            | Error::NotWasm { .. }
            | Error::Corrupt { .. }
            | Error::NotACommand { .. }
            | Error::NotAProxy { .. }
            | Error::Link { .. }
            | Error::MissingImports { .. }
            | Error::Preopen { .. }
            | Error::Engine { .. }
            | Error::Io { .. }
            | Error::Listen { .. }
            | Error::NetworkNamespace { .. } => 125,
        }
    }
}

/// An option of the runner's (a size, a network rule, a preopen) that does not parse: what
/// the user typed, and how it is spelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A size that is not a number.
    #[error("invalid size {text:?}: expected a number like 16MiB")]
    SizeNumber {
        /// What was given.
        text: String,
    },
    /// A size in a unit that is not known.
    #[error("invalid size {text:?}: units are KiB, MiB, GiB")]
    SizeUnit {
        /// What was given.
        text: String,
    },
    /// A size over what this machine can count.
    #[error("size {text:?} is too large")]
    SizeTooLarge {
        /// What was given.
        text: String,
    },
    /// An `--allow-connect` rule that is not one.
    #[error(
        "invalid --allow-connect {spec:?}: expected HOST:PORT, IP:PORT, CIDR or CIDR:PORT (e.g. 10.0.0.5:5432, 10.0.0.0/8, 10.0.0.0/8:443, [::1]:80)"
    )]
    ConnectRule {
        /// What was given.
        spec: String,
    },
    /// An `--allow-connect HOST:PORT` whose host does not resolve.
    #[error("--allow-connect {spec}: cannot resolve {host}: {reason}")]
    ConnectHost {
        /// What was given.
        spec: String,
        /// The host name.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// An `--allow-http` rule that is not one.
    #[error(
        "invalid --allow-http {spec:?}: expected HOST[:PORT] or HOST:*, e.g. api.example.com, 127.0.0.1:8081, [::1]:8080"
    )]
    HttpRule {
        /// What was given.
        spec: String,
    },
    /// A directory given as docker's `-v HOST:GUEST`.
    #[error(
        "invalid directory {spec:?}: host and guest paths are separated by two colons, as wasmtime's --dir does (docker's -v takes one): {host}::{guest}{}",
        if *read_only { ":ro" } else { "" }
    )]
    PreopenOneColon {
        /// What was given.
        spec: String,
        /// The host part.
        host: String,
        /// The guest part.
        guest: String,
        /// Whether it ended in `:ro`.
        read_only: bool,
    },
    /// A directory with an empty host or guest path.
    #[error("invalid directory {spec:?}: expected HOST[::GUEST][:ro], e.g. ./data::/data:ro")]
    Preopen {
        /// What was given.
        spec: String,
    },
}
