//! The reference index: what a reference (`registry/repo:tag`) resolved to when it was pulled.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::{Cache, Digest, Error, Result, write_atomic};

/// What the cache knows about a reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefEntry {
    /// The fully qualified reference, e.g. `docker.io/library/hello:latest`.
    pub reference: String,
    /// Digest of the image manifest the reference resolved to.
    pub manifest_digest: Digest,
    /// Digest of the wasm layer in that manifest.
    pub layer_digest: Digest,
    /// Media type of the wasm layer.
    pub layer_media_type: String,
    /// Size of the wasm layer in bytes.
    pub size: u64,
    /// Digest of the manifest's config blob, when it was fetched too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<Digest>,
    /// The reference's signatures kept in the cache and what a signature policy concluded
    /// of them; `None` when none were fetched (entries written before signatures existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Box<Signatures>>,
    /// The host (`host[:port]`, a mirror or the registry) each manifest and blob was
    /// downloaded from, by digest; blobs the cache had already are not in it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sources: std::collections::BTreeMap<String, String>,
    /// Referrers of the manifest kept with the reference (precompiled code a layout brought,
    /// see `load`), so that a node without a registry can use them; `None` for most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<Box<KeptReferrers>>,
}

/// OCI referrers of a reference's manifest kept in the cache as blobs: the index that lists
/// them and, for each kept, its manifest, blobs and signatures. Nothing in it is trusted for
/// being here: whoever uses a referrer verifies it as one from a registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptReferrers {
    /// The OCI image index that lists the referrers (as the layout's `sha256-<hex>` tag
    /// held it), a blob; it may list more than are kept.
    pub index: Digest,
    /// The referrers kept.
    pub kept: Vec<KeptReferrer>,
}

/// One referrer kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptReferrer {
    /// Its manifest, a blob.
    pub manifest: Digest,
    /// The blobs it names (config and layers).
    pub blobs: Vec<Digest>,
    /// Its signatures (`signed_digest` is `manifest`), as a reference's are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Signatures>,
}

impl KeptReferrers {
    /// Every blob they need: the index, and each referrer's manifest, blobs and signatures.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.index).chain(self.kept.iter().flat_map(|k| {
            std::iter::once(&k.manifest).chain(&k.blobs).chain(
                k.signatures
                    .iter()
                    .flat_map(|s| std::iter::once(&s.manifest).chain(&s.payloads)),
            )
        }))
    }

    /// The referrer kept whose manifest is `digest`.
    pub fn get(&self, digest: &Digest) -> Option<&KeptReferrer> {
        self.kept.iter().find(|k| &k.manifest == digest)
    }
}

/// A reference's cosign signatures as kept in the cache (the `.sig` manifest and its
/// payloads are blobs), and the verdict on them, so that a run without the network stays
/// verified and a changed policy can check them again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signatures {
    /// The digest the signatures are for: what the reference resolved to in its registry.
    pub signed_digest: Digest,
    /// The `sha256-<hex>.sig` manifest, a blob in the cache.
    pub manifest: Digest,
    /// Its layers (the signed payloads), blobs in the cache.
    pub payloads: Vec<Digest>,
    /// The signatures a policy accepted, by key and claimed identity.
    #[serde(default)]
    pub valid: Vec<Verdict>,
}

/// One signature that verified: with which key, for which identity, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// SHA-256 of the public key's DER (SubjectPublicKeyInfo), in hex.
    pub key_fingerprint: String,
    /// The `docker-reference` the signed payload claims.
    pub identity: String,
    /// When it was verified, in seconds since the Unix epoch.
    pub verified_at: u64,
}

impl RefEntry {
    /// Every blob this entry needs: layer, manifest, config, and its signatures (with the
    /// image index they sign when the reference resolved to one, which `save` writes so that
    /// a layout can be verified as a pull was; entries pulled before it was kept lack it),
    /// and the referrers kept with it.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        let index = self
            .signatures
            .as_ref()
            .map(|s| &s.signed_digest)
            .filter(|d| **d != self.manifest_digest);
        [Some(&self.layer_digest), Some(&self.manifest_digest)]
            .into_iter()
            .chain([self.config_digest.as_ref(), index])
            .flatten()
            .chain(
                self.signatures
                    .iter()
                    .flat_map(|s| std::iter::once(&s.manifest).chain(&s.payloads)),
            )
            .chain(self.referrers.iter().flat_map(|r| r.blobs()))
    }
}

/// A reference in the index with when it was last used.
#[derive(Debug, Clone)]
pub struct RefRecord {
    /// The entry.
    pub entry: RefEntry,
    /// When it was pulled or last run.
    pub last_used: SystemTime,
    /// The index file, for removal.
    pub(crate) path: PathBuf,
}

impl Cache {
    /// Records what `entry.reference` resolved to; replaces any earlier entry atomically.
    pub fn set_ref(&self, entry: &RefEntry) -> Result<()> {
        let json = serde_json::to_vec_pretty(entry).expect("a RefEntry always serializes");
        write_atomic(&self.ref_path(&entry.reference), &json).map_err(|e| self.no_space(e))
    }

    /// Looks a fully qualified reference up; `None` when it was never pulled or its blob is gone.
    pub fn get_ref(&self, reference: &str) -> Result<Option<RefEntry>> {
        let path = self.ref_path(reference);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        let entry: RefEntry = serde_json::from_slice(&bytes)
            .map_err(|source| Error::CorruptEntry { path, source })?;
        // A hash collision of names is impossible in practice, but a stale entry whose blob was
        // removed must not be taken as a hit.
        if entry.reference != reference || !self.contains(&entry.layer_digest) {
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Records that `reference` was just used, for least-recently-used pruning. Best effort:
    /// failing to record it never fails a run.
    pub fn touch_ref(&self, reference: &str) {
        let path = self.ref_path(reference);
        if let Ok(file) = fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Every reference in the index, oldest use first; unreadable entries are skipped.
    pub fn refs(&self) -> Result<Vec<RefRecord>> {
        let mut records = Vec::new();
        self.for_each_ref(|r| {
            records.push(r);
            Ok::<_, Error>(())
        })?;
        records.sort_by_key(|r| r.last_used);
        Ok(records)
    }

    /// Hands every reference in the index to `f` as it is read, in no particular order, with
    /// no list built: `cache ls --json` of 100,000 references streams. Unreadable entries are
    /// skipped; the first error of `f` stops the walk.
    pub fn for_each_ref<E: From<Error>>(
        &self,
        mut f: impl FnMut(RefRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        use std::io::Read as _;
        let dir = self.refs_dir();
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
            action: "listing",
            path: dir.clone(),
            source,
        })?;
        let mut bytes = Vec::with_capacity(1024);
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            // One open, then the size and time from the descriptor: no second path lookup.
            let Ok(mut file) = fs::File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            bytes.clear();
            if file.read_to_end(&mut bytes).is_err() {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<RefEntry>(&bytes) else {
                tracing::warn!(path = %path.display(), "skipping a corrupt index entry");
                continue;
            };
            f(RefRecord {
                entry,
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
            })?;
        }
        Ok(())
    }

    pub(crate) fn ref_path(&self, reference: &str) -> PathBuf {
        let key = Digest::of(reference.as_bytes());
        self.refs_dir().join(format!("{}.json", key.hex()))
    }
}

/// Records `entry` as last used `ago` (for tests of least-recently-used order, which set the
/// order instead of waiting for the clock).
#[cfg(test)]
pub(crate) fn used_ago(cache: &Cache, entry: &RefEntry, ago: std::time::Duration) {
    fs::File::options()
        .write(true)
        .open(cache.ref_path(&entry.reference))
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

/// A reference `localhost:5000/NAME:v1` whose layer is `layer`, recorded in `cache`.
#[cfg(test)]
pub(crate) fn sample(cache: &Cache, name: &str, layer: &[u8]) -> RefEntry {
    let entry = RefEntry {
        reference: format!("localhost:5000/{name}:v1"),
        manifest_digest: cache
            .insert(format!("manifest of {name}").as_bytes())
            .unwrap(),
        layer_digest: cache.insert(layer).unwrap(),
        layer_media_type: "application/wasm".into(),
        size: layer.len() as u64,
        config_digest: None,
        signatures: None,
        sources: Default::default(),
        referrers: None,
    };
    cache.set_ref(&entry).unwrap();
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_resolves_only_while_its_blob_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let layer = cache.insert(b"\0asm\x01\0\0\0").unwrap();
        let entry = RefEntry {
            reference: "localhost:5000/hello:v1".into(),
            manifest_digest: Digest::of(b"{}"),
            layer_digest: layer.clone(),
            layer_media_type: "application/wasm".into(),
            size: 8,
            config_digest: None,
            signatures: None,
            sources: Default::default(),
            referrers: None,
        };
        assert_eq!(cache.get_ref(&entry.reference).unwrap(), None);
        cache.set_ref(&entry).unwrap();
        assert_eq!(
            cache.get_ref(&entry.reference).unwrap(),
            Some(entry.clone())
        );
        assert_eq!(cache.get_ref("localhost:5000/hello:v2").unwrap(), None);
        fs::remove_file(cache.blob_path(&layer)).unwrap();
        assert_eq!(cache.get_ref(&entry.reference).unwrap(), None);
    }

    #[test]
    fn an_entry_needs_its_signature_blobs_and_old_entries_read_without_them() {
        let d = |s: &str| Digest::of(s.as_bytes());
        let mut entry = RefEntry {
            reference: "localhost:5000/hello:v1".into(),
            manifest_digest: d("manifest"),
            layer_digest: d("layer"),
            layer_media_type: "application/wasm".into(),
            size: 5,
            config_digest: Some(d("config")),
            signatures: None,
            sources: Default::default(),
            referrers: None,
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(!json.contains("signatures"), "{json}");
        assert_eq!(serde_json::from_str::<RefEntry>(&json).unwrap(), entry);
        entry.signatures = Some(Box::new(Signatures {
            signed_digest: d("manifest"),
            manifest: d("sig manifest"),
            payloads: vec![d("payload 1"), d("payload 2")],
            valid: Vec::new(),
        }));
        let blobs: Vec<_> = entry.blobs().cloned().collect();
        for needed in [
            "layer",
            "manifest",
            "config",
            "sig manifest",
            "payload 1",
            "payload 2",
        ] {
            assert!(blobs.contains(&d(needed)), "{needed}");
        }
    }
}
