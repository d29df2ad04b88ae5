//! `wasm-oci pull REF`: fetch a wasm artifact into the cache, and optionally out of it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use wasm_oci_fetcher::parse_reference;

use crate::GlobalOptions;

/// Pull a wasm artifact into the cache, verifying its digest.
///
/// With --out, also write the module to a file (or, when --out names a directory, to the file
/// name the artifact's title annotation gives). The file appears whole or not at all.
///
///     wasm-oci pull localhost:5000/hello:v1
///     wasm-oci pull localhost:5000/hello:v1 --out hello.wasm
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PullCommand {
    /// What to pull, e.g. localhost:5000/hello:v1 or localhost:5000/hello@sha256:...
    reference: String,

    /// Also write the module to this file or directory
    #[arg(long, short, value_name = "PATH")]
    out: Option<PathBuf>,

    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    reference: &'a str,
    digest: String,
    manifest_digest: String,
    media_type: &'a str,
    size: u64,
    cached: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<&'a Path>,
    /// The host each manifest and blob downloaded just now came from, by digest.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    sources: &'a std::collections::BTreeMap<String, String>,
}

impl PullCommand {
    /// Pulls and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let fetcher = global.fetcher(reference.registry())?;
        let pulled = crate::block_on(fetcher.pull(&reference))?
            .with_context(|| format!("pulling {}", self.reference))?;
        let out = match &self.out {
            Some(out) => {
                let fallback = format!(
                    "{}.wasm",
                    reference
                        .repository()
                        .rsplit('/')
                        .next()
                        .unwrap_or("module")
                );
                let target = output_path(out, pulled.title.as_deref(), &fallback);
                copy_atomic(&pulled.path, &target)?;
                Some(target)
            }
            None => None,
        };
        let entry = &pulled.entry;
        if self.json {
            crate::print_json(&Output {
                reference: &entry.reference,
                digest: entry.layer_digest.to_string(),
                manifest_digest: entry.manifest_digest.to_string(),
                media_type: &entry.layer_media_type,
                size: entry.size,
                cached: &pulled.path,
                sources: &pulled.sources,
                out: out.as_deref(),
            })?;
        } else {
            eprintln!("Pulled: {}", entry.reference);
            eprintln!("Size: {}", entry.size);
            eprintln!("Digest: {}", entry.manifest_digest);
            if let Some(out) = &out {
                eprintln!(
                    "Wrote: {}",
                    wasm_oci_fetcher::text::printable(&out.display().to_string())
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `out` itself, or inside it when it is a directory: the title when it is a plain file name
/// (never a path that could climb out of `out`), else `fallback`.
fn output_path(out: &Path, title: Option<&str>, fallback: &str) -> PathBuf {
    if !out.is_dir() {
        return out.to_owned();
    }
    let safe_title = title.filter(|t| {
        let p = Path::new(t);
        !t.is_empty()
            && p.file_name().is_some_and(|n| n == p.as_os_str())
            && *t != ".."
            && wasm_oci_fetcher::text::printable(t) == *t
    });
    out.join(safe_title.unwrap_or(fallback))
}

/// Copies through a temporary file beside `to`, so `to` is never seen half-written.
fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::copy(&mut fs::File::open(from)?, tmp.as_file_mut())?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))?;
        tmp.as_file().sync_all()?;
        tmp.persist(to).map_err(|e| e.error)?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_never_leads_out_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(
            output_path(d, Some("hello.wasm"), "x.wasm"),
            d.join("hello.wasm")
        );
        for evil in ["../evil.wasm", "/etc/passwd", "a/b.wasm", "..", "", "."] {
            assert_eq!(
                output_path(d, Some(evil), "x.wasm"),
                d.join("x.wasm"),
                "{evil}"
            );
        }
        assert_eq!(output_path(d, None, "x.wasm"), d.join("x.wasm"));
        assert_eq!(
            output_path(&d.join("f.wasm"), Some("t"), "x"),
            d.join("f.wasm")
        );
    }
}
