//! `wasm-oci cache ls|verify|prune`: look after the cache.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use wasm_oci_cache::PrunePolicy;

use crate::GlobalOptions;
use crate::units::{parse_duration, parse_size};

/// Look after the cache: list, verify and prune what it holds.
///
///     wasm-oci cache ls
///     wasm-oci cache verify
///     wasm-oci cache prune --max-size 500MiB --older-than 720h
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CacheCommand {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List cached references with their digests, sizes and last use, most recent first
    Ls {
        /// Print JSON on stdout: an array streamed as the index is read (in no particular
        /// order; sort by last_used), so that a cache of 100,000 references starts printing
        /// at once and holds no list in memory
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob; remove and report the damaged ones (exit 1 if any). Partial
    /// downloads untouched for a day that no running pull holds are removed too
    Verify {
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Remove least recently used references and their blobs; never a blob a running
    /// process uses or a pull is recording. Blobs no reference uses are removed too (once
    /// ten minutes old), and partial downloads untouched for a day that no pull holds
    Prune {
        /// Shrink the cache to at most this size, e.g. 500MiB
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<usize>,
        /// Remove references not used for this long, e.g. 720h
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Listed {
    reference: String,
    digest: String,
    manifest_digest: String,
    media_type: String,
    size: u64,
    /// Seconds since the Unix epoch.
    last_used: u64,
}

impl CacheCommand {
    /// Runs the chosen action.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let cache = global.open_cache()?;
        match self.action {
            Action::Ls { json: true } => {
                stream_json(&cache)?;
                Ok(ExitCode::SUCCESS)
            }
            Action::Ls { json: false } => {
                let refs = cache.refs().context("listing the cache")?;
                let listed: Vec<Listed> = refs.into_iter().rev().map(Listed::from).collect();
                {
                    let width = listed
                        .iter()
                        .map(|l| l.reference.len())
                        .max()
                        .unwrap_or(9)
                        .max(9);
                    // One write per buffer, not per line: 100,000 lines are 100,000 writes.
                    use std::io::Write as _;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    let written = (|| {
                        writeln!(
                            out,
                            "{:<width$}  {:<19}  {:>10}  LAST USED",
                            "REFERENCE", "DIGEST", "SIZE"
                        )?;
                        for l in &listed {
                            writeln!(
                                out,
                                "{:<width$}  {:<19}  {:>10}  {}",
                                l.reference,
                                &l.digest[..19.min(l.digest.len())],
                                human_size(l.size),
                                ago(l.last_used)
                            )?;
                        }
                        out.flush()
                    })();
                    match written {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        other => other.context("writing to stdout")?,
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Verify { json } => {
                let report = cache.verify().context("verifying the cache")?;
                if json {
                    crate::print_json(&report)?;
                } else {
                    reclaimed(report.reclaimed_partials);
                    for bad in &report.removed {
                        eprintln!(
                            "removed {}: its content hashes to {}",
                            bad.expected, bad.actual
                        );
                    }
                    eprintln!(
                        "verified {} blobs ({}): {} damaged{}",
                        report.checked,
                        human_size(report.bytes),
                        report.removed.len(),
                        if report.partial > 0 {
                            format!(", {} partial downloads kept for resuming", report.partial)
                        } else {
                            String::new()
                        }
                    );
                }
                Ok(if report.removed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Action::Prune {
                max_size,
                older_than,
                json,
            } => {
                if max_size.is_none() && older_than.is_none() {
                    anyhow::bail!(
                        "say what to prune: --max-size SIZE, --older-than DURATION, or both"
                    );
                }
                let report = cache
                    .prune(PrunePolicy {
                        max_size: max_size.map(|s| s as u64),
                        older_than,
                    })
                    .context("pruning the cache")?;
                if json {
                    crate::print_json(&report)?;
                } else {
                    reclaimed(report.reclaimed_partials);
                    // One write for many lines: stderr is unbuffered, and a prune may remove
                    // tens of thousands of references.
                    use std::io::Write as _;
                    let mut err = std::io::BufWriter::new(std::io::stderr().lock());
                    for r in &report.removed_refs {
                        let _ = writeln!(err, "removed {r}");
                    }
                    for r in &report.in_use {
                        let _ = writeln!(err, "kept {r}: in use by a running process");
                    }
                    let _ = err.flush();
                    drop(err);
                    eprintln!(
                        "freed {}; the cache now holds {}",
                        human_size(report.freed),
                        human_size(report.size)
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

impl From<wasm_oci_cache::RefRecord> for Listed {
    fn from(r: wasm_oci_cache::RefRecord) -> Listed {
        Listed {
            reference: r.entry.reference,
            digest: r.entry.layer_digest.to_string(),
            manifest_digest: r.entry.manifest_digest.to_string(),
            media_type: r.entry.layer_media_type,
            size: r.entry.size,
            last_used: r
                .last_used
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// `cache ls --json`: a JSON array written entry by entry as the index is read. A closed
/// stdout (`| head`) ends it quietly.
fn stream_json(cache: &wasm_oci_cache::Cache) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let written = (|| -> anyhow::Result<()> {
        out.write_all(b"[")?;
        cache.for_each_ref(|record| -> anyhow::Result<()> {
            out.write_all(if first { b"\n  " } else { b",\n  " })?;
            first = false;
            serde_json::to_writer(&mut out, &Listed::from(record))?;
            Ok(())
        })?;
        // `[]` when empty, as a whole array would print.
        out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
        out.flush()?;
        Ok(())
    })();
    match written {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    || c.downcast_ref::<serde_json::Error>()
                        .and_then(|j| j.io_error_kind())
                        == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other.context("listing the cache"),
    }
}

/// Says how many abandoned partial downloads were removed, if any.
fn reclaimed(n: usize) {
    if n > 0 {
        let s = if n == 1 { "" } else { "s" };
        eprintln!(
            "reclaimed {n} stale partial download{s} (untouched for a day, no writer holding it)"
        );
    }
}

/// `1.5 MiB`
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn ago(epoch_seconds: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(epoch_seconds);
    match s {
        0..60 => format!("{s} seconds ago"),
        60..3600 => format!("{} minutes ago", s / 60),
        3600..86400 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}
