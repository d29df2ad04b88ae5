//! Where the runner meets the fetcher, for the CLI and the shim alike: on a compiled-code
//! cache miss, precompiled code of a module from its registry (a signed referrer, see
//! [`wasm_oci_fetcher::Fetcher::adopt_precompiled`]), for this runner's host and engine.
//! Neither room depends on the other: this module hands the runner's target and engine keys
//! to the fetcher as strings.

use wasm_oci_cache::{Cache, RefEntry};
use wasm_oci_fetcher::{Fetcher, Wanted, parse_reference};

use crate::runner::Runner;

/// Adopts into `cache` precompiled code of `entry` that `runner` can load, when it has none
/// compiled yet and the fetcher's policy vouches for the code; whether it did. Everything
/// else (no policy, nothing attached, nothing that verifies) leaves the runner to compile,
/// the reason said at debug level. The code kept with `entry` (a layout's) is tried first,
/// then the registry's.
pub async fn adopt(fetcher: &Fetcher, cache: &Cache, entry: &RefEntry, runner: &Runner) -> bool {
    adopt_from(fetcher, cache, entry, runner, true).await
}

/// [`adopt`] from the code kept with `entry` alone, asking no registry: for a node told
/// not to (`--pull never`).
pub async fn adopt_kept(
    fetcher: &Fetcher,
    cache: &Cache,
    entry: &RefEntry,
    runner: &Runner,
) -> bool {
    entry.referrers.is_some() && adopt_from(fetcher, cache, entry, runner, false).await
}

async fn adopt_from(
    fetcher: &Fetcher,
    cache: &Cache,
    entry: &RefEntry,
    runner: &Runner,
    network: bool,
) -> bool {
    let compiled = ["module", "component"].iter().any(|kind| {
        matches!(
            cache.open_compiled(runner.engine_key(), &entry.layer_digest, kind),
            Ok(Some(_))
        )
    });
    if compiled {
        return false;
    }
    let Ok(reference) = parse_reference(&entry.reference) else {
        return false;
    };
    let engines = match runner.loadable_engines() {
        Ok(engines) => engines,
        Err(e) => {
            tracing::debug!(error = %e, "no precompiled code: this engine's keys are unknown");
            return false;
        }
    };
    let target = runner.target();
    let wanted = Wanted {
        target: &target,
        engines: &engines,
        store_as: runner.engine_key(),
    };
    match network {
        true => fetcher.adopt_precompiled(&reference, entry, &wanted).await,
        false => fetcher.adopt_kept(&reference, entry, &wanted).await,
    }
    .is_some()
}
