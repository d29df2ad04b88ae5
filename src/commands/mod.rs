//! The verbs of `wasm-oci`, one file each: `RunCommand { .. }.execute()`.

mod annotations;
mod attach;
mod cache;
mod compile;
mod completion;
mod copy;
mod discover;
mod inspect;
mod key;
mod login;
mod manifest;
mod naming;
mod output;
mod prefetch;
mod pull;
mod push;
mod resolve;
mod run;
mod save;
mod serve;
mod sign;
mod tags;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use attach::AttachCommand;
use cache::CacheCommand;
use compile::CompileCommand;
use completion::{CompletionCommand, ManCommand};
use copy::CopyCommand;
use discover::DiscoverCommand;
use inspect::InspectCommand;
use key::KeyCommand;
use login::{LoginCommand, LogoutCommand};
use manifest::ManifestCommand;
use prefetch::PrefetchCommand;
use pull::PullCommand;
use push::PushCommand;
use run::RunCommand;
use save::{LoadCommand, SaveCommand};
use serve::ServeCommand;
use sign::SignCommand;
use tags::{TagCommand, TagsCommand};
use verify::VerifyCommand;

use crate::{GlobalOptions, RegistryArgs};

/// Run WebAssembly straight from OCI registries.
///
/// A wasm module pushed to a registry as an OCI artifact is pulled by reference, verified, kept
/// in a content-addressed cache and started in wasmtime with WASI. References are read the way
/// docker reads them ([REGISTRY/]REPOSITORY[:TAG|@DIGEST]; the registry defaults to docker.io).
/// Set WASM_OCI_LOG=debug for details of what happens; `wasm-oci VERB --help` for each verb.
///
/// Examples:
///     wasm-oci push hello.wasm localhost:5000/hello:v1
///     wasm-oci run localhost:5000/hello:v1
#[derive(Debug, Parser)]
#[command(name = "wasm-oci", version, verbatim_doc_comment, max_term_width = 100)]
#[command(mut_args = before_the_verb)]
pub struct Cli {
    /// Cache directory [default: $XDG_CACHE_HOME/wasm-oci, else ~/.cache/wasm-oci, else (root
    /// without HOME) /var/lib/wasm-oci]
    #[arg(long, global = true, env = "WASM_OCI_CACHE", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Registry options given before the verb, where scripts written for older versions put
    /// them; hidden here, documented on each verb that talks to a registry.
    #[command(flatten)]
    registry_before: RegistryArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(RunCommand),
    Serve(ServeCommand),
    Pull(PullCommand),
    Push(PushCommand),
    Compile(CompileCommand),
    Prefetch(PrefetchCommand),
    Inspect(InspectCommand),
    Save(SaveCommand),
    Load(LoadCommand),
    Cache(CacheCommand),
    Login(LoginCommand),
    Logout(LogoutCommand),
    Completion(CompletionCommand),
    Man(ManCommand),
    #[command(subcommand)]
    Key(KeyCommand),
    Sign(SignCommand),
    Verify(VerifyCommand),
    Tags(TagsCommand),
    Tag(TagCommand),
    Manifest(ManifestCommand),
    Attach(AttachCommand),
    Discover(DiscoverCommand),
    Copy(CopyCommand),
}

/// The registry options of the top level are accepted there but shown on the verbs only, and
/// read no environment variable there (the verb's copy does).
fn before_the_verb(arg: clap::Arg) -> clap::Arg {
    const REGISTRY_ARGS: [&str; 6] = [
        "plain_http",
        "username",
        "password_stdin",
        "ca_file",
        "insecure_skip_tls_verify",
        "hosts_dir",
    ];
    if REGISTRY_ARGS.contains(&arg.get_id().as_str()) {
        arg.hide(true).env(None)
    } else {
        arg
    }
}

impl Command {
    /// The verb as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Serve(_) => "serve",
            Command::Pull(_) => "pull",
            Command::Push(_) => "push",
            Command::Compile(_) => "compile",
            Command::Prefetch(_) => "prefetch",
            Command::Inspect(_) => "inspect",
            Command::Save(_) => "save",
            Command::Load(_) => "load",
            Command::Cache(_) => "cache",
            Command::Login(_) => "login",
            Command::Logout(_) => "logout",
            Command::Completion(_) => "completion",
            Command::Man(_) => "man",
            Command::Key(_) => "key",
            Command::Sign(_) => "sign",
            Command::Verify(_) => "verify",
            Command::Tags(_) => "tags",
            Command::Tag(_) => "tag",
            Command::Manifest(_) => "manifest",
            Command::Attach(_) => "attach",
            Command::Discover(_) => "discover",
            Command::Copy(_) => "copy",
        }
    }

    /// The registry options of a verb that talks to a registry.
    fn registry_args(&mut self) -> Option<&mut RegistryArgs> {
        match self {
            Command::Run(cmd) => Some(&mut cmd.registry),
            Command::Serve(cmd) => Some(&mut cmd.registry),
            Command::Pull(cmd) => Some(&mut cmd.registry),
            Command::Push(cmd) => Some(&mut cmd.registry),
            Command::Compile(cmd) => Some(&mut cmd.registry),
            Command::Prefetch(cmd) => Some(&mut cmd.registry),
            Command::Inspect(cmd) => Some(&mut cmd.registry),
            Command::Save(cmd) => Some(&mut cmd.registry),
            Command::Login(cmd) => Some(&mut cmd.registry),
            Command::Sign(cmd) => Some(&mut cmd.registry),
            Command::Verify(cmd) => Some(&mut cmd.registry),
            Command::Tags(cmd) => Some(&mut cmd.registry),
            Command::Tag(cmd) => Some(&mut cmd.registry),
            Command::Manifest(cmd) => Some(&mut cmd.registry),
            Command::Attach(cmd) => Some(&mut cmd.registry),
            Command::Discover(cmd) => Some(&mut cmd.registry),
            Command::Copy(cmd) => Some(&mut cmd.registry),
            Command::Load(_)
            | Command::Key(_)
            | Command::Cache(_)
            | Command::Logout(_)
            | Command::Completion(_)
            | Command::Man(_) => None,
        }
    }
}

impl Cli {
    /// The command line of this process, parsed; when it cannot be, the error is printed and
    /// the exit code returned: 125 for `run` and `serve`, as `docker run` exits on a usage
    /// error (a guest's own exit 2 must not read as one), else clap's 2 (0 for --help).
    pub fn from_args() -> Result<Cli, ExitCode> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        Cli::try_parse_from(&args).map_err(|e| {
            let _ = e.print();
            let verb = verb_of(args.iter().skip(1).filter_map(|a| a.to_str()));
            let code = match verb {
                Some("run" | "serve") if e.use_stderr() => 125,
                _ => e.exit_code(),
            };
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        })
    }

    /// Runs the chosen verb; failures of `run` itself exit 125, as `docker run` does, so that
    /// they are not mistaken for the guest's own exit status.
    pub fn execute(mut self) -> ExitCode {
        let registry = match self.command.registry_args() {
            Some(args) => std::mem::take(args).or(self.registry_before),
            None => {
                if let Some(option) = self.registry_before.first_given() {
                    eprintln!(
                        "Error: {option} is an option of the verbs that talk to a registry \
                         (run, serve, pull, push, compile, prefetch, inspect, save, login, sign, verify, \
                         tags, tag, manifest, attach, discover, copy); \
                         `wasm-oci {}` talks to none",
                        self.command.name()
                    );
                    return ExitCode::from(2);
                }
                RegistryArgs::default()
            }
        };
        let global = GlobalOptions {
            cache_dir: self.cache_dir,
            registry,
        };
        let (result, failure) = match self.command {
            Command::Run(cmd) => (cmd.execute(&global), 125),
            Command::Serve(cmd) => (cmd.execute(&global), 125),
            Command::Pull(cmd) => (cmd.execute(&global), 1),
            Command::Push(cmd) => (cmd.execute(&global), 1),
            Command::Compile(cmd) => (cmd.execute(&global), 1),
            Command::Prefetch(cmd) => (cmd.execute(&global), 1),
            Command::Inspect(cmd) => (cmd.execute(&global), 1),
            Command::Save(cmd) => (cmd.execute(&global), 1),
            Command::Load(cmd) => (cmd.execute(&global), 1),
            Command::Cache(cmd) => (cmd.execute(&global), 1),
            Command::Login(cmd) => (cmd.execute(&global), 1),
            Command::Logout(cmd) => (cmd.execute(&global), 1),
            Command::Completion(cmd) => (cmd.execute(<Cli as clap::CommandFactory>::command()), 1),
            Command::Man(cmd) => (cmd.execute(<Cli as clap::CommandFactory>::command()), 1),
            Command::Key(cmd) => (cmd.execute(&global), 1),
            Command::Sign(cmd) => (cmd.execute(&global), 1),
            Command::Verify(cmd) => (cmd.execute(&global), 1),
            Command::Tags(cmd) => (cmd.execute(&global), 1),
            Command::Tag(cmd) => (cmd.execute(&global), 1),
            Command::Manifest(cmd) => (cmd.execute(&global), 1),
            Command::Attach(cmd) => (cmd.execute(&global), 1),
            Command::Discover(cmd) => (cmd.execute(&global), 1),
            Command::Copy(cmd) => (cmd.execute(&global), 1),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                // On one line, every control character escaped: an error may quote what a
                // registry or a module says (a module's import and export names, in wasmtime's
                // own messages), which must not recolour or rewrite the terminal, nor forge
                // a line.
                eprintln!(
                    "Error: {}",
                    wasm_oci_artifact::text::printable(&format!("{e:#}"))
                );
                ExitCode::from(failure)
            }
        }
    }
}

/// The verb of a command line (without the program's name): the first word that is neither
/// an option before it nor such an option's value.
fn verb_of<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    const TAKE_A_VALUE: [&str; 5] = [
        "--cache-dir",
        "--username",
        "-u",
        "--ca-file",
        "--hosts-dir",
    ];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if TAKE_A_VALUE.contains(&arg) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verb_is_found_past_the_options_before_it() {
        let verb = |line: &str| verb_of(line.split_whitespace()).map(str::to_owned);
        assert_eq!(verb("run -v x"), Some("run".into()));
        assert_eq!(verb("--cache-dir run serve x"), Some("serve".into()));
        assert_eq!(verb("--plain-http -u run pull x"), Some("pull".into()));
        assert_eq!(verb("--plain-http"), None);
    }
}
