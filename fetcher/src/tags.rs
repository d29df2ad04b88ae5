//! Tags: a repository's tags listed page by page (`n` and the `Link` header), and a manifest
//! put under a new tag as the very bytes it has (the same digest; no blob moves).

use std::collections::HashSet;

use oci_client::Reference;
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use serde::{Deserialize, Serialize};

use crate::Fetcher;
use crate::error::{Error, Result};
use crate::remote::endpoint::{Capability, ask_in_order, in_order, skipped};
use crate::remote::failure::violation;
use crate::remote::registry::{MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE};
use crate::remote::retry::with_retries;
use wasm_oci_artifact::text::printable;

/// Tags asked for per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Pages followed at most: a registry whose `Link` never ends is not followed forever.
const MAX_PAGES: usize = 10_000;
/// Tags kept at most.
const MAX_TAGS: usize = 1_000_000;

/// A manifest put under a new tag.
#[derive(Debug, Clone, Serialize)]
pub struct Tagged {
    /// The new reference, `registry/repository:tag`.
    pub reference: String,
    /// The manifest's digest, the same as the source's.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// Whether `tag` is a tag as the distribution spec writes them: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The media type of the manifest `body`: its own `mediaType`, else an index when it lists
/// `manifests`, else an image manifest.
pub(crate) fn media_type_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    Some(match object.get("mediaType").and_then(|m| m.as_str()) {
        Some(media_type) => media_type.to_owned(),
        None if object.contains_key("manifests") => OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
        None => OCI_IMAGE_MEDIA_TYPE.to_owned(),
    })
}

impl Fetcher {
    /// The tags of `repository`'s repository (its tag or digest, if any, is not looked at),
    /// asked `page_size` at a time and followed through the registry's `Link` headers; asked
    /// of the hosts that may resolve tags in order (a hosts.toml's mirrors, then the origin).
    ///
    /// A registry may page without a `Link` (go-containerregistry's answers `n` tags and
    /// stops): a page of exactly `n` tags without one is followed by asking for the next `n`
    /// after its last tag (`last`, as the distribution spec names it). A page of more than
    /// `n` means the registry does not page (Distribution 2.8); a page that adds no tag not
    /// already listed (a registry that ignores `last`, or starts over after the greatest
    /// tag, as go-containerregistry's does) ends the list.
    pub async fn tags(&self, repository: &Reference, page_size: u32) -> Result<Vec<String>> {
        let hosts = self.transport().endpoints(repository).await?;
        let name = repository.whole();
        for (host, last) in in_order(&hosts, repository, Capability::Resolve)? {
            match self
                .tags_of(&host.remote, host.scheme, repository, page_size)
                .await
            {
                Ok(tags) => return Ok(tags),
                Err(e) if !last => skipped(host, &name, "tag list", &e),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last host answers")
    }

    /// The tags of `repository` as `remote` lists them.
    async fn tags_of(
        &self,
        remote: &crate::remote::registry::Registry,
        scheme: &'static str,
        repository: &Reference,
        page_size: u32,
    ) -> Result<Vec<String>> {
        let failed = |f: crate::remote::failure::Failure| f.into_error(repository, scheme);
        let n = page_size.max(1);
        let mut tags = Vec::new();
        let mut listed = HashSet::new();
        let mut seen_pages = HashSet::new();
        let mut at = None;
        let mut last: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = with_retries("listing the tags", || {
                remote.tag_page(repository, at.as_ref(), n, last.as_deref(), MAX_CONFIG_SIZE)
            })
            .await
            .map_err(failed)?;
            let list: TagList = serde_json::from_slice(&page.body)
                .map_err(|e| failed(violation(format!("the tag list is not JSON: {e}"))))?;
            let page_tags = list.tags.unwrap_or_default();
            let mut added = 0;
            for tag in &page_tags {
                if !is_valid_tag(tag) {
                    return Err(failed(violation(format!(
                        "the tag list holds {}, which is not a tag",
                        printable(tag)
                    ))));
                }
                if listed.insert(tag.clone()) {
                    tags.push(tag.clone());
                    added += 1;
                }
            }
            if tags.len() > MAX_TAGS {
                return Err(failed(violation(format!(
                    "the repository lists over {MAX_TAGS} tags"
                ))));
            }
            match page.next {
                Some(next) => {
                    if !seen_pages.insert(next.to_string()) {
                        return Err(failed(violation(
                            "the tag list's next page is one already read".into(),
                        )));
                    }
                    at = Some(next);
                }
                None if at.is_none() && added > 0 && page_tags.len() == n as usize => {
                    last = page_tags.last().cloned();
                }
                None => return Ok(tags),
            }
        }
        Err(failed(violation(format!(
            "the tag list goes on for over {MAX_PAGES} pages"
        ))))
    }

    /// The manifest `reference` names, its bytes verified, at most [`MAX_CONFIG_SIZE`]:
    /// `(bytes, digest, media type)`.
    pub(crate) async fn manifest_bytes(
        &self,
        reference: &Reference,
    ) -> Result<(Vec<u8>, String, String)> {
        let remote = self.remote(reference).await?;
        let scheme = self.scheme(reference);
        let (body, digest) = with_retries("fetching the manifest", || {
            remote.manifest(reference, MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE)
        })
        .await
        .map_err(|f| f.into_error(reference, scheme))?;
        let invalid = |reason: String| Error::invalid_manifest(reference.whole(), reason);
        if body.len() as u64 > MAX_CONFIG_SIZE {
            return Err(invalid(format!("it is over {MAX_CONFIG_SIZE} bytes")));
        }
        let media_type =
            media_type_of(&body).ok_or_else(|| invalid("it is not a JSON object".into()))?;
        Ok((body, digest, media_type))
    }

    /// The manifest `reference` names, as [`Fetcher::manifest_bytes`] reads it, but asked of
    /// the hosts a pull asks, in order (a hosts.toml's mirrors, then the origin): for reads
    /// that write nothing after (`manifest`, `discover`). A tag is asked of the hosts that may
    /// resolve, a digest of those that may pull; a mirror's answer is verified as the
    /// origin's is.
    pub(crate) async fn manifest_bytes_read(
        &self,
        reference: &Reference,
    ) -> Result<(Vec<u8>, String, String)> {
        let hosts = self.transport().endpoints(reference).await?;
        let capability = match reference.digest() {
            Some(_) => Capability::Pull,
            None => Capability::Resolve,
        };
        let (body, digest) = ask_in_order(&hosts, reference, capability, "manifest", |host| {
            let remote = host.remote.clone();
            async move {
                let (body, digest) = remote
                    .manifest(reference, MANIFEST_MEDIA_TYPES, MAX_CONFIG_SIZE)
                    .await?;
                if body.len() as u64 > MAX_CONFIG_SIZE || media_type_of(&body).is_none() {
                    return Err(violation(format!(
                        "the manifest is over {MAX_CONFIG_SIZE} bytes or not a JSON object"
                    )));
                }
                Ok(Some((body, digest)))
            }
        })
        .await?
        .expect("a manifest or an error");
        let media_type = media_type_of(&body).expect("checked above");
        Ok((body, digest, media_type))
    }

    /// Puts the manifest `reference` names under `new_tag` in the same repository, as the
    /// very bytes the registry holds: the digest stays, and no blob is read or sent.
    pub async fn tag(&self, reference: &Reference, new_tag: &str) -> Result<Tagged> {
        let target = Reference::with_tag(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            new_tag.to_owned(),
        );
        if !is_valid_tag(new_tag) {
            return Err(Error::invalid_reference(
                printable(new_tag),
                "a tag is up to 128 letters, digits, '_', '.' and '-', not starting \
                 with '.' or '-'",
            ));
        }
        let (body, digest, media_type) = self.manifest_bytes(reference).await?;
        let remote = self.remote(&target).await?;
        let scheme = self.scheme(&target);
        with_retries("putting the manifest under the new tag", || {
            remote.put_manifest(&target, &body, &media_type)
        })
        .await
        .map_err(|f| f.into_error(&target, scheme))?;
        tracing::info!(%digest, tag = new_tag, "tagged");
        Ok(Tagged {
            reference: target.whole(),
            digest,
            media_type,
            size: body.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A registry on loopback that pages its tags as `answer` says: given the request's
    /// path and query, the `Link` header (if any) and the body. Distribution 2.8, the
    /// registry of the end-to-end tests, does not page tags at all.
    fn paging_registry(answer: fn(&str, &str) -> (Option<String>, String)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let me = addr.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() <= 2 {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (link, body) = if path == "/v2/" {
                    (None, "{}".to_owned())
                } else {
                    answer(&me, &path)
                };
                let link = link.map(|l| format!("Link: {l}\r\n")).unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{link}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    async fn list(addr: &str) -> Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::RegistryOptions {
            plain_http: true,
            ..Default::default()
        };
        let fetcher = Fetcher::new(
            wasm_oci_cache::Cache::open(dir.path()).unwrap(),
            options,
            // Tag listing reads no artifact: there is nothing for a policy to judge.
            std::sync::Arc::new(wasm_oci_trust::Policy::accept_anything()),
        );
        let repository = crate::parse_reference(&format!("{addr}/x")).unwrap();
        fetcher.tags(&repository, 2).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tags_are_followed_page_by_page() {
        let addr = paging_registry(|_, path| match path {
            "/v2/x/tags/list?n=2" => (
                Some(r#"</v2/x/tags/list?n=2&last=b>; rel="next""#.into()),
                r#"{"name":"x","tags":["a","b"]}"#.into(),
            ),
            "/v2/x/tags/list?n=2&last=b" => (
                Some(r#"</v2/x/tags/list?n=2&last=d>; rel="next""#.into()),
                r#"{"name":"x","tags":["c","d"]}"#.into(),
            ),
            "/v2/x/tags/list?n=2&last=d" => (None, r#"{"name":"x","tags":["e"]}"#.into()),
            _ => (None, "{}".into()),
        });
        assert_eq!(list(&addr).await.unwrap(), ["a", "b", "c", "d", "e"]);
    }

    /// go-containerregistry's registry (`crane registry serve`): `n` tags after `last`,
    /// no `Link`; after the greatest tag it starts over.
    fn ggcr_page(tags: &[&str], path: &str) -> (Option<String>, String) {
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let mut page: Vec<&str> = tags.to_vec();
        if let Some(last) = param("last")
            && let Some(i) = page.iter().position(|t| *t > last.as_str())
        {
            page = page.split_off(i);
        }
        if let Some(n) = param("n").and_then(|n| n.parse::<usize>().ok()) {
            page.truncate(n);
        }
        (
            None,
            serde_json::json!({"name": "x", "tags": page}).to_string(),
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tags_are_followed_by_last_where_the_registry_gives_no_link() {
        let odd = paging_registry(|_, path| ggcr_page(&["a", "b", "c", "d", "e"], path));
        assert_eq!(list(&odd).await.unwrap(), ["a", "b", "c", "d", "e"]);
        // A multiple of n: the page after the greatest tag starts over, and ends the list.
        let even = paging_registry(|_, path| ggcr_page(&["a", "b", "c", "d"], path));
        assert_eq!(list(&even).await.unwrap(), ["a", "b", "c", "d"]);
        // A registry that ignores n and last and has exactly n tags: listed once.
        let ignoring = paging_registry(|_, _| (None, r#"{"tags":["a","b"]}"#.into()));
        assert_eq!(list(&ignoring).await.unwrap(), ["a", "b"]);
        // One that ignores n and has more: one page, as Distribution 2.8 answers.
        let all = paging_registry(|_, path| {
            assert!(!path.contains("last="), "{path}");
            (None, r#"{"tags":["a","b","c"]}"#.into())
        });
        assert_eq!(list(&all).await.unwrap(), ["a", "b", "c"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tag_list_that_loops_or_leaves_the_registry_is_refused() {
        let looping = paging_registry(|_, _| {
            (
                Some(r#"</v2/x/tags/list?n=2&last=a>; rel="next""#.into()),
                r#"{"tags":["a"]}"#.into(),
            )
        });
        let chain = anyhow_chain(&list(&looping).await.unwrap_err());
        assert!(chain.contains("already read"), "{chain}");

        let elsewhere = paging_registry(|_, _| {
            (
                Some(r#"<http://127.0.0.2:1/v2/x/tags/list?last=a>; rel="next""#.into()),
                r#"{"tags":["a"]}"#.into(),
            )
        });
        let chain = anyhow_chain(&list(&elsewhere).await.unwrap_err());
        assert!(chain.contains("another host"), "{chain}");

        let hostile = paging_registry(|_, _| (None, "{\"tags\":[\"a\\u001b[2J\"]}".into()));
        let chain = anyhow_chain(&list(&hostile).await.unwrap_err());
        assert!(chain.contains("not a tag"), "{chain}");
        assert!(!chain.contains('\u{1b}'), "{chain}");
    }

    /// The error and its sources, as the CLI prints them.
    fn anyhow_chain(e: &Error) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["v1", "latest", "_x", "1.2.3-rc.1", &"a".repeat(128)] {
            assert!(is_valid_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a\u{1b}[2J", &"a".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn a_manifest_without_a_media_type_is_told_by_its_fields() {
        assert_eq!(
            media_type_of(br#"{"manifests":[]}"#).as_deref(),
            Some(OCI_IMAGE_INDEX_MEDIA_TYPE)
        );
        assert_eq!(
            media_type_of(br#"{"layers":[]}"#).as_deref(),
            Some(OCI_IMAGE_MEDIA_TYPE)
        );
        assert_eq!(media_type_of(b"[]"), None);
    }
}
