//! Pull: reference -> manifest -> wasm layer, streamed into the cache and verified on the way.

use std::path::PathBuf;

use futures_util::StreamExt;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use wasm_oci_cache::{Digest, Ingested, RefEntry};

use crate::manifest::{select_platform, wasm_layer};
use crate::{Error, Fetcher, Result};

const MANIFEST_MEDIA_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// What a pull left in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The index entry recorded for the reference.
    pub entry: RefEntry,
    /// Path of the wasm blob in the cache.
    pub path: PathBuf,
    /// Whether the blob had to be downloaded (false when the cache had it).
    pub downloaded: bool,
    /// The layer's `org.opencontainers.image.title` annotation, if any.
    pub title: Option<String>,
}

impl Fetcher {
    /// Resolves `reference` in its registry and makes sure its wasm layer is in the cache.
    #[tracing::instrument(skip(self), fields(reference = %reference))]
    pub async fn pull(&self, reference: &Reference) -> Result<Pulled> {
        let client = self.client(reference);
        let scheme = self.scheme(reference);
        let name = reference.whole();
        let oci_err = |e| Error::from_oci(e, reference, scheme);

        let (mut bytes, mut digest) = client
            .pull_manifest_raw(reference, &RegistryAuth::Anonymous, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(oci_err)?;
        let manifest: OciImageManifest = match parse_manifest(&bytes, &name)? {
            OciManifest::Image(m) => m,
            OciManifest::ImageIndex(index) => {
                let entry = select_platform(&index, &name)?;
                tracing::debug!(digest = %entry.digest, "chose index entry");
                let by_digest = reference.clone_with_digest(entry.digest.clone());
                (bytes, digest) = client
                    .pull_manifest_raw(&by_digest, &RegistryAuth::Anonymous, MANIFEST_MEDIA_TYPES)
                    .await
                    .map_err(oci_err)?;
                match parse_manifest(&bytes, &name)? {
                    OciManifest::Image(m) => m,
                    OciManifest::ImageIndex(_) => {
                        return Err(Error::InvalidManifest {
                            reference: name,
                            reason: "an image index points to another index; nested indexes are not followed".into(),
                        });
                    }
                }
            }
        };
        let layer = wasm_layer(&manifest, &name)?;
        let layer_digest = parse_digest(&layer.digest, &name)?;
        let size = u64::try_from(layer.size).map_err(|_| Error::InvalidManifest {
            reference: name.clone(),
            reason: format!("layer {} has a negative size", layer.digest),
        })?;
        let manifest_digest = parse_digest(&digest, &name)?;

        let (path, downloaded) = self
            .fetch_blob(&client, reference, layer, &layer_digest, size)
            .await?;
        self.cache.insert(&bytes)?;
        let entry = RefEntry {
            reference: name,
            manifest_digest,
            layer_digest,
            layer_media_type: layer.media_type.clone(),
            size,
        };
        self.cache.set_ref(&entry)?;
        tracing::info!(digest = %entry.layer_digest, bytes = size, downloaded, "pulled");
        Ok(Pulled {
            entry,
            path,
            downloaded,
            title: layer
                .annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.title").cloned()),
        })
    }

    async fn fetch_blob(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &OciDescriptor,
        digest: &Digest,
        size: u64,
    ) -> Result<(PathBuf, bool)> {
        // Taking the writer may wait for another process fetching the same blob.
        let cache = self.cache.clone();
        let d = digest.clone();
        let ingested = tokio::task::spawn_blocking(move || cache.ingest(&d, Some(size)))
            .await
            .expect("ingest task does not panic")?;
        let mut writer = match ingested {
            Ingested::Present(path) => return Ok((path, false)),
            Ingested::Writer(w) => w,
        };
        let name = reference.whole();
        let mut stream = client
            .pull_blob_stream(reference, layer)
            .await
            .map_err(|e| Error::from_oci(e, reference, self.scheme(reference)))?;
        if let Some(p) = &self.progress {
            p.start(&layer.digest, Some(size));
        }
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| stream_error(e, &name))?;
                writer.write(&chunk)?;
                if let Some(p) = &self.progress {
                    p.advance(chunk.len() as u64);
                }
            }
            Ok::<_, Error>(writer.commit()?)
        }
        .await;
        if let Some(p) = &self.progress {
            p.finish();
        }
        match result {
            Ok(path) => Ok((path, true)),
            Err(Error::Cache(wasm_oci_cache::Error::DigestMismatch { expected, actual })) => {
                Err(Error::DigestMismatch {
                    reference: name,
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }
}

fn parse_manifest(bytes: &[u8], reference: &str) -> Result<OciManifest> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
        reference: reference.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_digest(digest: &str, reference: &str) -> Result<Digest> {
    digest
        .parse()
        .map_err(|e: wasm_oci_cache::Error| Error::InvalidManifest {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })
}

/// Turns a failed read of the blob stream into our error, keeping digest failures recognisable.
fn stream_error(e: std::io::Error, reference: &str) -> Error {
    if let Some(oci_client::errors::DigestError::VerificationError { expected, actual }) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        return Error::DigestMismatch {
            reference: reference.to_owned(),
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    Error::Io {
        action: "downloading the wasm layer of",
        path: reference.into(),
        source: e,
    }
}
