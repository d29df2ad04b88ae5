//! Precompiled code a registry offers for a module: an OCI referrer of artifact type
//! [`COMPILED_ARTIFACT_TYPE`] whose `subject` is the module's manifest (`wasm-oci compile
//! --push`). On a compiled-code cache miss it is looked for, and kept in the compiled-code
//! cache for the runner to load, only when everything about it holds: its subject is this
//! module's manifest and its annotations name this module's wasm, this host's target and an
//! engine the caller can load; a key the signature policy names for the module's repository
//! signed its manifest ([`wasm_oci_trust::Gate::admit_code`]); its bytes match their digest.
//! Anything else is passed over with the reason at debug level, and the caller compiles.
//!
//! The fetcher knows nothing of wasmtime: targets and engine keys are strings the runner gives.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_client::Reference;
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use serde::Deserialize;
use wasm_oci_artifact::media::{
    COMPILED_ARTIFACT_TYPE, COMPILED_ENGINE, COMPILED_KIND, COMPILED_LAYER_MEDIA_TYPE,
    COMPILED_TARGET, COMPILED_WASM, COMPILED_WASMTIME, MAX_COMPILED,
};
use wasm_oci_cache::{Digest, KeptReferrers, RefEntry};
use wasm_oci_trust::Gate;

use crate::Fetcher;
use crate::error::Result;
use crate::referrers::{Attached, Layer, Referrer, referrers_of};
use crate::remote::endpoint::{Capability, in_order, skipped};
use crate::remote::registry::{MAX_CONFIG_SIZE, Registry};
use crate::remote::retry::with_retries;
use wasm_oci_artifact::text::printable;

/// Candidates tried at most per module: a list of many that all look right is an attack,
/// not a fleet's build matrix.
const MAX_TRIED: usize = 4;

/// What precompiled code the caller can use.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// This host's target triple.
    pub target: &'a str,
    /// The engine keys whose code the runner loads (its own first).
    pub engines: &'a [String],
    /// The engine key the code is kept under in the compiled-code cache: the runner's own.
    pub store_as: &'a str,
}

/// What adopted code is kept for (see [`wasm_oci_cache::vouched_engine_key`]): the whole
/// reference, `registry/name:tag` or `registry/name@digest`, in its canonical form. A policy
/// can vouch more finely than a repository (a scope for `name:tag` or `name@digest`, an
/// identity bound to a tag), so code adopted for one reference is never loaded for another,
/// even of the same repository; the runner is given the same for the same reference.
pub fn repository_of(reference: &Reference) -> String {
    reference.whole()
}

/// The reference a cached reference's adopted code is kept for, as [`repository_of`] its
/// reference: what the runner is given ([`wasm_oci_shim`'s `Wasm::Cached`]) to look it up.
pub fn vouched_for(entry: &RefEntry) -> Option<String> {
    crate::parse_reference(&entry.reference)
        .ok()
        .map(|reference| repository_of(&reference))
}

/// Precompiled code verified and kept in the compiled-code cache.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The referrer's manifest digest (what its signature signs).
    pub referrer: String,
    /// `module` or `component`.
    pub kind: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where the compiled-code cache keeps it.
    pub path: PathBuf,
}

/// What the compiled code is for, as a referrer's annotations say it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompiledFor {
    /// The wasmtime version that compiled it.
    pub wasmtime: Option<String>,
    /// The target triple.
    pub target: Option<String>,
    /// The engine key.
    pub engine: Option<String>,
    /// `module` or `component`.
    pub kind: Option<String>,
    /// The wasm layer's digest.
    pub wasm: Option<String>,
}

impl CompiledFor {
    /// What `annotations` say.
    pub fn of(annotations: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| annotations.get(key).cloned();
        Self {
            wasmtime: get(COMPILED_WASMTIME),
            target: get(COMPILED_TARGET),
            engine: get(COMPILED_ENGINE),
            kind: get(COMPILED_KIND),
            wasm: get(COMPILED_WASM),
        }
    }

    /// Why code annotated so is not for `wasm` on this host (`wanted`), if it is not.
    pub fn mismatch(&self, wasm: &str, wanted: &Wanted<'_>) -> Option<String> {
        let shown = |v: &Option<String>| printable(v.as_deref().unwrap_or("(none)"));
        if self.wasm.as_deref() != Some(wasm) {
            return Some(format!(
                "it was compiled from {}, not {wasm}",
                shown(&self.wasm)
            ));
        }
        if self.target.as_deref() != Some(wanted.target) {
            return Some(format!(
                "it is for target {}, not {}",
                shown(&self.target),
                wanted.target
            ));
        }
        if !self
            .engine
            .as_ref()
            .is_some_and(|e| wanted.engines.contains(e))
        {
            return Some(format!(
                "it is for engine {} (wasmtime {}), and this one loads {}",
                shown(&self.engine),
                shown(&self.wasmtime),
                wanted.engines.join(" or ")
            ));
        }
        if !matches!(self.kind.as_deref(), Some("module" | "component")) {
            return Some(format!("its kind is {}", shown(&self.kind)));
        }
        None
    }
}

/// Why one precompiled referrer was passed over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Passed {
    /// Its manifest could not be read (or did not match its digest).
    #[error("its manifest cannot be read: {0}")]
    Manifest(String),
    /// Its manifest is not of a compiled-code artifact.
    #[error("its manifest is not precompiled code: {0}")]
    NotCompiled(String),
    /// Its subject is another manifest.
    #[error("its subject is {actual}, not this module's manifest {expected}")]
    OtherSubject {
        /// What it names (printable).
        actual: String,
        /// This module's.
        expected: String,
    },
    /// Its annotations say it is for other wasm, another host or another engine.
    #[error("{0}")]
    NotForThis(String),
    /// The signature policy does not vouch for it.
    #[error("{0}")]
    Refused(#[from] wasm_oci_trust::Refusal),
    /// Its signatures could not be fetched.
    #[error("its signatures cannot be read: {0}")]
    Signatures(String),
    /// Its bytes do not match their digest or size.
    #[error("its code cannot be fetched whole: {0}")]
    Code(String),
    /// The compiled-code cache cannot keep it.
    #[error("the compiled-code cache cannot keep it: {0}")]
    Cache(String),
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

/// Where a candidate's manifest, signatures and code are read from: the registry host that
/// listed it, or the cache, for referrers a layout brought (`load`). Either way the same
/// checks follow, in [`Fetcher::verify_precompiled`].
enum Holder<'a> {
    /// A mirror or the registry itself, and its `host[:port]`.
    Host(&'a Registry, &'a str),
    /// The referrers kept with the module's reference.
    Kept(&'a KeptReferrers),
}

impl Fetcher {
    /// Looks for precompiled code of `entry` (the module `reference` resolved to) that
    /// `wanted` can use, verifies it (see the module's doc) and keeps it in the compiled-code
    /// cache under `wanted.store_as` and the wasm's digest; `None` when there is none to use,
    /// each reason said at debug level. Never an error: the caller compiles instead.
    ///
    /// The referrers kept with `entry` (a layout's, see [`crate::layout::load`]) are tried
    /// first, without the network; then the hosts that may list them (a hosts.toml's
    /// mirrors, then the registry), each candidate read from the host that listed it.
    pub async fn adopt_precompiled(
        &self,
        reference: &Reference,
        entry: &RefEntry,
        wanted: &Wanted<'_>,
    ) -> Option<Adopted> {
        let module = reference.whole();
        let gate = self.code_gate(reference, entry)?;
        if let Some(adopted) = self.adopt_kept_with(&gate, reference, entry, wanted).await {
            return Some(adopted);
        }
        let subject = Reference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            entry.manifest_digest.to_string(),
        );
        let hosts = match self.transport().endpoints(&subject).await {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::debug!(%module, error = %e, "no precompiled code; compiling locally");
                return None;
            }
        };
        let order = match in_order(&hosts, &subject, Capability::Resolve) {
            Ok(order) => order,
            Err(e) => {
                tracing::debug!(%module, error = %e, "no precompiled code; compiling locally");
                return None;
            }
        };
        let mut tried = false;
        for (host, last) in order {
            let listed = match self
                .list_referrers(&host.remote, &subject, &entry.manifest_digest.to_string())
                .await
            {
                Ok((found, _)) => found,
                Err(e) if !last => {
                    skipped(host, &module, "referrers", &e);
                    continue;
                }
                Err(e) => {
                    let reason = anyhow_like(&e);
                    tracing::debug!(%module, %reason, "no precompiled code: its referrers cannot be listed; compiling locally");
                    return None;
                }
            };
            let holder = Holder::Host(&host.remote, &host.host);
            match self
                .adopt_listed(&holder, &listed, reference, &gate, entry, wanted)
                .await
            {
                Ok(adopted) => return Some(adopted),
                Err(none) => tried |= none == NoneAdopted::Refused,
            }
        }
        match tried {
            true => tracing::debug!(%module, "no precompiled referrer verified; compiling locally"),
            false => {
                tracing::debug!(%module, "no precompiled referrer for this host and engine; compiling locally")
            }
        }
        None
    }

    /// [`Fetcher::adopt_precompiled`] from the referrers kept with `entry` alone, without
    /// the network: for a node told not to ask its registry.
    pub async fn adopt_kept(
        &self,
        reference: &Reference,
        entry: &RefEntry,
        wanted: &Wanted<'_>,
    ) -> Option<Adopted> {
        let gate = self.code_gate(reference, entry)?;
        self.adopt_kept_with(&gate, reference, entry, wanted).await
    }

    /// The gate for code of `reference`, unless it could vouch for none: then nothing is
    /// asked of anyone, and the reason is said.
    fn code_gate<'p>(&'p self, reference: &'p Reference, entry: &RefEntry) -> Option<Gate<'p>> {
        let gate = Gate::new(self.policy(), reference);
        if let Err(reason) = gate.admit_code(&entry.manifest_digest.to_string(), None)
            && !matches!(reason, wasm_oci_trust::Refusal::Unsigned)
        {
            let module = reference.whole();
            tracing::debug!(%module, %reason, "not looking for precompiled code; compiling locally");
            return None;
        }
        Some(gate)
    }

    /// The referrers kept with `entry`, tried as a registry's are.
    async fn adopt_kept_with(
        &self,
        gate: &Gate<'_>,
        reference: &Reference,
        entry: &RefEntry,
        wanted: &Wanted<'_>,
    ) -> Option<Adopted> {
        let kept = entry.referrers.as_deref()?;
        let module = reference.whole();
        let listed = match read_kept(self.cache(), &kept.index, MAX_CONFIG_SIZE)
            .and_then(|body| referrers_of(&body).map_err(|e| e.to_string()))
        {
            Ok(listed) => listed,
            Err(reason) => {
                tracing::debug!(%module, %reason, "the referrers kept in the cache cannot be read");
                return None;
            }
        };
        // Only those kept: the index may list more than the layout held whole.
        let listed: Vec<Referrer> = listed
            .into_iter()
            .filter(|r| {
                r.digest
                    .parse::<Digest>()
                    .is_ok_and(|d| kept.get(&d).is_some())
            })
            .collect();
        let adopted = self
            .adopt_listed(&Holder::Kept(kept), &listed, reference, gate, entry, wanted)
            .await
            .ok();
        if adopted.is_none() {
            tracing::debug!(%module, kept = kept.kept.len(), "no precompiled referrer kept in the cache verified");
        }
        adopted
    }

    /// Tries the candidates among `listed` (at most [`MAX_TRIED`]), each read from `holder`.
    async fn adopt_listed(
        &self,
        holder: &Holder<'_>,
        listed: &[Referrer],
        reference: &Reference,
        gate: &Gate<'_>,
        entry: &RefEntry,
        wanted: &Wanted<'_>,
    ) -> std::result::Result<Adopted, NoneAdopted> {
        let module = reference.whole();
        let wasm = entry.layer_digest.to_string();
        let mut candidates: Vec<&Referrer> = Vec::new();
        for referrer in listed {
            if referrer.artifact_type.as_deref() != Some(COMPILED_ARTIFACT_TYPE)
                || candidates.iter().any(|c| c.digest == referrer.digest)
            {
                continue;
            }
            match CompiledFor::of(&referrer.annotations).mismatch(&wasm, wanted) {
                Some(reason) => {
                    tracing::debug!(%module, referrer = %referrer.digest, %reason, "precompiled referrer passed over")
                }
                None => candidates.push(referrer),
            }
        }
        if candidates.is_empty() {
            return Err(NoneAdopted::NoCandidate);
        }
        for referrer in candidates.into_iter().take(MAX_TRIED) {
            match self
                .verify_precompiled(holder, reference, gate, entry, referrer, wanted)
                .await
            {
                Ok(adopted) => {
                    let from = match holder {
                        Holder::Host(_, host) => host,
                        Holder::Kept(_) => "cache",
                    };
                    tracing::debug!(%module, referrer = %adopted.referrer, bytes = adopted.size, path = %adopted.path.display(), %from, "precompiled code verified and adopted");
                    return Ok(adopted);
                }
                Err(reason) => {
                    tracing::debug!(%module, referrer = %referrer.digest, %reason, "precompiled referrer refused");
                }
            }
        }
        Err(NoneAdopted::Refused)
    }

    /// One candidate, checked in order of cost: its manifest (by digest), its signatures,
    /// then its code; each read from `holder`, each check the same wherever it came from.
    async fn verify_precompiled(
        &self,
        holder: &Holder<'_>,
        reference: &Reference,
        gate: &Gate<'_>,
        entry: &RefEntry,
        referrer: &Referrer,
        wanted: &Wanted<'_>,
    ) -> std::result::Result<Adopted, Passed> {
        let at = Reference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            referrer.digest.clone(),
        );
        let digest: Digest = referrer
            .digest
            .parse()
            .map_err(|e: wasm_oci_cache::Error| Passed::Manifest(e.to_string()))?;
        let body = match holder {
            Holder::Host(remote, _) => {
                with_retries("fetching a precompiled referrer", || {
                    remote.manifest(&at, &[OCI_IMAGE_MEDIA_TYPE], MAX_CONFIG_SIZE)
                })
                .await
                .map_err(|f| Passed::Manifest(f.into_error(&at, self.scheme(&at)).to_string()))?
                .0
            }
            Holder::Kept(kept) => kept
                .get(&digest)
                .ok_or_else(|| Passed::Manifest("it is not kept in the cache".into()))
                .and_then(|k| {
                    read_kept(self.cache(), &k.manifest, MAX_CONFIG_SIZE).map_err(Passed::Manifest)
                })?,
        };
        if body.len() as u64 > MAX_CONFIG_SIZE {
            return Err(Passed::Manifest(format!("over {MAX_CONFIG_SIZE} bytes")));
        }
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| Passed::NotCompiled(e.to_string()))?;
        if manifest.artifact_type.as_deref() != Some(COMPILED_ARTIFACT_TYPE) {
            return Err(Passed::NotCompiled(format!(
                "its artifact type is {}",
                printable(manifest.artifact_type.as_deref().unwrap_or("(none)"))
            )));
        }
        let expected = entry.manifest_digest.to_string();
        let actual = manifest.subject.as_ref().map(|s| s.digest.as_str());
        if actual != Some(expected.as_str()) {
            return Err(Passed::OtherSubject {
                actual: printable(actual.unwrap_or("(none)")),
                expected,
            });
        }
        // What the manifest says, not what the list said of it.
        let compiled_for = CompiledFor::of(&manifest.annotations);
        if let Some(reason) = compiled_for.mismatch(&entry.layer_digest.to_string(), wanted) {
            return Err(Passed::NotForThis(reason));
        }
        let [layer] = &manifest.layers[..] else {
            return Err(Passed::NotCompiled(format!(
                "it has {} layers, not one",
                manifest.layers.len()
            )));
        };
        if layer.size > MAX_COMPILED {
            return Err(Passed::NotCompiled(format!(
                "its code claims {} bytes, over the {MAX_COMPILED} read",
                layer.size
            )));
        }
        // The policy's word, through the one gate, on the manifest just read by digest.
        let found = match holder {
            Holder::Host(remote, _) => self
                .fetch_signatures(remote, reference, &referrer.digest)
                .await
                .map_err(|e| Passed::Signatures(e.to_string()))?,
            Holder::Kept(kept) => match kept.get(&digest).and_then(|k| k.signatures.as_ref()) {
                None => None,
                Some(s) if s.signed_digest != digest => {
                    return Err(Passed::Signatures(format!(
                        "those kept are of {}",
                        s.signed_digest
                    )));
                }
                Some(s) => Some(
                    wasm_oci_trust::signatures::cached_signatures(self.cache(), s).ok_or_else(
                        || Passed::Signatures("one kept in the cache is missing or damaged".into()),
                    )?,
                ),
            },
        };
        gate.admit_code(&referrer.digest, found.as_ref())?;
        let code = match holder {
            Holder::Host(remote, _) => with_retries("fetching precompiled code", || {
                remote.small_blob(&at, &layer.digest, layer.size)
            })
            .await
            .map_err(|f| Passed::Code(f.into_error(&at, self.scheme(&at)).to_string()))?,
            Holder::Kept(kept) => {
                let code_digest: Digest = layer
                    .digest
                    .parse()
                    .map_err(|e: wasm_oci_cache::Error| Passed::Code(e.to_string()))?;
                if !kept
                    .get(&digest)
                    .is_some_and(|k| k.blobs.contains(&code_digest))
                {
                    return Err(Passed::Code("it is not kept in the cache".into()));
                }
                let code =
                    read_kept(self.cache(), &code_digest, layer.size).map_err(Passed::Code)?;
                if code.len() as u64 != layer.size {
                    return Err(Passed::Code(format!(
                        "it is {} bytes, not the {} its manifest says",
                        code.len(),
                        layer.size
                    )));
                }
                code
            }
        };
        let kind = compiled_for.kind.expect("checked by mismatch");
        // Kept for this reference alone: the policy vouched for it here, not for another
        // module (or tag) that happens to have the same wasm.
        let store_as =
            wasm_oci_cache::vouched_engine_key(wanted.store_as, &repository_of(reference));
        let path = self
            .cache()
            .store_compiled(&store_as, &entry.layer_digest, &kind, &code)
            .map_err(|e| Passed::Cache(e.to_string()))?;
        Ok(Adopted {
            referrer: referrer.digest.clone(),
            kind,
            size: code.len() as u64,
            path,
        })
    }

    /// Attaches `code`, compiled from the wasm of `subject` (`compiled_for` says for what),
    /// as a precompiled referrer ([`COMPILED_ARTIFACT_TYPE`]) of the manifest `subject` names.
    pub async fn attach_precompiled(
        &self,
        subject: &Reference,
        code: &[u8],
        compiled_for: &CompiledFor,
    ) -> Result<Attached> {
        let mut annotations = BTreeMap::new();
        for (key, value) in [
            (COMPILED_WASMTIME, &compiled_for.wasmtime),
            (COMPILED_TARGET, &compiled_for.target),
            (COMPILED_ENGINE, &compiled_for.engine),
            (COMPILED_KIND, &compiled_for.kind),
            (COMPILED_WASM, &compiled_for.wasm),
        ] {
            if let Some(value) = value {
                annotations.insert(key.to_owned(), value.clone());
            }
        }
        let title = format!(
            "{}.{}.cwasm",
            compiled_for.target.as_deref().unwrap_or("code"),
            compiled_for.engine.as_deref().unwrap_or("engine")
        );
        let layer = Layer {
            content: code,
            media_type: COMPILED_LAYER_MEDIA_TYPE,
            title: &title,
        };
        self.attach_layer(subject, layer, COMPILED_ARTIFACT_TYPE, &annotations)
            .await
    }
}

/// Why no candidate of one list was adopted.
#[derive(Debug, PartialEq, Eq)]
enum NoneAdopted {
    /// None was for this module, host and engine.
    NoCandidate,
    /// Some were, and each was refused.
    Refused,
}

/// The blob `digest` of the cache, at most `limit` bytes, checked against its digest: a
/// blob changed in place is not what was kept.
fn read_kept(
    cache: &wasm_oci_cache::Cache,
    digest: &Digest,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let len = std::fs::metadata(cache.blob_path(digest))
        .map_err(|e| format!("{digest} is not in the cache: {e}"))?
        .len();
    if len > limit {
        return Err(format!("{digest} is {len} bytes, over the {limit} read"));
    }
    let bytes = cache.read_blob(digest).map_err(|e| e.to_string())?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(format!("{digest} in the cache hashes to {actual}"));
    }
    Ok(bytes)
}

/// An error and its causes on one line.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_must_name_this_wasm_host_and_engine() {
        let engines = vec!["aaaa".to_owned(), "bbbb".to_owned()];
        let wanted = Wanted {
            target: "x86_64-unknown-linux-gnu",
            engines: &engines,
            store_as: "aaaa",
        };
        let wasm = format!("sha256:{}", "1".repeat(64));
        let good = BTreeMap::from([
            (COMPILED_WASM.to_owned(), wasm.clone()),
            (COMPILED_TARGET.to_owned(), wanted.target.to_owned()),
            (COMPILED_ENGINE.to_owned(), "bbbb".to_owned()),
            (COMPILED_KIND.to_owned(), "module".to_owned()),
        ]);
        assert_eq!(CompiledFor::of(&good).mismatch(&wasm, &wanted), None);
        for (key, value) in [
            (COMPILED_WASM, "sha256:00"),
            (COMPILED_TARGET, "aarch64-unknown-linux-gnu"),
            (COMPILED_ENGINE, "cccc"),
            (COMPILED_KIND, "elf"),
        ] {
            let mut bad = good.clone();
            bad.insert(key.to_owned(), value.to_owned());
            assert!(
                CompiledFor::of(&bad).mismatch(&wasm, &wanted).is_some(),
                "{key}"
            );
            bad.remove(key);
            assert!(
                CompiledFor::of(&bad).mismatch(&wasm, &wanted).is_some(),
                "{key}"
            );
        }
    }
}
