//! `wasm-oci compile REF`: precompile a module into the cache without running it.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use wasm_oci_shim::{EngineOptions, Runner, Wasm};

use super::{Naming, PullPolicy, Resolved};
use crate::GlobalOptions;

/// Precompile a module for this machine and keep the code in the cache.
///
/// Pulls the reference when it is not cached, then compiles it for `wasm-oci run` and for the
/// containerd shim, so that either starts without compiling. Edge nodes run it after a pull.
/// Code is compiled for runs without --timeout and --fuel; runs with those flags compile their
/// own variant once.
///
/// Examples:
///     wasm-oci compile localhost:5000/hello:v1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompileCommand {
    /// A reference such as localhost:5000/hello:v1
    reference: String,

    /// When to ask the registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,

    /// Print the result as JSON on stdout: reference, digest (the manifest's), layer_digest,
    /// layer_media_type and size
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    trust: super::PolicyOption,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl CompileCommand {
    /// Pulls if needed and compiles.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let trust = self.trust.load()?;
        let resolved = Resolved::new(global, &self.reference, self.pull, &trust)?;
        let Some((cache, entry)) = resolved.cached() else {
            bail!(
                "{} is a local file; compile takes a registry reference (push it first)",
                self.reference
            );
        };
        let digest = &entry.layer_digest;
        // For `wasm-oci run` and for the containerd shim, whose engines differ.
        for engine in [EngineOptions::default(), EngineOptions::SHIM] {
            let runner = Runner::new(engine)?;
            crate::progress::while_compiling(&self.reference, || {
                runner.load(&resolved.path, Wasm::Cached { cache, digest })
            })
            .naming(&[&self.reference], || {
                format!("compiling {}", self.reference)
            })?;
        }
        if self.json {
            crate::print_json(&super::Artifact::from(entry))?;
        } else {
            crate::outln!("Compiled: {} ({})", entry.reference, entry.manifest_digest);
        }
        Ok(ExitCode::SUCCESS)
    }
}
