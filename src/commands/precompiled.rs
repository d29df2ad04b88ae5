//! On a compiled-code cache miss, code compiled for the fleet: a precompiled referrer of the
//! module, adopted into the compiled-code cache only when the fetcher verified it (signed by
//! a key the policy names for the module's repository, for this module, host and engine,
//! bytes matching their digest); else the runner compiles, as before.

use std::sync::Arc;

use wasm_oci_fetcher::parse_reference;
use wasm_oci_shim::Runner;
use wasm_oci_trust::Policy;

use super::resolve::{PullPolicy, Resolved};
use crate::GlobalOptions;

/// Adopts precompiled code of `resolved` for `runner` when it is a cached reference whose
/// code `runner` has not compiled yet: the code kept with it (a layout's), then, when the
/// pull policy lets the registry be asked, the registry's.
pub(super) fn adopt_for(
    global: &GlobalOptions,
    trust: &Policy,
    resolved: &Resolved,
    runner: &Runner,
    pull: PullPolicy,
) {
    let Some((cache, entry)) = resolved.cached() else {
        return;
    };
    // Told not to ask the registry, only the code kept with the reference (a layout's).
    if (pull == PullPolicy::Never && entry.referrers.is_none())
        || super::resolve::uncompiled(cache, runner, entry).is_none()
    {
        return;
    }
    let Ok(reference) = parse_reference(&entry.reference) else {
        return;
    };
    // No client is made when no key could vouch for code (the fetcher asks the same).
    if let Err(reason) = wasm_oci_trust::Gate::new(trust, &reference)
        .admit_code(&entry.manifest_digest.to_string(), None)
        && !matches!(reason, wasm_oci_trust::Refusal::Unsigned)
    {
        tracing::debug!(module = %entry.reference, %reason, "not looking for precompiled code; compiling locally");
        return;
    }
    let fetcher = match global.fetcher(reference.registry(), Arc::new(trust.clone())) {
        Ok(fetcher) => fetcher,
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "no precompiled code: no fetcher; compiling locally");
            return;
        }
    };
    let _ = match pull {
        PullPolicy::Never => crate::block_on(wasm_oci_shim::precompiled::adopt_kept(
            &fetcher, cache, entry, runner,
        )),
        _ => crate::block_on(wasm_oci_shim::precompiled::adopt(
            &fetcher, cache, entry, runner,
        )),
    };
}

/// This host's target and the engine keys of `run` and of the shim, to tell whether
/// precompiled code listed somewhere could be loaded here.
pub(super) struct Host {
    target: String,
    engines: Vec<(&'static str, Vec<String>)>,
}

/// What a precompiled referrer is for, and whether this host could load it.
#[derive(serde::Serialize)]
pub(super) struct Usable {
    #[serde(flatten)]
    compiled_for: wasm_oci_fetcher::CompiledFor,
    /// The engines of this host that could load it: `run`, `shim` (a signature the policy
    /// accepts is needed too).
    usable_by: Vec<&'static str>,
    /// Why not, when none could.
    #[serde(skip_serializing_if = "Option::is_none")]
    why_not: Option<String>,
}

impl Usable {
    /// One line's worth.
    pub(super) fn summary(&self) -> String {
        let shown = |v: &Option<String>| {
            wasm_oci_artifact::text::printable(v.as_deref().unwrap_or("?")).to_string()
        };
        let verdict = match self.usable_by.is_empty() {
            true => format!(
                "not for this host: {}",
                self.why_not.as_deref().unwrap_or("?")
            ),
            false => format!("loadable here by {}", self.usable_by.join(" and ")),
        };
        format!(
            "[{} {} wasmtime {} engine {}: {verdict}]",
            shown(&self.compiled_for.target),
            shown(&self.compiled_for.kind),
            shown(&self.compiled_for.wasmtime),
            shown(&self.compiled_for.engine),
        )
    }
}

impl Host {
    /// This host, as `run` and the shim would load code.
    pub(super) fn new() -> Self {
        let engines = [
            ("run", wasm_oci_shim::EngineOptions::default()),
            ("shim", wasm_oci_shim::EngineOptions::SHIM),
        ]
        .into_iter()
        .filter_map(|(name, options)| {
            let keys = Runner::new(options).ok()?.loadable_engines().ok()?;
            Some((name, keys))
        })
        .collect();
        Self {
            target: wasm_oci_shim::runner::precompiled::host_target(),
            engines,
        }
    }

    /// For a precompiled referrer, what it is for and who here could load it; `None` for
    /// other artifacts.
    pub(super) fn judge(&self, referrer: &wasm_oci_fetcher::Referrer) -> Option<Usable> {
        if referrer.artifact_type.as_deref()
            != Some(wasm_oci_artifact::media::COMPILED_ARTIFACT_TYPE)
        {
            return None;
        }
        let compiled_for = wasm_oci_fetcher::CompiledFor::of(&referrer.annotations);
        let wasm = compiled_for.wasm.clone().unwrap_or_default();
        let mut usable_by = Vec::new();
        let mut why_not = None;
        for (name, keys) in &self.engines {
            let wanted = wasm_oci_fetcher::Wanted {
                target: &self.target,
                engines: keys,
                store_as: "",
            };
            match compiled_for.mismatch(&wasm, &wanted) {
                None => usable_by.push(*name),
                Some(reason) => why_not = Some(reason),
            }
        }
        Some(Usable {
            compiled_for,
            why_not: usable_by.is_empty().then_some(why_not).flatten(),
            usable_by,
        })
    }
}
