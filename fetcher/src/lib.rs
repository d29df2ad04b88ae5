//! The wasm-oci fetcher: from an OCI reference to a verified wasm blob in the cache, and back.
//!
//! It resolves a reference to a manifest (choosing the wasm entry of an index), finds the wasm
//! layer by media type and streams it into [`wasm_oci_cache`]; `push` writes the CNCF or the
//! wasm-to-oci layout. It knows nothing of wasmtime.
//!
//! Rooms, each using only those listed before it:
//! - names and artifacts: [`reference`](parse_reference), `manifest`, [`text`], `inspect`;
//! - [`trust`]: signatures and the policy;
//! - `remote`: the transport (options, [`hosts`], [`auth`], TLS, clients, endpoints, registry
//!   requests, tokens, redirects, failures and their one classifier, retries);
//! - `walk`: an index to its image manifest, and the reference a pull or a load records;
//! - [`layout`]: OCI image layouts on disk;
//! - operations: `pull`, `push`, `resolve`, each handed what it needs by [`Fetcher`]
//!   (`fetcher.rs`), which is the only one to hold it all.
//!
//! `scripts/module-cycles` fails when two modules use each other.

#![deny(missing_docs)]

pub mod egress;
mod error;
mod fetcher;
mod inspect;
pub mod layout;
mod manifest;
mod progress;
mod pull;
mod push;
mod reference;
mod remote;
mod resolve;
pub mod text;
pub mod trust;
mod walk;

pub use error::{Error, Result};
pub use fetcher::Fetcher;
pub use inspect::{ComponentConfig, Interface, WasmKind, interface, interface_of_file};
pub use manifest::{
    CNCF_CONFIG_MEDIA_TYPE, CNCF_LAYER_MEDIA_TYPE, Choice, WASM_LAYER_MEDIA_TYPES,
    WASM_TO_OCI_CONFIG_MEDIA_TYPE, WASM_TO_OCI_LAYER_MEDIA_TYPE, choose,
};
pub use oci_client::Reference as OciReference;
pub use progress::{Blob, Progress, Transfer};
pub use pull::{ConfigCheck, Pulled};
pub use push::{PushFormat, Pushed};
pub use reference::{
    canonical_registry, is_node_local, parse_reference, registry_host, registry_key,
};
pub use remote::options::RegistryOptions;
pub use remote::{auth, hosts};
pub use resolve::{PullPolicy, Resolved, UnknownPullPolicy, resolve_cached};
pub use walk::WalkError;

// The old paths of what moved into the transport room, for code written against them; to
// be dropped once every caller names the room.
pub(crate) use remote::{registry, retry};
