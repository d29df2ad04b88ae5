//! `wasm-oci prefetch REF...`: pull (and precompile) many references at once, for edge nodes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;
use wasm_oci_fetcher::{Fetcher, parse_reference};
use wasm_oci_shim::{EngineOptions, Runner, Wasm};

use crate::GlobalOptions;

/// Pull and precompile many references concurrently, so later runs start at once, offline too.
///
/// Every later run of them starts without the network and without compiling.
/// Blobs that several references share are downloaded once. Interrupted downloads resume
/// where they stopped. A reference that fails is reported; the others still land. Exits 1
/// when any failed.
///
/// Examples:
///     wasm-oci prefetch localhost:5000/a:v1 localhost:5000/b:v1
///     wasm-oci prefetch --from-file modules.txt --jobs 16
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PrefetchCommand {
    /// References to pull
    references: Vec<String>,

    /// Also read references from this file, one per line ('#' starts a comment)
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,

    /// How many references to pull at once
    #[arg(long, short, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,

    /// Do not precompile the modules (compile on first run instead)
    #[arg(long)]
    no_compile: bool,

    /// Print the results as JSON on stdout: a list of reference, digest (the manifest's),
    /// layer_digest, layer_media_type, size, downloaded, compiled and error
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,

    #[command(flatten)]
    trust: super::resolve::PolicyOption,
}

#[derive(Serialize)]
struct Outcome {
    reference: String,
    /// The manifest's digest, as every verb reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    downloaded: bool,
    compiled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl PrefetchCommand {
    /// Pulls everything it was given.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let mut names = self.references.clone();
        if let Some(file) = &self.from_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            names.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or_default().trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        if names.is_empty() {
            anyhow::bail!(
                "nothing to prefetch: name references, or a file of them with --from-file"
            );
        }
        let bars = crate::progress::Bars::on_terminal(true);
        let plain = bars.is_none() && !self.json;
        // --username is for one registry: the one the references name.
        let mut registries: Vec<String> = names
            .iter()
            .filter_map(|n| parse_reference(n).ok())
            .map(|r| r.registry().to_owned())
            .collect();
        registries.sort();
        registries.dedup();
        if global.registry.username.is_some() && registries.len() > 1 {
            anyhow::bail!(
                "--username gives credentials for one registry, and these references name {}: \
                 log in to each with `wasm-oci login REGISTRY` instead",
                registries.join(", ")
            );
        }
        let registry = registries.first().map_or("", String::as_str);
        let trust = self.trust.load()?;
        // Signatures are kept whatever the policy, for nodes that verify later, offline.
        let mut fetcher = Fetcher::new(
            global.open_cache()?,
            global.registry_options(registry)?,
            Arc::new(trust),
        )
        .keeping_signatures();
        if let Some(bars) = bars.clone() {
            fetcher = fetcher.with_progress(bars);
        }
        let fetcher = Arc::new(fetcher);
        // Compiled for `wasm-oci run` and for the containerd shim, whose engines differ.
        let runners = match self.no_compile {
            true => Vec::new(),
            false => vec![
                Arc::new(Runner::new(EngineOptions::default())?),
                Arc::new(Runner::new(EngineOptions::SHIM)?),
            ],
        };
        let started = Instant::now();
        let total = names.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let done = &done;
        let outcomes: Vec<Outcome> = crate::block_on(
            futures_util::stream::iter(names)
                .map(|name| {
                    let (fetcher, runners) = (fetcher.clone(), runners.clone());
                    async move {
                        let outcome = prefetch_one(&fetcher, runners, &name).await;
                        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if plain {
                            match &outcome.error {
                                // A result line: stdout, as every verb's.
                                None => crate::outln!(
                                    "[{n}/{total}] pulled {} ({}, {} bytes){}",
                                    outcome.reference,
                                    outcome.digest.as_deref().unwrap_or_default(),
                                    outcome.size.unwrap_or_default(),
                                    if outcome.compiled { ", compiled" } else { "" }
                                ),
                                Some(e) => {
                                    eprintln!("[{n}/{total}] failed {}: {e}", outcome.reference)
                                }
                            }
                        }
                        outcome
                    }
                })
                .buffer_unordered(usize::from(self.jobs))
                .collect(),
        )?;
        let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
        // The summary on a clean screen: no bar (the total's) left above or between its lines.
        if let Some(bars) = &bars {
            bars.clear();
        }
        if self.json {
            crate::print_json(&outcomes)?;
        } else {
            eprintln!(
                "prefetched {} of {} references in {:.1?}",
                outcomes.len() - failed.len(),
                outcomes.len(),
                started.elapsed()
            );
            // Without bars, each failure was printed as it happened: once is enough.
            for f in failed.iter().filter(|_| !plain) {
                eprintln!(
                    "  failed {}: {}",
                    f.reference,
                    f.error.as_deref().unwrap_or_default()
                );
            }
        }
        Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

async fn prefetch_one(fetcher: &Fetcher, runners: Vec<Arc<Runner>>, name: &str) -> Outcome {
    let mut outcome = Outcome {
        reference: name.to_owned(),
        digest: None,
        layer_digest: None,
        layer_media_type: None,
        size: None,
        downloaded: false,
        compiled: false,
        error: None,
    };
    let pulled = match parse_reference(name) {
        Ok(reference) => fetcher.pull(&reference).await,
        Err(e) => Err(e),
    };
    let pulled = match pulled {
        Ok(p) => p,
        Err(e) => {
            outcome.error = Some(wasm_oci_artifact::text::printable(&format!(
                "{:#}",
                anyhow::Error::from(e)
            )));
            return outcome;
        }
    };
    outcome.digest = Some(pulled.entry.manifest_digest.to_string());
    outcome.layer_digest = Some(pulled.entry.layer_digest.to_string());
    outcome.layer_media_type = Some(pulled.entry.layer_media_type.clone());
    outcome.size = Some(pulled.entry.size);
    outcome.downloaded = pulled.downloaded;
    if !runners.is_empty() {
        let cache = fetcher.cache().clone();
        // Code compiled for the fleet, where the policy vouches for it; the rest compiles.
        for runner in &runners {
            wasm_oci_shim::precompiled::adopt(fetcher, &cache, &pulled.entry, runner).await;
        }
        let vouched = wasm_oci_fetcher::vouched_for(&pulled.entry);
        let compiled = tokio::task::spawn_blocking(move || {
            runners.iter().try_for_each(|runner| {
                runner
                    .load(
                        &pulled.path,
                        Wasm::Cached {
                            cache: &cache,
                            digest: &pulled.entry.layer_digest,
                            vouched_for: vouched.as_deref(),
                        },
                    )
                    .map(drop)
            })
        })
        .await
        .expect("compilation does not panic");
        match compiled {
            Ok(()) => outcome.compiled = true,
            Err(e) => {
                outcome.error = Some(wasm_oci_artifact::text::printable(&format!(
                    "{:#}",
                    anyhow::Error::from(e)
                )))
            }
        }
    }
    outcome
}
