//! Test harness, by what it supports: a private registry per test ([`registry`]), the
//! wasm-oci binary with a private cache ([`cli`]), raw HTTP ([`http`]), a fault-injecting proxy
//! ([`proxy`]) and the test guests ([`guests`]). Everything is re-exported here, so tests name `support::X`.

mod cli;
mod guests;
mod http;
pub mod proxy;
mod registry;

pub use cli::*;
pub use guests::*;
pub use http::*;
pub use proxy::*;
pub use registry::*;

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
