//! `wasm-oci save REF... -o DIR` and `wasm-oci load DIR`: OCI image layouts for air-gapped nodes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use wasm_oci_fetcher::layout;

use super::{PullPolicy, Resolved};
use crate::GlobalOptions;

/// Write references (pulled first when not cached) to an OCI image layout directory.
///
/// The layout is what `skopeo copy oci:DIR:TAG docker://...` and `wasm-oci load` read; each
/// entry is named by its tag (org.opencontainers.image.ref.name) and by its full reference
/// (io.containerd.image.name). Saving into an existing layout adds to it.
///
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
}

impl SaveCommand {
    /// Resolves and writes.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let mut entries = Vec::new();
        // Held until the layout is written, so that a prune cannot take a blob away meanwhile.
        let mut held = Vec::new();
        for name in &self.references {
            let mut resolved = Resolved::new(global, name, PullPolicy::Missing)?;
            let (_, entry) = resolved
                .cached()
                .with_context(|| format!("{name} is not a registry reference"))?;
            if entry.config_digest.is_none() {
                resolved = Resolved::new(global, name, PullPolicy::Always)?;
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
            .with_context(|| format!("saving to {}", self.output.display()))?;
        for e in &entries {
            eprintln!("Saved: {} ({})", e.reference, e.manifest_digest);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Import an OCI image layout into the cache, verifying every blob, so that its references
/// run offline.
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
}

impl LoadCommand {
    /// Imports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let cache = global.open_cache()?;
        let (loaded, replaced) =
            layout::load(&cache, &self.dir, self.repository.as_deref(), self.force)
                .with_context(|| format!("loading {}", self.dir.display()))?;
        for r in &replaced {
            eprintln!(
                "replaced {}: it was {}, it is now {} (--force)",
                r.reference, r.was, r.now
            );
        }
        // One write for many lines: stderr is unbuffered, and eprintln! writes each piece.
        use std::io::Write as _;
        let mut err = std::io::BufWriter::new(std::io::stderr().lock());
        for e in &loaded {
            let _ = writeln!(err, "Loaded: {} ({})", e.reference, e.layer_digest);
        }
        let _ = err.flush();
        Ok(ExitCode::SUCCESS)
    }
}
