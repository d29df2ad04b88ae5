//! `wasm-oci key generate PREFIX`: a key pair in cosign's format.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use wasm_oci_trust::key::PrivateKey;

use crate::GlobalOptions;

/// Manage signing keys in cosign's format.
///
/// Examples:
///     COSIGN_PASSWORD=... wasm-oci key generate ./release
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum KeyCommand {
    /// Generate an ECDSA P-256 key pair in cosign's format.
    ///
    /// It writes PREFIX.key (encrypted with the password from --password-stdin or
    /// COSIGN_PASSWORD, mode 0600) and PREFIX.pub.
    ///
    /// cosign reads both files (cosign sign --key PREFIX.key, cosign verify --key PREFIX.pub),
    /// and a policy's sigstoreSigned keyPath names PREFIX.pub.
    ///
    /// Examples:
    ///     COSIGN_PASSWORD=... wasm-oci key generate ./release
    ///     wasm-oci key generate --password-stdin ./release < password.txt
    #[command(verbatim_doc_comment)]
    Generate {
        /// Where to write: PREFIX.key and PREFIX.pub (like cosign generate-key-pair's
        /// --output-key-prefix)
        prefix: PathBuf,
        /// Replace existing files
        #[arg(long)]
        force: bool,
        /// Read the key's password from standard input instead of COSIGN_PASSWORD
        #[arg(long)]
        password_stdin: bool,
    },
}

impl KeyCommand {
    /// Runs the subcommand.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        match self {
            KeyCommand::Generate {
                prefix,
                force,
                password_stdin,
            } => generate(global, &prefix, force, password_stdin),
        }
    }
}

fn generate(
    _global: &GlobalOptions,
    prefix: &Path,
    force: bool,
    password_stdin: bool,
) -> anyhow::Result<ExitCode> {
    let password = key_password(password_stdin)?;
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private, public) = (with(".key"), with(".pub"));
    for path in [&private, &public] {
        if !force && path.exists() {
            bail!(
                "{} exists; pass --force to replace it, or choose another prefix",
                path.display()
            );
        }
    }
    let key = PrivateKey::generate();
    // The private key 0600 from the start: its temporary file is private until renamed.
    let write = |path: &Path, text: String, mode| {
        wasm_oci_cache::write_atomic_from(path, &mut text.as_bytes(), mode)
            .with_context(|| format!("writing {}", path.display()))
    };
    write(&private, key.to_encrypted_pem(&password), 0o600)?;
    write(&public, key.public().to_pem(), 0o644)?;
    eprintln!("Private key written to {}", private.display());
    eprintln!("Public key written to {}", public.display());
    crate::outln!("sha256:{}", key.public().fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// The password of a new key: one line of stdin with --password-stdin, else COSIGN_PASSWORD
/// (which may be empty, as with cosign).
fn key_password(stdin: bool) -> anyhow::Result<Vec<u8>> {
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the key password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).as_bytes().to_vec());
    }
    match std::env::var_os("COSIGN_PASSWORD") {
        Some(p) => Ok(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec()),
        None => bail!(
            "no password for the key: set COSIGN_PASSWORD (empty for none) or pass --password-stdin"
        ),
    }
}
