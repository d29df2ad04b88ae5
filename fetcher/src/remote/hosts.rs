//! containerd's registry host configuration, read as containerd reads it: a `config_path`
//! directory holding `<host[:port]>/hosts.toml` (or `<host>_<port>_/`) and `_default/hosts.toml`,
//! each naming mirrors (`[host."URL"]`) tried in order before the origin (`server`).
//!
//! The file is parsed once into typed sections (`HostFileConfig`, as containerd's
//! `config/hosts.go`): an unknown setting is an error, and hosts keep the file's order
//! whatever quotes their keys are written with.
//!
//! The directory is the operator's (a flag, or the environment of the CLI or of containerd):
//! it names trust roots and client keys, so nothing a pod author or a registry sends chooses it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where containerd's CRI plugin reads host configuration by default; used when it exists.
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// The environment variable naming the hosts directory for processes without flags.
pub const HOSTS_DIR_ENV: &str = "WASM_OCI_HOSTS_DIR";

/// A `hosts.toml` is a small document; more is refused.
const MAX_HOSTS_FILE: u64 = 1 << 20;

/// The hosts directory to use: `explicit` (`--hosts-dir`), else `$WASM_OCI_HOSTS_DIR`, else
/// `/etc/containerd/certs.d` when it exists, so the CLI, the shim and containerd agree.
pub fn hosts_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| {
            std::env::var_os(HOSTS_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let default = Path::new(DEFAULT_HOSTS_DIR);
            default.is_dir().then(|| default.to_owned())
        })
}

/// One host to speak to for a registry, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// `http` or `https`; `None` for the origin when no `server` names it (the fetcher
    /// decides, as without a hosts file).
    pub(crate) scheme: Option<&'static str>,
    /// `host[:port]` spoken to; empty for the origin when no `server` names it.
    pub(crate) host: String,
    /// The API root, `/v2` unless `override_path` says otherwise; no trailing slash.
    pub(crate) path: String,
    /// May be asked for manifests and blobs by digest.
    pub(crate) pull: bool,
    /// May be asked what a tag points to.
    pub(crate) resolve: bool,
    /// May be pushed to.
    pub(crate) push: bool,
    /// PEM certificate authorities to trust for this host, besides the system's.
    pub(crate) ca: Vec<PathBuf>,
    /// Client certificate and key files (the key may be in the certificate's file).
    pub(crate) client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Accept any certificate of this host.
    pub(crate) skip_verify: bool,
    /// Extra headers sent to this host.
    pub(crate) header: Vec<(String, String)>,
    /// A `[host."..."]` entry: not the origin.
    pub(crate) mirror: bool,
    /// `dial_timeout`: how long connecting to this host may take (containerd's meaning);
    /// `None`: the fetcher's default for a mirror or the origin.
    pub(crate) dial_timeout: Option<std::time::Duration>,
}

impl Host {
    /// The origin as it is spoken to without a hosts file.
    pub(crate) fn origin() -> Host {
        Host {
            scheme: None,
            host: String::new(),
            path: "/v2".into(),
            pull: true,
            resolve: true,
            push: true,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: false,
            header: Vec::new(),
            mirror: false,
            dial_timeout: None,
        }
    }
}

/// A hosts.toml that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostsError {
    /// The file cannot be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// It is not TOML.
    #[error("{}", .0.message())]
    Toml(toml::de::Error),
    /// A setting of the wrong type, or one containerd does not know.
    #[error(
        "{}{host}: {message}",
        if key.is_empty() { String::new() } else { format!("`{key}` of ") }
    )]
    Setting {
        /// The setting (`ca`, `header.x-key`); empty for the section itself.
        key: String,
        /// The host it is a setting of (`server` for the top level).
        host: String,
        /// What is wrong.
        message: String,
    },
    /// A host's URL is not one.
    #[error("{url:?} is not a URL: {source}")]
    NotAUrl {
        /// The URL.
        url: String,
        /// The parser's error.
        source: url::ParseError,
    },
    /// A host's URL is not http or https.
    #[error("{url:?} speaks {scheme}, not http or https")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A host's URL without a host.
    #[error("{url:?} names no host")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// A host's URL with a user name or password.
    #[error("{url:?} carries credentials in the URL; docker's config holds them")]
    CredentialsInUrl {
        /// The URL.
        url: String,
    },
    /// A host's URL with a query or a fragment.
    #[error("{url:?} has a query or fragment; a host has neither")]
    QueryOrFragment {
        /// The URL.
        url: String,
    },
    /// A capability containerd does not know.
    #[error("unknown capability {capability:?} of {host}")]
    Capability {
        /// The capability.
        capability: String,
        /// The host.
        host: String,
    },
    /// A header name that is not one.
    #[error("header {name:?} of {host} is not a header name")]
    HeaderName {
        /// The name.
        name: String,
        /// The host.
        host: String,
    },
    /// A header value that is not one.
    #[error("header {name:?} of {host} is not a header value")]
    HeaderValue {
        /// The header's name.
        name: String,
        /// The host.
        host: String,
    },
    /// A `dial_timeout` that is not a duration.
    #[error("`dial_timeout` of {host} must be a duration such as \"3s\" or \"500ms\"")]
    DialTimeout {
        /// The host.
        host: String,
    },
    /// A CA or client certificate file it names cannot be read.
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    /// A client certificate and key that are not.
    #[error("not a certificate and key: {0}")]
    NotCertificate(rustls::Error),
    /// Trust roots or a client certificate TLS cannot use.
    #[error("{0}")]
    Tls(rustls::Error),
}

/// A hosts file (or a file it names) that cannot be used: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct InvalidHosts {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: HostsError,
}

/// The hosts for `registry` (as the reference names it: `docker.io`, `localhost:5000`) from
/// `dir`: mirrors in the order the file lists them, then the origin. Without a file for the
/// registry (nor `_default`), only the origin.
pub(crate) fn hosts_for(dir: &Path, registry: &str) -> Result<Vec<Host>, InvalidHosts> {
    let Some(host_dir) = host_dir(dir, registry) else {
        return Ok(vec![Host::origin()]);
    };
    let file = host_dir.join("hosts.toml");
    let invalid = |reason: HostsError| InvalidHosts {
        path: file.clone(),
        reason,
    };
    let text = match read_capped(&file) {
        Ok(text) => text,
        // No hosts.toml: docker's certificate layout (*.crt, *.cert + *.key) for the origin.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return cert_files(&host_dir).map_err(|e| invalid(e.into()));
        }
        Err(e) => return Err(invalid(e.into())),
    };
    parse(&text, &host_dir).map_err(invalid)
}

/// The first of `<host>_<port>_`, `<host:port>` and `_default` under `dir` that exists, as
/// containerd looks them up on Unix.
fn host_dir(dir: &Path, registry: &str) -> Option<PathBuf> {
    // The registry's name is the reference's text: never a path of its own.
    let safe =
        !registry.is_empty() && !registry.starts_with('.') && !registry.contains(['/', '\\', '\0']);
    let mut candidates = Vec::new();
    if safe {
        if let Some((host, port)) = registry.rsplit_once(':')
            && !host.is_empty()
        {
            candidates.push(format!("{host}_{port}_"));
        }
        candidates.push(registry.to_owned());
    }
    candidates.push("_default".to_owned());
    candidates
        .into_iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_dir())
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_HOSTS_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_HOSTS_FILE {
        return Err(std::io::Error::other(format!(
            "it is over {MAX_HOSTS_FILE} bytes"
        )));
    }
    Ok(text)
}

/// docker's `certs.d` layout: `*.crt` are CAs, `*.cert` client certificates with their `*.key`.
fn cert_files(dir: &Path) -> std::io::Result<Vec<Host>> {
    let mut origin = Host::origin();
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if name.ends_with(".crt") {
            origin.ca.push(dir.join(&name));
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            let key = key.is_file().then_some(key);
            origin.client.push((dir.join(&name), key));
        }
    }
    Ok(vec![origin])
}

/// The settings of one host: a `[host."URL"]` section, or the file's top level for the
/// origin (containerd's `hostFileConfig`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFileConfig {
    capabilities: Option<Vec<String>>,
    ca: Option<Paths>,
    client: Option<Clients>,
    skip_verify: Option<bool>,
    header: Option<std::collections::BTreeMap<String, Texts>>,
    override_path: Option<bool>,
    dial_timeout: Option<String>,
}

/// One path, or a list of them: `ca = "a.pem"` or `ca = ["a.pem", "b.pem"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "must be a path or a list of paths")]
enum Paths {
    Many(Vec<String>),
    One(String),
}

/// A header's value, or its values.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "must be text or a list of text")]
enum Texts {
    Many(Vec<String>),
    One(String),
}

/// Client certificates: a file (which may hold the key too), or a list of files and
/// `[cert, key]` pairs. A list of two paths is two certificates, as containerd reads it.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "must be a path, a list of paths, or a list of [cert, key] pairs"
)]
enum Clients {
    Many(Vec<ClientFile>),
    One(String),
}

/// One client certificate of a list: its file, or `[cert, key]`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "must be a path or a [cert, key] pair")]
enum ClientFile {
    Both(String),
    Pair(String, String),
}

/// Unpacks a one-or-many setting.
macro_rules! all {
    ($value:expr, $kind:ident) => {
        match $value {
            Some($kind::Many(many)) => many,
            Some($kind::One(one)) => vec![one],
            None => Vec::new(),
        }
    };
}

/// Parses a `hosts.toml` whose relative paths are relative to `dir`.
fn parse(text: &str, dir: &Path) -> Result<Vec<Host>, HostsError> {
    // A table that keeps the file's order (toml's `preserve_order`): hosts are tried in it.
    let mut doc: toml::Table = text.parse().map_err(HostsError::Toml)?;
    let server = match doc.remove("server") {
        None => None,
        Some(value) => Some(typed::<String>(value, "hosts.toml", "server")?),
    };
    let sections = match doc.remove("host") {
        None => toml::Table::new(),
        Some(value) => typed::<toml::Table>(value, "hosts.toml", "host")?,
    };
    let mut hosts = Vec::with_capacity(sections.len() + 1);
    for (url, section) in sections {
        let config = typed::<HostFileConfig>(section, &url, ".")?;
        let mut host = host(Some(&url), config, dir)?;
        host.mirror = true;
        hosts.push(host);
    }
    let server = server.filter(|s| !s.is_empty());
    let name = server.as_deref().unwrap_or("server");
    let origin = typed::<HostFileConfig>(toml::Value::Table(doc), name, ".")?;
    hosts.push(host(server.as_deref(), origin, dir)?);
    Ok(hosts)
}

/// `value` as a `T`, or an error that names the setting (`key` within `host`'s section) at
/// fault.
fn typed<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    host: &str,
    key: &str,
) -> Result<T, HostsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (key, path.as_str()) {
            (".", ".") => String::new(),
            (key, ".") => key.to_owned(),
            (".", path) => path.to_owned(),
            (key, path) => format!("{key}.{path}"),
        };
        HostsError::Setting {
            key,
            host: host.to_owned(),
            message: e.into_inner().message().to_owned(),
        }
    })
}

/// One host from its URL (none for an origin not named by `server`) and settings.
fn host(url: Option<&str>, config: HostFileConfig, dir: &Path) -> Result<Host, HostsError> {
    let mut host = Host::origin();
    let name = url.unwrap_or("server");
    let override_path = config.override_path.unwrap_or(false);
    if let Some(url) = url {
        // containerd prefixes `https://` to what does not start with `http`; a URL of another
        // scheme is refused here rather than read as a host named after the scheme.
        let with_scheme = if url.starts_with("http") || url.contains("://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        };
        let parsed = reqwest::Url::parse(&with_scheme).map_err(|source| HostsError::NotAUrl {
            url: url.to_owned(),
            source,
        })?;
        host.scheme = Some(match parsed.scheme() {
            "http" => "http",
            "https" => "https",
            other => {
                return Err(HostsError::Scheme {
                    url: url.to_owned(),
                    scheme: other.to_owned(),
                });
            }
        });
        let authority = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(HostsError::NoHost {
                    url: url.to_owned(),
                });
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(HostsError::CredentialsInUrl {
                url: url.to_owned(),
            });
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(HostsError::QueryOrFragment {
                url: url.to_owned(),
            });
        }
        host.host = authority;
        let path = parsed.path().trim_end_matches('/');
        host.path = if path.is_empty() {
            if override_path {
                String::new()
            } else {
                "/v2".into()
            }
        } else if path.ends_with("/v2") || override_path {
            path.to_owned()
        } else {
            format!("{path}/v2")
        };
    }
    if let Some(caps) = config.capabilities {
        if !caps.is_empty() {
            host.pull = false;
            host.resolve = false;
            host.push = false;
        }
        for cap in caps {
            match cap.to_ascii_lowercase().as_str() {
                "pull" => host.pull = true,
                "resolve" => host.resolve = true,
                "push" => host.push = true,
                // Known to containerd; nothing here asks for referrers.
                "referrers" => {}
                _ => {
                    return Err(HostsError::Capability {
                        capability: cap,
                        host: name.to_owned(),
                    });
                }
            }
        }
    }
    let path_of = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };
    for ca in all!(config.ca, Paths) {
        host.ca.push(path_of(&ca));
    }
    let clients = match config.client {
        Some(Clients::Many(many)) => many,
        Some(Clients::One(one)) => vec![ClientFile::Both(one)],
        None => Vec::new(),
    };
    for client in clients {
        host.client.push(match client {
            ClientFile::Both(both) => (path_of(&both), None),
            ClientFile::Pair(cert, key) => (path_of(&cert), Some(path_of(&key))),
        });
    }
    host.skip_verify = config.skip_verify.unwrap_or(false);
    if let Some(timeout) = config.dial_timeout {
        host.dial_timeout = Some(
            go_duration(&timeout).ok_or_else(|| HostsError::DialTimeout {
                host: name.to_owned(),
            })?,
        );
    }
    for (key, values) in config.header.unwrap_or_default() {
        reqwest::header::HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
            HostsError::HeaderName {
                name: key.clone(),
                host: name.to_owned(),
            }
        })?;
        for v in all!(Some(values), Texts) {
            reqwest::header::HeaderValue::from_str(&v).map_err(|_| HostsError::HeaderValue {
                name: key.clone(),
                host: name.to_owned(),
            })?;
            host.header.push((key.clone(), v));
        }
    }
    Ok(host)
}

/// A positive duration as Go writes one (containerd reads `dial_timeout` with
/// `time.ParseDuration`): `3s`, `500ms`, `1m30s`, `1.5h`.
fn go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    (total > 0.0 && total < 1e9).then(|| std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dial_timeouts_are_read_as_go_durations() {
        use std::time::Duration;
        assert_eq!(go_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        for bad in ["", "3", "s", "-1s", "0s", "3 s", "1d"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let hosts = parse(
            "[host.\"http://m:5000\"]\n  dial_timeout = \"250ms\"\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(hosts[0].dial_timeout, Some(Duration::from_millis(250)));
        assert_eq!(hosts[1].dial_timeout, None);
        let refused = parse("[host.\"http://m\"]\n  dial_timeout = 3\n", dir.path());
        assert!(refused.unwrap_err().to_string().contains("dial_timeout"));
    }

    use super::*;

    fn write(dir: &Path, sub: &str, text: &str) {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn mirrors_come_in_file_order_then_the_server() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"

[host."http://zeta.mirror:5000"]
  capabilities = ["pull", "resolve"]
  ca = "ca.crt"
  [host."http://zeta.mirror:5000".header]
    x-node = ["a", "b"]

[host."https://alpha.mirror/prefix"]
  capabilities = ["pull"]
  ca = ["/etc/one.pem", "two.pem"]
  client = [["c.cert", "c.key"], "both.pem"]
  skip_verify = true

[host."https://raw.mirror/api"]
  override_path = true
"#,
        );
        let hosts = hosts_for(dir.path(), "docker.io").unwrap();
        let d = dir.path().join("docker.io");
        assert_eq!(hosts.len(), 4);
        let names: Vec<_> = hosts
            .iter()
            .map(|h| {
                (
                    h.scheme.unwrap(),
                    h.host.as_str(),
                    h.path.as_str(),
                    h.mirror,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("http", "zeta.mirror:5000", "/v2", true),
                ("https", "alpha.mirror", "/prefix/v2", true),
                ("https", "raw.mirror", "/api", true),
                ("https", "registry-1.docker.io", "/v2", false),
            ]
        );
        assert!(hosts[0].pull && hosts[0].resolve && !hosts[0].push);
        assert!(hosts[1].pull && !hosts[1].resolve);
        assert!(hosts[2].pull && hosts[2].resolve && hosts[2].push);
        assert_eq!(hosts[0].ca, [d.join("ca.crt")]);
        assert_eq!(
            hosts[0].header,
            [("x-node".into(), "a".into()), ("x-node".into(), "b".into())]
        );
        assert_eq!(
            hosts[1].ca,
            [PathBuf::from("/etc/one.pem"), d.join("two.pem")]
        );
        assert_eq!(
            hosts[1].client,
            [
                (d.join("c.cert"), Some(d.join("c.key"))),
                (d.join("both.pem"), None)
            ]
        );
        assert!(hosts[1].skip_verify && !hosts[0].skip_verify);
    }

    #[test]
    fn hosts_keep_file_order_whatever_quotes_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        // Single-quoted (literal) keys, a bare key and a double-quoted one, none of them in
        // alphabetical order.
        write(
            dir.path(),
            "r.example",
            "[host.'https://zulu.mirror']\n\
             [host.\"https://mike.mirror\"]\n\
             [host.'https://alpha.mirror']\n\
             [host.bravo]\n",
        );
        let hosts = hosts_for(dir.path(), "r.example").unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(
            names,
            ["zulu.mirror", "mike.mirror", "alpha.mirror", "bravo", ""]
        );
    }

    #[test]
    fn directories_are_found_as_containerd_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        // No directory at all: the origin only.
        assert_eq!(
            hosts_for(dir.path(), "example.com").unwrap(),
            [Host::origin()]
        );
        write(dir.path(), "_default", "[host.\"http://default.mirror\"]\n");
        write(
            dir.path(),
            "127.0.0.1:5000",
            "[host.\"http://colon.mirror\"]\n",
        );
        write(
            dir.path(),
            "127.0.0.1_5000_",
            "[host.\"http://underscore.mirror\"]\n",
        );
        let first = |r: &str| hosts_for(dir.path(), r).unwrap()[0].host.clone();
        assert_eq!(first("127.0.0.1:5000"), "underscore.mirror");
        assert_eq!(first("example.com"), "default.mirror");
        // A registry name is never a path.
        assert_eq!(first("../127.0.0.1:5000"), "default.mirror");
        assert_eq!(first(".."), "default.mirror");
        // No server: the last host is the origin as the fetcher speaks to it.
        let hosts = hosts_for(dir.path(), "example.com").unwrap();
        assert_eq!(hosts.last(), Some(&Host::origin()));
    }

    #[test]
    fn a_directory_without_hosts_toml_is_docker_certificate_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("registry.example");
        std::fs::create_dir_all(&d).unwrap();
        for f in ["ca.crt", "client.cert", "client.key", "note.txt"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let hosts = hosts_for(dir.path(), "registry.example").unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].ca, [d.join("ca.crt")]);
        assert_eq!(
            hosts[0].client,
            [(d.join("client.cert"), Some(d.join("client.key")))]
        );
    }

    #[test]
    fn mistakes_are_named_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for (text, says) in [
            ("[host.\"ftp://m\"]\n", "not http or https"),
            (
                "[host.\"http://m\"]\ncapabilities = [\"fly\"]\n",
                "unknown capability",
            ),
            (
                "[host.\"http://m\"]\nskip_verfy = true\n",
                "unknown field `skip_verfy`",
            ),
            ("skip_verfy = true\n", "unknown field `skip_verfy`"),
            (
                "[host.\"http://m\"]\nclient = [3]\n",
                "`client` of http://m: must be a path",
            ),
            ("[host.\"http://user:pw@m\"]\n", "credentials in the URL"),
            (
                "[host.\"http://m\".header]\n\"bad header\" = \"x\"\n",
                "not a header name",
            ),
            (
                "[host.\"http://m\".header]\nx = \"a\\nb\"\n",
                "not a header value",
            ),
            (
                "server = 5\n",
                "`server` of hosts.toml: invalid type: integer `5`, expected a string",
            ),
            ("server = \"http://m\"\nca = 3\n", "`ca` of http://m"),
            ("[host", "hosts.toml"),
        ] {
            write(dir.path(), "r.example", text);
            let e = hosts_for(dir.path(), "r.example").unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.contains("r.example"), "{e}");
        }
    }
}
