//! Trust: cosign-compatible signatures of manifests (key pairs in cosign's format, the
//! simple-signing payload, signatures stored as the `sha256-<hex>.sig` attachment), the
//! `containers-policy.json(5)` policy that decides what may be pulled and run, and the one
//! [`Gate`] that every path asks: pulls, layouts, the resolver's cached verdicts, `verify` and
//! the shim. Pure: no transport; whoever fetched the signatures hands them in.

#![deny(missing_docs)]

mod code;
mod error;
mod file;
pub mod gate;
pub mod key;
pub mod payload;
pub mod policy;
pub mod signatures;

pub use error::{InvalidSignature, Refusal};
pub use file::{MAX_KEY_FILE, read_trust_file};
pub use gate::{Gate, admit_unnamed};
pub use policy::{Policy, PolicyError, Scope, SignatureBlob, SignedIdentity};
pub use signatures::Fetched;
