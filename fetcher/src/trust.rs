//! The trust crate ([`wasm_oci_trust`]) at the path this crate used to define it; the
//! signatures' transport is [`crate::Fetcher::signatures`] and [`crate::Fetcher::sign`].

pub use wasm_oci_trust::signatures::{Fetched, MAX_SIGNATURE_MANIFEST, MAX_SIGNATURES};
pub use wasm_oci_trust::{
    Gate, InvalidSignature, MAX_KEY_FILE, Refusal, admit_unnamed, gate, key, payload, policy,
    read_trust_file, signatures,
};
