//! Manifests, blobs and uploads, read and written straight over the host's one reqwest
//! client, with each response's headers in hand: a registry's `Retry-After` on 429 and 503 sets
//! the wait before the next try (see [`super::failure`]). Credentials are attached in one place
//! ([`Registry::send`]), only to the registry's own origin; who the registry wants the client
//! to be is [`super::token`]'s business. Every body is read with a cap, and every manifest
//! digest is verified with its own algorithm.

use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, RANGE,
};
use reqwest::{StatusCode, Url};
use sha2::Digest as _;
use wasm_oci_cache::Digest;

use super::auth::Login;
use super::body::read_at_most;
// `Failure` at its old path, `registry::Failure`, for code written against it.
pub(crate) use super::failure::Failure;
use super::failure::{failure, violation};
use super::redirect::same_origin;
use super::token::Authorizer;
use wasm_oci_artifact::text::printable;

/// Configs and manifests are small JSON documents; anything larger is refused.
pub(crate) const MAX_CONFIG_SIZE: u64 = wasm_oci_artifact::media::MAX_DOCUMENT;

/// What a manifest is asked for as: an image manifest or an index, OCI's or Docker's.
pub(crate) const MANIFEST_MEDIA_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// Speaks to one registry.
pub(crate) struct Registry {
    http: reqwest::Client,
    scheme: &'static str,
    /// `scheme://host:port/` of the registry: the one origin its credentials go to.
    origin: Url,
    /// The API root, `scheme://host:port/v2` (or the path a hosts.toml overrides it with).
    api: String,
    /// Headers the operator's hosts.toml adds to every request to this host.
    headers: reqwest::header::HeaderMap,
    /// With `headers`: the same client, following no redirect, for requests that carry them
    /// (see [`Registry::follow`]).
    direct: Option<reqwest::Client>,
    /// For a mirror: the registry whose content it stands in for, sent as containerd sends
    /// it (`?ns=docker.io`), so a mirror serving several registries knows which one is meant.
    ns: Option<String>,
    /// What the registry is presented with: credentials, tokens.
    authorizer: Authorizer,
}

impl Registry {
    /// Speaks `scheme` to the registry at `host` (`host[:port]`, as resolved for docker.io),
    /// whose API root is `path` (`/v2`, or what a hosts.toml's `override_path` names), sending
    /// it `headers`; for a mirror, `ns` names the registry it stands in for.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        http: reqwest::Client,
        login: Login,
        scheme: &'static str,
        host: &str,
        path: &str,
        headers: reqwest::header::HeaderMap,
        ns: Option<String>,
        open: bool,
    ) -> Result<Self, OciDistributionError> {
        let origin = Url::parse(&format!("{scheme}://{host}/")).map_err(|e| {
            OciDistributionError::GenericError(Some(format!(
                "{} is not a registry address: {e}",
                printable(host)
            )))
        })?;
        let api = format!("{scheme}://{host}{path}");
        // `scheme://host/v2/`, where a registry says what it wants.
        let api_root = Url::parse(&format!("{api}/"))
            .unwrap_or_else(|_| origin.join("v2/").expect("a relative path joins"));
        Ok(Self {
            authorizer: Authorizer::new(http.clone(), login, scheme, api_root, open),
            http,
            scheme,
            api,
            origin,
            headers,
            direct: None,
            ns,
        })
    }

    /// Sends the requests that carry this host's hosts.toml headers with `direct`, a client
    /// that follows no redirect, so that [`Registry::follow`] can drop them on the way.
    pub(crate) fn with_direct(mut self, direct: Option<reqwest::Client>) -> Self {
        self.direct = direct;
        self
    }

    /// Names where this host's credentials come from, said if they are refused.
    pub(crate) fn with_credentials_from(mut self, from: String) -> Self {
        self.authorizer.set_credentials_from(from);
        self
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port): the only
    /// place its `Authorization` goes.
    pub(super) fn owns(&self, url: &Url) -> bool {
        same_origin(url, &self.origin)
    }

    /// Checks that the credentials open the registry, as `docker login` does (see
    /// [`Authorizer::check_login`]).
    pub(crate) async fn check_login(&self) -> Result<(), Failure> {
        self.authorizer.check_login().await
    }

    /// Sends the request `build` makes (once more, with a renewed token, when a bearer token
    /// expired) for `op` on `reference`'s repository; any answer but a success is a failure.
    /// The one place credentials are attached: only to a URL of the registry's own origin,
    /// never to an upload location or anything else elsewhere.
    pub(super) async fn send(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        mut build: impl FnMut(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let mut renew = false;
        loop {
            let (client, request) = build(&self.http).build_split();
            let mut request = request?;
            let owned = self.owns(request.url());
            if owned {
                for (name, value) in &self.headers {
                    request.headers_mut().append(name, value.clone());
                }
                if let Some(authorization) =
                    self.authorizer.authorization(reference, op, renew).await?
                {
                    request.headers_mut().insert(AUTHORIZATION, authorization);
                }
            } else {
                tracing::debug!(
                    url = %printable(request.url().as_str()),
                    "not the registry's origin: sent without credentials"
                );
            }
            let response = match &self.direct {
                Some(direct) if owned => self.follow(direct, request).await?,
                _ => client.execute(request).await?,
            };
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let bearer = self.authorizer.wants_bearer().await;
            if status == StatusCode::UNAUTHORIZED && bearer && owned && !renew {
                renew = true;
                continue;
            }
            if owned {
                self.authorizer.refused(status);
            }
            return Err(failure(response).await);
        }
    }

    /// Sends `request`, which carries the hosts.toml headers, with `direct` (a client that
    /// follows no redirect), following redirects itself (see [`super::redirect::follow`]).
    async fn follow(
        &self,
        direct: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, Failure> {
        super::redirect::follow(direct, request, &self.origin, &self.headers).await
    }

    /// The manifest URL of `reference`: by digest when it names one, else by tag.
    fn manifest_url(&self, reference: &Reference) -> String {
        let name = reference.digest().or(reference.tag()).unwrap_or("latest");
        self.url(reference, "manifests", name)
    }

    pub(super) fn url(&self, reference: &Reference, kind: &str, name: &str) -> String {
        let url = format!("{}/{}/{kind}/{name}", self.api, reference.repository());
        match &self.ns {
            Some(ns) => format!("{url}?ns={ns}"),
            None => url,
        }
    }

    /// The manifest `reference` names, at most `limit` bytes of it (more means the caller
    /// refuses it), and its digest, checked against the one the reference or the registry
    /// names.
    pub(crate) async fn manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
        limit: u64,
    ) -> Result<(Vec<u8>, String), Failure> {
        if let Some(digest) = reference.digest() {
            check_digest(digest)?;
        }
        let url = self.manifest_url(reference);
        let accept = HeaderValue::from_str(&accept.join(", ")).expect("media types are ASCII");
        let response = self
            .send(reference, RegistryOperation::Pull, |http| {
                http.get(&url).header(ACCEPT, accept.clone())
            })
            .await?;
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_at_most(response, limit + 1).await?;
        if body.len() as u64 <= limit {
            for expected in [reference.digest().map(str::to_owned), announced]
                .into_iter()
                .flatten()
            {
                verify(&expected, &body)?;
            }
        }
        let digest = Digest::of(&body).to_string();
        Ok((body, digest))
    }

    /// The blob `digest` of `size` bytes from byte `offset` on: the response, and whether
    /// the registry honoured the range (206) rather than sending it all (200). Always a range
    /// request, even from 0 (an empty blob, which has no byte to ask for, aside), and a closed
    /// one (`bytes=<offset>-<size - 1>`): go-containerregistry's registry (`crane registry
    /// serve`) reads no other form and answers an open one (`bytes=0-`) with 416 and
    /// `BLOB_UNKNOWN`.
    pub(crate) async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
        size: u64,
    ) -> Result<(reqwest::Response, bool), Failure> {
        check_digest(digest)?;
        let url = self.url(reference, "blobs", digest);
        // An empty blob has no byte to ask a range of: it is asked for whole.
        let range = (offset < size).then(|| {
            HeaderValue::from_str(&format!("bytes={offset}-{}", size - 1)).expect("ASCII")
        });
        let response = self
            .send(reference, RegistryOperation::Pull, |http| match &range {
                Some(range) => http.get(&url).header(RANGE, range.clone()),
                None => http.get(&url),
            })
            .await?;
        let partial = response.status() == StatusCode::PARTIAL_CONTENT;
        Ok((response, partial))
    }
}

impl Registry {
    /// A small blob whole (a signature payload): `size` bytes, no more, verified against
    /// `digest`.
    pub(crate) async fn small_blob(
        &self,
        reference: &Reference,
        digest: &str,
        size: u64,
    ) -> Result<Vec<u8>, Failure> {
        check_digest(digest)?;
        let url = self.url(reference, "blobs", digest);
        let response = self
            .send(reference, RegistryOperation::Pull, |http| http.get(&url))
            .await?;
        let body = read_at_most(response, size + 1).await?;
        if body.len() as u64 != size {
            return Err(violation(format!(
                "blob {} is not the {size} bytes its manifest says",
                printable(digest)
            )));
        }
        verify(digest, &body)?;
        Ok(body)
    }

    /// Whether the repository of `reference` has the blob `digest`.
    pub(crate) async fn blob_exists(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<bool, Failure> {
        let url = self.url(reference, "blobs", digest);
        match self
            .send(reference, RegistryOperation::Push, |http| http.head(&url))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads the blob `digest` of `size` bytes in one request (after the POST that opens the
    /// upload); `body` makes the content, afresh for each try.
    pub(crate) async fn upload_blob(
        &self,
        reference: &Reference,
        digest: &str,
        size: u64,
        mut body: impl FnMut() -> reqwest::Body,
    ) -> Result<(), Failure> {
        let start = self.url(reference, "blobs", "uploads/");
        let opened = self
            .send(reference, RegistryOperation::Push, |http| {
                http.post(&start).header(CONTENT_LENGTH, 0)
            })
            .await?;
        let location = opened
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                OciDistributionError::SpecViolationError(
                    "the registry opened an upload without a Location".into(),
                )
            })?;
        // The Location may be relative, and may carry its own query (upload state).
        let mut url = opened.url().join(location).map_err(|e| {
            OciDistributionError::SpecViolationError(format!(
                "upload Location {}: {e}",
                printable(location)
            ))
        })?;
        // What TLS protected does not continue in clear, as with a redirect.
        if !matches!(url.scheme(), "http" | "https")
            || (self.scheme == "https" && url.scheme() != "https")
        {
            return Err(violation(format!(
                "the registry speaks HTTPS but sent the upload to {}; the content is not sent \
                 there in clear",
                printable(url.as_str())
            )));
        }
        url.query_pairs_mut().append_pair("digest", digest);
        self.send(reference, RegistryOperation::Push, |http| {
            http.put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body())
        })
        .await?;
        Ok(())
    }

    /// Asks the registry to mount the blob `digest` from its repository `from` into
    /// `reference`'s (`POST .../blobs/uploads/?mount=&from=`): `true` when it did (201),
    /// `false` when it opened an upload instead (202), which is left to expire.
    pub(crate) async fn mount_blob(
        &self,
        reference: &Reference,
        digest: &str,
        from: &str,
    ) -> Result<bool, Failure> {
        check_digest(digest)?;
        let mut url = Url::parse(&self.url(reference, "blobs", "uploads/"))
            .map_err(|e| violation(format!("the upload URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        let response = self
            .send(reference, RegistryOperation::Push, |http| {
                http.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    /// Puts the manifest `body` of `media_type` at `reference`'s tag (or digest).
    pub(crate) async fn put_manifest(
        &self,
        reference: &Reference,
        body: &[u8],
        media_type: &str,
    ) -> Result<(), Failure> {
        let url = self.manifest_url(reference);
        self.send(reference, RegistryOperation::Push, |http| {
            http.put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(body.to_vec())
        })
        .await?;
        Ok(())
    }
}

/// Refuses a digest that is not `sha256`, `sha384` or `sha512` with hex of its length (it
/// would be put into a URL path, and could not be verified).
fn check_digest(digest: &str) -> Result<(), Failure> {
    wasm_oci_artifact::reference::check_digest(digest).map_err(|_| Failure::UnsupportedDigest {
        digest: printable(digest),
    })
}

/// Checks `body` against `expected` with `expected`'s own algorithm.
fn verify(expected: &str, body: &[u8]) -> Result<(), Failure> {
    check_digest(expected)?;
    let (algorithm, _) = expected.split_once(':').expect("checked above");
    let hex = match algorithm {
        "sha256" => hex::encode(sha2::Sha256::digest(body)),
        "sha384" => hex::encode(sha2::Sha384::digest(body)),
        _ => hex::encode(sha2::Sha512::digest(body)),
    };
    let actual = format!("{algorithm}:{hex}");
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Failure::Digest {
            expected: printable(expected),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_verified_with_their_own_algorithm() {
        let body = b"{}";
        let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(body)));
        let sha384 = format!("sha384:{}", hex::encode(sha2::Sha384::digest(body)));
        assert!(verify(&sha512, body).is_ok());
        assert!(verify(&sha384, body).is_ok());
        assert!(matches!(
            verify(&sha512, b"{ }"),
            Err(Failure::Digest { .. })
        ));
        assert!(matches!(
            verify(&format!("md5:{}", "0".repeat(32)), body),
            Err(Failure::UnsupportedDigest { .. })
        ));
    }
}
