//! `wasm-oci verify REF --key PUB`: which cosign signatures of REF are valid.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use wasm_oci_fetcher::parse_reference;
use wasm_oci_fetcher::trust::key::PublicKey;
use wasm_oci_fetcher::trust::policy::SignedIdentity;

use crate::GlobalOptions;

/// Verify the cosign signatures of a reference against a public key.
///
/// Lists the valid signatures: made by the key, over a payload that names the digest the
/// reference resolves to and its repository. Exits 1 when none is valid, saying why each one
/// failed (no signature, another key, a payload for another digest or repository).
///
/// Examples:
///     wasm-oci verify localhost:5000/hello:v1 --key release.pub
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyCommand {
    /// What to verify, e.g. localhost:5000/hello:v1
    reference: String,

    /// The public key (PEM, as cosign and `wasm-oci key generate` write it)
    #[arg(long, value_name = "PUB")]
    key: std::path::PathBuf,

    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

#[derive(Serialize)]
struct Output<'a> {
    reference: &'a str,
    digest: &'a str,
    key_fingerprint: &'a str,
    valid: &'a [Valid],
    invalid: &'a [String],
}

#[derive(Serialize)]
struct Valid {
    identity: String,
    payload_digest: String,
}

impl VerifyCommand {
    /// Verifies and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let pem = wasm_oci_fetcher::trust::read_trust_file(
            &self.key,
            wasm_oci_fetcher::trust::MAX_KEY_FILE,
        )
        .with_context(|| format!("reading the key {}", self.key.display()))?;
        let key = PublicKey::from_pem(&pem)
            .with_context(|| format!("the key {} cannot be used", self.key.display()))?;
        let fetcher = global.fetcher(reference.registry())?;
        let (digest, fetched) = crate::block_on(fetcher.signatures(&reference))?
            .with_context(|| format!("fetching the signatures of {}", self.reference))?;
        let blobs = fetched
            .as_ref()
            .map(|f| f.layers.as_slice())
            .unwrap_or_default();
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for (i, (payload_digest, blob)) in blobs.iter().enumerate() {
            match wasm_oci_fetcher::trust::verify_one(
                &reference,
                &digest,
                blob,
                std::slice::from_ref(&key),
                &SignedIdentity::MatchRepository,
            ) {
                Ok(verdict) => valid.push(Valid {
                    identity: verdict.identity,
                    payload_digest: payload_digest.to_string(),
                }),
                Err(reason) => invalid.push(format!("signature {}: {reason}", i + 1)),
            }
        }
        if self.json {
            crate::print_json(&Output {
                reference: &self.reference,
                digest: &digest,
                key_fingerprint: &super::output::fingerprint(key.fingerprint()),
                valid: &valid,
                invalid: &invalid,
            })?;
        } else {
            for v in &valid {
                crate::outln!(
                    "Valid: {} signed for {} by sha256:{}",
                    digest,
                    v.identity,
                    key.fingerprint()
                );
            }
        }
        if valid.is_empty() {
            let why = match blobs.len() {
                0 => format!("it has no signature ({} has no sha256-<hex>.sig)", digest),
                _ => invalid.join("; "),
            };
            bail!(
                "{} has no valid signature by {}: {why}",
                self.reference,
                self.key.display()
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
