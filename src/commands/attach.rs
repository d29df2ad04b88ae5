//! `wasm-oci attach REF FILE --artifact-type TYPE`: attach a file to a manifest as an OCI 1.1
//! artifact whose `subject` is that manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wasm_oci_fetcher::parse_reference;

use super::naming::Naming;
use crate::GlobalOptions;

/// Attach a file (an SBOM, a note, precompiled code) to an artifact in a registry.
///
/// Pushes FILE as an OCI 1.1 artifact manifest whose subject is REF's manifest. Where the
/// registry has no referrers API (Docker Distribution 2.8), the index tagged sha256-<hex>
/// of REF's digest is updated too, last, as oras and cosign do; `wasm-oci discover` lists
/// what is attached either way.
///
/// Examples:
///     wasm-oci attach localhost:5000/hello:v1 sbom.spdx.json --artifact-type application/spdx+json
///     wasm-oci attach localhost:5000/hello:v1 notes.txt --artifact-type text/plain -a purpose=review
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AttachCommand {
    /// The artifact to attach to, e.g. localhost:5000/hello:v1
    reference: String,

    /// The file to attach
    file: PathBuf,

    /// What the attached file is (the artifact manifest's artifactType)
    #[arg(long, value_name = "TYPE", value_parser = super::annotations::parse_media_type)]
    artifact_type: String,

    /// Add an annotation to the artifact manifest (repeatable)
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE",
          value_parser = super::annotations::parse_annotation)]
    annotations: Vec<(String, String)>,

    /// Print JSON on stdout: reference, digest, subject and referrers_tag
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl AttachCommand {
    /// Attaches and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let annotations = self.annotations.iter().cloned().collect();
        let attached = crate::block_on(fetcher.attach(
            &reference,
            &self.file,
            &self.artifact_type,
            &annotations,
        ))?
        .naming(&[&self.reference, &self.file.display().to_string()], || {
            format!("attaching {} to {}", self.file.display(), self.reference)
        })?;
        if self.json {
            crate::print_json(&attached)?;
        } else {
            crate::outln!("Attached: {}", attached.reference);
            crate::outln!("Subject: {}", attached.subject);
            crate::outln!("Digest: {}", attached.digest);
        }
        Ok(ExitCode::SUCCESS)
    }
}
