//! The wasm-oci runner: starts a cached WebAssembly module or component in wasmtime with WASI.
//!
//! Used by `wasm-oci run` and, later, by the containerd shim. A guest sees only what
//! [`RunOptions`] hands it: its arguments, its environment and the directories preopened for it.

#![deny(missing_docs)]

pub mod containerd;
mod error;
mod runner;

pub use error::Error;
pub use runner::{CompiledCache, EngineOptions, Loaded, Outcome, Preopen, RunOptions, Runner};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
