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
