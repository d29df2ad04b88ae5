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

/// Artifact type of precompiled native code attached to a wasm artifact as an OCI referrer
/// (`wasm-oci compile --push`): one layer, [`COMPILED_LAYER_MEDIA_TYPE`], whose `subject` is
/// the module's manifest. Its annotations say what it is for (the `COMPILED_*` keys below).
pub const COMPILED_ARTIFACT_TYPE: &str = "application/vnd.wasm-oci.compiled.v1";
/// Media type of the layer of a [`COMPILED_ARTIFACT_TYPE`] artifact: what wasmtime's
/// `Engine::precompile_module` or `precompile_component` wrote.
pub const COMPILED_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm-oci.compiled.layer.v1";
/// Annotation: the wasmtime version that compiled the code.
pub const COMPILED_WASMTIME: &str = "dev.wasm-oci.compiled.wasmtime";
/// Annotation: the target triple the code runs on (`x86_64-unknown-linux-gnu`).
pub const COMPILED_TARGET: &str = "dev.wasm-oci.compiled.target";
/// Annotation: the compiling engine's compatibility hash (wasmtime's
/// `Engine::precompile_compatibility_hash`, hashed to hex); code loads only into an engine
/// with the same.
pub const COMPILED_ENGINE: &str = "dev.wasm-oci.compiled.engine";
/// Annotation: `module` or `component`.
pub const COMPILED_KIND: &str = "dev.wasm-oci.compiled.kind";
/// Annotation: the digest of the wasm layer the code was compiled from.
pub const COMPILED_WASM: &str = "dev.wasm-oci.compiled.wasm";
/// The largest compiled code read from a registry (an 18 MB Python component compiles to
/// some 100 MB).
pub const MAX_COMPILED: u64 = 1 << 30;
