//! What the signature policy says of a layout's artifacts: each is checked, with the
//! signatures the layout holds for it, as a pull checks what a registry holds; and
//! `oci:DIR[:TAG]`, run straight from a layout, only when the policy allows it.

use std::path::{Path, PathBuf};

use wasm_oci_cache::Digest;

use super::error::LayoutError;
use super::file::{blob_path, layout_err, verify_file};
use super::read::{LayoutArtifact, choose_artifact, layout_signatures};
use crate::error::{Error, Result, TrustRefusal};
use crate::reference::parse_reference;
use wasm_oci_trust::{Fetched, Gate, Policy};

/// Checks `artifact`, named `reference`, against `policy` with the signatures the layout
/// holds for it (the `sha256-<hex>.sig` entries `save` writes), as a pull checks what a
/// registry holds: its signatures, and the verdicts when the scope needs signatures.
pub(crate) fn check_policy(
    dir: &Path,
    reference: &oci_client::Reference,
    artifact: &LayoutArtifact,
    policy: &Policy,
) -> Result<(Option<Fetched>, Vec<wasm_oci_cache::Verdict>)> {
    let gate = Gate::new(policy, reference);
    let untrusted = |reason| Error::Untrusted {
        reference: reference.whole(),
        scope: gate.describe(),
        reason,
    };
    gate.admit()
        .map_err(|r| untrusted(TrustRefusal::Refused(r)))?;
    // Signatures are of the entry's own digest (an index's, when it is one), as a pull
    // verifies them: the index is read from the layout and names the manifest chosen.
    let signatures = layout_signatures(dir, &artifact.signed_digest)?;
    let valid = gate
        .judge(&artifact.signed_digest.to_string(), signatures.as_ref())
        .map_err(|refusal| {
            untrusted(TrustRefusal::InLayout {
                refusal,
                dir: dir.to_owned(),
            })
        })?;
    Ok((signatures, valid))
}

/// The wasm file and digest that `oci:DIR:TAG` names, verified, and allowed by `policy` as
/// `load` would allow it: the entry's name (`io.containerd.image.name`, or a ref name that is
/// a full reference) picks the scope, checked with the layout's signatures. An entry without
/// a name runs only under a policy that accepts anything everywhere. `tag` may be omitted
/// when the layout holds one artifact.
pub fn resolve_trusted(
    dir: &Path,
    tag: Option<&str>,
    policy: &Policy,
) -> Result<(PathBuf, Digest)> {
    let chosen = choose_artifact(dir, tag)?;
    let name = chosen
        .image_name
        .clone()
        .or_else(|| chosen.ref_name.clone().filter(|r| r.contains('/')));
    match name {
        Some(name) => {
            let reference = parse_reference(&name)?;
            check_policy(dir, &reference, &chosen, policy)?;
        }
        None if wasm_oci_trust::admit_unnamed(policy).is_ok() => {}
        None => {
            return Err(layout_err(
                dir,
                LayoutError::UnnamedUnderPolicy {
                    label: wasm_oci_artifact::text::printable(
                        chosen.ref_name.as_deref().unwrap_or("without a name"),
                    ),
                    policy: policy
                        .source()
                        .map_or("(none)".into(), |p| p.display().to_string()),
                },
            ));
        }
    }
    verified_layer(dir, &chosen)
}

fn verified_layer(dir: &Path, chosen: &LayoutArtifact) -> Result<(PathBuf, Digest)> {
    let path = blob_path(dir, &chosen.layer_digest);
    verify_file(dir, &path, &chosen.layer_digest, Some(chosen.size))?;
    Ok((path, chosen.layer_digest.clone()))
}
