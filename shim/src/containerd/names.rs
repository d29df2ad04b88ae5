//! The names containerd knows the shim by, which the process, its `--version` and its compile
//! helper (which looks for other shims among the node's processes) all use.

/// The runtime name containerd knows this shim by.
pub const RUNTIME: &str = "io.containerd.wasmoci.v1";

/// The shim's binary, as containerd names it from [`RUNTIME`].
pub const BINARY: &str = "containerd-shim-wasmoci-v1";
