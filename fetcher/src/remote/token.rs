//! Who a registry wants its client to be, and how to become it: the `/v2/` challenge, Basic
//! credentials, bearer tokens per repository from the token service (an identity token
//! exchanged first), and `login`'s check. Credentials go to a token service only over HTTPS
//! (or when the registry itself is plain HTTP), and every token answer is read with a cap.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::auth::{Login, Secret};
use super::body::read_at_most;
use super::failure::{Failure, failure, violation};
use wasm_oci_artifact::text::printable;

/// A token service's answer is a small JSON document; more is refused, not buffered.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// The longest a token request may take, body included: a token service that drips its
/// answer does not hold the pull for longer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

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

/// What one registry host is presented with, and what it wants: containerd's authorizer.
pub(crate) struct Authorizer {
    http: reqwest::Client,
    auth: RegistryAuth,
    /// An identity token, exchanged at the token service (see [`Authorizer::exchange`]).
    identity: Option<Secret>,
    /// The registry's scheme: credentials travel to a plain-HTTP token service only when
    /// the registry itself is plain HTTP.
    scheme: &'static str,
    /// `scheme://host/v2/`, where the registry says what it wants.
    api_root: Url,
    wants: tokio::sync::Mutex<Option<Wants>>,
    /// Bearer tokens by repository and operation, as `Authorization` values.
    tokens: std::sync::Mutex<BTreeMap<(String, RegistryOperation), HeaderValue>>,
    /// Where its credentials come from, to say so once when they are refused.
    credentials_from: Option<String>,
    /// Whether that was said.
    refusal_told: std::sync::atomic::AtomicBool,
}

impl Authorizer {
    /// Presents `login` to the registry whose API root is `api_root`, asking with `http`.
    /// `open`: its `/v2/` already answered without a challenge (the scheme probe saw it).
    pub(crate) fn new(
        http: reqwest::Client,
        login: Login,
        scheme: &'static str,
        api_root: Url,
        open: bool,
    ) -> Self {
        let auth = login.registry_auth();
        // A registry that already answered `/v2/` without a challenge wants what the
        // handshake would conclude from that answer; a bearer credential is presented anyway.
        let wants =
            (open && !matches!(auth, RegistryAuth::Bearer(_))).then(|| Wants::without_token(&auth));
        Self {
            http,
            auth,
            identity: match login {
                Login::IdentityToken(token) => Some(token),
                Login::Auth(_) => None,
            },
            scheme,
            api_root,
            wants: tokio::sync::Mutex::new(wants),
            tokens: std::sync::Mutex::default(),
            credentials_from: None,
            refusal_told: Default::default(),
        }
    }

    /// Names where the credentials come from (see [`Authorizer::refused`]).
    pub(crate) fn set_credentials_from(&mut self, from: String) {
        self.credentials_from = Some(from);
    }

    /// Says, once, that the credentials presented were refused (`status` 401 or 403): stale
    /// stored credentials otherwise read as a registry that wants some.
    pub(crate) fn refused(&self, status: StatusCode) {
        let presented = !matches!(self.auth, RegistryAuth::Anonymous) || self.identity.is_some();
        if presented
            && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            && let Some(from) = &self.credentials_from
            && !self
                .refusal_told
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "{} refused {from} ({status}): they were presented and may be stale; log in again",
                printable(self.api_root.host_str().unwrap_or_default())
            );
        }
    }

    /// Whether the registry hands out bearer tokens (known after the first handshake): an
    /// unauthorized answer then may mean that a token expired.
    pub(crate) async fn wants_bearer(&self) -> bool {
        *self.wants.lock().await == Some(Wants::Bearer)
    }

    fn basic(&self) -> Option<HeaderValue> {
        let RegistryAuth::Basic(user, password) = &self.auth else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        sensitive(&format!("Basic {encoded}"))
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
    pub(crate) async fn authorization(
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
        let url = self.api_root.clone();
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
        self.refused(response.status());
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
        self.refused(response.status());
        token_from(response, &realm).await
    }

    /// Checks that the credentials open the registry, as `docker login` does: a bearer
    /// registry's token service must hand out a token for them (with no scope), which `/v2/`
    /// then accepts; a Basic registry's `/v2/` must accept them. A registry that asks for
    /// nothing accepts anyone.
    pub(crate) async fn check_login(&self) -> Result<(), Failure> {
        // Credentials being checked are not stale ones: the login's own error says it.
        self.refusal_told
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let url = self.api_root.clone();
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

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
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
}
