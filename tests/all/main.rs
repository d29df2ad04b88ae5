//! End-to-end tests of wasm-oci against real components: a Docker Distribution registry started
//! per test, real wasmtime, and the interop peers (ORAS, skopeo) where a test names them.
//!
//! One integration-test binary for the whole workspace; modules per area.

mod airgap;
mod auth;
mod cli;
mod cli_attacks;
mod cli_errors;
mod containerd;
mod cri;
mod edge;
mod faults;
mod fleet;
mod hosts_toml;
mod interop;
mod mirror_attacks;
mod mirrors;
mod proxy;
mod readme;
mod registry;
mod resume;
mod runner;
mod security;
mod serve;
mod serve_attacks;
mod serve_limits;
mod support;
mod testdata;
mod token;
mod trust;
