//! The command line as docker, oras and wasmtime users expect it: help with examples on every
//! verb, registry options only where a registry is spoken to, completions and man pages, hints
//! for habits from other tools, environment variables, and what a terminal shows (prompts and
//! progress, checked under a real pseudo-terminal with tmux).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::CommandFactory as _;

use crate::support::{Registry, Secure, WasmOci, describe, padded_hello, stderr, testdata};

const REGISTRY_VERBS: [&str; 17] = [
    "run", "serve", "pull", "push", "compile", "prefetch", "inspect", "save", "login", "sign",
    "verify", "tags", "tag", "manifest", "attach", "discover", "copy",
];

/// Every verb and cache action, as typed after `wasm-oci`.
fn verbs() -> Vec<Vec<String>> {
    fn walk(command: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_owned());
            out.push(p.clone());
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&wasm_oci::commands::Cli::command(), &[], &mut out);
    out
}

#[test]
fn every_verb_has_help_with_examples_and_registry_options_only_where_they_apply() {
    let cli = WasmOci::new();
    let verbs = verbs();
    for expected in [
        "run",
        "cache ls",
        "cache rm",
        "cache prune",
        "completion",
        "man",
    ] {
        assert!(
            verbs.iter().any(|v| v.join(" ") == expected),
            "no verb {expected}: {verbs:?}"
        );
    }
    for verb in &verbs {
        let name = verb.join(" ");
        let mut args: Vec<&str> = verb.iter().map(String::as_str).collect();
        args.push("--help");
        let help = cli.ok(&args);
        assert!(
            help.contains(&format!("Usage: wasm-oci {name}")),
            "{name}: {help}"
        );
        let (about, examples) = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("`wasm-oci {name} --help` has no Examples: {help}"));
        // The first line is a sentence of its own, as the verb list shows it.
        let first = about.lines().next().unwrap();
        assert!(
            first.ends_with('.') && first.len() <= 92,
            "{name}: {first:?}"
        );
        let example_lines: Vec<&str> = examples
            .lines()
            .take_while(|l| l.starts_with("    "))
            .collect();
        assert!(
            example_lines
                .iter()
                .any(|l| l.contains(&format!("wasm-oci {name}"))),
            "`wasm-oci {name} --help` shows no example of itself: {examples}"
        );
        let top = verb[0].as_str();
        assert_eq!(
            help.contains("\nRegistry options:\n"),
            REGISTRY_VERBS.contains(&top),
            "{name}: registry options belong to the verbs that talk to a registry: {help}"
        );
        if REGISTRY_VERBS.contains(&top) {
            let (_, registry) = help.split_once("\nRegistry options:\n").unwrap();
            for option in ["--plain-http", "--username", "--ca-file"] {
                assert!(
                    registry.contains(option),
                    "{name}: {option} under its heading"
                );
            }
        }
    }
    // Every option says what it does.
    fn documented(command: &clap::Command, path: &str) {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            assert!(
                arg.get_help().is_some(),
                "`{path}` has an undocumented argument {}",
                arg.get_id()
            );
        }
        for sub in command.get_subcommands() {
            documented(sub, &format!("{path} {}", sub.get_name()));
        }
    }
    documented(&wasm_oci::commands::Cli::command(), "wasm-oci");
}

#[test]
fn registry_options_before_the_verb_still_work_but_not_on_verbs_without_a_registry() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let hello = testdata("hello.wasm");
    cli.ok(&["push", "--plain-http", hello.to_str().unwrap(), &reference]);
    cli.ok(&["--plain-http", "pull", &reference]);

    let out = cli.run(&["--plain-http", "cache", "ls"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--plain-http is an option of the verbs that talk to a registry"),
        "{}",
        describe(&out)
    );
    // After the verb, clap itself refuses it, and says so.
    let out = cli.run(&["cache", "ls", "--plain-http"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    // The environment switch is the verbs' own: it does not break a verb without a registry.
    let out = cli
        .command()
        .args(["cache", "ls"])
        .env("WASM_OCI_PLAIN_HTTP", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn completions_complete_verbs_in_bash_and_are_made_for_zsh_and_fish() {
    let cli = WasmOci::new();
    let script = cli.ok(&["completion", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasm-oci.bash");
    fs::write(&file, &script).unwrap();
    // What bash does on TAB after `wasm-oci ca` and after `wasm-oci cache `.
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {file}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
                 f=$(complete -p wasm-oci | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
                 $f wasm-oci \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file = file.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let words = complete("wasm-oci ca");
    assert_eq!(
        words.split_whitespace().collect::<Vec<_>>(),
        ["cache"],
        "{words}"
    );
    let words = complete("wasm-oci cache ''");
    for action in ["ls", "rm", "verify", "prune"] {
        assert!(
            words.split_whitespace().any(|w| w == action),
            "{action}: {words}"
        );
    }
    // A verb's own options (clap_complete loses them for a hyphenated name unless fixed up).
    let words = complete("wasm-oci cache prune --");
    for option in ["--max-size", "--older-than", "--dry-run"] {
        assert!(
            words.split_whitespace().any(|w| w == option),
            "{option}: {words}"
        );
    }
    for shell in ["zsh", "fish"] {
        let script = cli.ok(&["completion", shell]);
        assert!(
            script.contains("prefetch") && script.contains("max-memory"),
            "{shell}"
        );
    }
    let out = cli.run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// `page` rendered by man(1) as text.
fn man_text(page: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.1");
    fs::write(&file, page).unwrap();
    let out = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&file)
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_are_made_from_the_same_definitions_as_help() {
    let cli = WasmOci::new();
    let main = cli.command().arg("man").output().unwrap();
    assert!(main.status.success(), "{}", describe(&main));
    let text = man_text(&main.stdout);
    assert!(
        text.contains("wasm-oci - Run WebAssembly straight from OCI registries"),
        "{text}"
    );
    for verb in ["prefetch", "cache", "completion"] {
        assert!(
            text.contains(verb),
            "{verb} missing from wasm-oci(1): {text}"
        );
    }
    let run = cli.command().args(["man", "run"]).output().unwrap();
    let text = man_text(&run.stdout);
    assert!(
        text.contains("wasm-oci-run") && text.contains("--max-memory"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("registry options"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    cli.ok(&["man", "--output-dir", dir.path().to_str().unwrap()]);
    let mut pages: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for verb in verbs() {
        let page = format!("wasm-oci-{}.1", verb.join("-"));
        assert!(pages.contains(&page), "{page} not in {pages:?}");
    }
    assert!(pages.contains(&"wasm-oci.1".to_owned()));
    let out = cli.run(&["man", "frobnicate"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("has no verb \"frobnicate\""),
        "{}",
        describe(&out)
    );
}

#[test]
fn habits_from_docker_and_skopeo_get_a_hint() {
    let cli = WasmOci::new();
    let out = cli.run(&["run", "docker://localhost:5000/hello:v1"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains(
            "drop the docker:// prefix (skopeo's transport name): localhost:5000/hello:v1"
        ),
        "{}",
        describe(&out)
    );
    let out = cli.run(&["pull", "docker://localhost:5000/hello:v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("drop the docker:// prefix"),
        "{}",
        describe(&out)
    );

    let hello = testdata("hello.wasm");
    let out = cli.run(&["run", "--dir", "./data:/data:ro", hello.to_str().unwrap()]);
    // A usage error of `run` exits 125, as `docker run` does: 2 may be the guest's own.
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("./data::/data:ro"),
        "the hint names wasmtime's spelling: {}",
        describe(&out)
    );
}

/// A tmux server of the test's own, with one pane of 160x50 running a shell command; the
/// pane is a real pseudo-terminal.
pub(crate) struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    pub(crate) fn start(command: &str, env: &[(&str, &Path)]) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&socket).args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
        ]);
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={}", v.display()));
        }
        let status = cmd
            .arg(command)
            .status()
            .expect("tmux is installed by scripts/test");
        assert!(status.success());
        Tmux { socket, _dir: dir }
    }

    pub(crate) fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen as a person sees it.
    pub(crate) fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J"])
    }

    /// Waits until the screen shows `text`.
    pub(crate) fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(Instant::now() < deadline, "never showed {text:?}: {screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// A shell command line for the wasm-oci binary with `cli`'s cache and `args`, then a marker.
pub(crate) fn on_terminal(cli: &WasmOci, args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "env WASM_OCI_CACHE='{}' DOCKER_CONFIG='{}' {} {}; echo \"EXIT=$?\"; sleep 600",
        cli.cache.path().display(),
        cli.cache.path().join("docker").display(),
        env!("CARGO_BIN_EXE_wasm-oci"),
        quoted.join(" ")
    )
}

#[test]
fn login_asks_for_the_password_on_a_terminal_without_echoing_it() {
    const USER: &str = "carol";
    let password = crate::support::secret("pty-Pa55word-7");
    let registry = Registry::start_secure(Secure {
        tls: true,
        user: Some((USER, "pty-Pa55word-7")),
    });
    let ca = registry.ca_file();
    let cli = WasmOci::new();
    let tmux = Tmux::start(
        &on_terminal(
            &cli,
            &[
                "login",
                "--ca-file",
                ca.to_str().unwrap(),
                "-u",
                USER,
                &registry.addr,
            ],
        ),
        &[],
    );
    tmux.wait_for(&format!("Password for {USER}:"));
    tmux.tmux(&["send-keys", "-l", password]);
    tmux.tmux(&["send-keys", "Enter"]);
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("Login Succeeded"), "{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        !screen.contains(password),
        "the password was echoed: {screen}"
    );
    let config = fs::read_to_string(cli.cache.path().join("docker/config.json")).unwrap();
    assert!(config.contains(&registry.addr), "{config}");

    // Not a terminal and no --password-stdin: told how, not hung.
    let out = cli.run(&[
        "login",
        "--ca-file",
        ca.to_str().unwrap(),
        "-u",
        USER,
        &registry.addr,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        describe(&out)
    );
}

#[test]
fn pull_draws_progress_on_a_terminal_and_leaves_a_clean_screen() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("big.wasm");
    fs::write(&module, padded_hello(48 << 20)).unwrap();
    let reference = registry.reference("big:v1");
    cli.ok(&["push", module.to_str().unwrap(), &reference]);

    let raw = dir.path().join("raw.log");
    // The pull starts once the pane's output is piped (the pipe's command says so by a file).
    let piped = dir.path().join("piped");
    let tmux = Tmux::start(
        &format!(
            "until [ -e '{}' ]; do sleep 0.01; done; {}",
            piped.display(),
            on_terminal(&cli, &["pull", &reference])
        ),
        &[],
    );
    // Every byte the program writes to the terminal, escapes included.
    tmux.tmux(&[
        "pipe-pane",
        "-O",
        &format!("touch '{}'; cat > '{}'", piped.display(), raw.display()),
    ]);
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("EXIT=0"), "{screen}");
    let raw = fs::read(&raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    // Bars were drawn (a byte count of the 48 MiB layer) ...
    assert!(
        raw.contains("MiB/48.00 MiB") || raw.contains("MiB/48 MiB"),
        "no progress: {raw:?}"
    );
    assert!(
        raw.contains('\u{1b}'),
        "a terminal gets drawn bars: {raw:?}"
    );
    // The layer's bar says it is the wasm (the config's, that it is the config).
    assert!(
        raw.contains("big:v1 wasm"),
        "the layer's bar is labelled: {raw:?}"
    );
    // ... and cleared: the screen a person is left with has the result, no bar, no escape.
    assert!(!screen.contains("=>"), "a bar was left behind: {screen}");
    assert!(!screen.contains('\u{1b}'), "{screen}");
    assert!(screen.contains(&reference), "{screen}");
}

#[test]
fn boolean_variables_read_as_documented_and_logs_to_a_pipe_are_plain() {
    let registry = Registry::start();
    let reference = registry.reference("env/hello:v1");
    WasmOci::new().ok(&["push", testdata("hello.wasm").to_str().unwrap(), &reference]);
    // 1/0/true/false/empty, as the shim reads WASM_OCI_PLAIN_HTTP too.
    for value in ["1", "0", "true", "false", "", "yes", "off"] {
        let out = WasmOci::new()
            .command()
            .env("WASM_OCI_PLAIN_HTTP", value)
            .args(["pull", &reference])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "WASM_OCI_PLAIN_HTTP={value:?}: {}",
            describe(&out)
        );
    }
    // A warning on its way to a pipe (a retry through a flaky proxy): no colour codes, no
    // timestamp.
    let proxy = crate::support::Proxy::start(&registry.addr, crate::support::Fault::Every503);
    let out = WasmOci::new()
        .command()
        .env_remove("WASM_OCI_LOG_FILE")
        .env("WASM_OCI_LOG", "warn")
        .args(["pull", &proxy.reference("env/hello:v1")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(err.contains("retrying in"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
    assert!(!err.contains("Z "), "a timestamp on stderr: {err}");
}
