//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/`), for air-gapped
//! nodes: written from the cache, read back into it with every digest verified, or run from.
//!
//! Entries are named the way skopeo and containerd name them: `org.opencontainers.image.ref.name`
//! holds the tag (`oci:DIR:TAG`), `io.containerd.image.name` the full reference.
//!
//! A layout is data from elsewhere, never a set of paths to follow: every file of it is opened
//! without following a symlink and without blocking (a FIFO must not hang us), must be a
//! regular file, and documents are refused by their size before a byte is read. `save`
//! writes into a directory someone else may have prepared: only through temporary files it
//! created itself, renamed into place.
//!
//! The room: `file` reads a layout's files; `read` walks its entries to their artifacts;
//! `trusted` checks them against the signature policy; `save` and `load` move them between
//! a layout and the cache; `error` says what is wrong.

mod error;
pub(crate) mod file;
mod load;
pub(crate) mod read;
pub(crate) mod save;
mod trusted;

pub use error::LayoutError;
pub use load::{Replaced, load};
pub use read::{LayoutArtifact, artifacts};
pub use save::save;
pub use trusted::resolve_trusted;
