//! The runner's error type.

use std::path::PathBuf;

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
    /// The guest needs an import the host does not provide.
    #[error("cannot instantiate {}: it imports something wasm-oci does not provide", path.display())]
    Link {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
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
    /// The engine could not be set up.
    #[error("cannot set up the wasmtime engine")]
    Engine {
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
}
