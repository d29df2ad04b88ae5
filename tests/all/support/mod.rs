//! Test harness, by what it supports: a private registry per test ([`registry`]), the
//! wasm-oci binary with a private cache ([`cli`]), a containerd per test ([`containerd`]), a
//! Kubernetes node (etcd, kube-apiserver, a kubelet) per test ([`kube`]), raw
//! HTTP ([`http`]), a fault-injecting proxy ([`proxy`]), a scripted HTTP server for hostile
//! registries and small services ([`server`]), a registry with the OCI 1.1 referrers API
//! ([`referrers_api`]), `wasm-oci serve` and a client for it
//! ([`served`]), the trust tests' keys, digests and policies ([`trust`]), a network namespace
//! of a test's own ([`netns`]), the oras and crane CLIs and crane's registry ([`peers`]), the
//! test guests ([`guests`], [`http_guests`]), waits on what a test can observe ([`wait`]) and
//! a WebSocket client for the CRI streaming server ([`websocket`]).
//! Everything is re-exported here, so tests name `support::X`.

mod cli;
pub mod containerd;
mod guests;
mod http;
mod http_guests;
pub mod kube;
mod netns;
mod peers;
pub mod proxy;
mod referrers_api;
mod registry;
mod served;
mod server;
mod trust;
mod wait;
mod websocket;

pub use cli::*;
pub use containerd::*;
pub use guests::*;
pub use http::*;
pub use http_guests::*;
pub use kube::*;
pub use netns::*;
pub use peers::*;
pub use proxy::*;
pub use referrers_api::*;
pub use registry::*;
pub use served::*;
pub use server::*;
pub use trust::*;
pub use wait::*;
pub use websocket::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// The repository's `testdata/` directory.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port on loopback")
        .port()
}
