//! The wasm-oci fetcher: from an OCI reference to a verified wasm blob in the cache, and back.
//!
//! It resolves a reference to a manifest (choosing the wasm entry of an index), finds the wasm
//! layer by media type and streams it into [`wasm_oci_cache`]; `push` writes the CNCF or the
//! wasm-to-oci layout. It knows nothing of wasmtime.
//!
//! Rooms, each using only those listed before it:
//! - names and artifacts: [`reference`](parse_reference) and `inspect` (media types, the
//!   choice of manifest and printable text are [`wasm_oci_artifact`]'s, signatures and the
//!   policy [`wasm_oci_trust`]'s);
//! - `remote`: the transport (options, [`hosts`], [`auth`], TLS, clients, endpoints, registry
//!   requests, tokens, redirects, failures and their one classifier, retries);
//! - `walk`: the reference a pull or a load records (the walk's pure step and the choice of
//!   manifest are [`wasm_oci_artifact`]'s);
//! - [`layout`]: OCI image layouts on disk;
//! - operations: `pull`, `push`, `resolve`, `tags` (list, retag), `describe` (a manifest
//!   without its layers), `referrers` (attach, discover), `copy` (registry or layout to
//!   registry or layout, with signatures and referrers), `precompiled` (code compiled for
//!   the fleet, attached and adopted), each handed what it needs by [`Fetcher`]
//!   (`fetcher.rs`), which is the only one to hold it all.
//!
//! `scripts/check-cycles` fails when two modules use each other.

#![deny(missing_docs)]

mod copy;
mod describe;
pub mod egress;
mod error;
mod fetcher;
mod image;
mod inspect;
pub mod layout;
mod precompiled;
mod progress;
mod pull;
mod push;
mod reference;
mod referrers;
mod remote;
mod resolve;
mod signatures;
mod tags;
mod walk;

pub use copy::{Copied, CopyOptions, Place};
pub use describe::{Described, Entry};
pub use error::{Error, Result, TrustRefusal};
pub use fetcher::Fetcher;
pub use inspect::{ComponentConfig, Interface, WasmKind, interface, interface_of_file};
pub use oci_client::Reference as OciReference;
pub use precompiled::{Adopted, CompiledFor, Passed, Wanted, repository_of, vouched_for};
pub use progress::{Blob, Progress, Transfer};
pub use pull::{ConfigCheck, LocalLayer, Pulled};
pub use push::{PushExtras, PushFormat, Pushed, PushedIndex, PushedPlatform};
pub use reference::parse_reference;
pub use referrers::{Attached, MAX_ATTACHMENT, Referrer, Referrers, referrers_tag};
pub use remote::options::RegistryOptions;
pub use remote::{auth, hosts};
pub use resolve::{PullPolicy, Resolved, UnknownPullPolicy, resolve_cached};
pub use signatures::Signed;
pub use tags::{DEFAULT_PAGE_SIZE, Tagged, is_valid_tag};
