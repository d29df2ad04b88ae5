//! References and registry names: the rules live in [`wasm_oci_artifact::reference`]; this
//! module gives them this crate's error.

use oci_client::Reference;

pub use wasm_oci_artifact::reference::{
    canonical_registry, check_digest, is_loopback, is_node_local, registry_host, registry_key,
    split_host_port,
};

/// Parses `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` ([`wasm_oci_artifact::parse_reference`]),
/// with this crate's error.
pub fn parse_reference(text: &str) -> crate::Result<Reference> {
    Ok(wasm_oci_artifact::parse_reference(text)?)
}
