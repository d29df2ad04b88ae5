//! `wasm-oci push FILE REF`: publish a wasm module or component as an OCI artifact.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wasm_oci_fetcher::{PushExtras, PushFormat, parse_reference};

use super::naming::Naming;
use crate::GlobalOptions;

/// Push a .wasm file to a registry as an OCI artifact.
///
/// The default layout is the CNCF TAG Runtime one (config application/vnd.wasm.config.v0+json,
/// layer application/wasm, os wasip1 for a module or wasip2 for a component). Prints the
/// reference, the size and the manifest digest; pull by that digest to get exactly this content.
///
/// Examples:
///     wasm-oci push hello.wasm localhost:5000/hello:v1
///     wasm-oci push --format wasm-to-oci hello.wasm localhost:5000/hello:v1
///     wasm-oci push -a org.opencontainers.image.source=https://example.com/hello \
///         hello.wasm localhost:5000/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PushCommand {
    /// The .wasm file (core module or component)
    file: PathBuf,

    /// Where to push it, e.g. localhost:5000/hello:v1
    reference: String,

    /// Artifact layout to write
    #[arg(long, value_enum, default_value_t = Format::Cncf)]
    format: Format,

    /// Also write a Linux image holding the module as its entrypoint, and push an index of
    /// both to REF: containerd then runs `image: REF` under the wasmoci runtime (containerd
    /// 1.6 and 2.x), and wasm readers (wasm-oci, oras) take the index's wasm entry. wkg and
    /// other oci-client readers choose linux/amd64 from an index: push without it for them
    #[arg(long)]
    image: bool,

    /// Print the result as JSON on stdout: reference, digest (the manifest's, or with
    /// --image the index's), manifest_digest (with --image: the wasm manifest's),
    /// layer_digest, layer_media_type, config_media_type, size and kind
    #[arg(long)]
    json: bool,

    /// Sign the pushed manifest with this private key (cosign's format, password from
    /// COSIGN_PASSWORD), as `wasm-oci sign` does
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,

    /// Add an annotation to the manifest (repeatable)
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE",
          value_parser = super::annotations::parse_annotation)]
    annotations: Vec<(String, String)>,

    /// The manifest's artifactType [default: the layout's, application/vnd.wasm.config.v0+json for cncf]
    #[arg(long, value_name = "TYPE", value_parser = super::annotations::parse_media_type)]
    artifact_type: Option<String>,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// CNCF TAG Runtime wasm artifact (what wkg, runwasi and Spin read)
    Cncf,
    /// The wasm-to-oci (2019) layout: config vnd.wasm.config.v1+json, layer vnd.wasm.content.layer.v1+wasm
    WasmToOci,
}

impl PushCommand {
    /// Pushes and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        swapped(&self.file, &self.reference)?;
        let reference = parse_reference(&self.reference)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let format = match self.format {
            Format::Cncf => PushFormat::Cncf,
            Format::WasmToOci => PushFormat::WasmToOci,
        };
        // The key is opened before anything is pushed: a wrong password pushes nothing.
        let key = match &self.sign_key {
            Some(path) => Some(super::sign::read_private_key(path)?),
            None => None,
        };
        let extras = PushExtras {
            annotations: self.annotations.iter().cloned().collect(),
            artifact_type: self.artifact_type.clone(),
            image: self.image,
        };
        let pushed = crate::block_on(fetcher.push_with(&self.file, &reference, format, &extras))?
            .naming(&[&self.reference, &self.file.display().to_string()], || {
            format!("pushing {} to {}", self.file.display(), self.reference)
        })?;
        let signed = match &key {
            Some(key) => {
                // The digest this push wrote, not a second reading of the tag: what the
                // registry answers for the tag now is not necessarily what was pushed.
                let signed = crate::block_on(fetcher.sign(&reference, &pushed.digest, key))?
                    .naming(&[&self.reference], || format!("signing {}", self.reference))?;
                Some(signed)
            }
            None => None,
        };
        if self.json {
            crate::print_json(&pushed)?;
        } else {
            // Result lines on stdout, as oras prints them.
            crate::outln!("Pushed: {}", pushed.reference);
            crate::outln!("Size: {}", pushed.size);
            crate::outln!("Digest: {}", pushed.digest);
            if let Some(signed) = &signed {
                crate::outln!("Signed: {} ({})", signed.signature_tag, signed.identity);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Refuses REF FILE (the order of `oras push` and `wkg oci push`) with both named for what
/// they look like, before anything is read or sent.
fn swapped(file: &Path, reference: &str) -> anyhow::Result<()> {
    if file.is_file() {
        return Ok(());
    }
    let file_text = file.to_string_lossy();
    if super::resolve::looks_like_file(reference) && parse_reference(&file_text).is_ok() {
        let p = wasm_oci_artifact::text::printable;
        anyhow::bail!(
            "push takes FILE then REF: {} looks like a file and {} like a reference (oras and \
             wkg take them the other way round); run `wasm-oci push {} {}`",
            p(reference),
            p(&file_text),
            p(reference),
            p(&file_text)
        );
    }
    Ok(())
}
