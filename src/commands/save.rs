//! `wasm-oci save REF... -o DIR` and `wasm-oci load DIR`: OCI image layouts for air-gapped nodes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use wasm_oci_fetcher::layout;

use serde::Serialize;

use super::naming::Naming;
use super::output::Artifact;
use super::resolve::{PullPolicy, Resolved};
use crate::GlobalOptions;

/// Write references (pulled first when not cached) to an OCI image layout directory.
///
/// The layout is what `skopeo copy oci:DIR:TAG docker://...` and `wasm-oci load` read; each
/// entry is named by its tag (org.opencontainers.image.ref.name) and by its full reference
/// (io.containerd.image.name). Saving into an existing layout adds to it. The cosign
/// signatures kept with a reference (pulled under a policy, or prefetched) are written too,
/// as its sha256-HEX.sig entry, for `load` to verify. What is attached to each (its OCI 1.1
/// referrers, see `attach`) is asked of the registry and written as the index tagged
/// sha256-HEX that `wasm-oci copy oci:DIR:TAG REF` carries on; without the registry, the
/// layout is written without them, and said so.
///
/// Examples:
///     wasm-oci save localhost:5000/hello:v1 -o ./airgap
///     skopeo copy oci:./airgap:v1 docker://registry.internal/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SaveCommand {
    /// References to save
    #[arg(required = true)]
    references: Vec<String>,

    /// The layout directory to write
    #[arg(long, short, value_name = "DIR")]
    output: PathBuf,

    /// Print what was saved as JSON on stdout: a list of reference, digest (the manifest's),
    /// layer_digest, layer_media_type and size
    #[arg(long)]
    json: bool,

    /// Save the artifacts without their referrers (what `attach` attached, as sha256-HEX
    /// index entries)
    #[arg(long)]
    no_referrers: bool,

    #[command(flatten)]
    trust: super::resolve::PolicyOption,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl SaveCommand {
    /// Resolves and writes.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let mut entries = Vec::new();
        // Held until the layout is written, so that a prune cannot take a blob away meanwhile.
        let mut held = Vec::new();
        let trust = self.trust.load()?;
        for name in &self.references {
            let mut resolved = Resolved::new(global, name, PullPolicy::Missing, &trust)?;
            let (_, entry) = resolved
                .cached()
                .with_context(|| format!("{name} is not a registry reference"))?;
            if entry.config_digest.is_none() {
                resolved = Resolved::new(global, name, PullPolicy::Always, &trust)?;
            }
            entries.push(resolved.cached().expect("a reference").1.clone());
            held.push(resolved);
        }
        let mut tags: Vec<_> = self
            .references
            .iter()
            .filter_map(|r| {
                wasm_oci_fetcher::parse_reference(r)
                    .ok()?
                    .tag()
                    .map(str::to_owned)
            })
            .collect();
        tags.sort();
        if let Some(w) = tags.windows(2).find(|w| w[0] == w[1]) {
            bail!(
                "two references share the tag {}, which names one entry in a layout; save them to separate directories",
                w[0]
            );
        }
        let cache = global.open_cache()?;
        layout::save(&cache, &self.output, &entries)
            .naming(&[&self.output.display().to_string()], || {
                format!("saving to {}", self.output.display())
            })?;
        if !self.no_referrers {
            self.save_referrers(global, &entries);
        }
        if self.json {
            let saved: Vec<Artifact> = entries.iter().map(Artifact::from).collect();
            crate::print_json(&saved)?;
        } else {
            for e in &entries {
                crate::outln!("Saved: {} ({})", e.reference, e.manifest_digest);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl SaveCommand {
    /// Writes the referrers of each saved entry (and of what they lead to) into the layout,
    /// through `copy`: asked of the registry, each blob verified. A registry that cannot be
    /// asked leaves the layout as it is, with a warning.
    fn save_referrers(&self, global: &GlobalOptions, entries: &[wasm_oci_cache::RefEntry]) {
        for entry in entries {
            let Ok(reference) = wasm_oci_fetcher::parse_reference(&entry.reference) else {
                continue;
            };
            let subject = entry
                .signatures
                .as_ref()
                .map_or(&entry.manifest_digest, |s| &s.signed_digest)
                .to_string();
            let at =
                wasm_oci_fetcher::Place::Registry(wasm_oci_fetcher::OciReference::with_digest(
                    reference.registry().to_owned(),
                    reference.repository().to_owned(),
                    subject,
                ));
            let into = wasm_oci_fetcher::Place::Layout {
                dir: self.output.clone(),
                tag: None,
            };
            let copied = global
                .fetcher_running_nothing(reference.registry())
                .and_then(|fetcher| {
                    crate::block_on(fetcher.copy(&at, &into, Default::default()))?
                        .map_err(anyhow::Error::from)
                });
            match copied {
                Ok(copied) if copied.referrers > 0 => {
                    eprintln!("{}: {} referrers saved", entry.reference, copied.referrers)
                }
                Ok(_) => {}
                Err(e) => match &entry.referrers {
                    Some(kept) => eprintln!(
                        "warning: the referrers of {} are not asked of the registry ({e:#}); the {} kept in the cache are saved",
                        entry.reference,
                        kept.kept.len()
                    ),
                    None => eprintln!(
                        "warning: the referrers of {} are not saved: {e:#}",
                        entry.reference
                    ),
                },
            }
        }
    }
}

/// Import an OCI image layout into the cache, every blob verified, to run offline.
///
/// Each entry is recorded under its full reference (io.containerd.image.name, as wasm-oci save
/// and containerd write it); a layout that only names tags (as skopeo writes it) needs
/// --repository to say which repository those tags belong to.
///
/// A layout is data from elsewhere: its files must be regular files (a symlink, FIFO or
/// directory is refused), its documents small, and a name it claims that the cache already
/// holds for other content (pulled from a registry, or loaded before) is refused, and
/// nothing is loaded, unless --force says to replace it.
///
/// The signature policy (--policy, WASM_OCI_POLICY, /etc/wasm-oci/policy.json) is enforced
/// with the signatures the layout holds (save writes them as sha256-HEX.sig entries): an
/// artifact it refuses fails the load, and nothing is loaded.
///
/// Examples:
///     wasm-oci load ./airgap
///     wasm-oci load ./from-skopeo --repository localhost:5000/hello
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LoadCommand {
    /// The layout directory
    dir: PathBuf,

    /// Repository for entries named only by a tag, e.g. registry.internal/hello
    #[arg(long, value_name = "REGISTRY/REPO")]
    repository: Option<String>,

    /// Replace cached references that the layout names with other content
    #[arg(long)]
    force: bool,

    /// Print what was loaded as JSON on stdout: a list of reference, digest (the
    /// manifest's), layer_digest, layer_media_type, size, and replaced (the manifest digest
    /// --force replaced, if any)
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    trust: super::resolve::PolicyOption,
}

#[derive(Serialize)]
struct Loaded {
    #[serde(flatten)]
    artifact: Artifact,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced: Option<String>,
}

impl LoadCommand {
    /// Imports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let policy = self.trust.load()?;
        let cache = global.open_cache()?;
        let (loaded, replaced) = layout::load(
            &cache,
            &self.dir,
            self.repository.as_deref(),
            self.force,
            &policy,
        )
        .naming(&[&self.dir.display().to_string()], || {
            format!("loading {}", self.dir.display())
        })?;
        for r in &replaced {
            eprintln!(
                "replaced {}: it was {}, it is now {} (--force)",
                r.reference, r.was, r.now
            );
        }
        if self.json {
            let loaded: Vec<Loaded> = loaded
                .iter()
                .map(|e| Loaded {
                    artifact: e.into(),
                    replaced: replaced
                        .iter()
                        .find(|r| r.reference == e.reference)
                        .map(|r| r.was.to_string()),
                })
                .collect();
            crate::print_json(&loaded)?;
        } else {
            // One write for many lines: a catalogue loads 100,000 of them.
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for e in &loaded {
                let _ = writeln!(out, "Loaded: {} ({})", e.reference, e.manifest_digest);
            }
            let _ = out.flush();
        }
        Ok(ExitCode::SUCCESS)
    }
}
