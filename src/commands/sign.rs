//! `wasm-oci sign REF --key KEY`: a cosign signature of the manifest REF resolves to.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use wasm_oci_fetcher::parse_reference;
use wasm_oci_trust::key::PrivateKey;

use crate::GlobalOptions;

/// Sign the manifest a reference resolves to, as cosign does.
///
/// A tag is resolved once and the digest it resolved to is signed and printed (with a
/// warning on stderr, as cosign gives: a tag can move); REF@sha256:... signs that digest.
///
/// The simple-signing payload (the manifest digest and the repository) is signed with the
/// key (ECDSA P-256; cosign's encrypted key file, whose password comes from COSIGN_PASSWORD,
/// or a plain PKCS#8 PEM) and stored beside the artifact as cosign stores it: in the manifest
/// tagged sha256-HEX.sig, one layer per signature. Existing signatures are kept.
///
/// When REF names an image index (what `push` writes: the wasm manifest and its Linux image),
/// the index is what is signed; --recursive signs each of its entries too, as `cosign sign
/// --recursive` does, so that REF@<entry digest> (the wasm manifest's, which pull and inspect
/// report) verifies as well. `push --sign-key` signs the index and its wasm manifest.
///
/// Examples:
///     COSIGN_PASSWORD=... wasm-oci sign localhost:5000/hello:v1 --key release.key
///     COSIGN_PASSWORD=... wasm-oci sign --recursive localhost:5000/hello:v1 --key release.key
///     COSIGN_PASSWORD=... wasm-oci sign localhost:5000/hello@sha256:... --key release.key
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SignCommand {
    /// What to sign, e.g. localhost:5000/hello:v1
    reference: String,

    /// The private key (cosign's format or PKCS#8 PEM)
    #[arg(long, value_name = "KEY")]
    key: std::path::PathBuf,

    /// When REF names an image index, sign each of its entries too (cosign's --recursive)
    #[arg(long)]
    recursive: bool,

    /// Print the result as JSON on stdout (with --recursive, a list: the index first)
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl SignCommand {
    /// Signs and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let key = read_private_key(&self.key)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        // Resolved once; what is signed is that digest, printed below.
        let digest = crate::block_on(fetcher.digest_to_sign(&reference))?
            .with_context(|| format!("resolving {}", self.reference))?;
        if reference.digest().is_none() {
            // cosign's warning: a tag can move between the reading and the signing.
            eprintln!(
                "Warning: signing {} by tag: it resolved to {digest}, which is what is signed; \
                 sign {}/{}@{digest} to name the content yourself",
                self.reference,
                reference.registry(),
                reference.repository(),
            );
        }
        let mut digests = vec![digest.clone()];
        if self.recursive {
            // The index as it was resolved, by its digest: its entries are read from that.
            let pinned = wasm_oci_fetcher::OciReference::with_digest(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                digest.clone(),
            );
            let described = crate::block_on(fetcher.describe(&pinned))?
                .with_context(|| format!("reading the entries of {}", self.reference))?;
            for entry in described.entries {
                if !digests.contains(&entry.digest) {
                    digests.push(entry.digest);
                }
            }
        }
        let mut all = Vec::with_capacity(digests.len());
        for digest in &digests {
            let signed = crate::block_on(fetcher.sign(&reference, digest, &key))?
                .with_context(|| format!("signing {} ({digest})", self.reference))?;
            let mut json = serde_json::to_value(&signed)?;
            json["key_fingerprint"] = super::output::fingerprint(&signed.key_fingerprint).into();
            if !self.json {
                // Result lines on stdout, as push and pull print theirs.
                crate::outln!("Signed: {} ({})", signed.reference, signed.digest);
                crate::outln!("Identity: {}", signed.identity);
                crate::outln!(
                    "Stored as: {} ({} signatures)",
                    signed.signature_tag,
                    signed.signatures
                );
            }
            all.push(json);
        }
        if self.json {
            if self.recursive {
                crate::print_json(&serde_json::Value::Array(all))?;
            } else {
                crate::print_json(&all[0])?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Reads a private key file; an encrypted one is opened with COSIGN_PASSWORD, the one way
/// `sign` and `push --sign-key` take its password (their --password-stdin is the registry's).
pub(super) fn read_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    use wasm_oci_trust::key::KeyError;
    let pem = wasm_oci_trust::read_trust_file(path, wasm_oci_trust::MAX_KEY_FILE)
        .with_context(|| format!("reading the key {}", path.display()))?;
    let key = PrivateKey::from_pem(&pem, || {
        std::env::var_os("COSIGN_PASSWORD")
            .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
    });
    let shown = path.display();
    match key {
        Ok(key) => Ok(key),
        Err(KeyError::NeedsPassword) => bail!(
            "the key {shown} is encrypted: set COSIGN_PASSWORD to its password (here \
             --password-stdin is the registry's password, not the key's)"
        ),
        Err(KeyError::WrongPassword) => bail!(
            "the key {shown} cannot be used: COSIGN_PASSWORD does not decrypt it; set it to \
             the password the key was made with"
        ),
        Err(e) => Err(e).with_context(|| format!("the key {shown} cannot be used")),
    }
}
