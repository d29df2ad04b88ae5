//! `wasm-oci push FILE REF`: publish a wasm module or component as an OCI artifact; with
//! `--platform OS=FILE` (repeatable), several of them as one image index.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wasm_oci_artifact::text::printable;
use wasm_oci_fetcher::{
    Fetcher, OciReference as Reference, PushExtras, PushFormat, Signed, parse_reference,
};
use wasm_oci_trust::key::PrivateKey;

use super::naming::Naming;
use crate::GlobalOptions;

/// Push a .wasm file to a registry as an OCI artifact.
///
/// The default layout is the CNCF TAG Runtime one (config application/vnd.wasm.config.v0+json,
/// layer application/wasm, os wasip1 for a module or wasip2 for a component). REF names an
/// image index of that manifest and a Linux image holding the module, so that one reference
/// serves `wasm-oci run`, oras and wkg (the wasm entry) and containerd (`image: REF` under the
/// wasmoci runtime); --no-image writes the wasm manifest alone at REF. Prints the reference,
/// the size, the digest REF names (pin `image: REF@DIGEST` with it) and the wasm manifest's
/// (what pull, inspect and the cache report); pulling by either gets exactly this content.
///
/// Examples:
///     wasm-oci push hello.wasm localhost:5000/hello:v1
///     wasm-oci push --format wasm-to-oci hello.wasm localhost:5000/hello:v1
///     wasm-oci push -a org.opencontainers.image.source=https://example.com/hello \
///         hello.wasm localhost:5000/hello:v1
///     wasm-oci push --platform wasip1=hello.wasm --platform wasip2=hello.component.wasm \
///         localhost:5000/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PushCommand {
    /// The .wasm file (core module or component); leave it out with --platform
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// Where to push it, e.g. localhost:5000/hello:v1
    #[arg(value_name = "REFERENCE")]
    reference: Option<String>,

    /// Push FILE as the index entry for platform OS/wasm (repeatable; OS is wasip1 for a core
    /// module, wasip2 for a component): each file becomes a manifest pushed by digest, and
    /// REF names one image index of them all, which run, oras and skopeo read
    #[arg(long = "platform", value_name = "OS=FILE", value_parser = parse_platform)]
    platforms: Vec<(String, PathBuf)>,

    /// Artifact layout to write
    #[arg(long, value_enum, default_value_t = Format::Cncf)]
    format: Format,

    /// Write only the wasm manifest at REF, not the index of it and its Linux image (what
    /// `wasm-to-oci` and `wkg oci push` write, and the default of --format wasm-to-oci);
    /// containerd cannot then run `image: REF`
    #[arg(long, overrides_with = "image")]
    no_image: bool,

    /// Write, beside the wasm manifest, a Linux image holding the module as its entrypoint,
    /// and push an index of both to REF (the default): containerd then runs `image: REF`
    /// under the wasmoci runtime (containerd 1.6 and 2.x), and wasm readers take the index's
    /// wasm entry: wasm-oci and oras by its wasip platform, wkg and other oci-client readers
    /// by a linux/ARCH entry of variant `wasm` that names it again (containerd and docker skip
    /// that variant)
    #[arg(long, overrides_with = "no_image")]
    image: bool,

    /// Print the result as JSON on stdout: reference, digest (the index's, or with
    /// --no-image the manifest's), manifest_digest (the wasm manifest's in the index),
    /// layer_digest, layer_media_type, config_media_type, size and kind
    #[arg(long)]
    json: bool,

    /// Sign what REF names with this private key (cosign's format, password from
    /// COSIGN_PASSWORD), as `wasm-oci sign` does; with the index, its wasm manifest too
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
        if !self.platforms.is_empty() {
            return self.execute_platforms(global);
        }
        let (Some(file), Some(reference_text)) = (&self.file, &self.reference) else {
            anyhow::bail!(
                "push takes FILE then REF (or --platform OS=FILE ... then REF); run \
                 `wasm-oci push hello.wasm localhost:5000/hello:v1`"
            );
        };
        let (file, reference_text) = (file.clone(), reference_text.clone());
        swapped(&file, &reference_text)?;
        let Prepared {
            reference,
            fetcher,
            format,
            key,
            extras,
        } = self.prepare(global, &reference_text, self.writes_image())?;
        let pushed = crate::block_on(fetcher.push_with(&file, &reference, format, &extras))?
            .naming(&[&reference_text, &file.display().to_string()], || {
                format!("pushing {} to {}", file.display(), reference_text)
            })?;
        let mut signed = sign_pushed(&fetcher, &reference, &reference_text, &pushed.digest, &key)?
            .into_iter()
            .collect::<Vec<_>>();
        // The wasm manifest in the index too, as `cosign sign --recursive` signs an index's
        // entries: `REF@<manifest digest>` (what pull and inspect report) then verifies.
        if let Some(manifest) = &pushed.manifest_digest {
            signed.extend(sign_pushed(
                &fetcher,
                &reference,
                &reference_text,
                manifest,
                &key,
            )?);
        }
        if self.json {
            crate::print_json(&pushed)?;
        } else {
            // Result lines on stdout, as oras prints them.
            crate::outln!("Pushed: {}", pushed.reference);
            crate::outln!("Size: {}", pushed.size);
            crate::outln!("Digest: {}", pushed.digest);
            // The wasm manifest in the index the tag names: the digest every other verb reports.
            if let Some(manifest) = &pushed.manifest_digest {
                crate::outln!("Manifest: {manifest}");
            }
            for signed in &signed {
                crate::outln!("Signed: {} ({})", signed.signature_tag, signed.identity);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl PushCommand {
    /// Whether the Linux image and the index are written: by default for the CNCF layout;
    /// the 2019 wasm-to-oci layout is for readers that take the tag as one manifest.
    fn writes_image(&self) -> bool {
        self.image || (!self.no_image && matches!(self.format, Format::Cncf))
    }

    /// `push --platform OS=FILE ... REF`: checks the command line, then pushes the index.
    fn execute_platforms(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference_text = match (&self.file, &self.reference) {
            (Some(reference), None) => reference.to_string_lossy().into_owned(),
            (Some(file), Some(_)) => anyhow::bail!(
                "{} is given as a FILE beside --platform: with --platform every file is given \
                 as --platform OS=FILE and only REF follows; run `wasm-oci push --platform \
                 {}={} ... REF`",
                printable(&file.to_string_lossy()),
                os_of_guess(file),
                printable(&file.to_string_lossy())
            ),
            (None, _) => anyhow::bail!(
                "push --platform OS=FILE ... needs the REF to push the index to; run \
                 `wasm-oci push --platform wasip1=a.wasm --platform wasip2=b.wasm \
                 localhost:5000/hello:v1`"
            ),
        };
        let mut seen = std::collections::BTreeSet::new();
        for (os, _) in &self.platforms {
            if !seen.insert(os.as_str()) {
                anyhow::bail!(
                    "--platform {os} is given twice: an index holds one entry per platform; \
                     give each OS once (wasip1 for the core module, wasip2 for the component)"
                );
            }
        }
        // --no-image is what --platform writes anyway: an index of wasm manifests only.
        if self.image {
            anyhow::bail!(
                "--image does not apply to --platform: --platform writes an index of wasm \
                 manifests only; push one file to have its Linux image beside it"
            );
        }
        let Prepared {
            reference,
            fetcher,
            format,
            key,
            extras,
        } = self.prepare(global, &reference_text, false)?;
        let pushed =
            crate::block_on(fetcher.push_platforms(&self.platforms, &reference, format, &extras))?
                .naming(&[&reference_text], || {
                    format!(
                        "pushing an index of {} platforms to {reference_text}",
                        self.platforms.len()
                    )
                })?;
        let signed = sign_pushed(&fetcher, &reference, &reference_text, &pushed.digest, &key)?;
        if self.json {
            crate::print_json(&pushed)?;
        } else {
            for entry in &pushed.manifests {
                crate::outln!(
                    "Pushed {}/{}: {} ({} bytes, {})",
                    entry.os,
                    entry.architecture,
                    entry.pushed.digest,
                    entry.pushed.size,
                    entry.pushed.reference
                );
            }
            crate::outln!("Pushed: {}", pushed.reference);
            crate::outln!("Digest: {}", pushed.digest);
            if let Some(signed) = &signed {
                crate::outln!("Signed: {} ({})", signed.signature_tag, signed.identity);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// What both shapes of push need before anything is sent.
struct Prepared {
    reference: Reference,
    fetcher: Fetcher,
    format: PushFormat,
    key: Option<PrivateKey>,
    extras: PushExtras,
}

impl PushCommand {
    /// Parses the reference, makes the fetcher and opens the signing key: the key is opened
    /// before anything is pushed, so a wrong password pushes nothing.
    fn prepare(
        &self,
        global: &GlobalOptions,
        reference_text: &str,
        image: bool,
    ) -> anyhow::Result<Prepared> {
        let reference = parse_reference(reference_text)?;
        // REF@DIGEST names one document, the wasm manifest: no index can have its digest.
        let image = match (image, reference.digest()) {
            (true, Some(digest)) if self.image => anyhow::bail!(
                "--image pushes an index to a tag, and {} names a digest ({}); push to a tag, \
                 or leave out --image to push the wasm manifest by its digest",
                printable(reference_text),
                printable(digest)
            ),
            (true, Some(_)) => {
                eprintln!(
                    "note: {} names a digest: pushing the wasm manifest alone, by that digest \
                     (containerd runs `image:` from the index a push to a tag writes)",
                    printable(reference_text)
                );
                false
            }
            (image, _) => image,
        };
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let format = match self.format {
            Format::Cncf => PushFormat::Cncf,
            Format::WasmToOci => PushFormat::WasmToOci,
        };
        let key = match &self.sign_key {
            Some(path) => Some(super::sign::read_private_key(path)?),
            None => None,
        };
        let extras = PushExtras {
            annotations: self.annotations.iter().cloned().collect(),
            artifact_type: self.artifact_type.clone(),
            image,
        };
        Ok(Prepared {
            reference,
            fetcher,
            format,
            key,
            extras,
        })
    }
}

/// Signs what a push wrote, by the digest it wrote: not a second reading of the tag, since
/// what the registry answers for the tag now is not necessarily what was pushed.
fn sign_pushed(
    fetcher: &Fetcher,
    reference: &Reference,
    reference_text: &str,
    digest: &str,
    key: &Option<PrivateKey>,
) -> anyhow::Result<Option<Signed>> {
    let Some(key) = key else {
        return Ok(None);
    };
    let signed = crate::block_on(fetcher.sign(reference, digest, key))?
        .naming(&[reference_text], || format!("signing {reference_text}"))?;
    Ok(Some(signed))
}

/// A guess of the platform of `file` for a hint: wasip2 when it is a component.
fn os_of_guess(file: &Path) -> &'static str {
    let mut header = [0u8; 8];
    let read = std::fs::File::open(file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .is_ok();
    if read && header[4..] != [1, 0, 0, 0] {
        "wasip2"
    } else {
        "wasip1"
    }
}

/// Parses `--platform OS=FILE`: OS is one of the WASI platforms an index entry names.
fn parse_platform(text: &str) -> Result<(String, PathBuf), String> {
    let Some((os, file)) = text.split_once('=') else {
        return Err(format!(
            "expected OS=FILE, e.g. wasip1=hello.wasm, not {}",
            printable(text)
        ));
    };
    if !matches!(os, "wasip1" | "wasip2") {
        return Err(format!(
            "{} is not a WASI platform: use wasip1 (a core module) or wasip2 (a component)",
            printable(os)
        ));
    }
    if file.is_empty() {
        return Err("expected OS=FILE with a file after the `=`".to_owned());
    }
    Ok((os.to_owned(), PathBuf::from(file)))
}

/// Refuses REF FILE (the order of `oras push` and `wkg oci push`) with both named for what
/// they look like, before anything is read or sent.
fn swapped(file: &Path, reference: &str) -> anyhow::Result<()> {
    if file.is_file() {
        return Ok(());
    }
    let file_text = file.to_string_lossy();
    if super::resolve::looks_like_file(reference) && parse_reference(&file_text).is_ok() {
        let p = printable;
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
