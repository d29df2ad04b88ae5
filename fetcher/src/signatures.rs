//! Signing's network half: the signatures of a digest fetched from a registry (its
//! `sha256-<hex>.sig` manifest and payloads), and a signature appended there. What they mean
//! is decided by [`wasm_oci_trust`]'s gate; this module only moves them.

use base64::Engine as _;
use oci_client::Reference;
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use wasm_oci_trust::SignatureBlob;
use wasm_oci_trust::key::PrivateKey;
use wasm_oci_trust::payload::{self, signature_tag};
use wasm_oci_trust::signatures::{Fetched, MAX_SIGNATURE_MANIFEST, signature_layers};

use crate::remote::registry::{Failure, Registry};
use crate::remote::retry::with_retries;
use crate::{Error, Fetcher, Result};

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
        let layers = signature_layers(&manifest).map_err(|e| invalid(e.to_string()))?;
        let blobs = futures_util::future::join_all(layers.iter().map(|layer| {
            let d = layer.digest.to_string();
            let at = &at;
            async move {
                with_retries("fetching a signature", || {
                    remote.small_blob(at, &d, layer.size)
                })
                .await
            }
        }))
        .await;
        let mut out = Vec::new();
        for (layer, blob) in layers.into_iter().zip(blobs) {
            let payload = blob.map_err(|f| f.into_error(&at, self.scheme(reference)))?;
            out.push((
                layer.digest,
                SignatureBlob {
                    payload,
                    signature: layer.signature,
                },
            ));
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
                wasm_oci_artifact::media::MAX_DOCUMENT,
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
        wasm_oci_artifact::check_digest(digest).map_err(|reason| {
            Error::invalid_reference(format!("{}@{digest}", reference.whole()), reason.to_owned())
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
        let public = key.public();
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        let at = sig_reference(reference, &digest);
        let failed = |f: Failure| f.into_error(&at, scheme);
        let Some(appended) =
            wasm_oci_trust::signatures::append(existing.as_ref(), &payload, &signature, &public)
        else {
            // This key signed this payload already: another copy would add nothing.
            let count = existing.as_ref().map_or(0, |f| f.layers.len());
            tracing::info!(%digest, signatures = count, "signed already by this key");
            return Ok(Signed {
                reference: reference.whole(),
                signature_tag: signature_tag(&digest),
                digest,
                identity,
                signatures: count,
                key_fingerprint: public.fingerprint().to_owned(),
            });
        };
        for (blob_digest, bytes) in [&appended.payload, &appended.config] {
            let blob_digest = blob_digest.to_string();
            let present = with_retries("checking for a blob", || {
                remote.blob_exists(&at, &blob_digest)
            })
            .await
            .map_err(failed)?;
            if !present {
                with_retries("uploading a signature", || {
                    remote.upload_blob(&at, &blob_digest, bytes.len() as u64, || {
                        bytes.clone().into()
                    })
                })
                .await
                .map_err(failed)?;
            }
        }
        let count = appended.count;
        with_retries("uploading the signature manifest", || {
            remote.put_manifest(&at, &appended.manifest, OCI_IMAGE_MEDIA_TYPE)
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
            key_fingerprint: public.fingerprint().to_owned(),
        })
    }
}

/// Where the signatures of `digest` live: the `sha256-<hex>.sig` tag of the same repository.
fn sig_reference(reference: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        signature_tag(digest),
    )
}
