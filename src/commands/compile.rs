//! `wasm-oci compile REF`: precompile a module into the cache without running it.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use wasm_oci_fetcher::{CompiledFor, parse_reference};
use wasm_oci_shim::runner::precompiled::WASMTIME_VERSION;
use wasm_oci_shim::{EngineOptions, Runner, Wasm};

use super::naming::Naming;
use super::resolve::{PullPolicy, Resolved};
use crate::GlobalOptions;

/// Precompile a module for this machine, or with --push for a fleet, through the registry.
///
/// Without --push the code is kept in the cache; with --push it is compiled once for a fleet
/// and attached to the module in the registry, signed.
///
/// Pulls the reference when it is not cached, then compiles it for `wasm-oci run` and for the
/// containerd shim, so that either starts without compiling. Edge nodes run it after a pull.
/// Code is compiled for runs without --timeout and --fuel; runs with those flags compile their
/// own variant once.
///
/// With --push, the code for both engines is compiled for the registry (not kept here),
/// attached to the module's manifest as OCI referrers (artifact type
/// application/vnd.wasm-oci.compiled.v1, annotated with the wasmtime version, target triple
/// and engine hash), and each is signed with --sign-key as `sign` signs. `run`, `serve`,
/// `prefetch` and the shim, on a compiled-code miss, load such code instead of compiling
/// only when a key their signature policy names (sigstoreSigned) for the module's
/// repository signed it. --target compiles for another architecture (or, given
/// this host's triple, for every CPU of it rather than this one's features).
///
/// Examples:
///     wasm-oci compile localhost:5000/hello:v1
///     COSIGN_PASSWORD=... wasm-oci compile localhost:5000/hello:v1 --push --sign-key release.key \
///         --target x86_64-unknown-linux-gnu --target aarch64-unknown-linux-gnu
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompileCommand {
    /// A reference such as localhost:5000/hello:v1
    reference: String,

    /// When to ask the registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,

    /// Print the result as JSON on stdout: reference, digest (the manifest's), layer_digest,
    /// layer_media_type and size; with --push, a list of what was attached (digest, subject,
    /// target, engine, kind, size, signature_tag)
    #[arg(long)]
    json: bool,

    /// Attach the compiled code to the module in its registry, signed with --sign-key
    #[arg(long, requires = "sign_key")]
    push: bool,

    /// The private key (cosign's format or PKCS#8 PEM; COSIGN_PASSWORD opens an encrypted
    /// one) that signs each attached code artifact
    #[arg(long, value_name = "KEY", requires = "push")]
    sign_key: Option<std::path::PathBuf>,

    /// Compile for this target triple (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu)
    /// instead of this host; repeatable. Only with --push
    #[arg(long = "target", value_name = "TRIPLE", requires = "push")]
    targets: Vec<String>,

    #[command(flatten)]
    trust: super::resolve::PolicyOption,

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
        // A fleet's code is compiled for the registry, not for this machine's cache.
        if self.push {
            return self.push_compiled(global, cache, entry);
        }
        let digest = &entry.layer_digest;
        // For `wasm-oci run` and for the containerd shim, whose engines differ.
        // Off a terminal a large module's compile is announced once, not once per engine.
        let mut announced = false;
        for engine in [EngineOptions::default(), EngineOptions::SHIM] {
            let runner = Runner::new(engine)?;
            crate::progress::while_compiling(
                &self.reference,
                || {
                    let large = super::resolve::uncompiled(cache, &runner, entry)
                        .filter(|&size| !announced && size > crate::progress::LARGE_MODULE);
                    announced |= large.is_some();
                    large
                },
                || {
                    // Compiled here, by this engine: code adopted from a referrer is not it.
                    let wasm = Wasm::Cached {
                        cache,
                        digest,
                        vouched_for: None,
                    };
                    runner.load(&resolved.path, wasm)
                },
            )
            .naming(&[&self.reference], || {
                format!("compiling {}", self.reference)
            })?;
        }
        if self.json {
            crate::print_json(&super::output::Artifact::from(entry))?;
        } else {
            crate::outln!("Compiled: {} ({})", entry.reference, entry.manifest_digest);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// One code artifact `compile --push` attached and signed.
#[derive(Serialize)]
struct Pushed {
    /// The artifact manifest's digest (what is signed).
    digest: String,
    /// The module's manifest digest.
    subject: String,
    target: String,
    engine: String,
    kind: String,
    size: usize,
    /// The signature's tag.
    signature_tag: String,
}

impl CompileCommand {
    /// Compiles the module for each target and engine, and attaches and signs each code.
    fn push_compiled(
        &self,
        global: &GlobalOptions,
        cache: &wasm_oci_cache::Cache,
        entry: &wasm_oci_cache::RefEntry,
    ) -> anyhow::Result<ExitCode> {
        let key_path = self.sign_key.as_deref().expect("clap requires --sign-key");
        let key = super::sign::read_private_key(key_path)?;
        let reference = parse_reference(&self.reference)?;
        let wasm = cache
            .read_blob(&entry.layer_digest)
            .with_context(|| format!("reading the wasm of {}", self.reference))?;
        if wasm_oci_cache::Digest::of(&wasm) != entry.layer_digest {
            bail!(
                "the wasm of {} is damaged in the cache; run `wasm-oci cache verify`",
                self.reference
            );
        }
        // The code's subject is the manifest the module resolved to, by digest.
        let subject = wasm_oci_fetcher::OciReference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            entry.manifest_digest.to_string(),
        );
        let fetcher = global.fetcher_running_nothing(reference.registry())?;
        let targets: Vec<Option<&str>> = match self.targets.is_empty() {
            true => vec![None],
            false => self.targets.iter().map(|t| Some(t.as_str())).collect(),
        };
        let mut pushed = Vec::new();
        for target in targets {
            for engine in [EngineOptions::default(), EngineOptions::SHIM] {
                let runner = Runner::new(engine)?;
                let code = runner.precompile(&wasm, target).with_context(|| {
                    format!(
                        "compiling {} for {}",
                        self.reference,
                        target.map_or_else(
                            wasm_oci_shim::runner::precompiled::host_target,
                            str::to_owned
                        )
                    )
                })?;
                let compiled_for = CompiledFor {
                    wasmtime: Some(WASMTIME_VERSION.to_owned()),
                    target: Some(code.target.clone()),
                    engine: Some(code.engine.clone()),
                    kind: Some(code.kind.to_owned()),
                    wasm: Some(entry.layer_digest.to_string()),
                };
                let attached = crate::block_on(fetcher.attach_precompiled(
                    &subject,
                    &code.code,
                    &compiled_for,
                ))?
                .with_context(|| format!("attaching the code to {}", self.reference))?;
                let signed = crate::block_on(fetcher.sign(&reference, &attached.digest, &key))?
                    .with_context(|| format!("signing the code attached to {}", self.reference))?;
                if !self.json {
                    crate::outln!(
                        "Attached: {} ({} {}, engine {}, {} bytes), signed as {}",
                        attached.digest,
                        code.target,
                        code.kind,
                        code.engine,
                        code.code.len(),
                        signed.identity
                    );
                }
                pushed.push(Pushed {
                    digest: attached.digest,
                    subject: attached.subject,
                    target: code.target,
                    engine: code.engine,
                    kind: code.kind.to_owned(),
                    size: code.code.len(),
                    signature_tag: signed.signature_tag,
                });
            }
        }
        if self.json {
            crate::print_json(&pushed)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
