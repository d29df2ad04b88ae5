//! Picking the wasm out of a manifest: the rule lives in [`wasm_oci_artifact::manifest`]; its
//! errors become this crate's by `From<wasm_oci_artifact::Error>` (`error.rs`). The old paths,
//! for callers written against them.

pub use wasm_oci_artifact::manifest::{Choice, choose};
pub use wasm_oci_artifact::media::{
    CNCF_CONFIG_MEDIA_TYPE, CNCF_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPES,
    WASM_TO_OCI_CONFIG_MEDIA_TYPE, WASM_TO_OCI_LAYER_MEDIA_TYPE,
};
