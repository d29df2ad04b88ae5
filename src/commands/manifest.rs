//! `wasm-oci manifest REF`: a manifest, or an index and its entries, without downloading a
//! layer.

use std::process::ExitCode;

use clap::Args;
use wasm_oci_artifact::text::printable;
use wasm_oci_fetcher::parse_reference;

use super::naming::Naming;
use crate::GlobalOptions;

/// Show a manifest, or an index and its entries, without downloading a layer.
///
/// Reads manifests only: the digest, media type and size of the manifest, of its config and
/// of each layer; for an index, each entry with its platform and the same for its manifest.
///
/// Examples:
///     wasm-oci manifest localhost:5000/hello:v1
///     wasm-oci manifest --json localhost:5000/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ManifestCommand {
    /// The reference, e.g. localhost:5000/hello:v1
    reference: String,

    /// Print JSON on stdout: reference, digest, manifest_media_type, manifest_size (bytes),
    /// manifest and, for an index, entries (each with digest, manifest_media_type,
    /// manifest_size, platform and manifest); `size`, on every verb, is a wasm layer's
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

/// `manifest --json`: the manifest's size and media type named as such, since `size` on
/// every verb is a wasm layer's bytes.
#[derive(serde::Serialize)]
struct Json<'a> {
    reference: &'a str,
    digest: &'a str,
    manifest_media_type: &'a str,
    manifest_size: u64,
    manifest: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entries: Vec<EntryJson<'a>>,
}

/// An index entry in `manifest --json`.
#[derive(serde::Serialize)]
struct EntryJson<'a> {
    digest: &'a str,
    manifest_media_type: &'a str,
    manifest_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a serde_json::Value>,
    manifest: &'a serde_json::Value,
}

impl ManifestCommand {
    /// Reads and prints.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let described = crate::block_on(fetcher.describe(&reference))?
            .naming(&[&self.reference], || format!("reading {}", self.reference))?;
        if self.json {
            crate::print_json(&Json {
                reference: &described.reference,
                digest: &described.digest,
                manifest_media_type: &described.media_type,
                manifest_size: described.size,
                manifest: &described.manifest,
                entries: described
                    .entries
                    .iter()
                    .map(|e| EntryJson {
                        digest: &e.digest,
                        manifest_media_type: &e.media_type,
                        manifest_size: e.size,
                        platform: e.platform.as_ref(),
                        manifest: &e.manifest,
                    })
                    .collect(),
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        crate::outln!("Reference: {}", described.reference);
        crate::outln!("Digest: {}", described.digest);
        crate::outln!("Media type: {}", printable(&described.media_type));
        crate::outln!("Size: {}", described.size);
        print_parts(&described.manifest, "");
        for entry in &described.entries {
            let platform = entry
                .platform
                .as_ref()
                .map(|p| {
                    let part = |k: &str| p[k].as_str().unwrap_or("").to_owned();
                    format!(" {}/{}", part("architecture"), part("os"))
                })
                .unwrap_or_default();
            crate::outln!(
                "Manifest: {} {} {}{}",
                entry.digest,
                printable(&entry.media_type),
                entry.size,
                printable(&platform)
            );
            print_parts(&entry.manifest, "  ");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The config and the layers of an image manifest, one line each: media type, digest, size.
fn print_parts(manifest: &serde_json::Value, indent: &str) {
    let line = |what: &str, d: &serde_json::Value| {
        let text = |k: &str| printable(d[k].as_str().unwrap_or("?"));
        let size = d["size"].as_u64().map_or("?".to_owned(), |s| s.to_string());
        crate::outln!(
            "{indent}{what}: {} {} {size}",
            text("digest"),
            text("mediaType")
        );
    };
    if manifest["config"].is_object() {
        line("Config", &manifest["config"]);
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        line("Layer", layer);
    }
}
