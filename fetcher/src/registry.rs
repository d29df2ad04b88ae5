//! Manifests and blobs, read and written straight over reqwest, with each response's headers
//! in hand: a registry's `Retry-After` on 429 and 503 sets the wait before the next try, which
//! oci-client cannot report (its errors keep the status and the body only). oci-client still
//! fetches bearer tokens, once `/v2/` asked for one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures_util::StreamExt;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, RANGE, RETRY_AFTER,
};
use wasm_oci_cache::Digest;

use crate::auth::{Login, Secret};
use crate::retry::Transient;
use crate::{ClientSettings, Error};

/// A request that did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The error as oci-client reports it, and when the registry said to come back.
    Request {
        error: OciDistributionError,
        retry_after: Option<Duration>,
    },
    /// A manifest whose bytes do not hash to the digest asked for or announced.
    Digest { expected: String, actual: String },
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
        }
    }
}

impl From<OciDistributionError> for Failure {
    fn from(error: OciDistributionError) -> Self {
        Failure::Request {
            error,
            retry_after: None,
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        OciDistributionError::RequestError(e).into()
    }
}

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Request { error, .. } => crate::retry::is_transient(error),
            Failure::Digest { .. } => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Request { retry_after, .. } => *retry_after,
            Failure::Digest { .. } => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Request { error, .. } => error.fmt(f),
            Failure::Digest { expected, actual } => {
                write!(f, "content hashes to {actual}, not {expected}")
            }
        }
    }
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

/// Speaks to one registry.
pub(crate) struct Registry {
    http: reqwest::Client,
    /// For a bearer handshake: made when a registry first asks for a token.
    oci: std::sync::OnceLock<Result<Client, OciDistributionError>>,
    oci_settings: ClientSettings,
    auth: RegistryAuth,
    /// An identity token, exchanged by us (see [`Registry::exchange`]) instead of the handshake.
    identity: Option<Secret>,
    scheme: &'static str,
    wants: tokio::sync::Mutex<Option<Wants>>,
    /// Bearer tokens by repository and operation, as `Authorization` values.
    tokens: std::sync::Mutex<BTreeMap<(String, RegistryOperation), HeaderValue>>,
}

impl Registry {
    pub(crate) fn new(
        http: reqwest::Client,
        oci_settings: ClientSettings,
        login: Login,
        scheme: &'static str,
        open: bool,
    ) -> Self {
        let auth = login.registry_auth();
        // A registry that already answered `/v2/` without a challenge wants what the
        // handshake would conclude from that answer; a bearer credential is presented anyway.
        let wants =
            (open && !matches!(auth, RegistryAuth::Bearer(_))).then(|| Wants::without_token(&auth));
        Self {
            http,
            oci: std::sync::OnceLock::new(),
            oci_settings,
            auth,
            identity: match login {
                Login::IdentityToken(token) => Some(token),
                Login::Auth(_) => None,
            },
            scheme,
            wants: tokio::sync::Mutex::new(wants),
            tokens: std::sync::Mutex::default(),
        }
    }

    fn basic(&self) -> Option<HeaderValue> {
        let RegistryAuth::Basic(user, password) = &self.auth else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        sensitive(&format!("Basic {encoded}"))
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
    /// identity-token exchange, or from oci-client), remembered, or `None` when the registry
    /// hands out none.
    async fn handshake(
        &self,
        reference: &Reference,
        op: RegistryOperation,
    ) -> Result<Option<HeaderValue>, Failure> {
        let token = match &self.identity {
            Some(identity) => self.exchange(reference, op, identity).await?,
            None => self.challenge(reference, op).await?,
        };
        let value = token.and_then(|t| sensitive(&format!("Bearer {t}")));
        if let Some(v) = &value {
            self.tokens
                .lock()
                .expect("token lock")
                .insert((reference.repository().to_owned(), op), v.clone());
        }
        Ok(value)
    }

    /// What `/v2/` asks for. Only a bearer challenge is handed to oci-client, which asks
    /// again and fetches the token; a registry that wants nothing or Basic is answered
    /// without one, as oci-client would answer it.
    async fn challenge(
        &self,
        reference: &Reference,
        op: RegistryOperation,
    ) -> Result<Option<String>, Failure> {
        let bearer = match &self.auth {
            // A token given as the credential: oci-client presents it without asking.
            RegistryAuth::Bearer(_) => true,
            _ => self
                .challenge_header(reference)
                .await?
                .as_deref()
                .and_then(|v| v.split_whitespace().next())
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer")),
        };
        if !bearer {
            return Ok(None);
        }
        match self.oci.get_or_init(|| self.oci_settings.build()) {
            Ok(oci) => Ok(oci.auth(reference, &self.auth, op).await?),
            Err(e) => Err(OciDistributionError::GenericError(Some(e.to_string())).into()),
        }
    }

    /// The `WWW-Authenticate` of the registry's `/v2/`, asked without credentials.
    async fn challenge_header(&self, reference: &Reference) -> Result<Option<String>, Failure> {
        let url = format!("{}://{}/v2/", self.scheme, reference.resolve_registry());
        let probe = self.http.get(url).send().await?;
        Ok(probe
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// Exchanges an identity token (an OAuth2 refresh token) for an access token to `op` on
    /// `reference`'s repository, as docker does: the registry's `/v2/` names the token service
    /// in its Bearer challenge, which takes a `refresh_token` grant by POST. `None` when the
    /// registry asks for no token.
    async fn exchange(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        identity: &Secret,
    ) -> Result<Option<String>, Failure> {
        let challenge = self.challenge_header(reference).await?;
        let Some((realm, service)) = challenge.as_deref().and_then(bearer_challenge) else {
            return Ok(None);
        };
        let actions = match op {
            RegistryOperation::Pull => "pull",
            RegistryOperation::Push => "pull,push",
        };
        let scope = format!("repository:{}:{actions}", reference.repository());
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", identity.expose()),
            ("scope", scope.as_str()),
            ("client_id", "wasm-oci"),
        ];
        if let Some(service) = &service {
            form.push(("service", service));
        }
        let response = self.http.post(&realm).form(&form).send().await?;
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: Option<String>,
            token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&read_at_most(response, 1 << 20).await?)
            .map_err(|e| {
                OciDistributionError::SpecViolationError(format!(
                    "the token service at {realm} answered with no token: {e}"
                ))
            })?;
        Ok(answer.access_token.or(answer.token))
    }

    /// Sends the request `build` makes (once more, with a renewed token, when a bearer token
    /// expired) for `op` on `reference`'s repository; any answer but a success is a failure.
    async fn send(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        mut build: impl FnMut(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let mut renew = false;
        loop {
            let mut request = build(&self.http);
            if let Some(authorization) = self.authorization(reference, op, renew).await? {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request.send().await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let bearer = *self.wants.lock().await == Some(Wants::Bearer);
            if status == StatusCode::UNAUTHORIZED && bearer && !renew {
                renew = true;
                continue;
            }
            return Err(failure(response).await);
        }
    }

    /// The manifest URL of `reference`: by digest when it names one, else by tag.
    fn manifest_url(&self, reference: &Reference) -> String {
        let name = reference.digest().or(reference.tag()).unwrap_or("latest");
        self.url(reference, "manifests", name)
    }

    fn url(&self, reference: &Reference, kind: &str, name: &str) -> String {
        format!(
            "{}://{}/v2/{}/{kind}/{name}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository()
        )
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
        let actual = Digest::of(&body).to_string();
        if body.len() as u64 <= limit {
            for expected in [reference.digest().map(str::to_owned), announced]
                .into_iter()
                .flatten()
                .filter(|d| d.starts_with("sha256:"))
            {
                if expected != actual {
                    return Err(Failure::Digest { expected, actual });
                }
            }
        }
        Ok((body, actual))
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
            OciDistributionError::SpecViolationError(format!("upload Location {location}: {e}"))
        })?;
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
fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
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
    Some((param("realm")?, param("service")))
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
    let body = read_at_most(response, 64 << 10).await.unwrap_or_default();
    // A client error may carry the distribution spec's error envelope; anything else is
    // reported with its status and body.
    let envelope = status
        .is_client_error()
        .then(|| serde_json::from_slice::<OciEnvelope>(&body).ok())
        .flatten();
    let error = match (status, envelope) {
        (StatusCode::UNAUTHORIZED, _) => OciDistributionError::UnauthorizedError { url },
        (_, Some(envelope)) => OciDistributionError::RegistryError { envelope, url },
        (s, None) => OciDistributionError::ServerError {
            code: s.as_u16(),
            url,
            message: String::from_utf8_lossy(&body).into_owned(),
        },
    };
    Failure::Request { error, retry_after }
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
        assert_eq!(
            bearer_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example""#
            ),
            Some((
                "https://auth.example/token".to_owned(),
                Some("registry.example".to_owned())
            ))
        );
        assert_eq!(
            bearer_challenge(r#"Basic realm="x", Bearer realm="https://t/""#),
            Some(("https://t/".to_owned(), None))
        );
        assert_eq!(bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(bearer_challenge("Bearer service=x"), None);
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
