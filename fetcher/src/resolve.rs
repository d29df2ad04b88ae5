//! One rule for the CLI and the containerd shim alike: a reference and a pull policy become a
//! held, verified artifact in the cache. A cached reference is used without the registry
//! (unless the policy says always), and is held before it is trusted to be there, so a
//! `cache prune` in between cannot take its layer away from under a run.

use std::sync::Arc;

use oci_client::Reference;
use wasm_oci_cache::{Cache, Hold, RefEntry};

use crate::error::{Error, Result, TrustRefusal};
use wasm_oci_trust::Policy;

/// When to ask the registry about a reference, as docker and the kubelet name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the cache does not have the reference (docker's default, `IfNotPresent`).
    #[default]
    Missing,
    /// Every time: the reference is resolved again; blobs the cache has are not downloaded.
    Always,
    /// Never: a reference the cache does not have is an error.
    Never,
}

/// A pull policy that is none of those [`PullPolicy`] reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pull policy {0:?}: expected missing, always or never")]
pub struct UnknownPullPolicy(pub String);

impl std::str::FromStr for PullPolicy {
    type Err = UnknownPullPolicy;

    /// `missing`, `always` or `never`; the kubelet's `IfNotPresent`, `Always` and `Never` too.
    fn from_str(s: &str) -> Result<Self, UnknownPullPolicy> {
        match s {
            "missing" | "IfNotPresent" => Ok(PullPolicy::Missing),
            "always" | "Always" => Ok(PullPolicy::Always),
            "never" | "Never" => Ok(PullPolicy::Never),
            other => Err(UnknownPullPolicy(other.to_owned())),
        }
    }
}

/// A reference's artifact in the cache. While this value lives, `cache prune` leaves its
/// wasm layer alone.
#[derive(Debug)]
pub struct Resolved {
    /// What the reference resolved to.
    pub entry: RefEntry,
    /// Whether its layer was downloaded just now.
    pub downloaded: bool,
    _hold: Arc<Hold>,
}

impl Resolved {
    pub(crate) fn new(entry: RefEntry, downloaded: bool, hold: Arc<Hold>) -> Self {
        Self {
            entry,
            downloaded,
            _hold: hold,
        }
    }
}

/// The cached artifact of `reference` when `policy` lets it be used without the registry;
/// `None` when the registry must be asked. It needs only the cache: the warm path of a run
/// makes no client and no runtime.
///
/// A cached reference is used only if `trust` accepts it from what the cache holds: the
/// verdict recorded when it was pulled, or its cached signatures checked again under a changed
/// policy. Otherwise the registry is asked (the pull verifies again), or, under `never`, the
/// refusal is the error.
pub fn resolve_cached(
    cache: &Cache,
    reference: &Reference,
    policy: PullPolicy,
    trust: &Policy,
) -> Result<Option<Resolved>> {
    let name = reference.whole();
    if policy != PullPolicy::Always
        && let Some(mut entry) = cache.get_ref(&name)?
    {
        let gate = wasm_oci_trust::Gate::new(trust, reference);
        match gate.check_cached(cache, &entry) {
            Ok(None) => {}
            // Verified again under a changed policy: recorded, best effort.
            Ok(Some(valid)) => {
                if let Some(signatures) = &mut entry.signatures {
                    signatures.valid = valid;
                    let _ = cache.set_ref(&entry);
                }
            }
            Err(reason) if policy == PullPolicy::Never => {
                return Err(Error::Untrusted {
                    reference: name,
                    scope: gate.describe(),
                    reason: TrustRefusal::CachedOnly(reason),
                });
            }
            Err(reason) => {
                tracing::debug!(reference = %name, %reason, "cached reference not trusted; asking the registry");
                return Ok(None);
            }
        }
        // Held first: a blob a prune removed before the hold is seen as missing, never run.
        match cache.hold(&entry.layer_digest) {
            Ok(hold) => {
                tracing::debug!(reference = %name, digest = %entry.layer_digest, "cache hit");
                cache.touch_ref(&name);
                return Ok(Some(Resolved::new(entry, false, Arc::new(hold))));
            }
            Err(e) => {
                tracing::debug!(reference = %name, error = %e, "cached reference lost its layer");
            }
        }
    }
    match policy {
        PullPolicy::Never => Err(Error::NotCached { reference: name }),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_as_docker_and_the_kubelet_write_them() {
        for (text, policy) in [
            ("missing", PullPolicy::Missing),
            ("IfNotPresent", PullPolicy::Missing),
            ("always", PullPolicy::Always),
            ("Always", PullPolicy::Always),
            ("never", PullPolicy::Never),
            ("Never", PullPolicy::Never),
        ] {
            assert_eq!(text.parse::<PullPolicy>(), Ok(policy));
        }
        assert!("sometimes".parse::<PullPolicy>().is_err());
    }

    #[test]
    fn never_means_the_cache_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let reference: Reference = "localhost:5000/absent:v1".parse().unwrap();
        let e = resolve_cached(
            &cache,
            &reference,
            PullPolicy::Never,
            &Policy::accept_anything(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not in the cache"), "{e}");
        assert!(
            resolve_cached(
                &cache,
                &reference,
                PullPolicy::Missing,
                &Policy::accept_anything()
            )
            .unwrap()
            .is_none()
        );
    }
}
