//! What a registry lists page by page: the tags of a repository (`GET /v2/<name>/tags/list`,
//! `n` and the `Link` header as the distribution spec says) and the referrers of a manifest
//! (`GET /v2/<name>/referrers/<digest>`). Every page is read with a cap, and a next page is
//! only followed on the registry's own origin.

use oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE;
use oci_client::{Reference, RegistryOperation};
use reqwest::Url;
use reqwest::header::{ACCEPT, LINK};

use super::body::read_at_most;
use super::failure::{Failure, violation};
use super::registry::Registry;
use wasm_oci_artifact::text::printable;

/// One page of a listing: its body, and where the next page is, if the registry says.
pub(crate) struct Page {
    /// The page's JSON, at most the cap asked for.
    pub(crate) body: Vec<u8>,
    /// The next page, on the registry's origin.
    pub(crate) next: Option<Url>,
}

impl Registry {
    /// A page of `reference`'s repository's tags: the page at `at` (a previous page's
    /// `Link`) when there is one, else `n` of them, after the tag `last` when given (the
    /// spec's `last`, for registries that page without a `Link`). Over `limit` bytes is
    /// refused.
    pub(crate) async fn tag_page(
        &self,
        reference: &Reference,
        at: Option<&Url>,
        n: u32,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Page, Failure> {
        let url = match at {
            Some(url) => url.clone(),
            None => {
                let mut url = parse(&self.url(reference, "tags", "list"))?;
                url.query_pairs_mut().append_pair("n", &n.to_string());
                if let Some(last) = last {
                    url.query_pairs_mut().append_pair("last", last);
                }
                url
            }
        };
        self.page(reference, url, None, limit, "tag list").await
    }

    /// A page of the referrers of `digest` in `reference`'s repository (an image index),
    /// the first when `at` is `None`; `Ok(None)` when the registry has no referrers API: it
    /// answers 404, whatever its error code says (Distribution 2.8 `NAME_UNKNOWN` or none,
    /// go-containerregistry's `METHOD_UNKNOWN`), as the distribution spec has clients fall
    /// back on a 404; one that has the API answers an empty index.
    pub(crate) async fn referrers_page(
        &self,
        reference: &Reference,
        digest: &str,
        at: Option<&Url>,
        limit: u64,
    ) -> Result<Option<Page>, Failure> {
        wasm_oci_artifact::reference::check_digest(digest).map_err(|_| {
            Failure::UnsupportedDigest {
                digest: printable(digest),
            }
        })?;
        let url = match at {
            Some(url) => url.clone(),
            None => parse(&self.url(reference, "referrers", digest))?,
        };
        match self
            .page(
                reference,
                url,
                Some(OCI_IMAGE_INDEX_MEDIA_TYPE),
                limit,
                "referrers list",
            )
            .await
        {
            Ok(page) => Ok(Some(page)),
            Err(f) if (f.is_not_found() || f.status() == Some(404)) && at.is_none() => Ok(None),
            Err(f) => Err(f),
        }
    }

    async fn page(
        &self,
        reference: &Reference,
        url: Url,
        accept: Option<&'static str>,
        limit: u64,
        what: &str,
    ) -> Result<Page, Failure> {
        let response = self
            .send(reference, RegistryOperation::Pull, |http| {
                let request = http.get(url.clone());
                match accept {
                    Some(accept) => request.header(ACCEPT, accept),
                    None => request,
                }
            })
            .await?;
        let next = match response.headers().get(LINK) {
            Some(link) => {
                let link = link
                    .to_str()
                    .map_err(|_| violation(format!("the {what}'s Link header is not text")))?;
                match next_link(link) {
                    Some(target) => {
                        let next = response.url().join(target).map_err(|e| {
                            violation(format!("the {what}'s next page {}: {e}", printable(target)))
                        })?;
                        if !self.owns(&next) {
                            return Err(violation(format!(
                                "the {what}'s next page is on another host ({}); not followed",
                                printable(next.as_str())
                            )));
                        }
                        Some(next)
                    }
                    None => None,
                }
            }
            None => None,
        };
        let body = read_at_most(response, limit + 1).await?;
        if body.len() as u64 > limit {
            return Err(violation(format!(
                "a page of the {what} is over {limit} bytes"
            )));
        }
        Ok(Page { body, next })
    }
}

fn parse(url: &str) -> Result<Url, Failure> {
    Url::parse(url).map_err(|e| violation(format!("{}: {e}", printable(url))))
}

/// The target of the `rel="next"` link of an RFC 8288 `Link` header value
/// (`</v2/x/tags/list?n=2&last=b>; rel="next"`), if it has one.
pub(crate) fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let link = link.trim();
        let rest = link.strip_prefix('<')?;
        let (target, params) = rest.split_once('>')?;
        let next = params.split(';').any(|param| {
            param.trim().split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            })
        });
        next.then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        assert_eq!(
            next_link(r#"</v2/x/tags/list?n=2&last=b>; rel="next""#),
            Some("/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"<https://a/prev>; rel="prev", <https://a/next>;rel=next"#),
            Some("https://a/next")
        );
        assert_eq!(next_link(r#"<https://a/prev>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(r#"</x>; title="next""#), None);
    }
}
