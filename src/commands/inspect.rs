//! `wasm-oci inspect REF|FILE`: what an artifact is, without running it.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::resolve::{PullPolicy, Resolved};
use crate::GlobalOptions;

/// Show what an artifact is, without running it.
///
/// Prints the manifest, config and layers, and the module's kind, WASI world
/// (wasi:cli/command or wasi:http/proxy), imports and exports (pulling it first when it is not
/// cached).
///
/// Examples:
///     wasm-oci inspect localhost:5000/hello:v1
///     wasm-oci inspect --json ./hello.wasm
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InspectCommand {
    /// A reference such as localhost:5000/hello:v1, or a path to a .wasm file
    module: String,

    /// When to ask the registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,

    /// Print JSON on stdout: reference, digest (the manifest's), layer_digest, manifest,
    /// config, size, kind, world, imports and exports
    #[arg(long)]
    json: bool,

    /// Also list the precompiled code attached to it in its registry (`compile --push`), and
    /// whether this host's `run` or shim engine could load each (asks the registry)
    #[arg(long)]
    precompiled: bool,

    #[command(flatten)]
    trust: super::resolve::PolicyOption,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

#[derive(Serialize)]
struct Inspected {
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    /// The manifest's digest, as every verb reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<serde_json::Value>,
    size: u64,
    /// Which host (a mirror of the hosts.toml, or the registry) sent each manifest and blob,
    /// by digest, when it was pulled.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    sources: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    interface: wasm_oci_fetcher::Interface,
    /// With --precompiled: the code attached, each with what it is for and who here could
    /// load it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    precompiled: Vec<serde_json::Value>,
}

impl InspectCommand {
    /// Reads and prints.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let not_wasm = || {
            format!(
                "{} is not a valid WebAssembly module or component",
                self.module
            )
        };
        // A file is read section by section, never whole: a 200 MiB module costs what its
        // import and export sections take.
        if super::resolve::looks_like_file(&self.module) {
            let path = std::path::Path::new(&self.module);
            let interface = wasm_oci_fetcher::interface_of_file(path)
                .with_context(|| format!("reading {}", self.module))?;
            let Some(interface) = interface else {
                // Not even the header: say what it starts with, as `run` does.
                let mut start = Vec::with_capacity(16);
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(
                        std::fs::File::open(path)
                            .with_context(|| format!("reading {}", self.module))?,
                        16,
                    ),
                    &mut start,
                )
                .with_context(|| format!("reading {}", self.module))?;
                if !start.starts_with(b"\0asm") {
                    anyhow::bail!(
                        "{} is not a WebAssembly module (it starts with \"{}\")",
                        self.module,
                        wasm_oci_shim::runner::first_words(&start)
                    );
                }
                anyhow::bail!(not_wasm());
            };
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading {}", self.module))?
                .len();
            return self.print(Inspected {
                reference: None,
                digest: None,
                layer_digest: None,
                manifest: None,
                config: None,
                size,
                sources: Default::default(),
                interface,
                precompiled: Vec::new(),
            });
        }
        let trust = self.trust.load()?;
        let resolved = Resolved::new(global, &self.module, self.pull, &trust)?;
        let interface = match &resolved.source {
            super::resolve::Source::Bytes(bytes) => wasm_oci_fetcher::interface(bytes),
            super::resolve::Source::Cached { .. } => {
                wasm_oci_fetcher::interface_of_file(&resolved.path)
                    .with_context(|| format!("reading {}", resolved.path.display()))?
            }
        }
        .with_context(not_wasm)?;
        let inspected = match resolved.cached() {
            Some((cache, entry)) => {
                let json_blob =
                    |digest: &wasm_oci_cache::Digest| -> anyhow::Result<serde_json::Value> {
                        Ok(serde_json::from_slice(&cache.read_blob(digest)?)?)
                    };
                Inspected {
                    reference: Some(entry.reference.clone()),
                    digest: Some(entry.manifest_digest.to_string()),
                    layer_digest: Some(entry.layer_digest.to_string()),
                    manifest: Some(json_blob(&entry.manifest_digest)?),
                    config: entry
                        .config_digest
                        .as_ref()
                        .map(json_blob)
                        .transpose()
                        .ok()
                        .flatten(),
                    size: entry.size,
                    sources: entry.sources.clone(),
                    interface,
                    precompiled: match self.precompiled {
                        true => precompiled_of(global, entry)?,
                        false => Vec::new(),
                    },
                }
            }
            None => Inspected {
                reference: None,
                digest: None,
                layer_digest: None,
                manifest: None,
                config: None,
                size: std::fs::metadata(&resolved.path).map_or(0, |m| m.len()),
                sources: Default::default(),
                interface,
                precompiled: Vec::new(),
            },
        };
        self.print(inspected)
    }

    fn print(&self, inspected: Inspected) -> anyhow::Result<ExitCode> {
        if self.json {
            crate::print_json(&inspected)?;
            return Ok(ExitCode::SUCCESS);
        }
        let p = wasm_oci_artifact::text::printable;
        if let Some(r) = &inspected.reference {
            crate::outln!("Reference: {}", p(r));
        }
        if let Some(d) = &inspected.digest {
            crate::outln!("Digest:    {d}");
        }
        if let Some(m) = &inspected.manifest {
            crate::outln!(
                "Config:    {}",
                p(m["config"]["mediaType"].as_str().unwrap_or("?"))
            );
            for layer in m["layers"].as_array().into_iter().flatten() {
                crate::outln!(
                    "Layer:     {} {} ({} bytes)",
                    p(layer["mediaType"].as_str().unwrap_or("?")),
                    p(layer["digest"].as_str().unwrap_or("?")),
                    p(&layer["size"].to_string())
                );
            }
        }
        for (digest, host) in &inspected.sources {
            crate::outln!("Served:    {digest} by {}", p(host));
        }
        let kind = match inspected.interface.kind {
            wasm_oci_fetcher::WasmKind::Module => "core module (WASI preview 1)",
            wasm_oci_fetcher::WasmKind::Component => "component (WASI 0.2)",
        };
        crate::outln!(
            "Kind:      {kind}, {}",
            crate::units::human_size(inspected.size)
        );
        if let Some(world) = &inspected.interface.world {
            crate::outln!("World:     {}", p(world));
        }
        for code in &inspected.precompiled {
            crate::outln!(
                "Precompiled: {} {}",
                p(code["digest"].as_str().unwrap_or("?")),
                p(code["summary"].as_str().unwrap_or("?"))
            );
        }
        crate::outln!("Imports:");
        for i in &inspected.interface.imports {
            crate::outln!("  {}", p(&i.to_string()));
        }
        crate::outln!("Exports:");
        for e in &inspected.interface.exports {
            crate::outln!("  {}", p(&e.to_string()));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The precompiled code attached to `entry`'s manifest in its registry, as `discover` shows it.
fn precompiled_of(
    global: &GlobalOptions,
    entry: &wasm_oci_cache::RefEntry,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let reference = wasm_oci_fetcher::parse_reference(&entry.reference)?;
    let subject = wasm_oci_fetcher::OciReference::with_digest(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        entry.manifest_digest.to_string(),
    );
    let fetcher = global.fetcher_running_nothing(reference.registry())?;
    let found = crate::block_on(fetcher.referrers(&subject))?
        .with_context(|| format!("listing what is attached to {}", entry.reference))?;
    let host = super::precompiled::Host::new();
    let mut out = Vec::new();
    for referrer in &found.referrers {
        if let Some(usable) = host.judge(referrer) {
            let mut value = serde_json::to_value(&usable)?;
            value["digest"] = referrer.digest.clone().into();
            value["summary"] = usable.summary().into();
            out.push(value);
        }
    }
    Ok(out)
}
