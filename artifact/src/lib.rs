//! The rules every wasm-oci crate shares, written once: references and the one canonical
//! form of a registry's name, the media types of wasm artifacts, which entry of an index and
//! which layer of a manifest to follow (and that an index entry leads to an image manifest of
//! its size), the WASI world and which imports this host provides, text made safe to print,
//! and the one reader for files that someone else names (layouts, keys, policies, hosts
//! files, a container's rootfs).
//!
//! It is a leaf: it depends on none of the other wasm-oci crates, so the fetcher, the trust
//! gate, the runner, the shim and the CLI all read the same rule.

#![deny(missing_docs)]

pub mod address;
mod error;
pub mod file;
pub mod manifest;
pub mod media;
pub mod reference;
pub mod text;
pub mod walk;
pub mod world;

pub use address::{canonical_ip, embedded_ipv4};
pub use error::Error;
pub use manifest::{Choice, choose};
pub use reference::{
    canonical_registry, check_digest, is_loopback, is_node_local, parse_reference, registry_host,
    registry_key, split_host_port,
};
pub use text::printable;
