//! `wasm-oci login REGISTRY` and `wasm-oci logout REGISTRY`, as docker does them.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use wasm_oci_fetcher::auth;

use super::Naming;
use crate::GlobalOptions;

/// Log in to a registry: check the credentials, then store them where docker and oras look
/// (the credential helper named in ~/.docker/config.json, else its auths section).
///
///     echo "$TOKEN" | wasm-oci login ghcr.io --username me --password-stdin
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LoginCommand {
    /// The registry, e.g. ghcr.io or localhost:5000
    registry: String,

    /// Print the result as JSON on stdout: registry, username and stored_in (the credential
    /// helper or config file that holds the credentials)
    #[arg(long)]
    json: bool,
}

impl LoginCommand {
    /// Checks and stores.
    pub fn execute(self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        let Some((username, password)) = global.explicit_credentials()? else {
            bail!(
                "wasm-oci login needs --username NAME and the password on stdin with --password-stdin, e.g.\n  \
                 echo \"$TOKEN\" | wasm-oci login {} --username NAME --password-stdin",
                self.registry
            );
        };
        let fetcher = global.fetcher(&self.registry)?;
        crate::block_on(fetcher.check_login(&self.registry))?.naming(&[&self.registry], || {
            format!("logging in to {}", self.registry)
        })?;
        let path = auth::store(&self.registry, &username, &password)?;
        if self.json {
            crate::print_json(&serde_json::json!({
                "registry": self.registry,
                "username": username,
                "stored_in": path,
            }))?;
        } else {
            // On stdout, as docker prints it.
            crate::outln!(
                "Login Succeeded (credentials stored via {})",
                path.display()
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Log out of a registry: remove its stored credentials.
///
///     wasm-oci logout ghcr.io
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LogoutCommand {
    /// The registry, e.g. ghcr.io or localhost:5000
    registry: String,
}

impl LogoutCommand {
    /// Removes.
    pub fn execute(self, _global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        if auth::erase(&self.registry)? {
            crate::outln!("Removing login credentials for {}", self.registry);
        } else {
            crate::outln!("Not logged in to {}", self.registry);
        }
        Ok(ExitCode::SUCCESS)
    }
}
