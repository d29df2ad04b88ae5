//! `wasm-oci cache ls|rm|verify|prune`: look after the cache.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use wasm_oci_cache::{PrunePolicy, PruneReport};

use crate::GlobalOptions;
use crate::units::{ago, human_size, parse_duration, parse_size};

/// Look after the cache: list, remove, verify and prune what it holds.
///
/// Examples:
///     wasm-oci cache ls
///     wasm-oci cache rm localhost:5000/hello:v1
///     wasm-oci cache verify
///     wasm-oci cache prune --max-size 500MiB --older-than 30d
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CacheCommand {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List cached references with their digests, sizes, compiled code and last use.
    ///
    /// The most recently used come first. DIGEST is the manifest digest, what `@sha256:` pins; COMPILED is the native code kept
    /// for its wasm (one file per engine setting, e.g. with and without --fuel), which `rm`
    /// and `prune` remove with it. Compiled code of local files is summed on the last line.
    /// --json also gives the wasm layer's digest (layer_digest), its media type and size, and
    /// the last use as an RFC 3339 time.
    ///
    /// Examples:
    ///     wasm-oci cache ls
    ///     wasm-oci cache ls -q
    ///     wasm-oci cache ls --json | jq -r '.[].reference'
    #[command(verbatim_doc_comment)]
    Ls {
        /// Print JSON on stdout: an array of reference, digest (the manifest's), layer_digest,
        /// layer_media_type, size, compiled (bytes of native code kept for it), kept_referrers
        /// (bytes of the precompiled code a layout brought for it, when any) and last_used
        /// (RFC 3339, UTC), pretty-printed as every verb's JSON and streamed as the index is
        /// read (in no particular order; sort by last_used), so that a cache of 100,000 references starts printing at
        /// once and holds no list in memory
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
        /// Print only the references, one a line, most recent first (as `docker images -q`)
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove references from the cache, with the blobs and compiled code only they use.
    ///
    /// A blob another reference shares stays, and so does everything a running guest holds (that
    /// reference is kept and reported; exit 1). Exits 1 when a reference is not cached.
    ///
    /// Examples:
    ///     wasm-oci cache rm localhost:5000/hello:v1
    ///     wasm-oci cache rm --dry-run localhost:5000/hello:v1 localhost:5000/tool:v2
    #[command(verbatim_doc_comment, visible_alias = "remove")]
    Rm {
        /// References to remove, as they were pulled (e.g. localhost:5000/hello:v1)
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
        /// Say what would be removed and freed; remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob; remove and report the damaged ones (exit 1 if any).
    ///
    /// A reference whose blob was removed is removed too (pull it again to get it back).
    /// Partial downloads untouched for a day that no running pull holds are removed too.
    ///
    /// Examples:
    ///     wasm-oci cache verify
    ///     wasm-oci cache verify --json
    #[command(verbatim_doc_comment)]
    Verify {
        /// Print JSON on stdout: checked (blobs), bytes, removed (each blob's expected and
        /// actual digest), partial and reclaimed_partials
        #[arg(long)]
        json: bool,
    },
    /// Remove least recently used references and their blobs, down to a size or an age.
    ///
    /// Never a blob a running process uses or a pull is recording. Blobs no reference uses
    /// are removed too (once ten minutes old), and partial downloads untouched for a day that
    /// no pull holds. Compiled code of local files goes with --older-than, by its last use.
    /// On a full disk, --partials drops every partial download no pull is writing now,
    /// however recent.
    ///
    /// Examples:
    ///     wasm-oci cache prune --max-size 500MiB
    ///     wasm-oci cache prune --older-than 30d --dry-run
    ///     wasm-oci cache prune --max-size 1GiB --older-than 1w --json
    ///     wasm-oci cache prune --partials
    #[command(verbatim_doc_comment)]
    Prune {
        /// Shrink the cache to at most this size, e.g. 500MiB
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<usize>,
        /// Remove references not used for this long, e.g. 30d, 1h30m, 720h
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Remove every partial download that no pull is writing now, not only those
        /// untouched for a day (an interrupted pull then starts again from the beginning)
        #[arg(long)]
        partials: bool,
        /// Say what would be removed and freed; remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    artifact: super::output::Artifact,
    /// Bytes of native code compiled from its wasm layer and kept in the cache.
    compiled: u64,
    /// Bytes of the referrers kept with it (precompiled code a layout brought, with its
    /// signatures), which `rm` and `prune` remove with it.
    #[serde(skip_serializing_if = "is_zero")]
    kept_referrers: u64,
    /// Seconds since the Unix epoch; JSON shows it as every time, RFC 3339 in UTC.
    #[serde(serialize_with = "as_rfc3339")]
    last_used: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A time in seconds since the Unix epoch, serialized as every verb's JSON shows times.
fn as_rfc3339<S: serde::Serializer>(seconds: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::output::rfc3339(*seconds))
}

impl CacheCommand {
    /// Runs the chosen action.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let cache = global.open_cache()?;
        match self.action {
            Action::Ls { json: true, .. } => {
                stream_json(&cache)?;
                Ok(ExitCode::SUCCESS)
            }
            Action::Ls { quiet: true, .. } => {
                let refs = cache.refs().context("listing the cache")?;
                use std::io::Write as _;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let written = (|| {
                    for r in refs.iter().rev() {
                        writeln!(out, "{}", r.entry.reference)?;
                    }
                    out.flush()
                })();
                crate::stdout_written(written)?;
                Ok(ExitCode::SUCCESS)
            }
            Action::Ls { .. } => {
                let refs = cache.refs().context("listing the cache")?;
                let mut compiled = Compiled::of(&cache);
                let listed: Vec<Listed> = refs
                    .into_iter()
                    .rev()
                    .map(|r| Listed::new(&cache, r, &mut compiled))
                    .collect();
                {
                    let width = listed
                        .iter()
                        .map(|l| l.artifact.reference.len())
                        .max()
                        .unwrap_or(9)
                        .max(9);
                    // One write per buffer, not per line: 100,000 lines are 100,000 writes.
                    use std::io::Write as _;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    let written = (|| {
                        writeln!(
                            out,
                            "{:<width$}  {:<19}  {:>10}  {:>10}  LAST USED",
                            "REFERENCE", "DIGEST", "SIZE", "COMPILED"
                        )?;
                        for l in &listed {
                            writeln!(
                                out,
                                "{:<width$}  {:<19}  {:>10}  {:>10}  {}",
                                l.artifact.reference,
                                &l.artifact.digest[..19.min(l.artifact.digest.len())],
                                human_size(l.artifact.size),
                                match l.compiled {
                                    0 => "-".to_owned(),
                                    n => human_size(n),
                                },
                                ago(SystemTime::UNIX_EPOCH + Duration::from_secs(l.last_used))
                            )?;
                        }
                        out.flush()
                    })();
                    crate::stdout_written(written)?;
                }
                let (files, bytes) = compiled.rest();
                if files > 0 {
                    eprintln!(
                        "and {} of compiled code for {files} module{} that no reference names \
                         (local files, containers' modules)",
                        human_size(bytes),
                        if files == 1 { "" } else { "s" }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Verify { json } => {
                let report = cache.verify().context("verifying the cache")?;
                if json {
                    crate::print_json(&report)?;
                } else {
                    reclaimed(report.reclaimed_partials, false, false);
                    for bad in &report.removed {
                        eprintln!(
                            "removed {}: its content hashes to {}",
                            bad.expected, bad.actual
                        );
                    }
                    for r in &report.removed_refs {
                        eprintln!("removed {r}: it needed a damaged blob; pull it again");
                    }
                    for r in &report.dropped_referrers {
                        eprintln!(
                            "{r}: its precompiled code from a layout was damaged and is dropped; it compiles on its next start"
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
            Action::Rm {
                references,
                dry_run,
                json,
            } => {
                let mut names = Vec::new();
                let mut missing = Vec::new();
                for given in &references {
                    let reference = wasm_oci_fetcher::parse_reference(given)?.whole();
                    match cache.get_ref(&reference) {
                        Ok(Some(_)) => names.push(reference),
                        _ => missing.push(reference),
                    }
                }
                let report = cache
                    .prune(&PrunePolicy {
                        references: names,
                        dry_run,
                        ..PrunePolicy::default()
                    })
                    .context("removing from the cache")?;
                if json {
                    crate::print_json(&report)?;
                } else {
                    print_pruned(&report, false);
                }
                for reference in &missing {
                    eprintln!(
                        "Error: {reference} is not in the cache (`wasm-oci cache ls` lists what is)"
                    );
                }
                Ok(if missing.is_empty() && report.in_use.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Action::Prune {
                max_size,
                older_than,
                partials,
                dry_run,
                json,
            } => {
                if max_size.is_none() && older_than.is_none() && !partials {
                    anyhow::bail!(
                        "say what to prune: --max-size SIZE, --older-than DURATION, --partials, \
                         or several"
                    );
                }
                let report = cache
                    .prune(&PrunePolicy {
                        max_size: max_size.map(|s| s as u64),
                        older_than,
                        partials,
                        dry_run,
                        ..PrunePolicy::default()
                    })
                    .context("pruning the cache")?;
                if json {
                    crate::print_json(&report)?;
                } else {
                    print_pruned(&report, partials);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

impl Listed {
    /// `r` as listed, with the compiled code of its layer (counted off `compiled`) and the
    /// referrers kept with it.
    fn new(
        cache: &wasm_oci_cache::Cache,
        r: wasm_oci_cache::RefRecord,
        compiled: &mut Compiled,
    ) -> Listed {
        let kept_referrers = r.entry.referrers.as_ref().map_or(0, |kept| {
            let blobs: std::collections::BTreeSet<_> = kept.blobs().collect();
            blobs
                .into_iter()
                .filter_map(|d| std::fs::metadata(cache.blob_path(d)).ok())
                .map(|m| m.len())
                .sum()
        });
        Listed {
            kept_referrers,
            compiled: compiled.take(&r.entry.layer_digest),
            artifact: (&r.entry).into(),
            last_used: r
                .last_used
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The compiled code in the cache, by the digest of the wasm it was compiled from.
struct Compiled {
    bytes: std::collections::HashMap<wasm_oci_cache::Digest, u64>,
    /// The digests of listed references' layers.
    listed: std::collections::HashSet<wasm_oci_cache::Digest>,
}

impl Compiled {
    fn of(cache: &wasm_oci_cache::Cache) -> Compiled {
        let mut bytes = std::collections::HashMap::new();
        for c in cache.compiled() {
            *bytes.entry(c.digest).or_insert(0) += c.size;
        }
        Compiled {
            bytes,
            listed: Default::default(),
        }
    }

    /// The bytes compiled from `digest`, a listed reference's layer.
    fn take(&mut self, digest: &wasm_oci_cache::Digest) -> u64 {
        self.listed.insert(digest.clone());
        self.bytes.get(digest).copied().unwrap_or(0)
    }

    /// The code of no listed reference's layer: how many modules, and bytes.
    fn rest(&self) -> (usize, u64) {
        self.bytes
            .iter()
            .filter(|(d, _)| !self.listed.contains(*d))
            .fold((0, 0), |(n, total), (_, b)| (n + 1, total + b))
    }
}

/// `cache ls --json`: a JSON array written entry by entry as the index is read, byte for byte
/// what `print_json` prints for the whole array. A closed stdout (`| head`) ends it quietly.
fn stream_json(cache: &wasm_oci_cache::Cache) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let written = (|| -> anyhow::Result<()> {
        out.write_all(b"[")?;
        let mut compiled = Compiled::of(cache);
        let mut element = Vec::new();
        cache.for_each_ref(|record| -> anyhow::Result<()> {
            out.write_all(if first { b"\n  " } else { b",\n  " })?;
            first = false;
            // An element pretty-printed on its own, indented one level as inside the array
            // (JSON strings hold no raw newline, so every newline is the printer's).
            element.clear();
            serde_json::to_writer_pretty(&mut element, &Listed::new(cache, record, &mut compiled))?;
            for (i, line) in element.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    out.write_all(b"\n  ")?;
                }
                out.write_all(line)?;
            }
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

/// What a prune or `rm` removed (or, dry, would remove): a line per reference on stdout,
/// as `docker rmi` prints them, and the summary on stderr.
fn print_pruned(report: &PruneReport, all_partials: bool) {
    let would = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    reclaimed(report.reclaimed_partials, report.dry_run, all_partials);
    for r in &report.removed_refs {
        crate::outln!(
            "{}: {r}",
            if report.dry_run {
                "Would remove"
            } else {
                "Removed"
            }
        );
    }
    for r in &report.in_use {
        eprintln!("kept {r}: in use by a running process");
    }
    if report.dry_run {
        eprintln!(
            "dry run: would free {} ({} blobs); the cache would hold {}",
            human_size(report.freed),
            report.removed_blobs,
            human_size(report.size)
        );
    } else {
        eprintln!(
            "{would} {} blobs, freed {}; the cache now holds {}",
            report.removed_blobs,
            human_size(report.freed),
            human_size(report.size)
        );
    }
}

/// Says how many partial downloads were (or would be) removed, if any: abandoned ones, or
/// with `all` every one no writer holds.
fn reclaimed(n: usize, dry_run: bool, all: bool) {
    if n > 0 {
        let s = if n == 1 { "" } else { "s" };
        let verb = if dry_run {
            "would reclaim"
        } else {
            "reclaimed"
        };
        if all {
            eprintln!("{verb} {n} partial download{s} (no writer holding it)");
        } else {
            eprintln!(
                "{verb} {n} stale partial download{s} (untouched for a day, no writer holding it)"
            );
        }
    }
}
