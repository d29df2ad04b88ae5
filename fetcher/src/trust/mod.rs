//! Trust: cosign-compatible signatures of manifests (key pairs in cosign's format, the
//! simple-signing payload, signatures stored as the `sha256-<hex>.sig` attachment), and the
//! `containers-policy.json(5)` policy that decides what may be pulled and run.

pub mod key;
pub mod payload;
pub mod policy;

use std::collections::BTreeMap;

use base64::Engine as _;
use oci_client::Reference;
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use serde_json::json;
use wasm_oci_cache::{Cache, Digest, RefEntry, Signatures};

use crate::registry::{Failure, Registry};
use crate::retry::with_retries;
use crate::{Error, Fetcher, Result};
use key::PrivateKey;
use payload::{SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, signature_tag};
use policy::{Scope, SignatureBlob};

/// A key file larger than this is refused: a PEM key is a few hundred bytes.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads a trust file the operator or user names (a policy, a key): only a regular file
/// (opened without blocking, so a FIFO cannot hang the reader; `/dev/zero` is refused rather
/// than read forever), and only up to `max` bytes. Symlinks are followed: keys mounted from
/// a Kubernetes secret are reached through them.
pub fn read_trust_file(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is over {max} bytes"),
        ));
    }
    // Reads of a regular file never block; the flag only served the open.
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is over {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// A `.sig` manifest larger than this is refused: cosign's hold a few hundred bytes per
/// signature.
pub const MAX_SIGNATURE_MANIFEST: u64 = 256 << 10;
/// More signatures than this on one digest are refused rather than fetched one by one.
pub const MAX_SIGNATURES: usize = 64;

/// The signatures of one digest as found in a registry or the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The `.sig` manifest's bytes and digest.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: Digest,
    /// Each signature layer: its digest and content.
    pub layers: Vec<(Digest, SignatureBlob)>,
}

impl Fetched {
    /// The signatures alone.
    pub fn blobs(&self) -> Vec<SignatureBlob> {
        self.layers.iter().map(|(_, b)| b.clone()).collect()
    }
}

/// What `sign` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signed {
    /// The reference signed.
    pub reference: String,
    /// The manifest digest signed.
    pub digest: String,
    /// The identity the payload claims.
    pub identity: String,
    /// Where the signatures are stored.
    pub signature_tag: String,
    /// How many signatures the digest has now.
    pub signatures: usize,
    /// SHA-256 of the signing key's public DER, in hex.
    pub key_fingerprint: String,
}

/// A descriptor of the signature manifest, as much of it as is read.
#[derive(serde::Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(serde::Deserialize)]
struct SigLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The layers of a `.sig` manifest that are simple-signing payloads with a signature, and
/// their sizes, checked before any is fetched.
pub(crate) fn signature_layers(
    manifest: &[u8],
    reference: &str,
) -> Result<Vec<(Digest, u64, String)>, String> {
    let parsed: SigManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("its signature manifest is not an OCI manifest: {e}"))?;
    if parsed.layers.len() > MAX_SIGNATURES {
        return Err(format!(
            "its signature manifest lists {} layers; more than {MAX_SIGNATURES} are refused",
            parsed.layers.len()
        ));
    }
    let mut out = Vec::new();
    for layer in parsed.layers {
        if layer.media_type != SIMPLESIGNING_MEDIA_TYPE {
            tracing::debug!(reference, media_type = %crate::text::printable(&layer.media_type), "skipping a signature layer of another type");
            continue;
        }
        let digest: Digest = layer.digest.parse().map_err(|e: wasm_oci_cache::Error| {
            format!(
                "a signature layer's digest is invalid: {}",
                crate::text::printable(&e.to_string())
            )
        })?;
        let size = u64::try_from(layer.size)
            .ok()
            .filter(|s| *s <= payload::MAX_PAYLOAD_SIZE)
            .ok_or_else(|| {
                format!(
                    "a signature layer claims {} bytes; payloads over {} bytes are refused",
                    layer.size,
                    payload::MAX_PAYLOAD_SIZE
                )
            })?;
        let signature = layer
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        out.push((digest, size, signature));
    }
    Ok(out)
}

impl Fetcher {
    /// The signatures of `digest` in `reference`'s repository; `None` when it has none.
    pub(crate) async fn fetch_signatures(
        &self,
        remote: &Registry,
        reference: &Reference,
        digest: &str,
    ) -> Result<Option<Fetched>> {
        let name = reference.whole();
        let invalid = |reason: String| Error::InvalidSignatures {
            reference: name.clone(),
            reason,
        };
        let at = sig_reference(reference, digest);
        let fetched = with_retries("fetching the signatures", || {
            remote.manifest(&at, &[OCI_IMAGE_MEDIA_TYPE], MAX_SIGNATURE_MANIFEST)
        })
        .await;
        let (manifest, manifest_digest) = match fetched {
            Ok(found) => found,
            Err(f) if f.is_not_found() => return Ok(None),
            Err(f) => return Err(f.into_error(&at, self.scheme(reference))),
        };
        if manifest.len() as u64 > MAX_SIGNATURE_MANIFEST {
            return Err(invalid(format!(
                "its signature manifest is over {MAX_SIGNATURE_MANIFEST} bytes"
            )));
        }
        let layers = signature_layers(&manifest, &name).map_err(invalid)?;
        let blobs = futures_util::future::join_all(layers.iter().map(|(d, size, _)| {
            let d = d.to_string();
            let at = &at;
            async move {
                with_retries("fetching a signature", || remote.small_blob(at, &d, *size)).await
            }
        }))
        .await;
        let mut out = Vec::new();
        for ((digest, _, signature), blob) in layers.into_iter().zip(blobs) {
            let payload = blob.map_err(|f| f.into_error(&at, self.scheme(reference)))?;
            out.push((digest, SignatureBlob { payload, signature }));
        }
        Ok(Some(Fetched {
            manifest_digest: manifest_digest
                .parse()
                .map_err(|e: wasm_oci_cache::Error| invalid(e.to_string()))?,
            manifest,
            layers: out,
        }))
    }

    /// The digest `reference` resolves to in its registry, and its signatures there.
    pub async fn signatures(&self, reference: &Reference) -> Result<(String, Option<Fetched>)> {
        let remote = self.remote(reference).await?;
        let digest = self.resolve_digest(&remote, reference).await?;
        let fetched = self.fetch_signatures(&remote, reference, &digest).await?;
        Ok((digest, fetched))
    }

    /// The manifest digest `reference` names: its own digest when it has one (checked
    /// against what the registry serves), else what the registry answers for its tag, read
    /// once. `sign` signs what this returns, never a second reading of the tag.
    pub async fn digest_to_sign(&self, reference: &Reference) -> Result<String> {
        let remote = self.remote(reference).await?;
        self.resolve_digest(&remote, reference).await
    }

    async fn resolve_digest(&self, remote: &Registry, reference: &Reference) -> Result<String> {
        let (_, digest) = with_retries("fetching the manifest", || {
            remote.manifest(
                reference,
                crate::pull::MANIFEST_MEDIA_TYPES,
                crate::pull::MAX_CONFIG_SIZE,
            )
        })
        .await
        .map_err(|f| f.into_error(reference, self.scheme(reference)))?;
        Ok(digest)
    }

    /// Signs the manifest `digest` of `reference`'s repository with `key` and appends the
    /// signature to its `sha256-<hex>.sig` manifest, as cosign does; earlier signatures are
    /// kept. The digest is the caller's: what push returned, or what `digest_to_sign`
    /// resolved once; the tag is never read again here, so a registry that answers the
    /// tag with other content between the two cannot get that content signed.
    pub async fn sign(
        &self,
        reference: &Reference,
        digest: &str,
        key: &PrivateKey,
    ) -> Result<Signed> {
        crate::reference::check_digest(digest).map_err(|reason| Error::InvalidReference {
            reference: format!("{}@{digest}", reference.whole()),
            reason: reason.to_owned(),
        })?;
        let digest = digest.to_owned();
        let remote = self.remote(reference).await?;
        let scheme = self.scheme(reference);
        let existing = self.fetch_signatures(&remote, reference, &digest).await?;
        // The reference as named, without a digest: cosign's `docker-reference` is the
        // repository; a tag is kept, as containers/image writes it, so that a policy's
        // default matchRepoDigestOrExact accepts it too.
        let identity = match (reference.digest(), reference.tag()) {
            (None, Some(tag)) => {
                format!("{}/{}:{tag}", reference.registry(), reference.repository())
            }
            _ => format!("{}/{}", reference.registry(), reference.repository()),
        };
        let payload = payload::make(&identity, &digest);
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        let payload_digest = Digest::of(&payload).to_string();

        let mut layers: Vec<serde_json::Value> = match &existing {
            Some(f) => serde_json::from_slice::<serde_json::Value>(&f.manifest)
                .ok()
                .and_then(|m| m["layers"].as_array().cloned())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        layers.push(json!({
            "mediaType": SIMPLESIGNING_MEDIA_TYPE,
            "size": payload.len(),
            "digest": payload_digest,
            "annotations": { SIGNATURE_ANNOTATION: signature },
        }));
        let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        }))
        .expect("json serializes");
        let config_digest = Digest::of(&config).to_string();
        let at = sig_reference(reference, &digest);
        let failed = |f: Failure| f.into_error(&at, scheme);
        for (blob_digest, bytes) in [(&payload_digest, &payload), (&config_digest, &config)] {
            let present = with_retries("checking for a blob", || {
                remote.blob_exists(&at, blob_digest)
            })
            .await
            .map_err(failed)?;
            if !present {
                with_retries("uploading a signature", || {
                    remote.upload_blob(&at, blob_digest, bytes.len() as u64, || {
                        bytes.clone().into()
                    })
                })
                .await
                .map_err(failed)?;
            }
        }
        let count = layers.len();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": config.len(),
                "digest": config_digest,
            },
            "layers": layers,
        }))
        .expect("json serializes");
        with_retries("uploading the signature manifest", || {
            remote.put_manifest(&at, &manifest, OCI_IMAGE_MEDIA_TYPE)
        })
        .await
        .map_err(failed)?;
        tracing::info!(%digest, signatures = count, "signed");
        Ok(Signed {
            reference: reference.whole(),
            signature_tag: signature_tag(&digest),
            digest,
            identity,
            signatures: count,
            key_fingerprint: key.public().fingerprint().to_owned(),
        })
    }
}

/// One signature checked against `keys` and `identity` for `reference`, whose manifest is
/// `signed_digest`: the verdict, or why it is not valid.
pub fn verify_one(
    reference: &Reference,
    signed_digest: &str,
    blob: &SignatureBlob,
    keys: &[key::PublicKey],
    identity: &policy::SignedIdentity,
) -> std::result::Result<wasm_oci_cache::Verdict, String> {
    policy::check_one(reference, signed_digest, blob, keys, identity)
}

/// Where the signatures of `digest` live: the `sha256-<hex>.sig` tag of the same repository.
fn sig_reference(reference: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        signature_tag(digest),
    )
}

/// Signatures kept in the cache: what `entry` records, read back from the blobs.
pub fn cached_signatures(cache: &Cache, signatures: &Signatures) -> Option<Vec<SignatureBlob>> {
    let manifest = cache.read_blob(&signatures.manifest).ok()?;
    let layers = signature_layers(&manifest, "").ok()?;
    layers
        .into_iter()
        .map(|(digest, _, signature)| {
            let payload = cache.read_blob(&digest).ok()?;
            Some(SignatureBlob { payload, signature })
        })
        .collect()
}

/// The verdicts `fetched` earns for `reference`, signed at `digest`, under `scope`: none
/// asked when the scope needs no signature, else the valid ones, or why none is. What a pull
/// and a layout both decide with the signatures they found.
pub(crate) fn verdicts(
    scope: &Scope<'_>,
    reference: &Reference,
    digest: &str,
    fetched: Option<&Fetched>,
) -> std::result::Result<Vec<wasm_oci_cache::Verdict>, String> {
    if !scope.needs_signatures() {
        return Ok(Vec::new());
    }
    let blobs = fetched.map(Fetched::blobs).unwrap_or_default();
    scope.check(reference, digest, &blobs)
}

/// Whether `entry`, from the cache, may be used for `reference` under `scope` without asking
/// the registry: the verdict recorded when it was pulled still satisfies the scope, or its
/// cached signatures do when checked again (the policy changed). The refusal says why.
pub fn check_cached(
    cache: &Cache,
    reference: &Reference,
    entry: &RefEntry,
    scope: &Scope<'_>,
) -> std::result::Result<Option<Vec<wasm_oci_cache::Verdict>>, String> {
    if scope.rejects() {
        return Err("the scope rejects every image".into());
    }
    if !scope.needs_signatures() {
        return Ok(None);
    }
    let Some(signatures) = &entry.signatures else {
        return Err("the cache holds no signatures for it".into());
    };
    if scope.satisfied_by(reference, &signatures.valid) {
        return Ok(None);
    }
    let blobs =
        cached_signatures(cache, signatures).ok_or("its cached signatures are incomplete")?;
    scope
        .check(reference, &signatures.signed_digest.to_string(), &blobs)
        .map(Some)
}
