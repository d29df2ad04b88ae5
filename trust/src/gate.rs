//! The one trust decision, whoever asks: a registry pull, a layout, a cached reference,
//! `verify`, the shim's rootfs modules. [`Gate::new`] finds the policy's scope for a
//! reference once; its methods answer what each path needs to know, at the moment it needs
//! it (before any download, once signatures are found, from what the cache holds).

use oci_client::Reference;
use wasm_oci_cache::{Cache, Digest, RefEntry, Verdict};

use crate::error::{InvalidSignature, Refusal};
use crate::policy::SignatureBlob;
use crate::policy::{Policy, Requirement, Scope};
use crate::signatures::{Fetched, cached_signatures};

/// The policy's scope for one reference, and every decision made with it.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    reference: &'a Reference,
    scope: Scope<'a>,
}

impl<'a> Gate<'a> {
    /// The gate `policy` sets for `reference` (its most specific scope).
    pub fn new(policy: &'a Policy, reference: &'a Reference) -> Self {
        Self {
            reference,
            scope: policy.scope_for(reference),
        }
    }

    /// The scope, as errors name it.
    pub fn describe(&self) -> String {
        self.scope.describe()
    }

    /// The scope.
    pub fn scope(&self) -> &Scope<'a> {
        &self.scope
    }

    /// Whether signatures must be found to accept anything.
    pub fn needs_signatures(&self) -> bool {
        self.scope.needs_signatures()
    }

    /// What can be decided before anything is downloaded: a scope that rejects everything
    /// refuses here.
    pub fn admit(&self) -> Result<(), Refusal> {
        match self.scope.rejects() {
            true => Err(Refusal::Rejected),
            false => Ok(()),
        }
    }

    /// The verdicts the signatures `found` (of `signed_digest`, what the reference resolved
    /// to) earn: none asked when the scope needs no signature, else the valid ones, or why
    /// the image is refused.
    pub fn judge(
        &self,
        signed_digest: &str,
        found: Option<&Fetched>,
    ) -> Result<Vec<Verdict>, Refusal> {
        self.admit()?;
        if !self.needs_signatures() {
            return Ok(Vec::new());
        }
        let blobs = found.map(Fetched::blobs).unwrap_or_default();
        self.scope.check(self.reference, signed_digest, &blobs)
    }

    /// Each signature of `signed_digest` against the scope's first signature requirement,
    /// valid or why not, in order: what `verify` lists. Empty when the scope needs none.
    pub fn each(
        &self,
        signed_digest: &str,
        signatures: &[SignatureBlob],
    ) -> Vec<Result<Verdict, InvalidSignature>> {
        let Some((keys, identity)) = self.scope.requirements.iter().find_map(|r| match r {
            Requirement::SigstoreSigned { keys, identity } => Some((keys, identity)),
            _ => None,
        }) else {
            return Vec::new();
        };
        signatures
            .iter()
            .map(|blob| {
                crate::policy::check_one(self.reference, signed_digest, blob, keys, identity)
            })
            .collect()
    }

    /// Whether `entry`, from `cache`, may be used without asking the registry. Its
    /// signatures are verified again from the blobs the cache holds, never taken from the
    /// verdicts the record carries (a record is a file, and files can be written), and the
    /// signed digest must be the entry's manifest or an index the cache holds that lists it.
    /// `Some` verdicts when they differ from those recorded (the policy changed), for the
    /// caller to record.
    pub fn check_cached(
        &self,
        cache: &Cache,
        entry: &RefEntry,
    ) -> Result<Option<Vec<Verdict>>, Refusal> {
        self.admit()?;
        if !self.needs_signatures() {
            return Ok(None);
        }
        let Some(signatures) = &entry.signatures else {
            return Err(Refusal::NotCached);
        };
        bound(cache, entry, &signatures.signed_digest)?;
        let found = cached_signatures(cache, signatures).ok_or(Refusal::CachedIncomplete)?;
        let valid = self.scope.check(
            self.reference,
            &signatures.signed_digest.to_string(),
            &found.blobs(),
        )?;
        let key = |v: &Verdict| (v.key_fingerprint.clone(), v.identity.clone());
        let mut now: Vec<_> = valid.iter().map(key).collect();
        let mut was: Vec<_> = signatures.valid.iter().map(key).collect();
        now.sort();
        was.sort();
        Ok((now != was).then_some(valid))
    }

    /// Whether content named by this reference that carries no signature at all (a module
    /// read from a container's rootfs) may be used: only where the scope neither rejects nor
    /// needs signatures.
    pub fn admit_unsigned(&self) -> Result<(), Refusal> {
        if self.scope.rejects() || self.scope.needs_signatures() {
            return Err(Refusal::NeedsSignedReference {
                scope: self.describe(),
                image: wasm_oci_artifact::printable(&self.reference.whole()),
            });
        }
        Ok(())
    }
}

/// Whether content whose name is unknown (a rootfs module without an image name, a layout
/// entry without a reference name) may be used: only under a policy that accepts anything
/// everywhere, since no scope can be picked for it.
pub fn admit_unnamed(policy: &Policy) -> Result<(), Refusal> {
    match policy.accepts_anything_everywhere() {
        true => Ok(()),
        false => Err(Refusal::Unnamed {
            policy: policy
                .source()
                .map_or("(none)".into(), |p| p.display().to_string()),
        }),
    }
}

/// Whether `signed` (the digest a cached entry's signatures are of) is the entry's manifest,
/// or an index held in the cache, whole, that lists it; and the manifest, held whole, lists
/// the entry's layer. Otherwise a record could pair one image's signatures with another's
/// content.
fn bound(cache: &Cache, entry: &RefEntry, signed: &Digest) -> Result<(), Refusal> {
    let unbound = |why| Refusal::CachedUnbound {
        signed: signed.to_string(),
        why,
    };
    let read = |digest: &Digest| {
        cache
            .read_blob(digest)
            .ok()
            .filter(|bytes| &Digest::of(bytes) == digest)
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    };
    let lists = |document: &serde_json::Value, field: &str, digest: &Digest| {
        document[field].as_array().is_some_and(|entries| {
            entries
                .iter()
                .any(|e| e["digest"].as_str() == Some(&digest.to_string()))
        })
    };
    if signed != &entry.manifest_digest {
        let index = read(signed).ok_or_else(|| unbound("the signed index is not in the cache"))?;
        if !lists(&index, "manifests", &entry.manifest_digest) {
            return Err(unbound("the signed index does not list its manifest"));
        }
    }
    let manifest =
        read(&entry.manifest_digest).ok_or_else(|| unbound("its manifest is not in the cache"))?;
    if !lists(&manifest, "layers", &entry.layer_digest) {
        return Err(unbound("its manifest does not list its layer"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use wasm_oci_cache::Signatures;

    use super::*;
    use crate::key::PrivateKey;

    /// A cache holding `repo:v1` (a manifest listing a layer) signed by `key`, and its entry.
    fn signed_entry(cache: &Cache, key: &PrivateKey) -> (Reference, RefEntry) {
        let reference = wasm_oci_artifact::parse_reference("localhost:5000/app:v1").unwrap();
        let layer = cache.insert(b"\0asm\x01\0\0\0").unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "layers": [{"mediaType": "application/wasm", "digest": layer.to_string(), "size": 8}],
        }))
        .unwrap();
        let manifest_digest = cache.insert(&manifest).unwrap();
        let payload = crate::payload::make("localhost:5000/app", &manifest_digest.to_string());
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        let appended =
            crate::signatures::append(None, &payload, &signature, &key.public()).unwrap();
        let payload_digest = cache.insert(&payload).unwrap();
        let sig_manifest = cache.insert(&appended.manifest).unwrap();
        let entry = RefEntry {
            reference: reference.whole(),
            manifest_digest: manifest_digest.clone(),
            layer_digest: layer,
            layer_media_type: "application/wasm".into(),
            size: 8,
            config_digest: None,
            signatures: Some(Box::new(Signatures {
                signed_digest: manifest_digest,
                manifest: sig_manifest,
                payloads: vec![payload_digest],
                valid: vec![Verdict {
                    key_fingerprint: key.public().fingerprint().to_owned(),
                    identity: "localhost:5000/app".into(),
                    verified_at: 1,
                }],
            })),
            sources: Default::default(),
            referrers: None,
        };
        (reference, entry)
    }

    fn policy_of(key: &PrivateKey) -> Policy {
        Policy::requiring(
            vec![key.public()],
            crate::policy::SignedIdentity::MatchRepository,
        )
    }

    /// The verdicts a record carries are not believed: a record naming the policy's key for
    /// signatures that key never made is refused, and so is a record whose signed digest is
    /// not its content's.
    #[test]
    fn a_cached_record_is_verified_again_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let signer = PrivateKey::generate();
        let (reference, entry) = signed_entry(&cache, &signer);
        let policy = policy_of(&signer);
        let gate = Gate::new(&policy, &reference);
        // As recorded: nothing to record again.
        assert!(matches!(gate.check_cached(&cache, &entry), Ok(None)));

        // The record edited to claim another key.
        let other = PrivateKey::generate();
        let mut forged = entry.clone();
        forged.signatures.as_mut().unwrap().valid[0].key_fingerprint =
            other.public().fingerprint().to_owned();
        let stricter = policy_of(&other);
        let e = Gate::new(&stricter, &reference)
            .check_cached(&cache, &forged)
            .unwrap_err();
        assert!(matches!(e, Refusal::NoValidSignature(_)), "{e}");
        assert!(e.to_string().contains("not made by the key"), "{e}");

        // The record pointing its layer elsewhere: the signed manifest does not list it.
        let mut moved = entry.clone();
        moved.layer_digest = cache.insert(b"\0asm\x01\0\0\0other").unwrap();
        let e = gate.check_cached(&cache, &moved).unwrap_err();
        assert!(e.to_string().contains("does not list its layer"), "{e}");

        // A signature blob changed in place is not a signature.
        let payload = &entry.signatures.as_ref().unwrap().payloads[0];
        let path = cache.blob_path(payload);
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&path, permissions).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        let e = gate.check_cached(&cache, &entry).unwrap_err();
        assert!(matches!(e, Refusal::CachedIncomplete), "{e}");
    }
}
