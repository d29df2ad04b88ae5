//! Manifests, blobs and bearer tokens, read and written straight over the fetcher's one reqwest
//! client, with each response's headers in hand: a registry's `Retry-After` on 429 and 503 sets
//! the wait before the next try. Credentials are attached in one place ([`Registry::send`]),
//! only to the registry's own origin, and sent to a token service only over HTTPS (or when
//! the registry itself is plain HTTP). Every body a registry or its token service sends is
//! read with a cap, and every manifest digest is verified with its own algorithm.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures_util::StreamExt;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderValue, LOCATION,
    PROXY_AUTHORIZATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{StatusCode, Url};
use sha2::Digest as _;
use wasm_oci_cache::Digest;

use crate::Error;
use crate::auth::{Login, Secret};
use crate::retry::Transient;
use crate::text::printable;

/// A token service's answer is a small JSON document; more is refused, not buffered.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// An error body is kept up to this size for the message; the rest is not read.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// The longest a token request may take, body included: a token service that drips its
/// answer does not hold the pull for longer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

/// A request that did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The error as oci-client would report it, the status the registry answered (when it
    /// answered), and when it said to come back.
    Request {
        error: OciDistributionError,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// A manifest whose bytes do not hash to the digest asked for or announced.
    Digest { expected: String, actual: String },
    /// A digest of an algorithm that is not verified here: refused, never used unverified.
    UnsupportedDigest { digest: String },
    /// Credentials would have gone to a plain-HTTP token service of an HTTPS registry.
    InsecureRealm { realm: String },
    /// A TLS handshake was answered in plain HTTP: asking again will not change that.
    PlainHttp { error: OciDistributionError },
    /// Nothing listens on a loopback port: no network in between to recover, so asking
    /// again only delays the answer.
    Refused { error: OciDistributionError },
    /// A plain-HTTP request was answered that the server speaks HTTPS (Go's TLS servers,
    /// Docker Distribution among them, say so in a 400).
    HttpsOnly { error: OciDistributionError },
}

impl Failure {
    /// As our error, naming `reference`.
    pub(crate) fn into_error(self, reference: &Reference, scheme: &'static str) -> Error {
        match self {
            Failure::Request { error, .. } => Error::from_oci(error, reference, scheme),
            Failure::Digest { expected, actual } => Error::DigestMismatch {
                reference: reference.whole(),
                expected,
                actual,
            },
            Failure::UnsupportedDigest { digest } => Error::UnsupportedDigest {
                reference: reference.whole(),
                digest,
            },
            Failure::InsecureRealm { realm } => Error::InsecureTokenService {
                registry: reference.registry().to_owned(),
                reference: reference.whole(),
                realm,
            },
            Failure::PlainHttp { error } => Error::PlainHttp {
                registry: reference.registry().to_owned(),
                source: error,
            },
            Failure::Refused { error } => Error::from_oci(error, reference, scheme),
            Failure::HttpsOnly { error } => Error::SpeaksHttps {
                registry: reference.registry().to_owned(),
                source: error,
            },
        }
    }
}

impl Failure {
    /// The registry answered that the manifest, blob or repository does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            Failure::Request {
                error: OciDistributionError::ServerError { code: 404, .. },
                ..
            } => true,
            Failure::Request {
                error: OciDistributionError::RegistryError { envelope, .. },
                ..
            } => envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }),
            _ => false,
        }
    }
}

impl From<OciDistributionError> for Failure {
    fn from(error: OciDistributionError) -> Self {
        Failure::Request {
            error,
            status: None,
            retry_after: None,
        }
    }
}

impl From<reqwest::Error> for Failure {
    /// Tells apart the transport failures no retry can help: a TLS handshake answered in
    /// plain HTTP, and a refused connection to a loopback port.
    fn from(e: reqwest::Error) -> Self {
        let plain = crate::error::is_plain_http_answer(&e);
        let refused = e.is_connect()
            && crate::error::is_connection_refused(&e)
            && e.url()
                .and_then(|u| u.host_str())
                .is_some_and(crate::is_loopback);
        let error = OciDistributionError::RequestError(e);
        if plain {
            Failure::PlainHttp { error }
        } else if refused {
            Failure::Refused { error }
        } else {
            error.into()
        }
    }
}

impl Failure {
    /// The host could not be connected to (refused, unreachable, timed out connecting), or
    /// kept silent longer than its read timeout.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Failure::Request {
                error: OciDistributionError::RequestError(e),
                ..
            } => e.is_connect() || e.is_timeout(),
            // Nothing listens on a loopback port: as unreachable as a host can be.
            Failure::Refused { .. } => true,
            _ => false,
        }
    }
}

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Request { error, .. } => crate::retry::is_transient(error),
            Failure::Digest { .. } | Failure::UnsupportedDigest { .. } => false,
            Failure::InsecureRealm { .. } => false,
            Failure::PlainHttp { .. } | Failure::Refused { .. } | Failure::HttpsOnly { .. } => {
                false
            }
        }
    }
    fn cause(&self) -> String {
        match self {
            Failure::Request {
                error: OciDistributionError::RegistryError { envelope, .. },
                status: Some(status),
                ..
            } => match envelope.errors.first() {
                // The registry's own words, after the status: `429: rate limited`.
                Some(first) => format!("the registry answered {status}: {}", first.message),
                None => format!("the registry answered {status}"),
            },
            Failure::Request { error, .. } => crate::retry::in_words(error),
            other => other.to_string(),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Request { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Request { error, .. }
            | Failure::PlainHttp { error }
            | Failure::Refused { error }
            | Failure::HttpsOnly { error } => error.fmt(f),
            Failure::Digest { expected, actual } => {
                write!(f, "content hashes to {actual}, not {expected}")
            }
            Failure::UnsupportedDigest { digest } => {
                write!(
                    f,
                    "the digest {digest} is of an algorithm not verified here"
                )
            }
            Failure::InsecureRealm { realm } => {
                write!(
                    f,
                    "credentials are not sent to the plain-HTTP token service {realm}"
                )
            }
        }
    }
}

/// A spec violation: the registry or its token service answered what it must not.
fn violation(text: String) -> Failure {
    OciDistributionError::SpecViolationError(text).into()
}

/// What a registry wants before it answers, learned from the first handshake.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wants {
    /// Nothing (or nothing anonymous access could give it).
    Nothing,
    /// Basic credentials on every request.
    Basic,
    /// A bearer token per repository, from its token service.
    Bearer,
}

impl Wants {
    /// What a registry that hands out no token wants: the credentials, when there are some.
    fn without_token(auth: &RegistryAuth) -> Wants {
        match auth {
            RegistryAuth::Basic(..) => Wants::Basic,
            _ => Wants::Nothing,
        }
    }
}

/// A `WWW-Authenticate: Bearer realm=...,service=...` challenge: where tokens come from.
#[derive(Debug, Clone, PartialEq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

/// Speaks to one registry.
pub(crate) struct Registry {
    http: reqwest::Client,
    auth: RegistryAuth,
    /// An identity token, exchanged at the token service (see [`Registry::exchange`]).
    identity: Option<Secret>,
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
    wants: tokio::sync::Mutex<Option<Wants>>,
    /// Bearer tokens by repository and operation, as `Authorization` values.
    tokens: std::sync::Mutex<BTreeMap<(String, RegistryOperation), HeaderValue>>,
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
        let auth = login.registry_auth();
        // A registry that already answered `/v2/` without a challenge wants what the
        // handshake would conclude from that answer; a bearer credential is presented anyway.
        let wants =
            (open && !matches!(auth, RegistryAuth::Bearer(_))).then(|| Wants::without_token(&auth));
        Ok(Self {
            http,
            auth,
            identity: match login {
                Login::IdentityToken(token) => Some(token),
                Login::Auth(_) => None,
            },
            scheme,
            api: format!("{scheme}://{host}{path}"),
            origin,
            headers,
            direct: None,
            ns,
            wants: tokio::sync::Mutex::new(wants),
            tokens: std::sync::Mutex::default(),
        })
    }

    /// Sends the requests that carry this host's hosts.toml headers with `direct`, a client
    /// that follows no redirect, so that [`Registry::follow`] can drop them on the way.
    pub(crate) fn with_direct(mut self, direct: Option<reqwest::Client>) -> Self {
        self.direct = direct;
        self
    }

    fn basic(&self) -> Option<HeaderValue> {
        let RegistryAuth::Basic(user, password) = &self.auth else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        sensitive(&format!("Basic {encoded}"))
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port): the only
    /// place its `Authorization` goes.
    fn owns(&self, url: &Url) -> bool {
        same_origin(url, &self.origin)
    }

    /// Whether credentials may go to the token service at `realm`: over HTTPS, or anywhere
    /// when the registry itself is plain HTTP (they travel in clear to it anyway).
    fn may_send_credentials_to(&self, realm: &Url) -> bool {
        realm.scheme() == "https" || self.scheme == "http"
    }

    /// The `Authorization` for a request to `reference`'s repository. The first request to
    /// the registry asks `/v2/` what it wants (others wait for the answer), unless the scheme
    /// probe already did; later ones reuse it, so a registry that wants nothing is asked once,
    /// not before every request. A bearer registry gets a token per repository.
    async fn authorization(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        renew: bool,
    ) -> Result<Option<HeaderValue>, Failure> {
        let wants = {
            let mut wants = self.wants.lock().await;
            match *wants {
                Some(known) => known,
                None => {
                    let known = match self.handshake(reference, op).await? {
                        Some(token) => {
                            *wants = Some(Wants::Bearer);
                            return Ok(Some(token));
                        }
                        None => Wants::without_token(&self.auth),
                    };
                    *wants = Some(known);
                    known
                }
            }
        };
        match wants {
            Wants::Nothing => Ok(None),
            Wants::Basic => Ok(self.basic()),
            Wants::Bearer => {
                let key = (reference.repository().to_owned(), op);
                if !renew && let Some(token) = self.tokens.lock().expect("token lock").get(&key) {
                    return Ok(Some(token.clone()));
                }
                self.handshake(reference, op).await
            }
        }
    }

    /// The handshake for `op` on `reference`'s repository: the bearer token (from an
    /// identity-token exchange, or from the token service with the credentials), remembered,
    /// or `None` when the registry hands out none.
    async fn handshake(
        &self,
        reference: &Reference,
        op: RegistryOperation,
    ) -> Result<Option<HeaderValue>, Failure> {
        let token = match &self.auth {
            // A token given as the credential is presented without asking.
            RegistryAuth::Bearer(token) => Some(token.clone()),
            _ => match self
                .challenge()
                .await?
                .as_deref()
                .and_then(bearer_challenge)
            {
                None => None,
                Some(challenge) => Some(match &self.identity {
                    Some(identity) => self.exchange(reference, op, identity, &challenge).await?,
                    None => self.token(&challenge, Some(&scope(reference, op))).await?,
                }),
            },
        };
        let value = match token {
            None => None,
            Some(t) => Some(sensitive(&format!("Bearer {t}")).ok_or_else(|| {
                violation("the token service sent a token that is not a header value".into())
            })?),
        };
        if let Some(v) = &value {
            self.tokens
                .lock()
                .expect("token lock")
                .insert((reference.repository().to_owned(), op), v.clone());
        }
        Ok(value)
    }

    /// The `WWW-Authenticate` of the registry's `/v2/`, asked without credentials.
    async fn challenge(&self) -> Result<Option<String>, Failure> {
        let url = self.api_root();
        let probe = self.http.get(url).send().await?;
        Ok(probe
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// The token service's URL, when it is one: `http` or `https`.
    fn realm(&self, challenge: &Challenge) -> Result<Url, Failure> {
        let realm = Url::parse(&challenge.realm).map_err(|e| {
            violation(format!(
                "the registry names a token service that is not a URL ({}): {e}",
                printable(&challenge.realm)
            ))
        })?;
        if !matches!(realm.scheme(), "http" | "https") {
            return Err(violation(format!(
                "the registry names a token service that is not HTTP: {}",
                printable(&challenge.realm)
            )));
        }
        Ok(realm)
    }

    /// A bearer token from the token service `challenge` names, as docker asks for one:
    /// `GET realm?service=..&scope=..`, with the Basic credentials when there are some (only
    /// where [`Self::may_send_credentials_to`] allows). `scope` is `None` for a login check.
    async fn token(&self, challenge: &Challenge, scope: Option<&str>) -> Result<String, Failure> {
        let realm = self.realm(challenge)?;
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.http.get(url).timeout(TOKEN_TIMEOUT);
        if let Some(basic) = self.basic() {
            if !self.may_send_credentials_to(&realm) {
                return Err(Failure::InsecureRealm {
                    realm: printable(realm.as_str()),
                });
            }
            request = request.header(AUTHORIZATION, basic);
        }
        tracing::debug!(realm = %printable(realm.as_str()), scope, "asking for a bearer token");
        let response = request.send().await?;
        token_from(response, &realm).await
    }

    /// Exchanges an identity token (an OAuth2 refresh token) for an access token to `op` on
    /// `reference`'s repository, as docker does: the token service the registry's challenge
    /// names takes a `refresh_token` grant by POST.
    async fn exchange(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        identity: &Secret,
        challenge: &Challenge,
    ) -> Result<String, Failure> {
        let realm = self.realm(challenge)?;
        if !self.may_send_credentials_to(&realm) {
            return Err(Failure::InsecureRealm {
                realm: printable(realm.as_str()),
            });
        }
        let scope = scope(reference, op);
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", identity.expose()),
            ("scope", scope.as_str()),
            ("client_id", "wasm-oci"),
        ];
        if let Some(service) = &challenge.service {
            form.push(("service", service));
        }
        let response = self
            .http
            .post(realm.clone())
            .timeout(TOKEN_TIMEOUT)
            .form(&form)
            .send()
            .await?;
        token_from(response, &realm).await
    }

    /// Checks that the credentials open the registry, as `docker login` does: a bearer
    /// registry's token service must hand out a token for them (with no scope), which `/v2/`
    /// then accepts; a Basic registry's `/v2/` must accept them. A registry that asks for
    /// nothing accepts anyone.
    pub(crate) async fn check_login(&self) -> Result<(), Failure> {
        let url = self.api_root();
        let anonymous = self.http.get(url.clone()).send().await?;
        if anonymous.status().is_success() {
            return Ok(());
        }
        if anonymous.status() != StatusCode::UNAUTHORIZED {
            return Err(failure(anonymous).await);
        }
        let challenge = anonymous
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_challenge);
        let authorization = match challenge {
            Some(challenge) => {
                let token = self.token(&challenge, None).await?;
                sensitive(&format!("Bearer {token}"))
            }
            None => self.basic(),
        };
        let Some(authorization) = authorization else {
            return Err(failure(anonymous).await);
        };
        let answer = self
            .http
            .get(url)
            .header(AUTHORIZATION, authorization)
            .send()
            .await?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(failure(answer).await)
        }
    }

    /// Sends the request `build` makes (once more, with a renewed token, when a bearer token
    /// expired) for `op` on `reference`'s repository; any answer but a success is a failure.
    /// The one place credentials are attached: only to a URL of the registry's own origin,
    /// never to an upload location or anything else elsewhere.
    async fn send(
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
                if let Some(authorization) = self.authorization(reference, op, renew).await? {
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
            let bearer = *self.wants.lock().await == Some(Wants::Bearer);
            if status == StatusCode::UNAUTHORIZED && bearer && owned && !renew {
                renew = true;
                continue;
            }
            return Err(failure(response).await);
        }
    }

    /// Sends `request`, which carries the hosts.toml headers, following redirects as the
    /// shared policy does (at most [`crate::MAX_REDIRECTS`], never from HTTPS to plain
    /// HTTP), but itself: reqwest would replay every header but `Authorization` and cookies to
    /// wherever a redirect points, and the operator's headers (an API key for this host)
    /// are for this host's origin only. Once a redirect leaves the origin, the next request
    /// carries neither them nor any credentials.
    async fn follow(
        &self,
        direct: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, Failure> {
        let mut next = request.try_clone();
        let mut response = direct.execute(request).await?;
        let mut visited = vec![response.url().clone()];
        loop {
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            let (Some(location), Some(mut request)) = (location, next.take()) else {
                return Ok(response);
            };
            if !matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            ) {
                return Ok(response);
            }
            let url = response.url().join(&location).map_err(|e| {
                violation(format!("redirect Location {}: {e}", printable(&location)))
            })?;
            if visited.len() > crate::MAX_REDIRECTS {
                return Err(violation(format!(
                    "more than {} redirects",
                    crate::MAX_REDIRECTS
                )));
            }
            if !matches!(url.scheme(), "http" | "https")
                || (url.scheme() != "https" && visited.iter().any(|u| u.scheme() == "https"))
            {
                return Err(violation(format!(
                    "refused a redirect to {}: what TLS protects is not continued in clear",
                    printable(url.as_str())
                )));
            }
            // As reqwest: 303, and 301/302 of a POST, become a GET without a body.
            let method = request.method().clone();
            if status == StatusCode::SEE_OTHER && method != reqwest::Method::HEAD
                || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == reqwest::Method::POST
            {
                *request.method_mut() = reqwest::Method::GET;
                *request.body_mut() = None;
                request.headers_mut().remove(CONTENT_LENGTH);
                request.headers_mut().remove(CONTENT_TYPE);
            }
            if !self.owns(&url) {
                let headers = request.headers_mut();
                for name in self.headers.keys() {
                    headers.remove(name);
                }
                for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                    headers.remove(name);
                }
                tracing::debug!(
                    url = %printable(url.as_str()),
                    "redirected off the host's origin: followed without its headers or credentials"
                );
            }
            *request.url_mut() = url.clone();
            next = request.try_clone();
            response = direct.execute(request).await?;
            visited.push(url);
        }
    }

    /// The manifest URL of `reference`: by digest when it names one, else by tag.
    fn manifest_url(&self, reference: &Reference) -> String {
        let name = reference.digest().or(reference.tag()).unwrap_or("latest");
        self.url(reference, "manifests", name)
    }

    fn url(&self, reference: &Reference, kind: &str, name: &str) -> String {
        let url = format!("{}/{}/{kind}/{name}", self.api, reference.repository());
        match &self.ns {
            Some(ns) => format!("{url}?ns={ns}"),
            None => url,
        }
    }

    /// `scheme://host/v2/`, where a registry says what it wants.
    fn api_root(&self) -> Url {
        Url::parse(&format!("{}/", self.api))
            .unwrap_or_else(|_| self.origin.join("v2/").expect("a relative path joins"))
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

    /// The blob `digest` from byte `offset` on: the response, and whether the registry
    /// honoured the range (206) rather than sending it all (200). Always a range request,
    /// even from 0.
    pub(crate) async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<(reqwest::Response, bool), Failure> {
        check_digest(digest)?;
        let url = self.url(reference, "blobs", digest);
        let range = HeaderValue::from_str(&format!("bytes={offset}-")).expect("ASCII");
        let response = self
            .send(reference, RegistryOperation::Pull, |http| {
                http.get(&url).header(RANGE, range.clone())
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
            Err(Failure::Request {
                error: OciDistributionError::ServerError { code: 404, .. },
                ..
            }) => Ok(false),
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

/// The realm and service of a `WWW-Authenticate: Bearer realm="...",service="..."` header.
fn bearer_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    let bearer = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))?;
    let param = |name: &str| {
        bearer
            .params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_unescaped())
    };
    Some(Challenge {
        realm: param("realm")?,
        service: param("service"),
    })
}

/// The token scope docker asks for: `repository:NAME:pull` or `repository:NAME:pull,push`.
fn scope(reference: &Reference, op: RegistryOperation) -> String {
    let actions = match op {
        RegistryOperation::Pull => "pull",
        RegistryOperation::Push => "pull,push",
    };
    format!("repository:{}:{actions}", reference.repository())
}

/// The token in a token service's answer (`token`, else `access_token`), read with a cap.
async fn token_from(response: reqwest::Response, realm: &Url) -> Result<String, Failure> {
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    let body = read_at_most(response, MAX_TOKEN_RESPONSE + 1).await?;
    let realm = printable(realm.as_str());
    if body.len() as u64 > MAX_TOKEN_RESPONSE {
        return Err(violation(format!(
            "the token service at {realm} sent more than {MAX_TOKEN_RESPONSE} bytes; a token \
             answer is a small JSON document, so the rest was not read"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
        violation(format!(
            "the token service at {realm} answered with no token: {e}"
        ))
    })?;
    answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| {
            violation(format!(
                "the token service at {realm} answered with no token"
            ))
        })
}

/// Same scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Refuses a digest that is not `sha256`, `sha384` or `sha512` with hex of its length (it
/// would be put into a URL path, and could not be verified).
fn check_digest(digest: &str) -> Result<(), Failure> {
    crate::reference::check_digest(digest).map_err(|_| Failure::UnsupportedDigest {
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

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The body, or its first `limit` bytes; the rest is not read.
async fn read_at_most(response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() as u64 >= limit {
            body.truncate(limit as usize);
            break;
        }
    }
    Ok(body)
}

/// An unsuccessful response as the error oci-client would have made of it, with its
/// `Retry-After`.
async fn failure(response: reqwest::Response) -> Failure {
    let status = response.status();
    let url = response.url().to_string();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = read_at_most(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    // A client error may carry the distribution spec's error envelope; anything else is
    // reported with its status and body. Both are the registry's text, printed escaped.
    let envelope = status
        .is_client_error()
        .then(|| serde_json::from_slice::<OciEnvelope>(&body).ok())
        .flatten()
        .map(|mut envelope| {
            for error in &mut envelope.errors {
                error.message = printable(&error.message);
            }
            envelope
        });
    let https_only = status == StatusCode::BAD_REQUEST
        && url.starts_with("http:")
        && String::from_utf8_lossy(&body).contains("HTTP request to an HTTPS server");
    let error = match (status, envelope) {
        (StatusCode::UNAUTHORIZED, _) => OciDistributionError::UnauthorizedError { url },
        (_, Some(envelope)) => OciDistributionError::RegistryError { envelope, url },
        (s, None) => OciDistributionError::ServerError {
            code: s.as_u16(),
            url,
            message: printable(&String::from_utf8_lossy(&body)),
        },
    };
    if https_only {
        return Failure::HttpsOnly { error };
    }
    Failure::Request {
        error,
        status: Some(status.as_u16()),
        retry_after,
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_name_their_token_service() {
        let challenge = |realm: &str, service: Option<&str>| Challenge {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
        };
        assert_eq!(
            bearer_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example""#
            ),
            Some(challenge(
                "https://auth.example/token",
                Some("registry.example")
            ))
        );
        assert_eq!(
            bearer_challenge(r#"Basic realm="x", Bearer realm="https://t/""#),
            Some(challenge("https://t/", None))
        );
        assert_eq!(bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(bearer_challenge("Bearer service=x"), None);
    }

    #[test]
    fn only_the_registrys_own_origin_is_its_own() {
        let origin = Url::parse("https://registry.example/").unwrap();
        for (url, same) in [
            ("https://registry.example/v2/x/blobs/uploads/1", true),
            ("https://registry.example:443/v2/", true),
            ("http://registry.example/v2/", false),
            ("https://registry.example:5000/v2/", false),
            ("https://storage.example/v2/", false),
            ("https://registry.example.evil/v2/", false),
        ] {
            assert_eq!(
                same_origin(&Url::parse(url).unwrap(), &origin),
                same,
                "{url}"
            );
        }
    }

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

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(90);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            wait > Duration::from_secs(85) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
