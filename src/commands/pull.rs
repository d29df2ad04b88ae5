//! `wasm-oci pull REF`: fetch a wasm artifact into the cache, and optionally out of it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use wasm_oci_fetcher::parse_reference;

use super::Naming;
use crate::GlobalOptions;

/// Pull a wasm artifact into the cache, verifying its digest.
///
/// With --out, also write the module to a file (or, when --out names a directory, to the file
/// name the artifact's title annotation gives). The file appears whole or not at all.
///
/// Examples:
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

    /// Print the result as JSON on stdout: reference, digest (the manifest's),
    /// layer_digest, layer_media_type, size, cached (the blob's path) and out
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,

    #[command(flatten)]
    trust: super::PolicyOption,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    artifact: super::Artifact,
    cached: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<&'a Path>,
    /// The signatures the policy verified (key fingerprint, claimed identity).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    verified: &'a [wasm_oci_cache::Verdict],
    /// The host each manifest and blob downloaded just now came from, by digest.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    sources: &'a std::collections::BTreeMap<String, String>,
}

impl PullCommand {
    /// Pulls and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let trust = self.trust.load()?;
        let fetcher = global.fetcher(reference.registry(), std::sync::Arc::new(trust))?;
        let pulled = crate::block_on(fetcher.pull(&reference))?
            .naming(&[&self.reference], || format!("pulling {}", self.reference))?;
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
                artifact: entry.into(),
                cached: &pulled.path,
                sources: &pulled.sources,
                out: out.as_deref(),
                verified: verified(entry),
            })?;
        } else {
            // Result lines on stdout, as oras prints them; progress went to stderr.
            crate::outln!("Pulled: {}", entry.reference);
            crate::outln!("Size: {}", entry.size);
            crate::outln!("Digest: {}", entry.manifest_digest);
            for v in verified(entry) {
                crate::outln!(
                    "Verified: signed for {} by key sha256:{}",
                    wasm_oci_fetcher::text::printable(&v.identity),
                    v.key_fingerprint
                );
            }
            if let Some(out) = &out {
                crate::outln!(
                    "Wrote: {}",
                    wasm_oci_fetcher::text::printable(&out.display().to_string())
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The signatures a policy verified for `entry`.
fn verified(entry: &wasm_oci_cache::RefEntry) -> &[wasm_oci_cache::Verdict] {
    entry
        .signatures
        .as_deref()
        .map_or(&[], |s| s.valid.as_slice())
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
    let mut blob = fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    Ok(wasm_oci_cache::write_atomic_from(to, &mut blob, 0o644)?)
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
