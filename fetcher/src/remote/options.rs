//! What the operator or the user says about talking to registries: plain HTTP, credentials,
//! extra trust roots, the hosts directory, a layer size cap.

use super::{auth, hosts};

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Speak plain HTTP to every registry, not only to loopback ones.
    pub plain_http: bool,
    /// Where credentials come from.
    pub credentials: auth::Credentials,
    /// PEM files of extra certificate authorities to trust (`--ca-file`, `SSL_CERT_FILE`).
    pub ca_files: Vec<std::path::PathBuf>,
    /// Accept any certificate. Dangerous; the CLI warns.
    pub insecure_skip_tls_verify: bool,
    /// Refuse a wasm layer larger than this before downloading any of it (the shim's
    /// `limits.max_module_size`); `None`: no limit.
    pub max_layer_size: Option<u64>,
    /// containerd's registry host configuration directory (`hosts.toml` per registry): the
    /// mirrors tried before each registry, and the TLS and headers of each host.
    pub hosts_dir: Option<std::path::PathBuf>,
}

impl RegistryOptions {
    /// What the environment says, for processes without flags (the containerd shim):
    /// `WASM_OCI_PLAIN_HTTP`, `SSL_CERT_FILE`, and docker's config for credentials.
    pub fn from_env() -> Self {
        // Read as clap reads the CLI's `--plain-http` from the same variable.
        let plain_http = std::env::var("WASM_OCI_PLAIN_HTTP").is_ok_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no" | "off" | "n" | "f"
            )
        });
        Self {
            plain_http,
            credentials: auth::Credentials::DockerConfig,
            ca_files: std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .collect(),
            insecure_skip_tls_verify: false,
            max_layer_size: None,
            hosts_dir: hosts::hosts_dir(None),
        }
    }
}
