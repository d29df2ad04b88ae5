//! `wasm-oci pull REF`: fetch a wasm artifact into the cache, and optionally out of it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use wasm_oci_fetcher::parse_reference;

use super::naming::Naming;
use crate::GlobalOptions;

/// Pull a wasm artifact into the cache, verifying its digest.
///
/// With -o, also write the module to a file (or, when -o names a directory, to the file name
/// the artifact's title annotation gives, when that is a plain name that does not start with
/// a dot; else REPOSITORY.wasm). The file appears whole or not at all, and an existing file
/// is not replaced unless --force says so.
///
/// Examples:
///     wasm-oci pull localhost:5000/hello:v1
///     wasm-oci pull localhost:5000/hello:v1 -o hello.wasm
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PullCommand {
    /// What to pull, e.g. localhost:5000/hello:v1 or localhost:5000/hello@sha256:...
    reference: String,

    /// Also write the module to this file or directory (--out, the older spelling, works too)
    #[arg(long, short, value_name = "PATH", alias = "out")]
    output: Option<PathBuf>,

    /// Replace the file --output names (or the one it would write into a directory) when it
    /// exists
    #[arg(long)]
    force: bool,

    /// Print the result as JSON on stdout: reference, digest (the manifest's),
    /// layer_digest, layer_media_type, size, cached (the blob's path) and output (the file
    /// written with --output)
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,

    #[command(flatten)]
    trust: super::resolve::PolicyOption,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    artifact: super::output::Artifact,
    cached: &'a Path,
    /// The file written with --output.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Path>,
    /// The signatures the policy verified (key fingerprint, claimed identity, when).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    verified: Vec<super::output::Verified>,
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
        let out = match &self.output {
            Some(out) => {
                let fallback = format!(
                    "{}.wasm",
                    reference
                        .repository()
                        .rsplit('/')
                        .next()
                        .unwrap_or("module")
                );
                let title = pulled.title.as_deref();
                let target = output_path(out, title, &fallback);
                if let Some(title) = title
                    && out.is_dir()
                    && target.file_name() != Some(std::ffi::OsStr::new(title))
                {
                    // The registry names the file: a name that is a path, hidden or unprintable
                    // (`.bashrc`, `../x`) is not taken.
                    eprintln!(
                        "warning: the artifact's title {:?} is not a plain file name; writing {fallback}",
                        wasm_oci_artifact::text::printable(title)
                    );
                }
                copy_atomic(&pulled.path, &target, self.force)?;
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
                output: out.as_deref(),
                verified: verified(entry)
                    .iter()
                    .map(super::output::Verified::from)
                    .collect(),
            })?;
        } else {
            // Result lines on stdout, as oras prints them; progress went to stderr.
            crate::outln!("Pulled: {}", entry.reference);
            crate::outln!("Size: {}", entry.size);
            crate::outln!("Digest: {}", entry.manifest_digest);
            for v in verified(entry) {
                crate::outln!(
                    "Verified: signed for {} by key sha256:{}",
                    wasm_oci_artifact::text::printable(&v.identity),
                    v.key_fingerprint
                );
            }
            if let Some(out) = &out {
                crate::outln!(
                    "Wrote: {}",
                    wasm_oci_artifact::text::printable(&out.display().to_string())
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
/// that is not hidden (never a path that could climb out of `out`, nor `.bashrc`), else
/// `fallback`.
fn output_path(out: &Path, title: Option<&str>, fallback: &str) -> PathBuf {
    if !out.is_dir() {
        return out.to_owned();
    }
    let safe_title = title.filter(|t| {
        let p = Path::new(t);
        !t.is_empty()
            && !t.starts_with('.')
            && p.file_name().is_some_and(|n| n == p.as_os_str())
            && wasm_oci_artifact::text::printable(t) == *t
    });
    out.join(safe_title.unwrap_or(fallback))
}

/// Copies through a temporary file beside `to`, so `to` is never seen half-written; an
/// existing `to` is replaced only when `force` says so (and then atomically), else refused,
/// also when it appears meanwhile.
fn copy_atomic(from: &Path, to: &Path, force: bool) -> anyhow::Result<()> {
    let mut blob = fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let shown = || wasm_oci_artifact::text::printable(&to.display().to_string());
    let exists = || anyhow::anyhow!("{} exists: pass --force to replace it", shown());
    if force {
        return Ok(wasm_oci_cache::write_atomic_from(to, &mut blob, 0o644)?);
    }
    if to.symlink_metadata().is_ok() {
        return Err(exists());
    }
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::io::copy(&mut blob, tmp.as_file_mut()).with_context(|| format!("writing {}", shown()))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("writing {}", shown()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", shown()))?;
    // link(2), not rename(2): a file that appeared since the check above is not replaced.
    match tmp.persist_noclobber(to) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(e) => Err(e.error).with_context(|| format!("writing {}", shown())),
    }
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
        for evil in [
            "../evil.wasm",
            "/etc/passwd",
            "a/b.wasm",
            "..",
            "",
            ".",
            ".bashrc",
            ".ssh",
            "x\u{1b}]0;title\u{7}.wasm",
        ] {
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
