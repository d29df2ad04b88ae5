//! References: the rules live in [`wasm_oci_artifact::reference`]; this module gives the
//! parser this crate's error.

use oci_client::Reference;

/// Parses `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` ([`wasm_oci_artifact::parse_reference`]),
/// with this crate's error.
pub fn parse_reference(text: &str) -> crate::Result<Reference> {
    Ok(wasm_oci_artifact::parse_reference(text)?)
}
