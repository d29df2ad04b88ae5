//! `wasm-oci copy SRC DST`: an artifact from a registry or an OCI image layout to another,
//! byte for byte, with its signatures and referrers.

use std::process::ExitCode;

use clap::Args;
use wasm_oci_fetcher::{CopyOptions, Place};

use super::naming::Naming;
use crate::GlobalOptions;

/// Copy an artifact between registries, or to and from an OCI image layout.
///
/// Manifests and blobs are copied byte for byte (the digests stay), an index with every
/// entry. The cosign signatures (sha256-<hex>.sig) and the OCI 1.1 referrers of what is
/// copied go along, recursively, unless --no-referrers. Blobs the destination has are not
/// sent again; within one registry they are mounted from the source repository. The tag
/// is written last, so a copy stopped halfway leaves no tag pointing at missing content.
/// A layout is named oci:DIR[:TAG], as skopeo and oras name it. Nothing is run, so no
/// signature policy applies: the policy applies where the copy is run from.
///
/// Examples:
///     wasm-oci copy registry.a/hello:v1 registry.b/hello:v1
///     wasm-oci copy localhost:5000/hello:v1 oci:./airgap:v1
///     wasm-oci copy oci:./airgap:v1 registry.internal/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CopyCommand {
    /// Where from: a reference, or oci:DIR[:TAG]
    source: String,

    /// Where to: a reference, or oci:DIR[:TAG]
    destination: String,

    /// Copy the artifact only, without its signatures and referrers
    #[arg(long)]
    no_referrers: bool,

    /// Print JSON on stdout: source, destination, digest, media_type, manifests,
    /// blobs_sent, bytes_sent, blobs_present, blobs_mounted, signatures and referrers
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl CopyCommand {
    /// Copies and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let source = Place::parse(&self.source)?;
        let destination = Place::parse(&self.destination)?;
        // `--username` is for the registry written to, else the one read.
        let registry = destination
            .registry()
            .or(source.registry())
            .unwrap_or_default()
            .to_owned();
        let fetcher = global.fetcher_running_nothing(&registry)?;
        let options = CopyOptions {
            referrers: !self.no_referrers,
        };
        let copied = crate::block_on(fetcher.copy(&source, &destination, options))?
            .naming(&[&self.source, &self.destination], || {
                format!("copying {} to {}", self.source, self.destination)
            })?;
        if self.json {
            crate::print_json(&copied)?;
        } else {
            crate::outln!("Copied: {}", copied.destination);
            crate::outln!("Digest: {}", copied.digest);
            eprintln!(
                "{} manifests, {} blobs sent ({} bytes), {} present, {} mounted; {} signatures, \
                 {} referrers",
                copied.manifests,
                copied.blobs_sent,
                copied.bytes_sent,
                copied.blobs_present,
                copied.blobs_mounted,
                copied.signatures,
                copied.referrers
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
