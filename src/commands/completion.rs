//! `wasm-oci completion SHELL` and `wasm-oci man [VERB]`: what shells and `man` read, made from
//! the same definitions as `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use clap_complete::Shell;

/// Print a completion script for bash, zsh, fish, elvish or PowerShell.
///
/// Load it in the running shell, or install it where the shell looks at start.
///
/// Examples:
///     source <(wasm-oci completion bash)
///     wasm-oci completion bash > /etc/bash_completion.d/wasm-oci
///     wasm-oci completion zsh > "${fpath[1]}/_wasm-oci"
///     wasm-oci completion fish > ~/.config/fish/completions/wasm-oci.fish
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionCommand {
    /// The shell
    shell: Shell,
}

impl CompletionCommand {
    /// Writes the script for `cli` (the whole command line's definition) on stdout.
    pub fn execute(self, mut cli: clap::Command) -> anyhow::Result<ExitCode> {
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut cli, "wasm-oci", &mut out);
        if self.shell == Shell::Bash {
            // clap_complete spells the state of a hyphenated binary two ways, so nothing after
            // a verb completes (clap-rs/clap#6421, open): use the spelling its loop uses.
            let script = String::from_utf8(out)
                .expect("clap_complete writes UTF-8")
                .replace("wasm__subcmd__oci", "wasm__oci");
            out = guest_words_in_bash(&script, cli).into_bytes();
        }
        crate::write_stdout(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `script` (clap_complete's bash) where, after `run`'s module, words complete as file names:
/// they are the guest's, and wasm-oci's options there would reach the guest, not wasm-oci.
fn guest_words_in_bash(script: &str, mut cli: clap::Command) -> String {
    // The state clap_complete gives `wasm-oci run` (its spelling changed between versions).
    let Some((at, case)) = [
        "        wasm__oci__subcmd__run)\n",
        "        wasm__oci__run)\n",
    ]
    .into_iter()
    .find_map(|case| Some((script.find(case)?, case))) else {
        return script.to_owned();
    };
    // Options of `run` and of the top level that take a value: their value is not the module.
    let mut takes_value: Vec<String> = Vec::new();
    cli.build();
    let run = cli.find_subcommand("run").expect("run is a verb").clone();
    for arg in cli.get_arguments().chain(run.get_arguments()) {
        if arg.is_positional() || !arg.get_action().takes_values() {
            continue;
        }
        takes_value.extend(
            arg.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
        takes_value.extend(
            arg.get_short_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|s| format!("-{s}")),
        );
        takes_value.extend(
            arg.get_all_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
    }
    takes_value.sort();
    takes_value.dedup();
    let helper = format!(
        r#"# Whether COMP_WORDS before the cursor hold `run` and its module: what follows is the
# guest's, completed as file names.
__wasm_oci_after_module() {{
    local i word verb= skip=
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ -n $skip ]]; then
            skip=
        elif [[ $word == -* ]]; then
            case "$word" in
                {}) skip=1 ;;
            esac
        elif [[ -z $verb ]]; then
            verb=$word
        else
            return 0
        fi
    done
    return 1
}}

"#,
        takes_value.join("|")
    );
    let guard = "            if __wasm_oci_after_module; then\n\
                 \x20               COMPREPLY=( $(compgen -f -- \"${cur}\") )\n\
                 \x20               return 0\n\
                 \x20           fi\n";
    let function = ["_wasm__oci() {", "_wasm-oci() {"]
        .into_iter()
        .find_map(|f| script.find(f))
        .unwrap_or(0);
    let mut patched = String::with_capacity(script.len() + helper.len() + guard.len());
    patched.push_str(&script[..function]);
    patched.push_str(&helper);
    patched.push_str(&script[function..at + case.len()]);
    patched.push_str(guard);
    patched.push_str(&script[at + case.len()..]);
    patched
}

/// Print the man page of wasm-oci, or of one verb, in roff; or write them all to a directory.
///
/// The pages are wasm-oci(1) and one per verb, wasm-oci-VERB(1) (wasm-oci-cache-ls(1) for a
/// cache action), as git names its own.
///
/// Examples:
///     wasm-oci man | man -l -
///     wasm-oci man run | man -l -
///     wasm-oci man --output-dir /usr/local/share/man/man1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ManCommand {
    /// The verb whose page to print, e.g. run, or cache ls [default: the whole command's]
    verb: Vec<String>,

    /// Write every page into this directory (wasm-oci.1, wasm-oci-run.1, ...) instead
    #[arg(long, value_name = "DIR", conflicts_with = "verb")]
    output_dir: Option<PathBuf>,
}

impl ManCommand {
    /// Renders.
    pub fn execute(self, mut command: clap::Command) -> anyhow::Result<ExitCode> {
        command.build();
        if let Some(dir) = self.output_dir {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut written = 0;
            for (name, page) in pages(&command, "wasm-oci") {
                let path = dir.join(format!("{name}.1"));
                wasm_oci_cache::write_atomic(&path, &render(&page)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                written += 1;
            }
            eprintln!("wrote {written} man pages into {}", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        let mut page = command;
        let mut name = String::from("wasm-oci");
        for verb in &self.verb {
            let Some(sub) = page.find_subcommand(verb).cloned() else {
                bail!(
                    "{name} has no verb {verb:?}: `{name} --help` lists them",
                    verb = wasm_oci_artifact::text::printable(verb)
                );
            };
            name = format!("{name}-{}", sub.get_name());
            page = sub.name(name.clone());
        }
        crate::write_stdout(&render(&page)?)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The page of `command` named `name`, then those of its verbs, depth first.
fn pages(command: &clap::Command, name: &str) -> Vec<(String, clap::Command)> {
    let mut all = vec![(name.to_owned(), command.clone().name(name.to_owned()))];
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        all.extend(pages(sub, &format!("{name}-{}", sub.get_name())));
    }
    all
}

fn render(command: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .context("rendering the man page")?;
    Ok(out)
}
