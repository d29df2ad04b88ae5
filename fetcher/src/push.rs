//! Push: a local `.wasm` file becomes an OCI artifact in the CNCF or the wasm-to-oci layout.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use wasm_oci_artifact::media::{
    CNCF_CONFIG_MEDIA_TYPE, CNCF_LAYER_MEDIA_TYPE, WASM_TO_OCI_CONFIG_MEDIA_TYPE,
    WASM_TO_OCI_LAYER_MEDIA_TYPE,
};
use wasm_oci_cache::Digest;

use crate::error::{Error, Result};
use crate::inspect::{WasmKind, interface};
use crate::progress::{Blob, Progress, Transfer};
use crate::remote::failure::Failure;
use crate::remote::retry::with_retries;
use crate::remote::transport::Transport;

/// What a push needs, handed to it by the fetcher: how to reach the registry, and whom to
/// tell of progress.
pub(crate) struct Push<'a> {
    pub(crate) transport: &'a Transport,
    pub(crate) progress: Option<&'a dyn Progress>,
}

/// Which artifact layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushFormat {
    /// CNCF TAG Runtime: config `application/vnd.wasm.config.v0+json`, layer `application/wasm`.
    #[default]
    Cncf,
    /// wasm-to-oci (2019): config `application/vnd.wasm.config.v1+json` holding `{}`,
    /// layer `application/vnd.wasm.content.layer.v1+wasm`.
    WasmToOci,
}

/// What a push adds to the manifest it writes, beyond the layout's own fields.
#[derive(Debug, Clone, Default)]
pub struct PushExtras {
    /// The manifest's `annotations`.
    pub annotations: BTreeMap<String, String>,
    /// The manifest's `artifactType`, in place of the layout's.
    pub artifact_type: Option<String>,
    /// Also write a Linux image holding the module as its entrypoint, and make the
    /// reference an index of both (see the fetcher's `image` module): containerd then pulls, unpacks and
    /// runs `image: REFERENCE` under the wasm-oci shim, and wasm readers pick the wasm entry.
    pub image: bool,
}

/// What a push wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    /// The reference pushed to.
    pub reference: String,
    /// Digest of what the reference names: the wasm manifest, or the index with
    /// [`PushExtras::image`] (what containerd pulls, and what is signed).
    pub digest: String,
    /// Digest of the wasm manifest, when it is an entry of the index [`Pushed::digest`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Size of the wasm layer in bytes.
    pub size: u64,
    /// Digest of the wasm layer.
    pub layer_digest: String,
    /// Media type of the wasm layer.
    pub layer_media_type: String,
    /// Media type of the config.
    pub config_media_type: String,
    /// Module or component.
    pub kind: WasmKind,
}

/// What a push of several platforms as one index wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PushedIndex {
    /// The reference pushed to: it names the index.
    pub reference: String,
    /// Digest of the index.
    pub digest: String,
    /// Each entry, in the order given.
    pub manifests: Vec<PushedPlatform>,
}

/// One entry of a [`PushedIndex`]: a manifest pushed by digest.
#[derive(Debug, Clone, Serialize)]
pub struct PushedPlatform {
    /// The entry's `platform.os` (wasip1, wasip2).
    pub os: String,
    /// The entry's `platform.architecture`: always `wasm`.
    pub architecture: &'static str,
    /// The manifest (its `reference` names it by digest).
    #[serde(flatten)]
    pub pushed: Pushed,
}

/// Pushes the wasm file at `path` to `reference` in `format`.
#[tracing::instrument(skip(cx), fields(reference = %reference, path = %path.display()))]
pub(crate) async fn push(
    cx: &Push<'_>,
    path: &Path,
    reference: &Reference,
    format: PushFormat,
    extras: &PushExtras,
) -> Result<Pushed> {
    let local = LocalBlob::hash(path)?;
    push_manifest(cx, path, local, reference, format, extras, false)
        .await
        .map(|(pushed, _)| pushed)
}

/// Pushes each `(os, file)` of `platforms` as a manifest by its digest, then one index of
/// them all at `reference` (the tag last: it never names an index whose entries are not
/// there). Every file is checked against its `os` before anything is sent.
#[tracing::instrument(skip(cx, platforms), fields(reference = %reference))]
pub(crate) async fn push_platforms(
    cx: &Push<'_>,
    platforms: &[(String, PathBuf)],
    reference: &Reference,
    format: PushFormat,
    extras: &PushExtras,
) -> Result<PushedIndex> {
    let mut locals = Vec::with_capacity(platforms.len());
    for (os, path) in platforms {
        let local = LocalBlob::hash(path)?;
        let kind = local.kind.ok_or_else(|| Error::InvalidWasm {
            path: path.to_owned(),
        })?;
        if kind.os() != os {
            return Err(Error::PlatformMismatch {
                path: path.to_owned(),
                os: os.clone(),
                kind: match kind {
                    WasmKind::Module => "core module",
                    WasmKind::Component => "component",
                },
                expected: kind.os(),
            });
        }
        locals.push(local);
    }
    // Each entry is a plain wasm manifest: a one-file push's Linux image is not one of them.
    let entry_extras = PushExtras {
        image: false,
        ..extras.clone()
    };
    let mut manifests = Vec::with_capacity(platforms.len());
    let mut entries = Vec::with_capacity(platforms.len());
    for ((os, path), local) in platforms.iter().zip(locals) {
        let (pushed, size) =
            push_manifest(cx, path, local, reference, format, &entry_extras, true).await?;
        entries.push(json!({
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "digest": pushed.digest,
            "size": size,
            "platform": {"architecture": "wasm", "os": os},
        }));
        manifests.push(PushedPlatform {
            os: os.clone(),
            architecture: "wasm",
            pushed,
        });
    }
    let remote = cx.transport.remote(reference).await?;
    let scheme = cx.transport.scheme(reference);
    let digest = put_index(&remote, reference, scheme, entries, &extras.annotations).await?;
    tracing::info!(%digest, entries = manifests.len(), "pushed an index");
    Ok(PushedIndex {
        reference: reference.whole(),
        digest,
        manifests,
    })
}

/// Writes the index of `entries` (with `annotations`) at `reference`; returns its digest.
async fn put_index(
    remote: &crate::remote::registry::Registry,
    reference: &Reference,
    scheme: &'static str,
    entries: Vec<serde_json::Value>,
    annotations: &BTreeMap<String, String>,
) -> Result<String> {
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    if !annotations.is_empty() {
        index["annotations"] = json!(annotations);
    }
    let index = serde_json::to_vec(&index).expect("json values serialize");
    with_retries("uploading the index", || {
        remote.put_manifest(reference, &index, OCI_IMAGE_INDEX_MEDIA_TYPE)
    })
    .await
    .map_err(|f| f.into_error(reference, scheme))?;
    Ok(sha256(&index))
}

/// Pushes the wasm file at `path` (read as `local`) as one manifest, at `reference`'s tag or,
/// `by_digest`, at its own digest in `reference`'s repository; returns what was written and
/// the manifest's size.
async fn push_manifest(
    cx: &Push<'_>,
    path: &Path,
    local: LocalBlob,
    reference: &Reference,
    format: PushFormat,
    extras: &PushExtras,
    by_digest: bool,
) -> Result<(Pushed, usize)> {
    let kind = local.kind.ok_or_else(|| Error::InvalidWasm {
        path: path.to_owned(),
    })?;
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module.wasm".to_owned());

    let (config_media_type, layer_media_type, config) = match format {
        PushFormat::Cncf => {
            let mut config = json!({
                "architecture": "wasm",
                "os": kind.os(),
                "layerDigests": [local.digest],
            });
            // What the component is (its world, imports, exports), as wkg writes it, so
            // that a puller can tell what it needs before downloading it.
            if kind == WasmKind::Component {
                let bytes = std::fs::read(path).map_err(|source| Error::Io {
                    action: "reading",
                    path: path.to_owned(),
                    source,
                })?;
                let component = interface(&bytes)
                    .and_then(|i| i.component_config())
                    .ok_or_else(|| Error::InvalidWasm {
                        path: path.to_owned(),
                    })?;
                config["component"] = json!(component);
            }
            (
                CNCF_CONFIG_MEDIA_TYPE,
                CNCF_LAYER_MEDIA_TYPE,
                serde_json::to_vec(&config).expect("json values serialize"),
            )
        }
        PushFormat::WasmToOci => (
            WASM_TO_OCI_CONFIG_MEDIA_TYPE,
            WASM_TO_OCI_LAYER_MEDIA_TYPE,
            b"{}".to_vec(),
        ),
    };
    let config_digest = sha256(&config);

    let remote = cx.transport.remote(reference).await?;
    let scheme = cx.transport.scheme(reference);
    let failed = |f: Failure| f.into_error(reference, scheme);

    let exists = |digest: String| {
        let remote = &remote;
        with_retries("checking for a blob", move || {
            let digest = digest.clone();
            async move { remote.blob_exists(reference, &digest).await }
        })
    };
    if !exists(local.digest.clone()).await.map_err(failed)? {
        let name = reference.whole();
        let transfer: Option<Arc<dyn Transfer>> = cx
            .progress
            .map(|p| Arc::from(p.transfer(&name, Blob::Layer, &local.digest, Some(local.size))));
        let uploaded = with_retries("uploading the wasm layer", || {
            remote.upload_blob(reference, &local.digest, local.size, || {
                // A fresh stream from the start of the file for every request.
                if let Some(t) = &transfer {
                    t.set_position(0);
                }
                file_body(path, transfer.clone())
            })
        })
        .await;
        if let Some(t) = &transfer {
            t.finish();
        }
        uploaded.map_err(failed)?;
    }
    if !exists(config_digest.clone()).await.map_err(failed)? {
        with_retries("uploading the config", || {
            remote.upload_blob(reference, &config_digest, config.len() as u64, || {
                config.clone().into()
            })
        })
        .await
        .map_err(failed)?;
    }

    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_MEDIA_TYPE,
        "config": {
            "mediaType": config_media_type,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": layer_media_type,
            "digest": local.digest,
            "size": local.size,
            "annotations": BTreeMap::from([("org.opencontainers.image.title", title.clone())]),
        }],
    });
    if format == PushFormat::Cncf {
        manifest["artifactType"] = json!(CNCF_CONFIG_MEDIA_TYPE);
    }
    if let Some(artifact_type) = &extras.artifact_type {
        manifest["artifactType"] = json!(artifact_type);
    }
    if !extras.annotations.is_empty() {
        manifest["annotations"] = json!(extras.annotations);
    }
    let body = serde_json::to_vec(&manifest).expect("json values serialize");
    if body.len() as u64 > crate::remote::registry::MAX_CONFIG_SIZE {
        return Err(Error::invalid_manifest(
            reference.whole(),
            format!(
                "with its annotations it would be {} bytes, over the {} a registry takes",
                body.len(),
                crate::remote::registry::MAX_CONFIG_SIZE
            ),
        ));
    }
    let manifest_digest = sha256(&body);
    let digest = if extras.image {
        // The wasm manifest by its digest, then the Linux image, then the index at the tag:
        // the tag never names an index whose entries are not all there.
        let at = reference.clone_with_digest(manifest_digest.clone());
        with_retries("uploading the manifest", || {
            remote.put_manifest(&at, &body, OCI_IMAGE_MEDIA_TYPE)
        })
        .await
        .map_err(failed)?;
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        if sha256(&bytes) != local.digest {
            return Err(Error::Io {
                action: "reading",
                path: path.to_owned(),
                source: std::io::Error::other("the file changed while it was being pushed"),
            });
        }
        let image = crate::image::LinuxImage::of(&title, &bytes);
        let mut blobs = vec![&image.layer];
        blobs.extend(image.configs.iter().map(|(_, c)| c));
        for blob in blobs {
            let blob_digest = sha256(blob);
            if !exists(blob_digest.clone()).await.map_err(failed)? {
                with_retries("uploading the Linux image", || {
                    remote.upload_blob(reference, &blob_digest, blob.len() as u64, || {
                        blob.clone().into()
                    })
                })
                .await
                .map_err(failed)?;
            }
        }
        let mut entries = vec![json!({
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": body.len(),
            "platform": {"architecture": "wasm", "os": kind.os()},
        })];
        // The wasm again, for oci-client's resolver, ahead of the Linux image (see `image`).
        for architecture in crate::image::ARCHITECTURES {
            entries.push(json!({
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": body.len(),
                "platform": {
                    "architecture": architecture,
                    "os": "linux",
                    "variant": crate::image::WASM_READER_VARIANT,
                },
            }));
        }
        for (architecture, linux) in image.manifests() {
            let linux_digest = sha256(&linux);
            let at = reference.clone_with_digest(linux_digest.clone());
            with_retries("uploading the Linux image's manifest", || {
                remote.put_manifest(&at, &linux, OCI_IMAGE_MEDIA_TYPE)
            })
            .await
            .map_err(failed)?;
            entries.push(json!({
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "digest": linux_digest,
                "size": linux.len(),
                "platform": {"architecture": architecture, "os": "linux"},
            }));
        }
        put_index(&remote, reference, scheme, entries, &extras.annotations).await?
    } else {
        let at = if by_digest {
            reference.clone_with_digest(manifest_digest.clone())
        } else {
            reference.clone()
        };
        with_retries("uploading the manifest", || {
            remote.put_manifest(&at, &body, OCI_IMAGE_MEDIA_TYPE)
        })
        .await
        .map_err(failed)?;
        manifest_digest.clone()
    };
    tracing::info!(%digest, bytes = local.size, "pushed");
    let written = if by_digest && !extras.image {
        reference.clone_with_digest(digest.clone()).whole()
    } else {
        reference.whole()
    };
    Ok((
        Pushed {
            reference: written,
            manifest_digest: extras.image.then_some(manifest_digest),
            digest,
            size: local.size,
            layer_digest: local.digest,
            layer_media_type: layer_media_type.to_owned(),
            config_media_type: config_media_type.to_owned(),
            kind,
        },
        body.len(),
    ))
}

/// The file at `path` as a request body, read in 1 MiB chunks, reporting to `progress`.
fn file_body(path: &Path, progress: Option<Arc<dyn Transfer>>) -> reqwest::Body {
    let stream = match std::fs::File::open(path) {
        Ok(file) => {
            tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20)
                .inspect_ok(move |chunk| {
                    if let Some(t) = &progress {
                        t.advance(chunk.len() as u64);
                    }
                })
                .boxed()
        }
        // The request fails with it, and the try with the request.
        Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
    };
    reqwest::Body::wrap_stream(stream)
}

/// A local file's digest and size, read once in chunks, and what kind of wasm it is.
struct LocalBlob {
    digest: String,
    size: u64,
    kind: Option<WasmKind>,
}

impl LocalBlob {
    fn hash(path: &Path) -> Result<Self> {
        let io_err = |action, source| Error::Io {
            action,
            path: PathBuf::from(path),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(|e| io_err("opening", e))?;
        let mut header = Vec::with_capacity(8);
        (&mut file)
            .take(8)
            .read_to_end(&mut header)
            .and_then(|_| file.rewind())
            .map_err(|e| io_err("reading", e))?;
        let (digest, size) = Digest::of_reader(file).map_err(|e| io_err("reading", e))?;
        Ok(Self {
            digest: digest.to_string(),
            size,
            kind: WasmKind::detect(&header),
        })
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
