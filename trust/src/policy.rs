//! Signature policy in the `containers-policy.json(5)` format podman, CRI-O and skopeo read,
//! the subset that applies to registries: `default`, `transports.docker` scopes (longest match
//! of `host[:port]/namespace/repo[:tag|@digest]`, then `host`, then `*.domain` wildcards), and
//! the requirements `insecureAcceptAnything`, `reject` and `sigstoreSigned`. Parsing is strict,
//! as containers/image's is: anything not understood refuses the whole file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::Reference;
use wasm_oci_artifact::file::ReadError;
use wasm_oci_artifact::printable;
use wasm_oci_cache::Verdict;

use crate::error::{InvalidSignature, Refusal};
use crate::key::{KeyError, PublicKey};

/// Where the CLI and the shim read the policy from when nothing else names one.
pub const DEFAULT_POLICY_PATH: &str = "/etc/wasm-oci/policy.json";
/// The environment variable naming the policy file.
pub const POLICY_ENV: &str = "WASM_OCI_POLICY";
/// A policy file larger than this is refused unread.
const MAX_POLICY_FILE: u64 = 4 << 20;

/// A policy that cannot be used: the file and why. Fail closed: nothing is pulled or run.
#[derive(Debug, thiserror::Error)]
#[error("the signature policy {} cannot be used: {reason}; fix it or point --policy / WASM_OCI_POLICY at another file", path.display())]
pub struct PolicyError {
    /// The policy file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: PolicyProblem,
}

/// What is wrong with a policy file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyProblem {
    /// It cannot be read (not a regular file, too large, missing ...).
    #[error("cannot read it: {0}")]
    Read(#[source] ReadError),
    /// It is not JSON of the policy's shape; anything not understood refuses the file.
    #[error("it is not a policy of the containers-policy.json(5) subset read here: {0}")]
    Parse(#[source] serde_json::Error),
    /// A list of requirements is empty.
    #[error(
        "{what} is an empty list (write [{{\"type\":\"insecureAcceptAnything\"}}] to accept anything)"
    )]
    Empty {
        /// Which list.
        what: String,
    },
    /// A docker scope key that is no scope.
    #[error(
        "docker scope {scope:?} is not host[:port][/namespace/repo[:tag|@digest]] or *.domain{}",
        .reason.map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    BadScope {
        /// The key as written.
        scope: String,
        /// What is wrong with its registry, when that is it.
        reason: Option<&'static str>,
    },
    /// Two keys that name one scope.
    #[error("docker scope {scope:?} names the same scope as another key ({canonical:?}); keep one")]
    SameScope {
        /// The key as written.
        scope: String,
        /// The scope both name.
        canonical: String,
    },
    /// A `sigstoreSigned` requirement whose keys cannot be used.
    #[error("{what}: {problem}")]
    Keys {
        /// Which list.
        what: String,
        /// What is wrong.
        problem: KeyProblem,
    },
}

/// What is wrong with the keys of a `sigstoreSigned` requirement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Not exactly one of the three ways to name keys.
    #[error("sigstoreSigned needs exactly one of keyPath, keyPaths and keyData")]
    NotOneSource,
    /// `keyPaths: []`.
    #[error("keyPaths is empty")]
    NoPaths,
    /// `keyData` is not base64.
    #[error("keyData is not base64")]
    DataNotBase64,
    /// A key file that cannot be read.
    #[error("key {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ReadError,
    },
    /// A key that is not one.
    #[error("key {name}: {source}")]
    Key {
        /// The file, or `keyData`.
        name: String,
        /// Why.
        source: KeyError,
    },
}

/// A signature policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it was read from; `None`: no file, accept anything (as without a policy).
    source: Option<PathBuf>,
    default: Vec<Requirement>,
    docker_default: Option<Vec<Requirement>>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

/// One requirement of a scope; all of a scope's must be met.
#[derive(Debug, Clone)]
pub enum Requirement {
    /// `insecureAcceptAnything`.
    InsecureAcceptAnything,
    /// `reject`.
    Reject,
    /// `sigstoreSigned`: a valid cosign signature by one of these keys, for an identity that
    /// matches.
    SigstoreSigned {
        /// The keys (`keyPath`, `keyPaths` or `keyData`).
        keys: Vec<PublicKey>,
        /// `signedIdentity`.
        identity: SignedIdentity,
    },
}

/// What a signature's claimed identity must be, for the image being pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The same repository and tag (or digest).
    MatchExact,
    /// The default: exact for a tag, the same repository for a digest.
    MatchRepoDigestOrExact,
    /// The same repository, any tag. What cosign's signatures (repository only) need.
    MatchRepository,
    /// Exactly this reference.
    ExactReference(String),
    /// This repository.
    ExactRepository(String),
}

/// The requirements that apply to one reference, and which scope they came from.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// How errors name the scope: `default`, `docker` or `docker "localhost:5000/app"`.
    pub name: &'a str,
    /// The policy file.
    pub source: Option<&'a Path>,
    /// Its requirements.
    pub requirements: &'a [Requirement],
}

/// One signature as stored: the payload and the base64 signature of its annotation.
#[derive(Debug, Clone)]
pub struct SignatureBlob {
    /// The payload bytes (the layer).
    pub payload: Vec<u8>,
    /// The `dev.cosignproject.cosign/signature` annotation.
    pub signature: String,
}

impl Policy {
    /// No policy: everything is accepted, as before signatures existed.
    pub fn accept_anything() -> Self {
        Self {
            source: None,
            default: vec![Requirement::InsecureAcceptAnything],
            docker_default: None,
            docker: BTreeMap::new(),
        }
    }

    /// The policy `explicit` names, else `$WASM_OCI_POLICY`, else
    /// `/etc/wasm-oci/policy.json`; a default file that does not exist means accept anything.
    /// A file that was named but cannot be read is an error.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, PolicyError> {
        if let Some(path) = explicit {
            return Self::load(path);
        }
        if let Some(path) = std::env::var_os(POLICY_ENV).filter(|p| !p.is_empty()) {
            return Self::load(Path::new(&path));
        }
        let default = Path::new(DEFAULT_POLICY_PATH);
        match std::fs::symlink_metadata(default) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::accept_anything()),
            _ => Self::load(default),
        }
    }

    /// Reads and checks the policy file at `path`, and the keys it names.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let err = |reason| PolicyError {
            path: path.to_owned(),
            reason,
        };
        let bytes = crate::file::read_trust_file(path, MAX_POLICY_FILE)
            .map_err(|e| err(PolicyProblem::Read(e)))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        Self::parse(&bytes, base, path).map_err(err)
    }

    /// A policy of one requirement for every reference: `keys` must have signed it, for an
    /// identity `identity` accepts. What `verify --key` checks with.
    pub fn requiring(keys: Vec<PublicKey>, identity: SignedIdentity) -> Self {
        Self {
            source: None,
            default: vec![Requirement::SigstoreSigned { keys, identity }],
            docker_default: None,
            docker: BTreeMap::new(),
        }
    }

    fn parse(bytes: &[u8], base: &Path, path: &Path) -> Result<Self, PolicyProblem> {
        let file: file::Policy = serde_json::from_slice(bytes).map_err(PolicyProblem::Parse)?;
        let default = requirements(file.default, base, "default")?;
        let mut docker_default = None;
        let mut docker = BTreeMap::new();
        // Other transports (containers-storage, docker-daemon, ...) name nothing wasm-oci
        // pulls from; their requirements are not ours to judge.
        for (scope, list) in file.transports.docker {
            let parsed = requirements(list, base, &format!("docker scope {scope:?}"))?;
            if scope.is_empty() {
                docker_default = Some(parsed);
                continue;
            }
            // Scopes are compared with canonical registry names: a scope written
            // `LOCALHOST:05000` or `host:443` is stored as the name references are parsed
            // to, and two keys that name one scope are refused rather than one silently
            // winning.
            let canonical = canonical_scope(&scope)?;
            if docker.contains_key(&canonical) {
                return Err(PolicyProblem::SameScope { scope, canonical });
            }
            docker.insert(canonical, parsed);
        }
        Ok(Self {
            source: Some(path.to_owned()),
            default,
            docker_default,
            docker,
        })
    }

    /// The file it came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Whether a file was read (else everything is accepted).
    pub fn is_configured(&self) -> bool {
        self.source.is_some()
    }

    /// Whether every scope, the defaults included, accepts anything: only then may content
    /// whose name is unknown (a module from a container's rootfs, a layout entry without a
    /// name) be used without a scope to check it against.
    pub fn accepts_anything_everywhere(&self) -> bool {
        let accepts = |list: &[Requirement]| {
            list.iter()
                .all(|r| matches!(r, Requirement::InsecureAcceptAnything))
        };
        accepts(&self.default)
            && self.docker_default.as_deref().is_none_or(accepts)
            && self.docker.values().all(|l| accepts(l))
    }

    /// The most specific scope that matches `reference`.
    pub fn scope_for<'a>(&'a self, reference: &Reference) -> Scope<'a> {
        let source = self.source.as_deref();
        for candidate in scope_candidates(reference) {
            if let Some((name, requirements)) = self.docker.get_key_value(&candidate) {
                return Scope {
                    name,
                    source,
                    requirements,
                };
            }
        }
        match &self.docker_default {
            Some(requirements) => Scope {
                name: "",
                source,
                requirements,
            },
            None => Scope {
                name: "default",
                source,
                requirements: &self.default,
            },
        }
    }
}

impl Scope<'_> {
    /// How errors name it.
    pub fn describe(&self) -> String {
        let file = self
            .source
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into());
        match self.name {
            "default" => format!("the default of policy {file}"),
            "" => format!("the docker transport's default of policy {file}"),
            scope => format!("scope docker {scope:?} of policy {file}"),
        }
    }

    /// Whether it rejects everything whatever the signatures.
    pub fn rejects(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r, Requirement::Reject))
    }

    /// Whether it needs signatures to accept anything.
    pub fn needs_signatures(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r, Requirement::SigstoreSigned { .. }))
    }

    /// Checks `signatures` of `signed_digest` (what `reference` resolved to) against every
    /// requirement: the signatures that verified, or why the image is refused.
    pub fn check(
        &self,
        reference: &Reference,
        signed_digest: &str,
        signatures: &[SignatureBlob],
    ) -> Result<Vec<Verdict>, Refusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut valid: Vec<Verdict> = Vec::new();
        for requirement in self.requirements {
            match requirement {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => return Err(Refusal::Rejected),
                Requirement::SigstoreSigned { keys, identity } => {
                    if signatures.is_empty() {
                        return Err(Refusal::Unsigned);
                    }
                    let mut reasons = Vec::new();
                    let mut accepted = 0;
                    for (i, signature) in signatures.iter().enumerate() {
                        match check_one(reference, signed_digest, signature, keys, identity) {
                            Ok(verdict) => {
                                accepted += 1;
                                if !valid.iter().any(|v| {
                                    v.key_fingerprint == verdict.key_fingerprint
                                        && v.identity == verdict.identity
                                }) {
                                    valid.push(Verdict {
                                        verified_at: now,
                                        ..verdict
                                    });
                                }
                            }
                            Err(reason) => reasons.push((i + 1, reason)),
                        }
                    }
                    if accepted == 0 {
                        return Err(Refusal::NoValidSignature(reasons));
                    }
                }
            }
        }
        Ok(valid)
    }
}

/// One signature against one requirement's keys and identity.
pub(crate) fn check_one(
    reference: &Reference,
    signed_digest: &str,
    blob: &SignatureBlob,
    keys: &[PublicKey],
    identity: &SignedIdentity,
) -> Result<Verdict, InvalidSignature> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob.signature.trim())
        .map_err(|_| InvalidSignature::NotBase64)?;
    let key = keys
        .iter()
        .find(|k| k.verifies(&blob.payload, &raw))
        .ok_or_else(|| InvalidSignature::OtherKey {
            fingerprints: keys
                .iter()
                .map(|k| format!("sha256:{}", &k.fingerprint()[..16]))
                .collect(),
        })?;
    let claim = crate::payload::parse(&blob.payload)?;
    if claim.digest != signed_digest {
        return Err(InvalidSignature::OtherDigest {
            claimed: printable(&claim.digest),
            signed: signed_digest.to_owned(),
        });
    }
    identity.matches(reference, &claim.identity)?;
    Ok(Verdict {
        key_fingerprint: key.fingerprint().to_owned(),
        identity: claim.identity,
        verified_at: 0,
    })
}

impl SignedIdentity {
    /// Whether a signature claiming `claimed` is acceptable for `reference`.
    pub fn matches(&self, reference: &Reference, claimed: &str) -> Result<(), InvalidSignature> {
        let shown = printable(claimed);
        let signed = Identity::parse(claimed)
            .ok_or_else(|| InvalidSignature::IdentityNotAReference(shown.clone()))?;
        let image = Identity::of(reference);
        let ok = match self {
            SignedIdentity::MatchRepository => signed.repo == image.repo,
            SignedIdentity::MatchExact => signed == image && image.tag.is_some(),
            SignedIdentity::MatchRepoDigestOrExact => match &image.digest {
                Some(_) => signed.repo == image.repo,
                None => signed == image,
            },
            SignedIdentity::ExactReference(r) => Identity::parse(r).is_some_and(|r| r == signed),
            SignedIdentity::ExactRepository(r) => {
                Identity::parse(r).is_some_and(|r| r.repo == signed.repo)
            }
        };
        if ok {
            return Ok(());
        }
        Err(InvalidSignature::OtherIdentity {
            claimed: shown,
            reference: reference.whole(),
            rule: self.name(),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            SignedIdentity::MatchExact => "matchExact",
            SignedIdentity::MatchRepoDigestOrExact => {
                "matchRepoDigestOrExact (cosign signs repositories only: use matchRepository)"
            }
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::ExactReference(_) => "exactReference",
            SignedIdentity::ExactRepository(_) => "exactRepository",
        }
    }
}

/// A reference as identities compare: registry (docker.io for index.docker.io) and
/// repository, tag, digest.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    repo: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Identity {
    fn of(reference: &Reference) -> Self {
        // Parsed references are canonical already (docker.io for Docker Hub's other names);
        // `host:443` is `host` here as in scope lookups.
        let registry = wasm_oci_artifact::registry_key(reference.registry());
        Self {
            repo: format!("{registry}/{}", reference.repository()),
            // A digest names the image; oci-client adds `latest` only when neither is given.
            tag: reference
                .tag()
                .filter(|_| reference.digest().is_none())
                .map(str::to_owned),
            digest: reference.digest().map(str::to_owned),
        }
    }

    /// A claimed identity: a repository, with a tag or digest or neither (as cosign writes).
    fn parse(text: &str) -> Option<Self> {
        // Not oci-client's parser: its regular expression costs ~28 ms to compile, ten times a
        // warm run.
        let reference = wasm_oci_artifact::parse_reference(text).ok()?;
        let mut identity = Self::of(&reference);
        // oci-client reads a bare repository as `:latest`; a claim without a tag has none.
        let last = text.rsplit('/').next().unwrap_or(text);
        if !last.contains(':') && !last.contains('@') {
            identity.tag = None;
        }
        Some(identity)
    }
}

/// The docker scopes that could name `reference`, most specific first, as containers/image
/// lists them: the image, its repository, each namespace above it, the host, then
/// `*.domain` wildcards of the host.
fn scope_candidates(reference: &Reference) -> Vec<String> {
    // `host:443` is looked up as `host`: writing out the port `https` implies must not escape
    // a scope for the host (scope keys are stored the same way, see `canonical_scope`).
    let registry = wasm_oci_artifact::registry_key(reference.registry());
    let repo = format!("{registry}/{}", reference.repository());
    let mut out = Vec::new();
    match (reference.digest(), reference.tag()) {
        (Some(digest), _) => out.push(format!("{repo}@{digest}")),
        (None, Some(tag)) => out.push(format!("{repo}:{tag}")),
        (None, None) => {}
    }
    let mut name = repo.as_str();
    loop {
        out.push(name.to_owned());
        match name.rsplit_once('/') {
            Some((parent, _)) => name = parent,
            None => break,
        }
    }
    let host = wasm_oci_artifact::registry_host(registry);
    let mut rest = host;
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(format!("*.{parent}"));
        rest = parent;
    }
    out
}

/// A scope key as references are parsed: the registry part in its canonical form
/// ([`wasm_oci_artifact::canonical_registry`]) and `host:443` as `host`; a wildcard in
/// lowercase.
fn canonical_scope(scope: &str) -> Result<String, PolicyProblem> {
    let bad = |reason| PolicyProblem::BadScope {
        scope: scope.to_owned(),
        reason,
    };
    if scope.chars().any(|c| c.is_whitespace() || c.is_control())
        || scope.starts_with('/')
        || scope.strip_prefix("*.").unwrap_or(scope).contains('*')
    {
        return Err(bad(None));
    }
    if scope.starts_with("*.") {
        return Ok(scope.to_ascii_lowercase());
    }
    let (registry, rest) = match scope.split_once('/') {
        Some((registry, rest)) => (registry, Some(rest)),
        None => (scope, None),
    };
    let canonical = wasm_oci_artifact::canonical_registry(registry).map_err(|e| bad(Some(e)))?;
    let registry = wasm_oci_artifact::registry_key(&canonical);
    Ok(match rest {
        Some(rest) => format!("{registry}/{rest}"),
        None => registry.to_owned(),
    })
}

fn requirements(
    list: Vec<file::Requirement>,
    base: &Path,
    what: &str,
) -> Result<Vec<Requirement>, PolicyProblem> {
    if list.is_empty() {
        return Err(PolicyProblem::Empty {
            what: what.to_owned(),
        });
    }
    list.into_iter()
        .map(|r| {
            requirement(r, base).map_err(|problem| PolicyProblem::Keys {
                what: what.to_owned(),
                problem,
            })
        })
        .collect()
}

fn requirement(value: file::Requirement, base: &Path) -> Result<Requirement, KeyProblem> {
    let (key_path, key_paths, key_data, signed_identity) = match value {
        file::Requirement::InsecureAcceptAnything {} => {
            return Ok(Requirement::InsecureAcceptAnything);
        }
        file::Requirement::Reject {} => return Ok(Requirement::Reject),
        file::Requirement::SigstoreSigned {
            key_path,
            key_paths,
            key_data,
            signed_identity,
        } => (key_path, key_paths, key_data, signed_identity),
    };
    let given = [key_path.is_some(), key_paths.is_some(), key_data.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(KeyProblem::NotOneSource);
    }
    let mut sources = Vec::new();
    if let Some(path) = key_path {
        sources.push(read_key_file(base, &path)?);
    }
    if let Some(paths) = key_paths {
        if paths.is_empty() {
            return Err(KeyProblem::NoPaths);
        }
        for path in paths {
            sources.push(read_key_file(base, &path)?);
        }
    }
    if let Some(data) = key_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| KeyProblem::DataNotBase64)?;
        sources.push(("keyData".to_owned(), pem));
    }
    let keys = sources
        .into_iter()
        .map(|(name, pem)| {
            PublicKey::from_pem(&pem).map_err(|source| KeyProblem::Key { name, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let identity = match signed_identity {
        None | Some(file::Identity::MatchRepoDigestOrExact {}) => {
            SignedIdentity::MatchRepoDigestOrExact
        }
        Some(file::Identity::MatchExact {}) => SignedIdentity::MatchExact,
        Some(file::Identity::MatchRepository {}) => SignedIdentity::MatchRepository,
        Some(file::Identity::ExactReference { docker_reference }) => {
            SignedIdentity::ExactReference(docker_reference)
        }
        Some(file::Identity::ExactRepository { docker_repository }) => {
            SignedIdentity::ExactRepository(docker_repository)
        }
    };
    Ok(Requirement::SigstoreSigned { keys, identity })
}

fn read_key_file(base: &Path, path: &str) -> Result<(String, Vec<u8>), KeyProblem> {
    let full = base.join(path);
    let pem = crate::file::read_trust_file(&full, crate::file::MAX_KEY_FILE).map_err(|source| {
        KeyProblem::Read {
            path: full.clone(),
            source,
        }
    })?;
    Ok((full.display().to_string(), pem))
}

/// The file as written, parsed strictly as containers/image parses it: a field not known
/// here refuses the whole file (`deny_unknown_fields`), and so does a requirement or identity
/// type not known here (`signedBy`, fulcio, rekor and pki are not verified here).
mod file {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Policy {
        pub default: Vec<Requirement>,
        #[serde(default)]
        pub transports: Transports,
    }

    #[derive(Deserialize, Default)]
    pub(super) struct Transports {
        /// Scope to requirements.
        #[serde(default)]
        pub docker: BTreeMap<String, Vec<Requirement>>,
        /// Other transports: objects, not judged here.
        #[serde(flatten)]
        #[allow(dead_code)]
        pub other: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", deny_unknown_fields)]
    pub(super) enum Requirement {
        #[serde(rename = "insecureAcceptAnything")]
        InsecureAcceptAnything {},
        #[serde(rename = "reject")]
        Reject {},
        #[serde(rename = "sigstoreSigned", rename_all = "camelCase")]
        SigstoreSigned {
            key_path: Option<String>,
            key_paths: Option<Vec<String>>,
            key_data: Option<String>,
            signed_identity: Option<Identity>,
        },
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", deny_unknown_fields)]
    pub(super) enum Identity {
        #[serde(rename = "matchExact")]
        MatchExact {},
        #[serde(rename = "matchRepoDigestOrExact")]
        MatchRepoDigestOrExact {},
        #[serde(rename = "matchRepository")]
        MatchRepository {},
        #[serde(rename = "exactReference")]
        ExactReference {
            #[serde(rename = "dockerReference")]
            docker_reference: String,
        },
        #[serde(rename = "exactRepository")]
        ExactRepository {
            #[serde(rename = "dockerRepository")]
            docker_repository: String,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> Reference {
        wasm_oci_artifact::parse_reference(s).unwrap()
    }

    fn policy(json: &str) -> Result<Policy, PolicyProblem> {
        Policy::parse(json.as_bytes(), Path::new("/"), Path::new("/p.json"))
    }

    #[test]
    fn the_longest_scope_wins_then_the_transport_then_the_default() {
        let p = policy(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "":[{"type":"insecureAcceptAnything"}],
                "localhost:5000":[{"type":"reject"}],
                "localhost:5000/team":[{"type":"insecureAcceptAnything"}],
                "localhost:5000/team/app:v1":[{"type":"reject"}],
                "*.example.com":[{"type":"reject"}]}}}"#,
        )
        .unwrap();
        let name = |r: &str| p.scope_for(&reference(r)).name.to_owned();
        assert_eq!(
            name("localhost:5000/team/app:v1"),
            "localhost:5000/team/app:v1"
        );
        assert_eq!(name("localhost:5000/team/app:v2"), "localhost:5000/team");
        assert_eq!(name("localhost:5000/other:v1"), "localhost:5000");
        assert_eq!(name("r.example.com/x:1"), "*.example.com");
        assert_eq!(name("localhost:5001/x:1"), "");
        let no_docker = policy(r#"{"default":[{"type":"reject"}]}"#).unwrap();
        assert_eq!(no_docker.scope_for(&reference("a.io/x:1")).name, "default");
    }

    /// Neither the reference nor the scope key escapes by respelling a registry's name.
    #[test]
    fn scopes_and_references_compare_canonical_registry_names() {
        let p = policy(
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{
                "LOCALHOST:05000":[{"type":"reject"}],
                "registry.example":[{"type":"reject"}],
                "other.example:443/team":[{"type":"reject"}],
                "index.docker.io/library":[{"type":"reject"}],
                "*.Corp.Example":[{"type":"reject"}]}}}"#,
        )
        .unwrap();
        for (r, scope) in [
            ("localhost:5000/a:1", "localhost:5000"),
            ("LocalHost:0005000/a:1", "localhost:5000"),
            ("registry.example/a:1", "registry.example"),
            ("REGISTRY.example:443/a:1", "registry.example"),
            ("registry.example:0443/a:1", "registry.example"),
            ("other.example/team/x:1", "other.example/team"),
            ("other.example:443/team/x:1", "other.example/team"),
            ("registry-1.docker.io/library/hello:1", "docker.io/library"),
            ("hello", "docker.io/library"),
            ("r.CORP.example:5000/x", "*.corp.example"),
        ] {
            assert_eq!(p.scope_for(&reference(r)).name, scope, "{r}");
        }
        // Another port is another registry.
        assert_eq!(
            p.scope_for(&reference("registry.example:4443/a")).name,
            "default"
        );
        for bad in [
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"h:99999":[{"type":"reject"}]}}}"#,
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"h:":[{"type":"reject"}]}}}"#,
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "h":[{"type":"reject"}],"H:443":[{"type":"insecureAcceptAnything"}]}}}"#,
        ] {
            assert!(policy(bad).is_err(), "{bad}");
        }
    }

    /// IPv4-mapped IPv6 connects to the IPv4 address it maps, and the IPv4-compatible
    /// spelling is read as the IPv4 it carries (the canonical form the egress rule judges): a
    /// scope written for `127.0.0.1:PORT`, read from a policy file, holds for each of its
    /// spellings, and a scope written in a mapped spelling is the IPv4 one.
    #[test]
    fn a_loopback_scope_holds_for_every_spelling_of_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(
            &path,
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{
                "127.0.0.1:5000":[{"type":"reject"}],
                "[::ffff:169.254.169.254]":[{"type":"reject"}]}}}"#,
        )
        .unwrap();
        let p = Policy::load(&path).unwrap();
        for r in [
            "127.0.0.1:5000/a:1",
            "[::ffff:127.0.0.1]:5000/a:1",
            "[::ffff:7f00:1]:5000/a:1",
            "[0:0:0:0:0:ffff:7f00:1]:05000/a:1",
            "[::FFFF:127.0.0.1]:5000/a:1",
            "[::127.0.0.1]:5000/a:1",
            "127.1:5000/a:1",
        ] {
            let scope = p.scope_for(&reference(r));
            assert_eq!(scope.name, "127.0.0.1:5000", "{r}");
            assert!(scope.rejects(), "{r}");
        }
        for r in ["169.254.169.254/a", "[::ffff:a9fe:a9fe]/a"] {
            assert_eq!(p.scope_for(&reference(r)).name, "169.254.169.254", "{r}");
        }
        // Another address, and a v6 address that carries no IPv4, are other registries.
        for r in ["[::1]:5000/a", "[2001:db8::1]:5000/a", "127.0.0.2:5000/a"] {
            assert_eq!(p.scope_for(&reference(r)).name, "default", "{r}");
        }
        let twice = r#"{"default":[{"type":"reject"}],"transports":{"docker":{
            "127.0.0.1:5000":[{"type":"reject"}],
            "[::ffff:7f00:1]:5000":[{"type":"insecureAcceptAnything"}]}}}"#;
        assert!(
            policy(twice)
                .unwrap_err()
                .to_string()
                .contains("names the same scope")
        );
    }

    /// A key or policy that is not a regular file, or too large, is refused, not read
    /// forever (`/dev/zero`) or waited on (a FIFO).
    #[test]
    fn keys_and_policies_are_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        for key in ["/dev/zero", "/dev/null"] {
            let json = format!(r#"{{"default":[{{"type":"sigstoreSigned","keyPath":"{key}"}}]}}"#);
            let e = policy(&json).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{key}: {e}");
        }
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = Policy::load(&fifo).unwrap_err();
        assert!(e.reason.to_string().contains("not a regular file"), "{e}");
        let big = dir.path().join("big.pub");
        std::fs::write(&big, vec![b'a'; crate::file::MAX_KEY_FILE as usize + 1]).unwrap();
        let json = format!(
            r#"{{"default":[{{"type":"sigstoreSigned","keyPath":"{}"}}]}}"#,
            big.display()
        );
        assert!(policy(&json).unwrap_err().to_string().contains("over"));
        let e = Policy::load(Path::new("/dev/zero")).unwrap_err();
        assert!(e.reason.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn anything_not_understood_refuses_the_file() {
        for bad in [
            r#"{}"#,
            r#"{"default":[]}"#,
            r#"{"default":[{"type":"insecureAcceptAnything","x":1}]}"#,
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}"#,
            r#"{"default":[{"type":"whatever"}]}"#,
            r#"{"default":[{"type":"reject"}],"extra":1}"#,
            r#"{"default":[{"type":"sigstoreSigned"}]}"#,
            r#"{"default":[{"type":"sigstoreSigned","keyData":"bm90IGEga2V5"}]}"#,
        ] {
            assert!(policy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identities_match_as_containers_image_matches_them() {
        let tag = reference("localhost:5000/app:v1");
        let digest = reference(&format!("localhost:5000/app@sha256:{}", "a".repeat(64)));
        use SignedIdentity::*;
        assert!(MatchRepository.matches(&tag, "localhost:5000/app").is_ok());
        assert!(
            MatchRepository
                .matches(&tag, "localhost:5000/other")
                .is_err()
        );
        assert!(
            MatchRepoDigestOrExact
                .matches(&tag, "localhost:5000/app")
                .is_err()
        );
        assert!(
            MatchRepoDigestOrExact
                .matches(&tag, "localhost:5000/app:v1")
                .is_ok()
        );
        assert!(
            MatchRepoDigestOrExact
                .matches(&digest, "localhost:5000/app")
                .is_ok()
        );
        assert!(MatchExact.matches(&tag, "localhost:5000/app:v1").is_ok());
        assert!(MatchExact.matches(&tag, "localhost:5000/app:v2").is_err());
        assert!(MatchExact.matches(&digest, "localhost:5000/app").is_err());
        assert!(
            ExactRepository("localhost:5000/app".into())
                .matches(&tag, "localhost:5000/app")
                .is_ok()
        );
    }
}
