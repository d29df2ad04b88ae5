//! `wasm-oci login REGISTRY` and `wasm-oci logout REGISTRY`, as docker does them.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use wasm_oci_fetcher::auth;

use super::naming::Naming;
use crate::GlobalOptions;

/// Log in to a registry: check the credentials, then store them as docker does.
///
/// They are stored where docker and oras look: the credential helper named in
/// ~/.docker/config.json, else its auths section. On a terminal, the user name and the password
/// are asked for; elsewhere, pipe the password in with --password-stdin.
///
/// Examples:
///     wasm-oci login ghcr.io -u me
///     echo "$TOKEN" | wasm-oci login ghcr.io -u me --password-stdin
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LoginCommand {
    /// The registry, e.g. ghcr.io or localhost:5000
    #[arg(value_name = "REGISTRY")]
    server: String,

    /// Print the result as JSON on stdout: registry, username and stored_in (the credential
    /// helper or config file that holds the credentials)
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) registry: crate::RegistryArgs,
}

impl LoginCommand {
    /// Checks and stores.
    pub fn execute(mut self, global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        // Stored under the name references are parsed to (`LOCALHOST:05000` is
        // `localhost:5000`), so that a pull finds them; anything else is kept as given.
        if let Ok(canonical) = wasm_oci_artifact::reference::canonical_registry(&self.server) {
            self.server = canonical;
        }
        let mut global = global.clone();
        if global.registry.username.is_none()
            && !global.registry.password_stdin
            && std::io::IsTerminal::is_terminal(&std::io::stdin())
        {
            // As docker login asks on a terminal.
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the user name from the terminal")?;
            let name = line.trim();
            if !name.is_empty() {
                global.registry.username = Some(name.to_owned());
            }
        }
        let Some((username, password)) = global.explicit_credentials()? else {
            bail!(
                "wasm-oci login needs a user name (-u NAME) and the password on stdin with \
                 --password-stdin, e.g. \
                 echo \"$TOKEN\" | wasm-oci login {} -u NAME --password-stdin",
                self.server
            );
        };
        let fetcher = global.fetcher_running_nothing(&self.server)?;
        crate::block_on(fetcher.check_login(&self.server))?
            .naming(&[&self.server], || format!("logging in to {}", self.server))?;
        let path = auth::store(&self.server, &username, &password)?;
        if self.json {
            crate::print_json(&serde_json::json!({
                "registry": self.server,
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
/// Examples:
///     wasm-oci logout ghcr.io
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LogoutCommand {
    /// The registry, e.g. ghcr.io or localhost:5000
    registry: String,
}

impl LogoutCommand {
    /// Removes.
    pub fn execute(mut self, _global: &GlobalOptions) -> anyhow::Result<ExitCode> {
        if let Ok(canonical) = wasm_oci_artifact::reference::canonical_registry(&self.registry) {
            self.registry = canonical;
        }
        if auth::erase(&self.registry)? {
            crate::outln!("Removing login credentials for {}", self.registry);
        } else {
            crate::outln!("Not logged in to {}", self.registry);
        }
        Ok(ExitCode::SUCCESS)
    }
}
