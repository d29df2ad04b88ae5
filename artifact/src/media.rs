//! Media types of wasm artifacts, and the caps on the documents that describe them.

/// Layer media types that hold a wasm module or component.
pub const WASM_LAYER_MEDIA_TYPES: &[&str] = &[
    // CNCF TAG Runtime "wasm-oci" artifact spec.
    "application/wasm",
    // Bytecode Alliance components (wkg).
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    // wasm-to-oci (2019).
    "application/vnd.wasm.content.layer.v1+wasm",
    // solo.io / WebAssembly Hub.
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// Config media type of the CNCF layout.
pub const CNCF_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Config media type of the wasm-to-oci layout.
pub const WASM_TO_OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
/// Layer media type of the wasm-to-oci layout.
pub const WASM_TO_OCI_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Layer media type of the CNCF layout.
pub const CNCF_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Operating systems of index entries wasm-oci can run, in order of preference.
pub const WASM_OSES: &[&str] = &["wasip1", "wasip2", "wasi"];

/// The largest manifest, index or config read: they are a few KiB; anything larger is
/// refused before it is parsed (by its size when the size is known ahead).
pub const MAX_DOCUMENT: u64 = 4 << 20;
