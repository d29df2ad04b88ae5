//! The operator's shim config: what only the node's operator may decide, never a pod.
//!
//! Read from `$WASM_OCI_SHIM_CONFIG` (in containerd's environment), else
//! `/etc/wasm-oci/shim.toml`; no file means the defaults: no host directory beyond the
//! container's own rootfs and mounts, and one shim per pod.
//!
//! ```toml
//! # Host directories a pod may ask for, by profile name: io.wasm-oci.preopens=models
//! [profiles.models]
//! dirs = ["/srv/models::/models:ro"]
//!
//! [groups]
//! # "pod" (default): a pod's containers share one shim; "container": every container alone;
//! # "annotation": io.wasm-oci.group, then the pod; for single-tenant nodes only.
//! by = "pod"
//!
//! [limits]
//! max_module_size = "256MiB"   # a module in a container's rootfs, or pulled for one
//!
//! [references]
//! # Registries io.wasm-oci.reference may name, and the only hosts a pull for a pod connects
//! # to (redirects and token services included): `host[:port]`, `*.domain`; a host without a
//! # port allows every port. Without a list, anywhere but the node's own addresses (loopback,
//! # link-local, unspecified, its interfaces), which a pod could not reach itself.
//! allow = ["registry.example", "*.corp.example"]
//!
//! [trust]
//! # A module from the image's rootfs carries no signature: under a signature policy that is
//! # not accept-anything for the image's name, it is refused ("policy", the default) unless
//! # the operator allows it here ("allow").
//! rootfs_modules = "policy"
//!
//! [http]
//! # Limits of the server a wasi:http/proxy container gets (the defaults shown). Durations
//! # are a number and ms, s, m or h.
//! request_timeout = "60s"   # a request's run, from its instance's start; then 504
//! idle_timeout = "60s"      # a connection with no request begun (keep-alive)
//! header_timeout = "10s"    # a request's head, from its first byte
//! body_timeout = "60s"      # a request's body, from its instance's start; then 408
//! max_connections = 4096    # connections at once (fewer if the descriptor limit is lower)
//!
//! [compile]
//! # Limits of the helper process that compiles a module not yet in the cache, outside the
//! # pod's cgroup (the defaults shown): a pod author chooses the module, so its compile is
//! # bounded too. A compile past a limit is stopped and the container fails, naming it.
//! timeout = "5m"            # wall-clock time, from the helper's start
//! max_memory = "2GiB"       # memory the helper may use
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;

use super::error::CreateError;
pub use super::error::{ConfigError, ConfigProblem};
use crate::Preopen;

/// Where the config is read from unless `WASM_OCI_SHIM_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "/etc/wasm-oci/shim.toml";

/// The environment variable naming the config file.
pub const ENV: &str = "WASM_OCI_SHIM_CONFIG";

/// A module read from a rootfs is refused above this size unless the config says otherwise.
const DEFAULT_MAX_MODULE_SIZE: u64 = 256 << 20;

/// The operator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ShimConfig {
    /// Named sets of host directories a container may pick with `io.wasm-oci.preopens`.
    pub profiles: BTreeMap<String, Vec<Preopen>>,
    /// What decides which containers share a shim process.
    pub group_by: GroupBy,
    /// The largest module read from a container's rootfs.
    pub max_module_size: u64,
    /// The registries a container may name in `io.wasm-oci.reference`; `None`: any registry
    /// but the node's own addresses.
    pub allowed_registries: Option<Vec<String>>,
    /// Whether a module from a container's rootfs runs whatever the signature policy says.
    pub rootfs_modules: RootfsModules,
    /// The limits of an HTTP container's server.
    pub http: HttpLimits,
    /// The limits of the compile helper.
    pub compile: CompileLimits,
    /// The file it was read from, for messages; `None` when there was none.
    pub source: Option<PathBuf>,
}

/// `[http]`: the limits of the server a `wasi:http/proxy` container gets, so that no client
/// and no request holds it (or the shim's threads) for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's run, from its instance's start to the end of its response (then 504).
    pub request_timeout: Duration,
    /// A connection with no request begun.
    pub idle_timeout: Duration,
    /// A request's head, from its first byte.
    pub header_timeout: Duration,
    /// A request's body, from its instance's start (then 408).
    pub body_timeout: Duration,
    /// Connections at once; `None`: the runner's default.
    pub max_connections: Option<usize>,
}

/// How long a pod's HTTP request may run unless the config says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: crate::runner::http::DEFAULT_IDLE_TIMEOUT,
            header_timeout: crate::runner::http::DEFAULT_HEADER_TIMEOUT,
            body_timeout: crate::runner::http::DEFAULT_BODY_TIMEOUT,
            max_connections: None,
        }
    }
}

/// `[compile]`: the limits of the helper that compiles a module outside the pod's cgroup,
/// so that no module a pod names holds the node's CPU and memory beyond them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time from the helper's start to its end.
    pub timeout: Duration,
    /// Bytes of memory the helper may use.
    pub max_memory: u64,
}

/// How long a compile may take unless the config says otherwise: minutes, where an 18 MB
/// component compiles in seconds.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// How much memory a compile may use unless the config says otherwise: an 18 MB component
/// peaks near 270 MB.
pub const DEFAULT_COMPILE_MAX_MEMORY: u64 = 2 << 30;

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_COMPILE_TIMEOUT,
            max_memory: DEFAULT_COMPILE_MAX_MEMORY,
        }
    }
}

impl Default for ShimConfig {
    fn default() -> Self {
        Self {
            profiles: BTreeMap::new(),
            group_by: GroupBy::Pod,
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            allowed_registries: None,
            rootfs_modules: RootfsModules::Policy,
            http: HttpLimits::default(),
            compile: CompileLimits::default(),
            source: None,
        }
    }
}

/// `[trust] rootfs_modules`: what the signature policy means for a module read from a
/// container's rootfs, which no signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsModules {
    /// Refused when the policy is not accept-anything for the image's name (or, the name
    /// unknown, anywhere).
    Policy,
    /// Run, as before signatures existed: the operator trusts what containerd unpacked.
    Allow,
}

/// What decides which containers share a shim process (and its cgroup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The pod sandbox (`io.kubernetes.cri.sandbox-id`, which the CRI plugin sets, never the
    /// pod); a container outside a pod is alone.
    Pod,
    /// Every container in a shim of its own.
    Container,
    /// `io.wasm-oci.group` when set, else the pod. Lets a pod author put containers of other
    /// pods into its process: for nodes where every pod belongs to one tenant.
    Annotation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    groups: Groups,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    references: References,
    #[serde(default)]
    trust: Trust,
    #[serde(default)]
    http: Http,
    #[serde(default)]
    compile: Compile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Compile {
    timeout: Option<String>,
    max_memory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Http {
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Trust {
    rootfs_modules: Option<RootfsModules>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct References {
    allow: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    dirs: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Groups {
    by: Option<GroupBy>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_module_size: Option<String>,
}

impl ShimConfig {
    /// The config of this process, read once: from `WASM_OCI_SHIM_CONFIG`, else
    /// [`DEFAULT_PATH`] when it exists. A file that cannot be read or parsed is an error for
    /// every container, not a silent fallback to the defaults.
    pub fn get() -> Result<&'static ShimConfig, Arc<ConfigError>> {
        static CONFIG: OnceLock<Result<ShimConfig, Arc<ConfigError>>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                match std::env::var_os(ENV) {
                    Some(path) => Self::read(Path::new(&path)),
                    None if Path::new(DEFAULT_PATH).exists() => Self::read(Path::new(DEFAULT_PATH)),
                    None => Ok(ShimConfig::default()),
                }
                .map_err(Arc::new)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Reads and checks the config at `path`.
    pub fn read(path: &Path) -> Result<ShimConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a config; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<ShimConfig, ConfigError> {
        let bad = |problem| ConfigError::Invalid {
            path: path.to_owned(),
            problem: Box::new(problem),
        };
        let file: File =
            toml::from_str(text).map_err(|e| bad(ConfigProblem::Toml(e.message().to_owned())))?;
        let mut profiles = BTreeMap::new();
        for (name, profile) in file.profiles {
            let dirs = profile
                .dirs
                .iter()
                .map(|d| {
                    let p: Preopen = d.parse().map_err(|cause| {
                        bad(ConfigProblem::Profile {
                            profile: name.clone(),
                            cause,
                        })
                    })?;
                    if !p.host.is_absolute() || !p.guest.starts_with('/') {
                        return Err(bad(ConfigProblem::ProfilePath {
                            profile: name.clone(),
                            dir: d.clone(),
                        }));
                    }
                    Ok(p)
                })
                .collect::<Result<Vec<_>, _>>()?;
            profiles.insert(name, dirs);
        }
        let max_module_size = match file.limits.max_module_size {
            Some(s) => crate::runner::parse_size(&s)
                .map(|n| n as u64)
                .map_err(|_| bad(ConfigProblem::MaxModuleSize { text: s.clone() }))?,
            None => DEFAULT_MAX_MODULE_SIZE,
        };
        // Entries in the canonical form references are parsed to, so that neither side
        // can be respelled past the other (case, leading zeros in a port, Docker Hub's names).
        let allowed_registries =
            file.references
                .allow
                .map(|list| {
                    list.iter()
                        .map(|entry| match entry.strip_prefix("*.") {
                            Some(domain) => Ok(format!("*.{}", domain.to_ascii_lowercase())),
                            None => wasm_oci_artifact::reference::canonical_registry(entry)
                                .map_err(|reason| {
                                    bad(ConfigProblem::AllowEntry {
                                        entry: entry.clone(),
                                        reason,
                                    })
                                }),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
        let defaults = HttpLimits::default();
        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(&text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    bad(ConfigProblem::Duration {
                        key: key.to_owned(),
                        text: text.clone(),
                    })
                }),
        };
        let http = HttpLimits {
            request_timeout: duration(
                "request_timeout",
                file.http.request_timeout,
                defaults.request_timeout,
            )?,
            idle_timeout: duration(
                "idle_timeout",
                file.http.idle_timeout,
                defaults.idle_timeout,
            )?,
            header_timeout: duration(
                "header_timeout",
                file.http.header_timeout,
                defaults.header_timeout,
            )?,
            body_timeout: duration(
                "body_timeout",
                file.http.body_timeout,
                defaults.body_timeout,
            )?,
            max_connections: match file.http.max_connections {
                Some(0) => return Err(bad(ConfigProblem::NoConnections)),
                n => n,
            },
        };
        let compile = CompileLimits {
            timeout: match file.compile.timeout {
                None => DEFAULT_COMPILE_TIMEOUT,
                Some(text) => parse_duration(&text)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| bad(ConfigProblem::CompileTimeout { text: text.clone() }))?,
            },
            max_memory: match file.compile.max_memory {
                None => DEFAULT_COMPILE_MAX_MEMORY,
                Some(text) => crate::runner::parse_size(&text)
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| n as u64)
                    .ok_or_else(|| bad(ConfigProblem::CompileMemory { text: text.clone() }))?,
            },
        };
        // What the fetcher's egress rule makes of them: `*.` names a domain, not an address.
        wasm_oci_fetcher::egress::Policy::new(allowed_registries.as_deref(), "")
            .map_err(|e| bad(ConfigProblem::Allow(e)))?;
        Ok(ShimConfig {
            profiles,
            group_by: file.groups.by.unwrap_or(GroupBy::Pod),
            max_module_size,
            allowed_registries,
            rootfs_modules: file.trust.rootfs_modules.unwrap_or(RootfsModules::Policy),
            http,
            compile,
            source: Some(path.to_owned()),
        })
    }

    /// Where this config came from, for messages.
    pub(crate) fn source_name(&self) -> String {
        self.source
            .as_ref()
            .map_or(format!("no shim config ({DEFAULT_PATH})"), |p| {
                p.display().to_string()
            })
    }

    /// The rule every connection of a pull for a pod is held to: `references.allow`, else
    /// anywhere but the node's own addresses (see `wasm_oci_fetcher::egress`).
    pub fn egress_policy(&self) -> wasm_oci_fetcher::egress::Policy {
        use wasm_oci_fetcher::egress::Policy;
        let source = self.source_name();
        // Checked when the file was read; were it not, nothing is allowed rather than more.
        Policy::new(self.allowed_registries.as_deref(), source.clone())
            .unwrap_or_else(|_| Policy::new(Some(&[]), source).expect("an empty list"))
    }

    /// Whether a container may have its module pulled from `registry` (`host[:port]`): the
    /// pull runs in the node's network namespace, with the node's credentials. The egress
    /// rule decides, as it does again for every connection the pull makes.
    pub(crate) fn check_registry(&self, registry: &str) -> Result<(), CreateError> {
        // References are parsed to canonical names already; a name that has none is refused.
        wasm_oci_artifact::reference::canonical_registry(registry).map_err(|reason| {
            CreateError::Registry {
                registry: wasm_oci_artifact::text::printable(registry).to_string(),
                reason,
            }
        })?;
        self.egress_policy()
            .check_registry(registry)
            .map_err(CreateError::RegistryRefused)
    }

    /// The host directories of the profiles a container names in `io.wasm-oci.preopens`
    /// (comma-separated profile names). Anything else, a host path above all, is refused.
    pub(crate) fn profiles_for(&self, annotation: &str) -> Result<Vec<Preopen>, CreateError> {
        let mut preopens = Vec::new();
        for name in annotation.split([',', ' ', '\n']).filter(|s| !s.is_empty()) {
            match self.profiles.get(name) {
                Some(dirs) => preopens.extend(dirs.iter().cloned()),
                None => {
                    return Err(CreateError::UnknownProfile {
                        name: name.to_owned(),
                        config: self.source_name(),
                        known: self.profiles.keys().cloned().collect(),
                    });
                }
            }
        }
        Ok(preopens)
    }
}

/// A duration as the config spells it: a whole number and `ms`, `s`, `m` or `h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(millis).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_name_host_directories_and_nothing_else_is_accepted() {
        let config = ShimConfig::parse(
            r#"
            [profiles.models]
            dirs = ["/srv/models::/models:ro", "/srv/scratch::/scratch"]
            [groups]
            by = "container"
            [limits]
            max_module_size = "64MiB"
            "#,
            Path::new("shim.toml"),
        )
        .unwrap();
        assert_eq!(config.group_by, GroupBy::Container);
        assert_eq!(config.max_module_size, 64 << 20);
        let dirs = config.profiles_for("models").unwrap();
        assert_eq!(dirs.len(), 2);
        assert!(dirs[0].read_only && dirs[0].host == Path::new("/srv/models"));
        for hostile in ["/::/", "/etc::/etc", "models,/::/", "../models", "Models"] {
            let e = config.profiles_for(hostile).unwrap_err().to_string();
            assert!(e.contains("not a preopen profile"), "{hostile}: {e}");
        }
        assert!(config.profiles_for("").unwrap().is_empty());
    }

    #[test]
    fn a_config_that_does_not_say_what_it_means_is_refused() {
        for bad in [
            "[profiles.x]\ndirs = [\"relative::/x\"]",
            "[profiles.x]\ndirs = [\"/x::relative\"]",
            "[groups]\nby = \"everyone\"",
            "[limits]\nmax_module_size = \"lots\"",
            "[trust]\nrootfs_modules = \"maybe\"",
            "preopens = 1",
        ] {
            assert!(
                ShimConfig::parse(bad, Path::new("shim.toml")).is_err(),
                "{bad}"
            );
        }
        let default = ShimConfig::parse("", Path::new("shim.toml")).unwrap();
        assert_eq!(default.group_by, GroupBy::Pod);
        assert_eq!(default.rootfs_modules, RootfsModules::Policy);
        let allow = ShimConfig::parse(
            "[trust]\nrootfs_modules = \"allow\"",
            Path::new("shim.toml"),
        )
        .unwrap();
        assert_eq!(allow.rootfs_modules, RootfsModules::Allow);
        assert!(default.profiles.is_empty());
    }

    #[test]
    fn http_servers_have_limits_by_default_and_the_operator_sets_them() {
        let default = ShimConfig::parse("", Path::new("shim.toml")).unwrap();
        assert_eq!(default.http, HttpLimits::default());
        assert_eq!(default.http.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        let set = ShimConfig::parse(
            "[http]
request_timeout = \"5s\"
idle_timeout = \"2m\"
             header_timeout = \"500ms\"
body_timeout = \"1h\"
max_connections = 10
",
            Path::new("shim.toml"),
        )
        .unwrap();
        assert_eq!(
            set.http,
            HttpLimits {
                request_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(120),
                header_timeout: Duration::from_millis(500),
                body_timeout: Duration::from_secs(3600),
                max_connections: Some(10),
            }
        );
        // No limit at all is not a limit: zero, no unit, a fraction, an unknown key.
        for bad in [
            "[http]
request_timeout = \"0s\"",
            "[http]
request_timeout = \"30\"",
            "[http]
header_timeout = \"1.5s\"",
            "[http]
body_timeout = \"forever\"",
            "[http]
max_connections = 0",
            "[http]
timeout = \"5s\"",
        ] {
            assert!(
                ShimConfig::parse(bad, Path::new("shim.toml")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn compiles_have_limits_by_default_and_the_operator_sets_them() {
        let default = ShimConfig::parse("", Path::new("shim.toml")).unwrap();
        assert_eq!(default.compile, CompileLimits::default());
        assert_eq!(default.compile.timeout, DEFAULT_COMPILE_TIMEOUT);
        let set = ShimConfig::parse(
            "[compile]\ntimeout = \"90s\"\nmax_memory = \"512MiB\"\n",
            Path::new("shim.toml"),
        )
        .unwrap();
        assert_eq!(
            set.compile,
            CompileLimits {
                timeout: Duration::from_secs(90),
                max_memory: 512 << 20,
            }
        );
        // No limit at all is not a limit.
        for bad in [
            "[compile]\ntimeout = \"0s\"",
            "[compile]\ntimeout = \"forever\"",
            "[compile]\nmax_memory = \"0\"",
            "[compile]\nmax_memory = \"lots\"",
        ] {
            let e = ShimConfig::parse(bad, Path::new("shim.toml")).unwrap_err();
            assert!(e.to_string().contains("compile."), "{bad}: {e}");
        }
        assert!(ShimConfig::parse("[compile]\ncpus = 1", Path::new("shim.toml")).is_err());
    }

    /// The shim.toml the README and this module's doc show, parsed as the shim reads it:
    /// every key they name is one it knows, with the defaults they say.
    #[test]
    fn the_documented_config_parses_to_its_defaults() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n# Host directories a pod may ask for")
            .expect("the README's shim.toml");
        let text = readme[start + "```toml\n".len()..]
            .split("```")
            .next()
            .unwrap();
        let config = ShimConfig::parse(text, Path::new("README.md")).unwrap();
        assert_eq!(config.compile, CompileLimits::default());
        assert_eq!(config.http.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn references_reach_only_the_registries_the_operator_allows() {
        let default = ShimConfig::default();
        for node in [
            "127.0.0.1:5000",
            "localhost",
            "[::1]:80",
            "169.254.169.254",
            "0.0.0.0:1",
            // The same addresses respelled, as the connection would read them.
            "127.1:5000",
            "0x7f.0.0.1",
            "2130706433:80",
            "LOCALHOST:05000",
            "[0:0::1]",
            "169.254.43518",
            // IPv4-mapped IPv6 is IPv4.
            "[::ffff:127.0.0.1]:5000",
            "[::ffff:7f00:1]",
            "[::ffff:169.254.169.254]",
            "a.localhost",
        ] {
            assert!(default.check_registry(node).is_err(), "{node}");
        }
        assert!(default.check_registry("registry.example").is_ok());
        let listed = ShimConfig::parse(
            "[references]\nallow = [\"127.0.0.1:5000\", \"ghcr.io\", \"*.corp.example\"]\n",
            Path::new("shim.toml"),
        )
        .unwrap();
        for ok in [
            "127.0.0.1:5000",
            "ghcr.io",
            "ghcr.io:443",
            "r.corp.example:5000",
            "127.0.0.1:05000",
            "GHCR.io",
            "R.Corp.Example",
        ] {
            assert!(listed.check_registry(ok).is_ok(), "{ok}");
        }
        // Entries are canonical too: `HOST:0443` is `host:443`, which is `host`.
        let respelled = ShimConfig::parse(
            "[references]\nallow = [\"Registry.Example:0443\", \"*.Corp.Example\"]\n",
            Path::new("shim.toml"),
        )
        .unwrap();
        for ok in ["registry.example", "registry.example:443", "a.corp.example"] {
            assert!(respelled.check_registry(ok).is_ok(), "{ok}");
        }
        assert!(respelled.check_registry("registry.example:4443").is_err());
        assert!(
            ShimConfig::parse(
                "[references]\nallow = [\"host:70000\"]\n",
                Path::new("shim.toml")
            )
            .is_err()
        );
        for refused in [
            "127.0.0.1:5001",
            "127.0.0.1:50010",
            "docker.io",
            "corp.example",
            "evilcorp.example",
        ] {
            assert!(listed.check_registry(refused).is_err(), "{refused}");
        }
    }
}
