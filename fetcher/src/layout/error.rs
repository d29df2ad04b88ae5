//! What can be wrong with an OCI layout: one variant per thing a user can find and fix, each
//! saying which file or blob. The crate's error wraps it with the layout's directory.

use std::path::PathBuf;

use wasm_oci_cache::Digest;

/// index.json and manifests are small; anything larger is refused before it is parsed.
pub(crate) const MAX_DOCUMENT: u64 = wasm_oci_artifact::media::MAX_DOCUMENT;

/// An OCI layout that cannot be read, written or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The layout's directory, or one save creates, cannot be used.
    #[error("{source}")]
    Dir {
        /// The OS error.
        source: std::io::Error,
    },
    /// A file of the layout cannot be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file of the layout is a symlink, or is reached through one.
    #[error(
        "{}: is a symlink or reached through one, not a regular file of the layout; refusing to follow it",
        path.display()
    )]
    Linked {
        /// The file.
        path: PathBuf,
    },
    /// A file of the layout is a directory, a FIFO, a device...
    #[error("{}: is not a regular file (a {kind}); refusing to read it", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A document (index.json, a manifest) too large to be one.
    #[error("{} is {len} bytes; documents over {MAX_DOCUMENT} bytes are refused", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// A document that grew past the cap while it was read.
    #[error("{} grew past {MAX_DOCUMENT} bytes while it was read", path.display())]
    Grew {
        /// The file.
        path: PathBuf,
    },
    /// A document that is not the JSON it should be.
    #[error("{file}: {source}")]
    Json {
        /// `index.json` or `oci-layout`.
        file: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// `oci-layout` names another version.
    #[error("oci-layout is not imageLayoutVersion 1.0.0")]
    Version,
    /// A directory save writes into is a symlink, or not a directory.
    #[error(
        "{} is a symlink or not a directory; save writes only into a real directory: remove it or save elsewhere",
        path.display()
    )]
    NotADirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The layout's index.json is there but cannot be read: save does not replace it.
    #[error(
        "{source}; save adds to an existing index.json and will not replace one it cannot read: remove it or save elsewhere"
    )]
    UnreadableIndex {
        /// Why it cannot be read.
        source: Box<LayoutError>,
    },
    /// A cached reference without its config cannot be saved whole.
    #[error("{reference} was cached without its config; pull it again")]
    NoConfig {
        /// The reference.
        reference: String,
    },
    /// A blob could not be written into the layout.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The blob's file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An entry's manifest is not one wasm-oci can use.
    #[error("manifest of {label}: {reason}")]
    Manifest {
        /// The entry (its ref name, or digest).
        label: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An index entry that does not lead to an image manifest of its size.
    #[error("{label}: {source}")]
    Walk {
        /// The entry.
        label: String,
        /// What is wrong with it.
        source: wasm_oci_artifact::Error,
    },
    /// A config larger than any config is.
    #[error(
        "{label}: its config {digest} claims {size} bytes; configs over {MAX_DOCUMENT} bytes are refused"
    )]
    ConfigTooLarge {
        /// The entry.
        label: String,
        /// The config's digest.
        digest: String,
        /// The size it claims.
        size: i64,
    },
    /// A layer with a negative size.
    #[error("negative layer size")]
    NegativeLayerSize,
    /// A digest that is not one.
    #[error("{0}")]
    Digest(wasm_oci_cache::Error),
    /// An entry's signatures cannot be read.
    #[error("{tag}: {reason}")]
    Signatures {
        /// The `sha256-<hex>.sig` tag.
        tag: String,
        /// What is wrong with them.
        reason: String,
    },
    /// A signature payload of another size than its manifest says.
    #[error("{tag}: payload {digest} is not the {size} bytes its manifest says")]
    PayloadSize {
        /// The `sha256-<hex>.sig` tag.
        tag: String,
        /// The payload's digest.
        digest: Digest,
        /// The size its manifest says.
        size: u64,
    },
    /// A blob whose content is not its digest.
    #[error("blob {digest} hashes to {actual}{}", bytes.map(|b| format!(" ({b} bytes)")).unwrap_or_default())]
    HashMismatch {
        /// The digest it is stored under.
        digest: Digest,
        /// What it hashes to.
        actual: Digest,
        /// How many bytes were hashed, when the size was checked too.
        bytes: Option<u64>,
    },
    /// A blob the cache refused to import for its content.
    #[error("blob {expected} hashes to {actual}; nothing was imported from it")]
    ImportMismatch {
        /// The digest it is stored under.
        expected: Digest,
        /// What it hashes to.
        actual: Digest,
    },
    /// A blob of another size than its manifest says.
    #[error("blob {digest} is {len} bytes; its manifest says {size}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Its size in the layout.
        len: u64,
        /// The size its manifest says.
        size: u64,
    },
    /// An entry with no full reference, loaded without `--repository`.
    #[error(
        "the entry {label} has no full reference name; pass --repository REGISTRY/REPO to name it"
    )]
    Unnamed {
        /// The entry (its ref name, escaped).
        label: String,
    },
    /// A load would point cached references at other content.
    #[error(
        "it would replace {reference} (cached as {was}) with other content ({now}){}; nothing was loaded. Pass --force to replace it",
        match others { 0 => String::new(), n => format!(" and {n} other cached references") }
    )]
    WouldReplace {
        /// The first reference it would replace.
        reference: String,
        /// What the cache has for it.
        was: Digest,
        /// What the layout has for it.
        now: Digest,
        /// How many more it would replace.
        others: usize,
    },
    /// A blob a concurrent prune removed while loading.
    #[error(
        "blob {digest} was removed while loading (a concurrent prune?): {source}; run load again"
    )]
    Removed {
        /// The blob.
        digest: Digest,
        /// The cache's error.
        source: wasm_oci_cache::Error,
    },
    /// An entry with no name, run under a policy that names scopes.
    #[error(
        "its entry {label} has no reference name (io.containerd.image.name), so no scope of the signature policy {policy} can be checked for it, and that policy does not accept anything everywhere; load it with `wasm-oci load --repository REGISTRY/REPO` to name it, or run a signed reference"
    )]
    UnnamedUnderPolicy {
        /// The entry (its ref name, escaped).
        label: String,
        /// The policy's file, or `(none)`.
        policy: String,
    },
    /// `oci:DIR` without a tag, of a layout with several artifacts.
    #[error("it holds several artifacts: name one as oci:DIR:TAG")]
    Several,
    /// `oci:DIR:TAG` of a tag the layout does not have.
    #[error("no artifact named {tag}")]
    NoArtifact {
        /// The tag asked for.
        tag: String,
    },
}
