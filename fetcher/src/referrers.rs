//! OCI 1.1 referrers: an artifact attached to a manifest through its `subject`, and the list of
//! what is attached to one. The referrers API (`GET /v2/<name>/referrers/<digest>`) where the
//! registry offers it; else the referrers tag schema, an index tagged `sha256-<hex>` that each
//! attach updates (Distribution 2.8 has no referrers API).

use std::collections::BTreeMap;
use std::path::Path;

use oci_client::Reference;
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wasm_oci_cache::Digest;

use crate::Fetcher;
use crate::error::{Error, Result};
use crate::remote::endpoint::{Capability, in_order, skipped};
use crate::remote::failure::{Failure, violation};
use crate::remote::registry::{MAX_CONFIG_SIZE, Registry};
use crate::remote::retry::with_retries;
use wasm_oci_artifact::text::printable;

/// The empty config of an artifact manifest, as the image spec defines it.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The media type of an attached file's layer.
const ATTACHED_LAYER_MEDIA_TYPE: &str = "application/octet-stream";
/// Largest file `attach` takes (it is read whole: SBOMs, notes, signatures).
pub const MAX_ATTACHMENT: u64 = 64 << 20;
/// Referrers listed at most.
const MAX_REFERRERS: usize = 10_000;
/// Pages of the referrers API followed at most.
const MAX_PAGES: usize = 100;
/// Read-modify-write rounds of a referrers tag at most (see `add_to_referrers_tag`).
const MAX_TAG_ROUNDS: usize = 8;

/// How many times an attachment's blobs and manifest are sent when the registry loses a blob
/// to a concurrent upload of it (see [`Fetcher::attach_layer`]).
const MAX_ATTACH_TRIES: u32 = 6;
/// The least and most time given to other writers of a referrers tag before it is read
/// again.
const SETTLE_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// One artifact attached to a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Referrer {
    /// The artifact manifest's digest.
    pub digest: String,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What is attached to a manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Referrers {
    /// The reference asked about.
    pub reference: String,
    /// The subject manifest's digest.
    pub digest: String,
    /// Where the list came from: `referrers API` or `tag sha256-<hex>`.
    pub source: String,
    /// The artifacts attached.
    pub referrers: Vec<Referrer>,
}

/// The one layer of an artifact to attach.
pub(crate) struct Layer<'a> {
    /// Its bytes.
    pub(crate) content: &'a [u8],
    /// Its media type.
    pub(crate) media_type: &'a str,
    /// Its `org.opencontainers.image.title`.
    pub(crate) title: &'a str,
}

/// An artifact attached by [`Fetcher::attach`].
#[derive(Debug, Clone, Serialize)]
pub struct Attached {
    /// The artifact's reference, `registry/repository@digest`.
    pub reference: String,
    /// The artifact manifest's digest.
    pub digest: String,
    /// The subject's digest.
    pub subject: String,
    /// The referrers tag updated (`sha256-<hex>`), when the registry has no referrers API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers_tag: Option<String>,
}

/// A referrers list: an image index, whose `manifests` the image spec requires.
#[derive(Deserialize)]
struct Index {
    manifests: Vec<serde_json::Value>,
}

/// The referrers tag of `digest` (`sha256:<hex>` -> `sha256-<hex>`).
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The descriptors of an index's `manifests`, each checked; a hostile registry's index is
/// refused rather than passed on.
pub(crate) fn referrers_of(body: &[u8]) -> std::result::Result<Vec<Referrer>, BadReferrers> {
    let index: Index = serde_json::from_slice(body).map_err(BadReferrers::Json)?;
    if index.manifests.len() > MAX_REFERRERS {
        return Err(BadReferrers::TooMany);
    }
    index
        .manifests
        .into_iter()
        .map(|m| {
            let referrer: Referrer = serde_json::from_value(m).map_err(BadReferrers::Json)?;
            wasm_oci_artifact::reference::check_digest(&referrer.digest).map_err(|reason| {
                BadReferrers::Digest {
                    digest: printable(&referrer.digest).to_string(),
                    reason,
                }
            })?;
            Ok(referrer)
        })
        .collect()
}

/// Why a registry's referrers index is refused (the reason of an invalid manifest).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadReferrers {
    /// Not an index, or an entry that is not a descriptor.
    #[error("{0}")]
    Json(serde_json::Error),
    /// More entries than are taken.
    #[error("over {MAX_REFERRERS} referrers")]
    TooMany,
    /// An entry's digest that cannot be verified.
    #[error("{digest}: {reason}")]
    Digest {
        /// The digest (printable).
        digest: String,
        /// Why.
        reason: &'static str,
    },
}

impl Fetcher {
    /// Attaches the file at `path` to the manifest `subject` names, as an artifact of
    /// `artifact_type` with `annotations`: its blob first, then the artifact manifest (by
    /// digest, with `subject`), then, where the registry has no referrers API, the referrers
    /// tag, last, so that no tag ever points at missing content.
    pub async fn attach(
        &self,
        subject: &Reference,
        path: &Path,
        artifact_type: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Attached> {
        let io = |action, source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(|e| io("reading", e))?.len();
        if size > MAX_ATTACHMENT {
            return Err(io(
                "reading",
                std::io::Error::other(format!("over the {MAX_ATTACHMENT} bytes attach takes")),
            ));
        }
        let content = std::fs::read(path).map_err(|e| io("reading", e))?;
        let title = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".to_owned());
        let layer = Layer {
            content: &content,
            media_type: ATTACHED_LAYER_MEDIA_TYPE,
            title: &title,
        };
        self.attach_layer(subject, layer, artifact_type, annotations)
            .await
    }

    /// Attaches `layer` to the manifest `subject` names, as [`Fetcher::attach`] attaches a
    /// file.
    pub(crate) async fn attach_layer(
        &self,
        subject: &Reference,
        layer: Layer<'_>,
        artifact_type: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Attached> {
        let Layer {
            content,
            media_type: layer_media_type,
            title,
        } = layer;
        let (subject_body, subject_digest, subject_type) = self.manifest_bytes(subject).await?;
        let remote = self.remote(subject).await?;
        let scheme = self.scheme(subject);
        let failed = |f: Failure| f.into_error(subject, scheme);

        let blob_digest = Digest::of(content).to_string();
        let empty = b"{}".to_vec();
        let empty_digest = Digest::of(&empty).to_string();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest, "size": 2},
            "layers": [{
                "mediaType": layer_media_type,
                "digest": blob_digest,
                "size": content.len(),
                "annotations": {"org.opencontainers.image.title": title},
            }],
            "subject": {
                "mediaType": subject_type,
                "digest": subject_digest,
                "size": subject_body.len(),
            },
        });
        if !annotations.is_empty() {
            manifest["annotations"] = json!(annotations);
        }
        let body = serde_json::to_vec(&manifest).expect("json values serialize");
        let digest = Digest::of(&body).to_string();
        let at = Reference::with_digest(
            subject.registry().to_owned(),
            subject.repository().to_owned(),
            digest.clone(),
        );
        // Asked first, so that an answer that is no referrers list stops the attach before
        // anything is written.
        let api = self
            .has_referrers_api(&remote, subject, &subject_digest)
            .await?;
        // Two attaches uploading the same blob at once (the empty config every attachment
        // shares) can leave Distribution without the blob's link in the repository for a
        // moment (its filesystem driver rewrites the link file in place, so a reader can
        // find it empty): the manifest is refused with BLOB_UNKNOWN. The blobs are checked
        // (and sent) again, and the manifest put again, after a pause that grows and is
        // jittered so that the writers fall out of step rather than race again.
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 1 {
                let pause = std::time::Duration::from_millis(100 << tries.min(5));
                let jitter = pause.mul_f64(crate::remote::retry::jitter_fraction());
                tokio::time::sleep(pause + jitter).await;
            }
            for (digest, bytes) in [(&blob_digest, content), (&empty_digest, &empty[..])] {
                upload_missing(&remote, subject, digest, bytes)
                    .await
                    .map_err(failed)?;
            }
            match with_retries("putting the artifact manifest", || {
                remote.put_manifest(&at, &body, OCI_IMAGE_MEDIA_TYPE)
            })
            .await
            {
                Ok(()) => break,
                Err(f)
                    if tries < MAX_ATTACH_TRIES
                        && (f.is_not_found() || f.is_manifest_blob_missing()) =>
                {
                    tracing::debug!(error = %f, "a blob of the attachment went missing; again");
                }
                Err(f) => return Err(failed(f)),
            }
        }

        let referrers_tag = match api {
            // The registry lists it from its `subject`.
            true => None,
            false => {
                let referrer = Referrer {
                    digest: digest.clone(),
                    media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
                    size: body.len() as u64,
                    artifact_type: Some(artifact_type.to_owned()),
                    annotations: annotations.clone(),
                };
                Some(
                    self.add_to_referrers_tag(&remote, subject, &subject_digest, &[referrer])
                        .await?,
                )
            }
        };
        tracing::info!(%digest, subject = %subject_digest, "attached");
        Ok(Attached {
            reference: at.whole(),
            digest,
            subject: subject_digest,
            referrers_tag,
        })
    }

    /// Whether `remote` serves the referrers API, asked about `subject_digest` in
    /// `subject`'s repository: a registry that has it answers with an image index (200, even
    /// when nothing refers to the digest), one that has not with a 404. An answer that is no
    /// referrers index (`{}`, a web page) is refused: taken for the API, it would leave an
    /// attachment listed nowhere.
    pub(crate) async fn has_referrers_api(
        &self,
        remote: &Registry,
        subject: &Reference,
        subject_digest: &str,
    ) -> Result<bool> {
        let scheme = self.scheme(subject);
        let asked = with_retries("asking for the referrers API", || {
            remote.referrers_page(subject, subject_digest, None, MAX_CONFIG_SIZE)
        })
        .await
        .map_err(|f| f.into_error(subject, scheme))?;
        let Some(page) = asked else {
            return Ok(false);
        };
        referrers_of(&page.body).map_err(|reason| {
            Error::invalid_manifest(
                format!("{} (its referrers)", subject.whole()),
                reason.to_string(),
            )
        })?;
        Ok(true)
    }

    /// Adds `added` to the index tagged `sha256-<hex>` of `subject_digest` (made when there
    /// is none), and returns the tag. The registry offers no compare-and-swap for a tag
    /// (Distribution 2.8 ignores `If-Match`), so two writers that read the index at once
    /// would each drop the other's entry: after writing, the index is read again once any
    /// writer that read it before this write has had the time to write (three times this
    /// read-modify-write took, with jitter), and written again while an entry of `added` is
    /// missing from it.
    pub(crate) async fn add_to_referrers_tag(
        &self,
        remote: &Registry,
        subject: &Reference,
        subject_digest: &str,
        added: &[Referrer],
    ) -> Result<String> {
        let tag = referrers_tag(subject_digest);
        let at = Reference::with_tag(
            subject.registry().to_owned(),
            subject.repository().to_owned(),
            tag.clone(),
        );
        let scheme = self.scheme(subject);
        for _ in 0..MAX_TAG_ROUNDS {
            let started = std::time::Instant::now();
            let mut referrers = self
                .tagged_referrers(remote, &at)
                .await?
                .unwrap_or_default();
            let missing: Vec<Referrer> = added
                .iter()
                .filter(|r| !referrers.iter().any(|had| had.digest == r.digest))
                .cloned()
                .collect();
            if missing.is_empty() {
                return Ok(tag);
            }
            referrers.extend(missing);
            if referrers.len() > MAX_REFERRERS {
                return Err(
                    violation(format!("over {MAX_REFERRERS} referrers")).into_error(&at, scheme)
                );
            }
            let index = json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
                "manifests": referrers,
            });
            let body = serde_json::to_vec(&index).expect("json values serialize");
            with_retries("updating the referrers tag", || {
                remote.put_manifest(&at, &body, OCI_IMAGE_INDEX_MEDIA_TYPE)
            })
            .await
            .map_err(|f| f.into_error(&at, scheme))?;
            let settle = (started.elapsed() * 3).clamp(SETTLE_MIN, SETTLE_MAX);
            let jitter = settle.mul_f64(crate::remote::retry::jitter_fraction());
            tokio::time::sleep(settle + jitter).await;
        }
        Err(violation(format!(
            "the referrers tag kept being rewritten by others {MAX_TAG_ROUNDS} times over"
        ))
        .into_error(&at, scheme))
    }

    /// The referrers the index at `at` (a `sha256-<hex>` tag) lists; `None` when there is
    /// no such tag.
    async fn tagged_referrers(
        &self,
        remote: &Registry,
        at: &Reference,
    ) -> Result<Option<Vec<Referrer>>> {
        let scheme = self.scheme(at);
        let fetched = with_retries("fetching the referrers tag", || {
            remote.manifest(at, &[OCI_IMAGE_INDEX_MEDIA_TYPE], MAX_CONFIG_SIZE)
        })
        .await;
        let body = match fetched {
            Ok((body, _)) => body,
            Err(f) if f.is_not_found() => return Ok(None),
            Err(f) => return Err(f.into_error(at, scheme)),
        };
        let invalid = |reason: String| Error::invalid_manifest(at.whole(), reason);
        if body.len() as u64 > MAX_CONFIG_SIZE {
            return Err(invalid(format!("it is over {MAX_CONFIG_SIZE} bytes")));
        }
        referrers_of(&body)
            .map(Some)
            .map_err(|e| invalid(e.to_string()))
    }

    /// What is attached to the manifest `subject` names: from the referrers API where the
    /// registry has one, else from the referrers tag. Asked of the hosts that may resolve
    /// tags in order (a hosts.toml's mirrors, then the origin), as a pull asks them.
    pub async fn referrers(&self, subject: &Reference) -> Result<Referrers> {
        let (_, subject_digest, _) = self.manifest_bytes_read(subject).await?;
        let hosts = self.transport().endpoints(subject).await?;
        let name = subject.whole();
        let mut answer = None;
        for (host, last) in in_order(&hosts, subject, Capability::Resolve)? {
            match self
                .list_referrers(&host.remote, subject, &subject_digest)
                .await
            {
                Ok(found) => {
                    answer = Some(found);
                    break;
                }
                Err(e) if !last => skipped(host, &name, "referrers", &e),
                Err(e) => return Err(e),
            }
        }
        let (referrers, source) = answer.expect("the last host answers");
        Ok(Referrers {
            reference: subject.whole(),
            digest: subject_digest,
            source,
            referrers,
        })
    }

    /// The referrers of `subject_digest` in `subject`'s repository of `remote`, and where the
    /// list came from (`referrers API` or `tag sha256-<hex>`).
    pub(crate) async fn list_referrers(
        &self,
        remote: &Registry,
        subject: &Reference,
        subject_digest: &str,
    ) -> Result<(Vec<Referrer>, String)> {
        let scheme = self.scheme(subject);
        let failed = |f: Failure| f.into_error(subject, scheme);
        let mut referrers = Vec::new();
        let mut at = None;
        let mut source = "referrers API".to_owned();
        for page in 0.. {
            if page == MAX_PAGES {
                return Err(failed(violation(format!(
                    "the referrers list goes on for over {MAX_PAGES} pages"
                ))));
            }
            let fetched = with_retries("listing the referrers", || {
                remote.referrers_page(subject, subject_digest, at.as_ref(), MAX_CONFIG_SIZE)
            })
            .await
            .map_err(failed)?;
            let Some(fetched) = fetched else {
                let tag = referrers_tag(subject_digest);
                let tagged = Reference::with_tag(
                    subject.registry().to_owned(),
                    subject.repository().to_owned(),
                    tag.clone(),
                );
                referrers = self
                    .tagged_referrers(remote, &tagged)
                    .await?
                    .unwrap_or_default();
                source = format!("tag {tag}");
                break;
            };
            let page_referrers = referrers_of(&fetched.body).map_err(|reason| {
                Error::invalid_manifest(
                    format!("{} (its referrers)", subject.whole()),
                    reason.to_string(),
                )
            })?;
            referrers.extend(page_referrers);
            if referrers.len() > MAX_REFERRERS {
                return Err(failed(violation(format!("over {MAX_REFERRERS} referrers"))));
            }
            match fetched.next {
                Some(next) if Some(&next) != at.as_ref() => at = Some(next),
                Some(_) => {
                    return Err(failed(violation(
                        "the referrers list's next page is the one just read".into(),
                    )));
                }
                None => break,
            }
        }
        Ok((referrers, source))
    }
}

/// Uploads `bytes` as the blob `digest` unless `reference`'s repository has it.
async fn upload_missing(
    remote: &Registry,
    reference: &Reference,
    digest: &str,
    bytes: &[u8],
) -> std::result::Result<(), Failure> {
    let exists = with_retries("checking for a blob", || {
        remote.blob_exists(reference, digest)
    })
    .await?;
    if !exists {
        with_retries("uploading a blob", || {
            remote.upload_blob(reference, digest, bytes.len() as u64, || {
                bytes.to_vec().into()
            })
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_referrers_index_is_refused() {
        let good = format!(
            r#"{{"manifests":[{{"mediaType":"m","digest":"sha256:{}","size":3,"artifactType":"t"}}]}}"#,
            "a".repeat(64)
        );
        assert_eq!(referrers_of(good.as_bytes()).unwrap().len(), 1);
        for bad in [
            r#"{"manifests":[{"mediaType":"m","digest":"sha256:../../x","size":3}]}"#,
            r#"{"manifests":[{"mediaType":"m","digest":"md5:00","size":3}]}"#,
            r#"{"manifests":[{"digest":"sha256:00","size":-1}]}"#,
            "{}",
            r#"{"manifests":null}"#,
            "not json",
        ] {
            assert!(referrers_of(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            referrers_tag(&format!("sha256:{}", "b".repeat(64))),
            format!("sha256-{}", "b".repeat(64))
        );
    }
}
