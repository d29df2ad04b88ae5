//! containerd's registry host configuration, read as containerd reads it: a `config_path`
//! directory holding `<host[:port]>/hosts.toml` (or `<host>_<port>_/`) and `_default/hosts.toml`,
//! each naming mirrors (`[host."URL"]`) tried in order before the origin (`server`).
//!
//! The directory is the operator's (a flag, or the environment of the CLI or of containerd):
//! it names trust roots and client keys, so nothing a pod author or a registry sends chooses it.

use std::path::{Path, PathBuf};

use crate::Error;

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

/// The hosts for `registry` (as the reference names it: `docker.io`, `localhost:5000`) from
/// `dir`: mirrors in the order the file lists them, then the origin. Without a file for the
/// registry (nor `_default`), only the origin.
pub(crate) fn hosts_for(dir: &Path, registry: &str) -> Result<Vec<Host>, Error> {
    let Some(host_dir) = host_dir(dir, registry) else {
        return Ok(vec![Host::origin()]);
    };
    let file = host_dir.join("hosts.toml");
    let invalid = |reason: String| Error::HostsConfig {
        path: file.clone(),
        registry: registry.to_owned(),
        reason,
    };
    // The one reader of files others name: a FIFO or a device planted as hosts.toml is
    // refused unopened, and the file is read up to the cap.
    let text = match wasm_oci_artifact::file::read(&file, MAX_HOSTS_FILE) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| invalid("it is not UTF-8 text".to_owned()))?
        }
        // No hosts.toml: docker's certificate layout (*.crt, *.cert + *.key) for the origin.
        Err(wasm_oci_artifact::file::ReadError::NotFound) => {
            return cert_files(&host_dir).map_err(|e| invalid(e.to_string()));
        }
        Err(e) => return Err(invalid(e.to_string())),
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
        if let (host, Some(port)) = wasm_oci_artifact::split_host_port(registry)
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

/// Parses a `hosts.toml` whose relative paths are relative to `dir`.
fn parse(text: &str, dir: &Path) -> Result<Vec<Host>, String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The parser's message spans lines; one line is enough here.
        e.message().to_owned()
    })?;
    let mut hosts = Vec::new();
    if let Some(table) = doc.get("host") {
        let table = table
            .as_table()
            .ok_or("`host` must be a table of [host.\"URL\"] sections")?;
        // In the order the file lists them, as containerd tries them.
        let mut entries: Vec<(usize, &String, &toml::Value)> = table
            .iter()
            .map(|(url, value)| (position_of(text, url), url, value))
            .collect();
        entries.sort_by_key(|(at, _, _)| *at);
        for (_, url, value) in entries {
            let section = value
                .as_table()
                .ok_or_else(|| format!("[host.{url:?}] must be a table"))?;
            let mut host = parse_host(Some(url), section, dir)?;
            host.mirror = true;
            hosts.push(host);
        }
    }
    let server = match doc.get("server") {
        None => None,
        Some(toml::Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(toml::Value::String(_)) => None,
        Some(_) => return Err("`server` must be a string".into()),
    };
    let mut root = doc.clone();
    root.remove("host");
    root.remove("server");
    hosts.push(parse_host(server, &root, dir)?);
    Ok(hosts)
}

/// Where the `[host."url"]` header of `url` is in `text`, for the file's order (a TOML
/// table does not keep it); unknown positions sort last, in name order.
fn position_of(text: &str, url: &str) -> usize {
    let quoted = format!("\"{url}\"");
    text.lines()
        .scan(0usize, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| {
            let line = line.trim_start();
            line.starts_with('[')
                && !line.starts_with("[[")
                && line.contains(&quoted)
                && line
                    .trim_start_matches('[')
                    .trim_start()
                    .starts_with("host")
        })
        .map_or(usize::MAX, |(at, _)| at)
}

const KNOWN_KEYS: &[&str] = &[
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
    "dial_timeout",
];

fn parse_host(url: Option<&str>, section: &toml::Table, dir: &Path) -> Result<Host, String> {
    let mut host = Host::origin();
    let name = url.unwrap_or("server");
    for key in section.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(format!("unknown setting `{key}` for {name}"));
        }
    }
    let override_path = match section.get("override_path") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(format!("`override_path` of {name} must be true or false")),
    };
    if let Some(url) = url {
        // containerd prefixes `https://` to what does not start with `http`; a URL of another
        // scheme is refused here rather than read as a host named after the scheme.
        let with_scheme = if url.starts_with("http") || url.contains("://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        };
        let parsed =
            reqwest::Url::parse(&with_scheme).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        host.scheme = Some(match parsed.scheme() {
            "http" => "http",
            "https" => "https",
            other => return Err(format!("{url:?} speaks {other}, not http or https")),
        });
        let authority = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(format!("{url:?} names no host")),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "{url:?} carries credentials in the URL; docker's config holds them"
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "{url:?} has a query or fragment; a host has neither"
            ));
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
    if let Some(caps) = section.get("capabilities") {
        let caps = caps
            .as_array()
            .ok_or_else(|| format!("`capabilities` of {name} must be a list"))?;
        if !caps.is_empty() {
            host.pull = false;
            host.resolve = false;
            host.push = false;
        }
        for cap in caps {
            match cap.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("pull") => host.pull = true,
                Some("resolve") => host.resolve = true,
                Some("push") => host.push = true,
                // Known to containerd; nothing here asks for referrers.
                Some("referrers") => {}
                _ => return Err(format!("unknown capability {cap:?} of {name}")),
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
    match section.get("ca") {
        None => {}
        Some(toml::Value::String(s)) => host.ca.push(path_of(s)),
        Some(toml::Value::Array(list)) => {
            for item in list {
                let s = item
                    .as_str()
                    .ok_or_else(|| format!("`ca` of {name} must be a path or a list of paths"))?;
                host.ca.push(path_of(s));
            }
        }
        Some(_) => return Err(format!("`ca` of {name} must be a path or a list of paths")),
    }
    let bad_client = || {
        format!(
            "`client` of {name} must be a path, a list of paths, or a list of [cert, key] pairs"
        )
    };
    match section.get("client") {
        None => {}
        Some(toml::Value::String(s)) => host.client.push((path_of(s), None)),
        Some(toml::Value::Array(list)) => {
            for item in list {
                match item {
                    toml::Value::String(s) => host.client.push((path_of(s), None)),
                    toml::Value::Array(pair) => match pair.as_slice() {
                        [toml::Value::String(cert), toml::Value::String(key)] => {
                            host.client.push((path_of(cert), Some(path_of(key))))
                        }
                        _ => return Err(bad_client()),
                    },
                    _ => return Err(bad_client()),
                }
            }
        }
        Some(_) => return Err(bad_client()),
    }
    match section.get("skip_verify") {
        None => {}
        Some(toml::Value::Boolean(b)) => host.skip_verify = *b,
        Some(_) => return Err(format!("`skip_verify` of {name} must be true or false")),
    }
    match section.get("dial_timeout") {
        None => {}
        Some(toml::Value::String(s)) => {
            host.dial_timeout = Some(go_duration(s).ok_or_else(|| {
                format!("`dial_timeout` of {name} must be a duration such as \"3s\" or \"500ms\"")
            })?)
        }
        Some(_) => {
            return Err(format!(
                "`dial_timeout` of {name} must be a duration such as \"3s\" or \"500ms\""
            ));
        }
    }
    if let Some(header) = section.get("header") {
        let header = header
            .as_table()
            .ok_or_else(|| format!("`header` of {name} must be a table"))?;
        for (key, value) in header {
            reqwest::header::HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("header {key:?} of {name} is not a header name"))?;
            let values: Vec<&str> = match value {
                toml::Value::String(s) => vec![s],
                toml::Value::Array(list) => list
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("header {key:?} of {name} must be text"))?,
                _ => return Err(format!("header {key:?} of {name} must be text")),
            };
            for v in values {
                reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| format!("header {key:?} of {name} is not a header value"))?;
                host.header.push((key.clone(), v.to_owned()));
            }
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
        assert!(refused.unwrap_err().contains("dial_timeout"));
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

    /// A hosts.toml that is a FIFO would block the pull until a writer came; one that leads
    /// to `/dev/zero` would be read forever: both are refused at once, unopened.
    #[test]
    fn a_fifo_or_a_device_as_hosts_toml_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.example");
        std::fs::create_dir_all(&fifo).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo.join("hosts.toml"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = hosts_for(dir.path(), "fifo.example")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a FIFO, not a regular file"), "{e}");
        let zero = dir.path().join("zero.example");
        std::fs::create_dir_all(&zero).unwrap();
        std::os::unix::fs::symlink("/dev/zero", zero.join("hosts.toml")).unwrap();
        let e = hosts_for(dir.path(), "zero.example")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a character device, not a regular file"), "{e}");
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
                "unknown setting `skip_verfy`",
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
            ("server = 5\n", "`server` must be a string"),
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
