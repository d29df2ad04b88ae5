//! Text made safe to print: the rule lives in [`wasm_oci_artifact::text`].

pub use wasm_oci_artifact::text::printable;
