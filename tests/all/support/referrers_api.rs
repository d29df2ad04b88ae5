//! A registry that serves the OCI 1.1 referrers API ([`ReferrersApi`]): a proxy on loopback in
//! front of a real Docker Distribution 2.8 that adds that API and nothing else.
//!
//! No registry on this machine serves the API: Distribution 2.8 (Debian's `docker-registry`,
//! and sid's 2.8.3) answers `GET /v2/<name>/referrers/<digest>` with 404, and `crane registry
//! serve` 0.20.7 with 404 `METHOD_UNKNOWN` (go-containerregistry only serves referrers behind
//! an option crane does not set). So this fixture follows the text of the OCI distribution
//! spec v1.1 ("Listing Referrers", "Pushing Manifests with Subject"), and the tests that use
//! it check our client against the spec, not against a registry's reading of it:
//!
//! - `GET /v2/<name>/referrers/<digest>` answers 200 with an image index
//!   (`application/vnd.oci.image.index.v1+json`), empty when nothing refers to the digest,
//!   listing each manifest with a `subject` naming it that was put through this proxy in the
//!   same repository: its `mediaType`, `digest`, `size`, `artifactType` (the manifest's, else
//!   its config's media type; an index without one has none) and `annotations`; 400 for a
//!   digest that is not one. `?artifactType=T` keeps only those of type `T` and says so with
//!   `OCI-Filters-Applied: artifactType`. With [`ReferrersApi::page_size`], longer lists are
//!   paged with a `Link: <...>; rel="next"` header.
//! - The API asks for the credentials Distribution asks for (its 401 and challenge).
//! - A manifest `PUT` that carries a `subject` is answered with `OCI-Subject: <digest>` once
//!   Distribution stored it; a `DELETE` of a manifest by digest takes it off the lists.
//! - Everything else goes to Distribution and back as it answered: status, headers (but
//!   those of the connection: one request per connection here) and body byte for byte.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{INDEX_TYPE, Registry, Reply, Request, Secure, Server, forward, sha256};

/// An answer a test gives to referrers requests instead of the spec's: a hostile registry.
type Hostile = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    /// The descriptors of the manifests with a subject, by repository and subject digest, in
    /// the order they were put.
    lists: BTreeMap<(String, String), Vec<Value>>,
    /// Descriptors per page, when paging.
    page_size: Option<usize>,
    hostile: Option<Hostile>,
}

/// A Distribution 2.8 registry with the referrers API in front of it; both stop when dropped.
pub struct ReferrersApi {
    /// The registry behind it, to read what was really stored (its tags, say).
    pub registry: Registry,
    server: Server,
    /// `127.0.0.1:<port>` of the proxy: the registry as clients see it.
    pub addr: String,
    state: Arc<Mutex<State>>,
}

impl ReferrersApi {
    pub fn start() -> ReferrersApi {
        Self::start_secure(Secure::default())
    }

    /// In front of a registry with `secure`'s basic auth (plain HTTP, on loopback): the
    /// referrers API asks for the same credentials as the rest.
    pub fn start_secure(secure: Secure) -> ReferrersApi {
        assert!(!secure.tls, "the proxy speaks plain HTTP to Distribution");
        let registry = Registry::start_secure(secure);
        let state: Arc<Mutex<State>> = Arc::default();
        let upstream = registry.addr.clone();
        let shared = state.clone();
        let server = Server::start(move |request| answer(&upstream, &shared, request));
        ReferrersApi {
            registry,
            addr: server.addr.clone(),
            server,
            state,
        }
    }

    /// `127.0.0.1:<port>/<repo>` of the proxy.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Pages referrers lists after `n` descriptors.
    pub fn page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = Some(n);
    }

    /// Answers referrers requests with `hostile` from now on, whatever was pushed.
    pub fn answer_referrers_with(
        &self,
        hostile: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().hostile = Some(Arc::new(hostile));
    }

    /// The referrers requests received, path and query as sent.
    pub fn referrers_requests(&self) -> Vec<String> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| referrers_path(&r.path).is_some())
            .map(|r| r.path)
            .collect()
    }
}

/// `(name, digest, query)` of a referrers request's path.
fn referrers_path(path: &str) -> Option<(&str, &str, &str)> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let (name, digest) = path.strip_prefix("/v2/")?.rsplit_once("/referrers/")?;
    (!digest.contains('/')).then_some((name, digest, query))
}

/// `(name, reference)` of a manifest request's path.
fn manifest_path(path: &str) -> Option<(&str, &str)> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (name, reference) = path.strip_prefix("/v2/")?.rsplit_once("/manifests/")?;
    (!reference.contains('/')).then_some((name, reference))
}

/// Whether `digest` is `sha256:` and 64 lower-case hex digits (all Distribution takes).
fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn answer(upstream: &str, state: &Mutex<State>, request: &Request) -> Reply {
    if let Some((name, digest, query)) = referrers_path(&request.path)
        && request.method == "GET"
    {
        let hostile = state.lock().unwrap().hostile.clone();
        if let Some(hostile) = hostile {
            return hostile(request);
        }
        // Under the registry's own auth: Distribution says whether these credentials may
        // read (its 401 and challenge are passed on).
        let asked = Request {
            method: "GET".into(),
            path: "/v2/".into(),
            body: Vec::new(),
            ..request.clone()
        };
        let allowed = forward(upstream, &asked, "/v2/");
        if allowed.status != 200 {
            return allowed;
        }
        return list(state, name, digest, query);
    }
    let reply = forward(upstream, request, &request.path);
    let Some((name, reference)) = manifest_path(&request.path) else {
        return reply;
    };
    match request.method.as_str() {
        "PUT" if reply.status == 201 => match descriptor(request) {
            Some((subject, entry)) => {
                let mut state = state.lock().unwrap();
                let list = state
                    .lists
                    .entry((name.to_owned(), subject.clone()))
                    .or_default();
                // Put again (by another tag, say): listed once.
                if !list.iter().any(|e| e["digest"] == entry["digest"]) {
                    list.push(entry);
                }
                reply.header("OCI-Subject", &subject)
            }
            None => reply,
        },
        "DELETE" if reply.status == 202 => {
            for ((repo, _), list) in state.lock().unwrap().lists.iter_mut() {
                if repo == name {
                    list.retain(|e| e["digest"] != reference);
                }
            }
            reply
        }
        _ => reply,
    }
}

/// The subject's digest and the referrers descriptor of a manifest put, when it has a subject.
fn descriptor(request: &Request) -> Option<(String, Value)> {
    let manifest: Value = serde_json::from_slice(&request.body).ok()?;
    let subject = manifest["subject"]["digest"].as_str()?.to_owned();
    let media_type = manifest["mediaType"]
        .as_str()
        .or(request.header("content-type"))?
        .to_owned();
    let is_index = media_type == INDEX_TYPE || manifest["manifests"].is_array();
    let artifact_type = match manifest["artifactType"].as_str().filter(|t| !t.is_empty()) {
        Some(t) => Some(t),
        None if is_index => None,
        None => manifest["config"]["mediaType"].as_str(),
    };
    let mut entry = json!({
        "mediaType": media_type,
        "digest": sha256(&request.body),
        "size": request.body.len(),
    });
    if let Some(t) = artifact_type {
        entry["artifactType"] = json!(t);
    }
    if let Some(annotations) = manifest["annotations"].as_object() {
        entry["annotations"] = json!(annotations);
    }
    Some((subject, entry))
}

/// The referrers index of `digest` in `name`, filtered and paged as `query` asks.
fn list(state: &Mutex<State>, name: &str, digest: &str, query: &str) -> Reply {
    if !is_digest(digest) {
        let body = json!({"errors": [{"code": "DIGEST_INVALID", "message": "invalid digest"}]});
        return Reply::new(400)
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let mut artifact_type = None;
    let mut from = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "artifactType" => artifact_type = Some(v),
            // The place in the list a `Link` of ours gave.
            "from" => from = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let state = state.lock().unwrap();
    let listed: Vec<&Value> = state
        .lists
        .get(&(name.to_owned(), digest.to_owned()))
        .into_iter()
        .flatten()
        .filter(|e| {
            artifact_type
                .as_deref()
                .is_none_or(|t| e["artifactType"].as_str() == Some(t))
        })
        .collect();
    let end = state
        .page_size
        .map_or(listed.len(), |n| (from + n).min(listed.len()));
    let page = listed.get(from.min(end)..end).unwrap_or_default();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": page,
    });
    let mut reply = Reply::new(200).header("Content-Type", INDEX_TYPE);
    if artifact_type.is_some() {
        reply = reply.header("OCI-Filters-Applied", "artifactType");
    }
    if end < listed.len() {
        let mut next = format!("/v2/{name}/referrers/{digest}?from={end}");
        if let Some(t) = &artifact_type {
            next.push_str(&format!("&artifactType={}", percent_encode(t)));
        }
        reply = reply.header("Link", &format!("<{next}>; rel=\"next\""));
    }
    reply.body(serde_json::to_vec(&body).unwrap())
}

/// `%XX` escapes decoded (a media type's `+` and `/` may come either way).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything but unreserved characters escaped.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
