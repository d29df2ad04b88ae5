//! The README's console examples, run as they are written: each `$ wasm-oci ...` line of a
//! ```` ```console ```` block runs against a registry of the test's own (`localhost:5000` in the
//! text stands for it) with a cache of the block's own, from the repository's root, and what it
//! prints (stdout, then stderr) must read as the README says. In the expected text, a line that
//! is only `...` stands for any number of lines, and `[..]` for any part of a line, as trycmd
//! reads them.

use std::path::Path;

use crate::support::{Registry, WasmOci};

/// The console blocks of the README: for each, its commands with what they print.
fn console_blocks(readme: &str) -> Vec<Vec<(String, Vec<String>)>> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```console" {
            continue;
        }
        let mut block: Vec<(String, Vec<String>)> = Vec::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            match line.strip_prefix("$ ") {
                Some(command) => block.push((command.to_owned(), Vec::new())),
                None => block
                    .last_mut()
                    .expect("a console block starts with a `$ ` command")
                    .1
                    .push(line.to_owned()),
            }
        }
        blocks.push(block);
    }
    blocks
}

/// Whether `line` reads as `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `actual` reads as `expected`, with `...` lines standing for any lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more)),
    }
}

#[test]
fn the_readme_console_examples_print_what_they_say() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = console_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "the README has {} console blocks",
        blocks.len()
    );
    let registry = Registry::start();
    for block in blocks {
        let cli = WasmOci::new();
        for (command, expected) in block {
            let args: Vec<String> = command
                .split_whitespace()
                .map(|w| w.replace("localhost:5000", &registry.addr))
                .collect();
            assert_eq!(
                args[0], "wasm-oci",
                "README examples run wasm-oci: {command}"
            );
            let out = cli
                .command()
                .args(&args[1..])
                .current_dir(root)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let actual: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
            let expected: Vec<String> = expected
                .iter()
                .map(|l| l.replace("localhost:5000", &registry.addr))
                .collect();
            assert!(
                out.status.success() && lines_match(&expected, &actual),
                "README: `$ {command}` (exit {:?}) printed\n{}\nwhere the README says\n{}",
                out.status.code(),
                actual.join("\n"),
                expected.join("\n")
            );
        }
    }
}

#[test]
fn the_matcher_reads_wildcards_as_trycmd_does() {
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(line_matches("Digest: sha256:[..]", "Digest: sha256:abc"));
    assert!(line_matches("a [..] c [..]", "a b c d"));
    assert!(!line_matches("Digest: sha256:[..]", "Size: 171"));
    assert!(!line_matches("Size: 171", "Size: 1710"));
    assert!(lines_match(
        &lines(&["a", "...", "d"]),
        &["a", "b", "c", "d"]
    ));
    assert!(lines_match(&lines(&["a", "..."]), &["a"]));
    assert!(!lines_match(&lines(&["a", "d"]), &["a", "b", "d"]));
}

/// A block of the README a reader may paste.
enum Block {
    /// A ```` ```sh ```` block: run by bash, as pasted, and it must succeed.
    Sh(String),
    /// A ```` ```console ```` block: its commands, with what each prints.
    Console(Vec<(String, Vec<String>)>),
}

/// What marks a block the in-order run leaves out, and must say why.
const NOT_RUN: &str = "<!-- not run by tests/all/readme.rs:";

/// Every `sh` and `console` block of the README, in order, but those after a [`NOT_RUN`]
/// comment; the other fences (`json`, `toml`, `text`, ...) are files or synopses, not commands.
fn runnable_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut skip = false;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(why) = trimmed.strip_prefix(NOT_RUN) {
            assert!(why.trim().len() > 3, "a block left out says why: {line}");
            skip = true;
            continue;
        }
        let Some(fence) = trimmed.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        assert!(
            !matches!(fence, "bash" | "shell" | "shell-session"),
            "README: write shell blocks as sh or console, as the test reads them"
        );
        match fence {
            _ if skip => {}
            "sh" => blocks.push(Block::Sh(body.join("\n"))),
            "console" => {
                let text = format!("```console\n{}\n```\n", body.join("\n"));
                blocks.extend(console_blocks(&text).into_iter().map(Block::Console));
            }
            _ => {}
        }
        skip = false;
    }
    blocks
}

#[test]
fn every_block_of_the_readme_runs_in_order_from_a_fresh_clone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    assert!(
        blocks.len() >= 8,
        "the README has {} runnable blocks",
        blocks.len()
    );
    let registry = Registry::start();
    // A fresh clone: the files the README names, and nothing the suite made.
    let clone = tempfile::tempdir().unwrap();
    let testdata = clone.path().join("testdata");
    std::fs::create_dir(&testdata).unwrap();
    for entry in std::fs::read_dir(root.join("testdata")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), testdata.join(entry.file_name())).unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let cli = WasmOci::new();
    let bin = Path::new(env!("CARGO_BIN_EXE_wasm-oci")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The README's ports, as free ones of this machine.
    let ports = [
        ("8080", crate::support::free_port().to_string()),
        ("8081", crate::support::free_port().to_string()),
    ];
    let local = |text: &str| {
        let mut text = text.replace("localhost:5000", &registry.addr);
        for (port, free) in &ports {
            text = text.replace(port, free);
        }
        text
    };
    let shell = |script: &str| {
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(clone.path())
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("WASM_OCI_CACHE", cli.cache.path())
            .env("DOCKER_CONFIG", cli.cache.path().join("no-docker-config"))
            .env("WASM_OCI_LOG_FILE", cli.log_file())
            .env("WASM_OCI_LOG", crate::support::LOG_EVERYTHING)
            .env_remove("SSL_CERT_FILE")
            .env_remove("WASM_OCI_PLAIN_HTTP")
            .env_remove("WASM_OCI_POLICY")
            .env_remove("COSIGN_PASSWORD")
            .stdin(std::process::Stdio::null());
        cmd
    };
    for block in blocks {
        match block {
            Block::Sh(script) => {
                let script = local(&script);
                // Files, not pipes: a server the block leaves running holds no pipe open.
                let out_dir = tempfile::tempdir().unwrap();
                let (stdout, stderr) = (out_dir.path().join("out"), out_dir.path().join("err"));
                let mut child = shell(&script)
                    .stdout(std::fs::File::create(&stdout).unwrap())
                    .stderr(std::fs::File::create(&stderr).unwrap())
                    .spawn()
                    .unwrap();
                let status =
                    crate::support::exit_within(&mut child, std::time::Duration::from_secs(600));
                let printed = format!(
                    "{}{}",
                    std::fs::read_to_string(&stdout).unwrap_or_default(),
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
                assert!(
                    status.is_some_and(|s| s.success()),
                    "README block (exit {status:?}):\n{script}\nprinted\n{printed}"
                );
            }
            Block::Console(commands) => {
                for (command, expected) in commands {
                    let command = local(&command);
                    let out = shell(&command).output().unwrap();
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let actual: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
                    let expected: Vec<String> = expected.iter().map(|l| local(l)).collect();
                    assert!(
                        out.status.success() && lines_match(&expected, &actual),
                        "README, in order: `$ {command}` (exit {:?}) printed\n{}\nwhere the README says\n{}",
                        out.status.code(),
                        actual.join("\n"),
                        expected.join("\n")
                    );
                }
            }
        }
    }
}

/// What the README's inspect example leaves to `...` in a cache of any history: on a fresh
/// cache, one `Served:` line per manifest and blob, naming the registry.
#[test]
fn inspect_after_a_fresh_pull_names_the_registry_for_each_download() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let hello = crate::support::testdata("hello.wasm");
    cli.ok(&["push", hello.to_str().unwrap(), &reference]);
    cli.ok(&["pull", &reference]);
    let text = cli.ok(&["inspect", &reference]);
    let served: Vec<&str> = text.lines().filter(|l| l.starts_with("Served:")).collect();
    // The index the tag names, the wasm manifest, its config and its layer.
    assert_eq!(served.len(), 4, "{text}");
    for line in served {
        assert!(
            line_matches(
                &format!("Served:    sha256:[..] by {}", registry.addr),
                line
            ),
            "{text}"
        );
    }
    let listed = cli.ok(&["cache", "ls"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

#[test]
fn blocks_left_out_say_why_and_other_fences_are_not_run() {
    let readme = "<!-- not run by tests/all/readme.rs: needs root -->\n```sh\nrm -rf /\n```\n\
                  ```text\nwasm-oci cache rm REF\n```\n```sh\nwasm-oci run x\n```\n";
    let blocks = runnable_blocks(readme);
    assert_eq!(blocks.len(), 1);
    assert!(matches!(&blocks[0], Block::Sh(s) if s == "wasm-oci run x"));
}
