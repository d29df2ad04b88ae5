//! `wasm-oci tags REPO` lists a repository's tags; `wasm-oci tag REF NEWTAG` puts a manifest
//! under another tag, as the same bytes (same digest, no blob moves).

use std::process::ExitCode;

use clap::Args;
use wasm_oci_fetcher::{DEFAULT_PAGE_SIZE, parse_reference};

use super::naming::Naming;
use crate::GlobalOptions;

/// List the tags of a repository.
///
/// Asks the registry for the tags page by page (PAGE_SIZE at a time, following the registry's
/// Link headers, as the distribution spec says) and prints one tag a line, in the
/// registry's order.
///
/// Examples:
///     wasm-oci tags localhost:5000/hello
///     wasm-oci tags --json localhost:5000/hello
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TagsCommand {
    /// The repository, e.g. localhost:5000/hello (a tag or digest given is ignored)
    repository: String,

    /// How many tags to ask for per page
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,

    /// Print JSON on stdout: repository and tags
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

#[derive(serde::Serialize)]
struct Listed {
    repository: String,
    tags: Vec<String>,
}

/// `tag --json`: the manifest's size and media type named as such, since `size` on every
/// verb is a wasm layer's bytes.
#[derive(serde::Serialize)]
struct Tagged<'a> {
    reference: &'a str,
    digest: &'a str,
    manifest_media_type: &'a str,
    manifest_size: u64,
}

impl TagsCommand {
    /// Lists and prints.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.repository)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let tags = crate::block_on(fetcher.tags(&reference, self.page_size))?
            .naming(&[&self.repository], || {
                format!("listing the tags of {}", self.repository)
            })?;
        if self.json {
            crate::print_json(&Listed {
                repository: format!("{}/{}", reference.registry(), reference.repository()),
                tags,
            })?;
        } else {
            for tag in &tags {
                crate::outln!("{tag}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Put a manifest under another tag of its repository.
///
/// The manifest REF names is put under NEWTAG as the very bytes the registry holds: its
/// digest stays the same and no blob is downloaded or uploaded.
///
/// Examples:
///     wasm-oci tag localhost:5000/hello:v1 stable
///     wasm-oci tag localhost:5000/hello@sha256:0123... v1.0.1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TagCommand {
    /// The manifest to tag, e.g. localhost:5000/hello:v1
    reference: String,

    /// The new tag, in the same repository
    new_tag: String,

    /// Print JSON on stdout: reference (the new one), digest, manifest_media_type and
    /// manifest_size (bytes; `size`, on every verb, is a wasm layer's)
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl TagCommand {
    /// Tags and reports.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let reference = parse_reference(&self.reference)?;
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let tagged = crate::block_on(fetcher.tag(&reference, &self.new_tag))?
            .naming(&[&self.reference], || {
                format!("tagging {} as {}", self.reference, self.new_tag)
            })?;
        if self.json {
            crate::print_json(&Tagged {
                reference: &tagged.reference,
                digest: &tagged.digest,
                manifest_media_type: &tagged.media_type,
                manifest_size: tagged.size,
            })?;
        } else {
            crate::outln!("Tagged: {}", tagged.reference);
            crate::outln!("Digest: {}", tagged.digest);
        }
        Ok(ExitCode::SUCCESS)
    }
}
