//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/`), for air-gapped
//! nodes: written from the cache, read back into it with every digest verified, or run from.
//!
//! Entries are named the way skopeo and containerd name them: `org.opencontainers.image.ref.name`
//! holds the tag (`oci:DIR:TAG`), `io.containerd.image.name` the full reference.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest, OciManifest};
use serde_json::json;
use wasm_oci_cache::{Cache, Digest, Ingested, RefEntry};

use crate::manifest::{select_platform, wasm_layer};
use crate::{Error, Result, parse_reference};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";
/// index.json and manifests are small; anything larger is refused before it is parsed.
const MAX_DOCUMENT: u64 = 4 << 20;

fn layout_err(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Layout {
        dir: dir.to_owned(),
        reason: reason.into(),
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join(Digest::ALGORITHM).join(digest.hex())
}

fn read_document(dir: &Path, path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| layout_err(dir, format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| layout_err(dir, format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(layout_err(
            dir,
            format!("{} is larger than 4 MiB", path.display()),
        ));
    }
    Ok(bytes)
}

/// Writes `entries` (cached references) into the layout at `dir`, creating it or adding to it.
/// Blobs are copied first and `index.json` is replaced last, atomically.
pub fn save(cache: &Cache, dir: &Path, entries: &[RefEntry]) -> Result<()> {
    let blobs = dir.join("blobs").join(Digest::ALGORITHM);
    fs::create_dir_all(&blobs).map_err(|e| layout_err(dir, e.to_string()))?;
    let mut index = match read_document(dir, &dir.join("index.json")) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| layout_err(dir, format!("index.json: {e}")))?,
        Err(_) => {
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        }
    };
    let mut manifests: Vec<serde_json::Value> =
        index["manifests"].as_array().cloned().unwrap_or_default();
    for entry in entries {
        let config = entry.config_digest.clone().ok_or_else(|| {
            layout_err(
                dir,
                format!(
                    "{} was cached without its config; pull it again",
                    entry.reference
                ),
            )
        })?;
        for digest in [&entry.layer_digest, &config, &entry.manifest_digest] {
            let target = blob_path(dir, digest);
            if target.is_file() {
                continue;
            }
            let tmp = target.with_extension("partial");
            fs::copy(cache.blob_path(digest), &tmp)
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|()| fs::rename(&tmp, &target))
                .map_err(|e| layout_err(dir, format!("writing {}: {e}", target.display())))?;
        }
        let manifest = cache.read_blob(&entry.manifest_digest)?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_owned());
        let reference = parse_reference(&entry.reference)?;
        let mut annotations = BTreeMap::from([(IMAGE_NAME, entry.reference.clone())]);
        if let Some(tag) = reference.tag() {
            annotations.insert(REF_NAME, tag.to_owned());
        }
        // A tag names one manifest in a layout: the newest save of it wins.
        if let Some(tag) = annotations.get(REF_NAME) {
            manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag.as_str()));
        }
        manifests.push(json!({
            "mediaType": media_type,
            "digest": entry.manifest_digest,
            "size": manifest.len(),
            "annotations": annotations,
        }));
    }
    index["manifests"] = json!(manifests);
    wasm_oci_cache::write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    wasm_oci_cache::write_atomic(
        &dir.join("index.json"),
        &serde_json::to_vec_pretty(&index).expect("json values serialize"),
    )?;
    Ok(())
}

/// One wasm artifact found in a layout.
#[derive(Debug, Clone)]
pub struct LayoutArtifact {
    /// `org.opencontainers.image.ref.name`, usually the tag.
    pub ref_name: Option<String>,
    /// `io.containerd.image.name`, the full reference, when the writer recorded it.
    pub image_name: Option<String>,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// Its config's digest.
    pub config_digest: Digest,
    /// The wasm layer.
    pub layer_digest: Digest,
    /// Its media type.
    pub layer_media_type: String,
    /// Its size.
    pub size: u64,
}

/// Lists the wasm artifacts of the layout at `dir`; entries that are not wasm are errors.
pub fn artifacts(dir: &Path) -> Result<Vec<LayoutArtifact>> {
    let layout = read_document(dir, &dir.join("oci-layout"))?;
    let version: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| layout_err(dir, format!("oci-layout: {e}")))?;
    if version["imageLayoutVersion"] != "1.0.0" {
        return Err(layout_err(
            dir,
            "oci-layout is not imageLayoutVersion 1.0.0",
        ));
    }
    let index: serde_json::Value =
        serde_json::from_slice(&read_document(dir, &dir.join("index.json"))?)
            .map_err(|e| layout_err(dir, format!("index.json: {e}")))?;
    let mut found = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let annotation = |k: &str| entry["annotations"][k].as_str().map(str::to_owned);
        let ref_name = annotation(REF_NAME);
        let label = ref_name
            .clone()
            .unwrap_or_else(|| entry["digest"].to_string());
        let mut digest = parse_digest(dir, entry["digest"].as_str().unwrap_or_default())?;
        let mut manifest = read_verified(dir, &digest)?;
        let image: OciImageManifest = match serde_json::from_slice::<OciManifest>(&manifest)
            .map_err(|e| layout_err(dir, format!("manifest of {label}: {e}")))?
        {
            OciManifest::Image(m) => m,
            OciManifest::ImageIndex(nested) => {
                let chosen = select_platform(&nested, &label)?;
                digest = parse_digest(dir, &chosen.digest)?;
                manifest = read_verified(dir, &digest)?;
                match serde_json::from_slice::<OciManifest>(&manifest) {
                    Ok(OciManifest::Image(m)) => m,
                    _ => {
                        return Err(layout_err(
                            dir,
                            format!("{label}: nested indexes are not followed"),
                        ));
                    }
                }
            }
        };
        let layer = wasm_layer(&image, &label)?;
        found.push(LayoutArtifact {
            ref_name,
            image_name: annotation(IMAGE_NAME),
            manifest_digest: digest,
            config_digest: parse_digest(dir, &image.config.digest)?,
            layer_digest: parse_digest(dir, &layer.digest)?,
            layer_media_type: layer.media_type.clone(),
            size: u64::try_from(layer.size).map_err(|_| layout_err(dir, "negative layer size"))?,
        });
    }
    Ok(found)
}

/// Imports the layout at `dir` into `cache`, verifying every blob, and records each artifact
/// under its full name: `io.containerd.image.name`, else the ref name when it is a full
/// reference, else `repository:TAG`. Returns the references recorded.
pub fn load(cache: &Cache, dir: &Path, repository: Option<&str>) -> Result<Vec<RefEntry>> {
    let mut loaded = Vec::new();
    for artifact in artifacts(dir)? {
        let name = match (&artifact.image_name, &artifact.ref_name, repository) {
            (Some(name), _, _) => name.clone(),
            (None, Some(r), _) if r.contains('/') => r.clone(),
            (None, Some(tag), Some(repo)) => format!("{repo}:{tag}"),
            (None, None, Some(repo)) => format!("{repo}@{}", artifact.manifest_digest),
            (None, _, None) => {
                return Err(layout_err(
                    dir,
                    format!(
                        "the entry {} has no full reference name; pass --repository REGISTRY/REPO to name it",
                        artifact.ref_name.as_deref().unwrap_or("without a name")
                    ),
                ));
            }
        };
        let reference = parse_reference(&name)?;
        for (digest, size) in [
            (&artifact.layer_digest, Some(artifact.size)),
            (&artifact.config_digest, None),
            (&artifact.manifest_digest, None),
        ] {
            import_blob(cache, dir, digest, size)?;
        }
        let entry = RefEntry {
            reference: reference.whole(),
            manifest_digest: artifact.manifest_digest,
            layer_digest: artifact.layer_digest,
            layer_media_type: artifact.layer_media_type,
            size: artifact.size,
            config_digest: Some(artifact.config_digest),
        };
        cache.set_ref(&entry)?;
        loaded.push(entry);
    }
    Ok(loaded)
}

/// The wasm file and digest that `oci:DIR:TAG` names, verified; `tag` may be omitted when the
/// layout holds one artifact.
pub fn resolve(dir: &Path, tag: Option<&str>) -> Result<(PathBuf, Digest)> {
    let all = artifacts(dir)?;
    let chosen = match tag {
        Some(tag) => all.into_iter().find(|a| a.ref_name.as_deref() == Some(tag)),
        None if all.len() == 1 => all.into_iter().next(),
        None => {
            return Err(layout_err(
                dir,
                "it holds several artifacts: name one as oci:DIR:TAG",
            ));
        }
    }
    .ok_or_else(|| {
        layout_err(
            dir,
            format!("no artifact named {}", tag.unwrap_or_default()),
        )
    })?;
    let path = blob_path(dir, &chosen.layer_digest);
    verify_file(dir, &path, &chosen.layer_digest, Some(chosen.size))?;
    Ok((path, chosen.layer_digest))
}

fn parse_digest(dir: &Path, digest: &str) -> Result<Digest> {
    digest
        .parse()
        .map_err(|e: wasm_oci_cache::Error| layout_err(dir, e.to_string()))
}

fn read_verified(dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let bytes = read_document(dir, &blob_path(dir, digest))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(layout_err(dir, format!("blob {digest} hashes to {actual}")));
    }
    Ok(bytes)
}

fn verify_file(dir: &Path, path: &Path, digest: &Digest, size: Option<u64>) -> Result<()> {
    let (actual, total) = File::open(path)
        .and_then(Digest::of_reader)
        .map_err(|e| layout_err(dir, format!("{}: {e}", path.display())))?;
    if &actual != digest || size.is_some_and(|s| s != total) {
        return Err(layout_err(
            dir,
            format!("blob {digest} hashes to {actual} ({total} bytes)"),
        ));
    }
    Ok(())
}

/// Streams one blob of the layout into the cache; the cache verifies size and digest.
fn import_blob(cache: &Cache, dir: &Path, digest: &Digest, size: Option<u64>) -> Result<()> {
    let Ingested::Writer(mut writer) = cache.ingest(digest, size)? else {
        return Ok(());
    };
    writer.restart()?;
    let path = blob_path(dir, digest);
    let mut file =
        File::open(&path).map_err(|e| layout_err(dir, format!("{}: {e}", path.display())))?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| layout_err(dir, e.to_string()))?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
    }
    writer.commit().map_err(|e| match e {
        wasm_oci_cache::Error::DigestMismatch { expected, actual } => layout_err(
            dir,
            format!("blob {expected} hashes to {actual}; nothing was imported from it"),
        ),
        other => other.into(),
    })?;
    Ok(())
}
