//! `wasm-oci discover REF`: what is attached to an artifact (its OCI 1.1 referrers).

use std::process::ExitCode;

use clap::Args;
use wasm_oci_artifact::text::printable;
use wasm_oci_fetcher::parse_reference;

use super::naming::Naming;
use crate::GlobalOptions;

/// List what is attached to an artifact (its OCI 1.1 referrers).
///
/// Asks the registry's referrers API, or, where it has none (Docker Distribution 2.8), reads
/// the index tagged sha256-<hex> of the artifact's digest. One line per referrer: its
/// digest, artifact type and size; precompiled code (`compile --push`) says for what
/// target and engine it is, and whether this host's `run` or shim engine could load it.
///
/// The referrers are those of what REF names. The tag `push` writes names an index (the wasm
/// manifest and its Linux image): `attach REF` attaches to that index, while `compile --push`
/// attaches code to the wasm manifest it was compiled from; `inspect --precompiled REF` lists
/// that code, and `discover REF@<manifest digest>` lists it here.
///
/// Examples:
///     wasm-oci discover localhost:5000/hello:v1
///     wasm-oci discover --json --artifact-type application/spdx+json localhost:5000/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DiscoverCommand {
    /// The artifact, e.g. localhost:5000/hello:v1
    reference: String,

    /// List only the referrers of this artifact type
    #[arg(long, value_name = "TYPE")]
    artifact_type: Option<String>,

    /// Print JSON on stdout: reference, digest (the subject's), source and referrers (each
    /// with digest, mediaType, size, artifactType and annotations)
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl DiscoverCommand {
    /// Lists and prints.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let mut found = crate::block_on(fetcher.referrers(&reference))?
            .naming(&[&self.reference], || {
                format!("listing what is attached to {}", self.reference)
            })?;
        if let Some(wanted) = &self.artifact_type {
            found
                .referrers
                .retain(|r| r.artifact_type.as_deref() == Some(wanted.as_str()));
        }
        // Precompiled code: whether this host could load it (signatures are checked when it
        // is used, under the policy then in force).
        let host = super::precompiled::Host::new();
        if self.json {
            let mut json = serde_json::to_value(&found)?;
            if let Some(list) = json["referrers"].as_array_mut() {
                for (value, referrer) in list.iter_mut().zip(&found.referrers) {
                    if let Some(usable) = host.judge(referrer) {
                        value["compiled"] = serde_json::to_value(usable)?;
                    }
                }
            }
            crate::print_json(&json)?;
        } else {
            for referrer in &found.referrers {
                let compiled = host
                    .judge(referrer)
                    .map(|usable| format!(" {}", usable.summary()))
                    .unwrap_or_default();
                crate::outln!(
                    "{} {} {}{compiled}",
                    referrer.digest,
                    printable(referrer.artifact_type.as_deref().unwrap_or("-")),
                    referrer.size
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
