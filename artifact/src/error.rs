//! The errors of this crate.

/// What went wrong with an artifact's name or description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a reference.
    #[error(
        "invalid reference {reference:?}: {reason}; expected [REGISTRY/]REPOSITORY[:TAG|@DIGEST], e.g. localhost:5000/hello:v1"
    )]
    InvalidReference {
        /// What the user typed.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An image index with no entry for a wasm platform.
    #[error(
        "{reference} is an image index with no entry for wasm/wasip1 or wasm/wasip2 (it has: {}); push a wasm artifact or name one of its manifests by digest",
        if platforms.is_empty() { "no platforms".to_owned() } else { platforms.join(", ") }
    )]
    NoMatchingPlatform {
        /// The reference asked for.
        reference: String,
        /// The platforms the index lists, as `os/arch` (escaped).
        platforms: Vec<String>,
    },
    /// The manifest has no layer of a wasm media type.
    #[error(
        "{reference} has no wasm layer (config {config_media_type}, layers: {}); it is not a wasm artifact. Accepted layer types: {}{}",
        if layer_media_types.is_empty() { "none".to_owned() } else { layer_media_types.join(", ") },
        crate::media::WASM_LAYER_MEDIA_TYPES.join(", "),
        if config_media_type == oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE {
            ". It is a Linux container image: if it is the one `wasm-oci push` writes beside \
             the wasm, it was copied without the index that holds both (`skopeo copy` without \
             --all, `crane copy --platform`); copy the index whole (`skopeo copy --all`, \
             `wasm-oci copy`, `oras cp`), or run the reference push wrote"
        } else {
            ""
        }
    )]
    NoWasmLayer {
        /// The reference asked for.
        reference: String,
        /// The config's media type (escaped).
        config_media_type: String,
        /// The media types of the layers found (escaped).
        layer_media_types: Vec<String>,
    },
    /// More than one wasm layer: which one to run is ambiguous.
    #[error(
        "{reference} has {count} wasm layers; wasm-oci runs artifacts with exactly one. Name a single-module artifact instead"
    )]
    AmbiguousWasmLayers {
        /// The reference asked for.
        reference: String,
        /// How many wasm layers it has.
        count: usize,
    },
    /// The document is neither an image manifest nor an image index.
    #[error("the manifest of {reference} is invalid: {reason}")]
    InvalidManifest {
        /// The reference asked for.
        reference: String,
        /// What is wrong with it (escaped).
        reason: String,
    },
    /// The manifest an index entry names is not the size the entry says.
    #[error("its index entry {digest} says {says} bytes, but that manifest is {is} bytes")]
    EntrySize {
        /// The manifest's digest (escaped).
        digest: String,
        /// The size the index says.
        says: i64,
        /// The manifest's size.
        is: usize,
    },
    /// An index entry names another index.
    #[error("an image index points to another index; nested indexes are not followed")]
    Nested,
}
