//! The wasm-oci runner and containerd shim, in two rooms that share nothing but the runner's
//! API.
//!
//! [`runner`] starts a WebAssembly module or component in wasmtime with WASI; it knows nothing
//! of containerd or registries, and `wasm-oci run` uses it alone. [`containerd`] is the shim v2
//! task service (`io.containerd.wasmoci.v1`) that turns a container's spec into runner options.
//! A guest sees only what [`RunOptions`] hands it: its arguments, its environment and the
//! directories preopened for it.

#![deny(missing_docs)]

pub mod containerd;
pub mod precompiled;
pub mod runner;

pub use runner::http::{ServeOptions, Server};
pub use runner::{
    EngineOptions, Error, Identity, Loaded, Outcome, Preopen, Result, RunOptions, Runner, Wasm,
    World,
};
