//! The wasm-oci cache: a small content-addressed database on disk.
//!
//! Blobs (wasm layers, manifests) live at `<root>/v1/blobs/sha256/<hex>` and are always whole and
//! correct: they are streamed into `<root>/v1/ingest/` first, checked for size and digest, synced
//! and atomically renamed into place. A small index maps references to what they resolved to, so
//! a cached reference starts without asking the registry. This crate knows nothing of HTTP.
//!
//! A writer stores what a reference needs under a [`Lease`] ([`Cache::begin`]), which keeps
//! `prune` off it until the reference is recorded. The rooms: [`ingest`](Ingest) (the protocol
//! of one blob) over `writer` (its buffers) and `store` (the steps into `blobs/`, shared with
//! `batch`); `holds`, `lease`, `refs`; the care of the cache in `verify`, `prune` and
//! `partials`; and `compiled`, native code kept beside the blobs.

#![deny(missing_docs)]

mod atomic;
mod batch;
mod cache;
mod compiled;
mod digest;
mod error;
mod files;
mod holds;
mod ingest;
mod lease;
mod partials;
mod prune;
mod refs;
mod store;
mod verify;
mod writer;

pub use atomic::{write_atomic, write_atomic_from};
pub use batch::BlobBatch;
pub use cache::{Cache, SYSTEM_DIR, default_dir};
pub use compiled::{CompiledCode, CompiledEntry, vouched_engine_key};
pub use digest::Digest;
pub use error::{Error, Result, Untrusted};
pub use holds::{Hold, SWEEP_GRACE};
pub use ingest::{Ingest, Ingested};
pub use lease::Lease;
pub use partials::STALE_PARTIAL;
pub use prune::{PrunePolicy, PruneReport};
pub use refs::{KeptReferrer, KeptReferrers, RefEntry, RefRecord, Signatures, Verdict};
pub use verify::{BadBlob, VerifyReport};
