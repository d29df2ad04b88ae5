//! The compiled-code cache as a user meets it: `cache ls` shows it, local files get it too, and
//! a cache that cannot keep it (read-only, another user's) costs a compile, not the run.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{HELLO, Registry, WasmOci, describe, stderr, testdata};

fn pushed_hello(registry: &Registry) -> String {
    let reference = registry.reference("hello:v1");
    WasmOci::new().ok(&["push", testdata("hello.wasm").to_str().unwrap(), &reference]);
    reference
}

/// The compiled files in the cache at `cache`.
fn compiled_files(cache: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for key in fs::read_dir(cache.join("v1/compiled"))
        .into_iter()
        .flatten()
    {
        for file in fs::read_dir(key.unwrap().path()).unwrap() {
            found.push(file.unwrap().file_name().into_string().unwrap());
        }
    }
    found.sort();
    found
}

#[test]
fn cache_ls_shows_compiled_code_and_ls_q_prints_references_only() {
    let registry = Registry::start();
    let reference = pushed_hello(&registry);
    let cli = WasmOci::new();
    cli.ok(&["pull", &reference]);
    let table = cli.ok(&["cache", "ls"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["REFERENCE", "DIGEST", "SIZE", "COMPILED", "LAST", "USED"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[4]), (reference.as_str(), "-"), "{table}");
    let listed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed[0]["compiled"], 0);

    assert_eq!(cli.ok(&["run", &reference]), HELLO);
    let bytes: u64 = fs::read_dir(cli.cache.path().join("v1/compiled"))
        .unwrap()
        .flat_map(|k| fs::read_dir(k.unwrap().path()).unwrap())
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes > 0);
    let listed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed[0]["compiled"], bytes);
    let table = cli.ok(&["cache", "ls"]);
    let row = table.lines().nth(1).unwrap();
    assert!(!row.split_whitespace().any(|w| w == "-"), "{table}");

    assert_eq!(cli.ok(&["cache", "ls", "-q"]), format!("{reference}\n"));
    assert_eq!(
        cli.ok(&["cache", "ls", "--quiet"]),
        format!("{reference}\n")
    );
    let out = cli.run(&["cache", "ls", "-q", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn a_local_file_is_compiled_once_and_its_code_kept_by_digest() {
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    fs::copy(testdata("hello.wasm"), &file).unwrap();
    assert_eq!(cli.ok(&["run", file.to_str().unwrap()]), HELLO);
    let digest = wasm_oci_cache::Digest::of(&fs::read(&file).unwrap());
    assert_eq!(
        compiled_files(cli.cache.path()),
        [format!("{}.module", digest.hex())]
    );
    let log = fs::read_to_string(cli.log_file()).unwrap();
    assert_eq!(log.matches("precompiled cache hit").count(), 0, "{log}");
    assert_eq!(cli.ok(&["run", file.to_str().unwrap()]), HELLO);
    let log = fs::read_to_string(cli.log_file()).unwrap();
    assert_eq!(log.matches("precompiled cache hit").count(), 1, "{log}");
    // A local file's code is no reference's: `cache ls` counts it apart.
    let out = cli.run(&["cache", "ls"]);
    assert!(
        stderr(&out).contains("of compiled code for 1 module that no reference names"),
        "{}",
        describe(&out)
    );
}

/// A bind mount of `dir` onto itself, read-only; unmounted when dropped.
struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    fn mount(dir: &'a Path) -> ReadOnly<'a> {
        for args in [
            vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
            vec!["-o", "remount,bind,ro", dir.to_str().unwrap()],
        ] {
            let out = Command::new("mount").args(&args).output().unwrap();
            assert!(out.status.success(), "mount {args:?}: {}", describe(&out));
        }
        ReadOnly(dir)
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// The lines of `err` that say compiled code was not kept.
fn not_kept(err: &str) -> usize {
    err.lines()
        .filter(|l| l.contains("was not kept, so it is compiled again on every start"))
        .count()
}

#[test]
fn a_read_only_cache_runs_an_engine_variant_it_has_not_compiled_yet() {
    let registry = Registry::start();
    let reference = pushed_hello(&registry);
    let cli = WasmOci::new();
    cli.ok(&["pull", &reference]);
    let before = compiled_files(cli.cache.path());
    let _ro = ReadOnly::mount(cli.cache.path());
    for flags in [
        &["--fuel", "100000000"][..],
        &["--timeout", "30s"][..],
        &[][..],
    ] {
        let mut args = vec!["run", "--pull", "never"];
        args.extend(flags);
        args.push(&reference);
        let out = cli
            .command()
            .env("WASM_OCI_LOG", "warn")
            .env_remove("WASM_OCI_LOG_FILE")
            .env_remove("WASM_OCI_LOG_FILE")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
        let err = stderr(&out);
        assert_eq!(not_kept(&err), 1, "{args:?}: {err}");
        assert!(err.contains("Read-only file system"), "{err}");
    }
    assert_eq!(compiled_files(cli.cache.path()), before);
}

#[test]
fn a_cache_another_user_owns_runs_without_keeping_code_there() {
    let registry = Registry::start();
    let reference = pushed_hello(&registry);
    let cli = WasmOci::new();
    cli.ok(&["pull", &reference]);
    // A cache someone else owns (root runs with a user's cache): whatever is compiled is not
    // kept where that user could swap it, and nothing found there is loaded.
    let out = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(cli.cache.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let out = cli
        .command()
        .env("WASM_OCI_LOG", "warn")
        .env_remove("WASM_OCI_LOG_FILE")
        .args(["run", "--pull", "never", "--fuel", "100000000", &reference])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
    let err = stderr(&out);
    assert_eq!(not_kept(&err), 1, "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_eq!(compiled_files(cli.cache.path()), Vec::<String>::new());
}
