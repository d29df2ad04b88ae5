//! Credentials the way docker and oras find them, and `login`/`logout` that write them back.
//!
//! Lookup order: `--username`/`--password-stdin`, then `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`): `credHelpers`, `auths`, `credsStore`. Secrets are held in
//! [`Secret`], whose `Debug` never shows them, and never reach a log line or an error.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

use crate::Error;

/// A password or token; printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    /// Docker's config file and credential helpers (the default).
    #[default]
    DockerConfig,
    /// Given on the command line for the one registry the command names; any other registry
    /// (a second one in a batch) is looked up in docker's config instead, so that a user's
    /// password never reaches a registry it was not typed for.
    Explicit {
        /// The registry they are for (`host[:port]`).
        registry: String,
        /// The user.
        username: String,
        /// The password or token.
        password: Secret,
    },
    /// None at all.
    Anonymous,
}

/// The key docker uses for a registry in `config.json`.
pub(crate) fn config_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// What to present to one registry.
#[derive(Clone)]
pub(crate) enum Login {
    /// Nothing, or a user and password (which a bearer registry's token service takes).
    Auth(RegistryAuth),
    /// An OAuth2 refresh token (docker's `identitytoken`, as `az acr login` stores it),
    /// exchanged at the registry's token service for access tokens.
    IdentityToken(Secret),
}

impl Login {
    /// The user and password (or nothing) of the handshake; an identity token is exchanged
    /// separately.
    pub(crate) fn registry_auth(&self) -> RegistryAuth {
        match self {
            Login::Auth(auth) => auth.clone(),
            Login::IdentityToken(_) => RegistryAuth::Anonymous,
        }
    }
}

impl Credentials {
    /// What to present to `registry`. Missing credentials mean anonymous access; a broken
    /// helper is an error, since silently going anonymous would hide it.
    pub(crate) fn for_registry(&self, registry: &str) -> Result<Login, Error> {
        let auth = |a| Ok(Login::Auth(a));
        match self {
            Credentials::Anonymous => auth(RegistryAuth::Anonymous),
            Credentials::Explicit {
                registry: named,
                username,
                password,
            } if config_key(named) == config_key(registry) => auth(RegistryAuth::Basic(
                username.clone(),
                password.expose().to_owned(),
            )),
            Credentials::Explicit { .. } | Credentials::DockerConfig => {
                use docker_credential::{CredentialRetrievalError as E, DockerCredential};
                let Some(path) = docker_config_path() else {
                    return auth(RegistryAuth::Anonymous);
                };
                let file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return auth(RegistryAuth::Anonymous);
                    }
                    Err(e) => {
                        return Err(Error::Credentials {
                            registry: registry.to_owned(),
                            reason: format!("cannot read {}: {e}", path.display()),
                        });
                    }
                };
                let found = docker_credential::get_credential_from_reader(
                    std::io::BufReader::new(file),
                    config_key(registry),
                );
                match found {
                    Ok(DockerCredential::UsernamePassword(user, pass)) => {
                        tracing::debug!(%registry, "using credentials from the docker config");
                        auth(RegistryAuth::Basic(user, pass))
                    }
                    Ok(DockerCredential::IdentityToken(token)) => {
                        tracing::debug!(%registry, "using an identity token from the docker config");
                        Ok(Login::IdentityToken(Secret::new(token)))
                    }
                    Err(E::NoCredentialConfigured | E::ConfigNotFound) => {
                        auth(RegistryAuth::Anonymous)
                    }
                    Err(E::ConfigReadError) => Err(Error::Credentials {
                        registry: registry.to_owned(),
                        reason: format!("{} is not a valid docker config file", path.display()),
                    }),
                    // Helpers answer "credentials not found" with a failure: that is anonymous too.
                    Err(E::HelperFailure { stdout, .. })
                        if stdout.contains("credentials not found") =>
                    {
                        auth(RegistryAuth::Anonymous)
                    }
                    // The helper the config names cannot be run at all: say which, and where it
                    // is named, and go on without credentials (public content still pulls).
                    Err(E::HelperCommunicationError) => {
                        let helper = read_config(&path)
                            .ok()
                            .and_then(|config| helper_for(&config, config_key(registry)))
                            .unwrap_or_default();
                        let program = format!("docker-credential-{helper}");
                        if !helper.is_empty() && !on_path(&program) {
                            tracing::warn!(
                                "{} names the credential helper {program} (credsStore or credHelpers), which is not installed; asking {registry} without credentials",
                                path.display()
                            );
                            return auth(RegistryAuth::Anonymous);
                        }
                        Err(Error::Credentials {
                            registry: registry.to_owned(),
                            reason: format!(
                                "the credential helper {program} that {} names cannot be run; install it, or remove it from that file",
                                path.display()
                            ),
                        })
                    }
                    Err(e) => Err(Error::Credentials {
                        registry: registry.to_owned(),
                        // The crate's messages name the helper and its output, never the secret.
                        reason: helper_failure(&e),
                    }),
                }
            }
        }
    }
}

impl Credentials {
    /// Where the credentials for `registry` come from, for a message saying they were
    /// refused: `--username`, or docker's config file.
    pub(crate) fn source_for(&self, registry: &str) -> String {
        match self {
            Credentials::Explicit {
                registry: named, ..
            } if config_key(named) == config_key(registry) => {
                "the credentials given with --username".to_owned()
            }
            _ => match docker_config_path() {
                Some(path) => format!("the credentials stored for it in {}", path.display()),
                None => "the stored credentials".to_owned(),
            },
        }
    }
}

fn helper_failure(e: &docker_credential::CredentialRetrievalError) -> String {
    match e {
        docker_credential::CredentialRetrievalError::HelperFailure { helper, stderr, .. } => {
            format!(
                "the credential helper docker-credential-{helper} failed: {}",
                stderr.trim()
            )
        }
        other => other.to_string(),
    }
}

/// Whether `program` is an executable file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Docker's config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub(crate) fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

fn read_config(path: &PathBuf) -> Result<serde_json::Value, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Credentials {
            registry: String::new(),
            reason: format!("{} is not valid JSON: {e}", path.display()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(source) => Err(Error::Io {
            action: "reading",
            path: path.clone(),
            source,
        }),
    }
}

fn helper_for(config: &serde_json::Value, key: &str) -> Option<String> {
    config["credHelpers"][key]
        .as_str()
        .or(config["credsStore"].as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn run_helper(helper: &str, verb: &str, input: &[u8], registry: &str) -> Result<(), Error> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| Error::Credentials {
        registry: registry.to_owned(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{program} {verb} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Stores credentials for `registry` the way `docker login` does: through the configured
/// helper, else base64 in `auths` of the config file (written atomically, mode 0600).
pub fn store(registry: &str, username: &str, password: &Secret) -> Result<PathBuf, Error> {
    let path = docker_config_path().ok_or_else(|| Error::Credentials {
        registry: registry.to_owned(),
        reason: "cannot find docker's config directory: set DOCKER_CONFIG or HOME".into(),
    })?;
    let key = config_key(registry);
    let mut config = read_config(&path)?;
    if let Some(helper) = helper_for(&config, key) {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password.expose()});
        run_helper(&helper, "store", input.to_string().as_bytes(), registry)?;
        return Ok(path);
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    config["auths"][key] = serde_json::json!({ "auth": auth });
    write_config(&path, &config)?;
    // As docker login says it: base64 is no protection.
    tracing::warn!(
        "the credentials for {registry} are stored unencrypted in {}; configure a credential helper (credsStore) to keep them elsewhere",
        path.display()
    );
    Ok(path)
}

/// Removes stored credentials for `registry`; `false` when there were none.
pub fn erase(registry: &str) -> Result<bool, Error> {
    let Some(path) = docker_config_path() else {
        return Ok(false);
    };
    let key = config_key(registry);
    let mut config = read_config(&path)?;
    if let Some(helper) = helper_for(&config, key) {
        run_helper(&helper, "erase", key.as_bytes(), registry)?;
        return Ok(true);
    }
    let removed = config["auths"]
        .as_object_mut()
        .is_some_and(|auths| auths.remove(key).is_some());
    if removed {
        write_config(&path, &config)?;
    }
    Ok(removed)
}

fn write_config(path: &std::path::Path, config: &serde_json::Value) -> Result<(), Error> {
    let dir = path.parent().expect("a config file has a directory");
    let io_err = |source| Error::Io {
        action: "writing",
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let json = serde_json::to_vec_pretty(config).expect("json values serialize");
    // 0600: it may hold passwords, as docker keeps it.
    Ok(wasm_oci_cache::write_atomic_from(
        path,
        &mut &json[..],
        0o600,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials::Explicit {
            registry: "localhost:5000".into(),
            username: "alice".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn docker_hub_has_its_legacy_key() {
        assert_eq!(config_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(config_key("localhost:5000"), "localhost:5000");
    }
}
