//! Red team of the command line: what a terminal shows when the registry (here: the module
//! bytes it serves) is hostile. A module's names are registry-controlled text; wasm-oci's own
//! `Error:` lines must print them escaped, as `inspect` already does, never raw (an ANSI escape,
//! a carriage return or a newline that forges a second `Pulled:`/`Valid:` line).

use std::fs;

use crate::support::{Registry, WasmOci, describe, stderr};

/// Text a hostile module names itself with: colours, a carriage return and a forged line.
const EVIL: &str = "\x1b[31mRED\rPulled: evil\nValid: forged";

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn section(id: u8, body: &[u8]) -> Vec<u8> {
    let mut s = vec![id];
    s.extend(leb(body.len()));
    s.extend(body);
    s
}

fn name(s: &str) -> Vec<u8> {
    let mut v = leb(s.len());
    v.extend(s.as_bytes());
    v
}

fn module(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    for s in sections {
        m.extend(s);
    }
    m
}

fn types() -> Vec<u8> {
    section(1, &[1, 0x60, 0, 0])
}

/// A core module that imports `EVIL::EVIL`, which wasm-oci does not provide.
fn unknown_import() -> Vec<u8> {
    let mut imports = leb(1);
    imports.extend(name(EVIL));
    imports.extend(name(EVIL));
    imports.extend([0, 0]);
    module(&[types(), section(2, &imports)])
}

/// A core module that exports `EVIL` twice: invalid, and the validator quotes the name.
fn duplicate_export() -> Vec<u8> {
    let mut exports = leb(2);
    for _ in 0..2 {
        exports.extend(name(EVIL));
        exports.extend([0, 0]);
    }
    module(&[
        types(),
        section(3, &[1, 0]),
        section(7, &exports),
        section(10, &[1, 2, 0, 0x0b]),
    ])
}

/// A `_start` that traps at once, its function named `EVIL` in the name section.
fn trapping_named() -> Vec<u8> {
    let mut exports = leb(1);
    exports.extend(name("_start"));
    exports.extend([0, 0]);
    let mut sub = leb(1);
    sub.extend(leb(0));
    sub.extend(name(EVIL));
    let mut custom = name("name");
    custom.push(1);
    custom.extend(leb(sub.len()));
    custom.extend(sub);
    module(&[
        types(),
        section(3, &[1, 0]),
        section(7, &exports),
        section(10, &[1, 3, 0, 0x00, 0x0b]),
        section(0, &custom),
    ])
}

/// Pushes `bytes` as `repo:v1` and runs it from the registry; returns the output.
fn run_from_registry(bytes: &[u8], repo: &str) -> std::process::Output {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.wasm");
    fs::write(&file, bytes).unwrap();
    let reference = registry.reference(&format!("{repo}:v1"));
    let pushed = cli.run(&["push", file.to_str().unwrap(), &reference]);
    assert!(pushed.status.success(), "{}", describe(&pushed));
    let mut cmd = cli.command();
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd.args(["run", &reference]);
    cmd.output().unwrap()
}

fn assert_escaped(out: &std::process::Output) {
    let err = stderr(out);
    assert!(!out.status.success(), "{}", describe(out));
    assert!(
        err.contains("RED"),
        "the hostile name is not reported at all: {}",
        describe(out)
    );
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "a module's name reached stderr raw (ANSI escape / carriage return): {err:?}"
    );
    assert!(
        !err.lines().any(|l| l.starts_with("Valid: forged")),
        "a module's name forged a line on stderr: {err:?}"
    );
}

/// Hole: `run REF` of a module that imports a hostile name prints wasmtime's
/// "unknown import: `...` has not been defined" with the name raw.
#[test]
fn an_unknown_import_name_is_printed_escaped() {
    let out = run_from_registry(&unknown_import(), "imports");
    assert_escaped(&out);
}

/// Hole: `run REF` of an invalid module prints the validator's message, which quotes the
/// duplicated export name raw.
#[test]
fn a_validation_error_quoting_a_name_is_printed_escaped() {
    let out = run_from_registry(&duplicate_export(), "dupexport");
    assert_escaped(&out);
}

/// A trap's wasm backtrace (printed by wasm-oci, after `Error: the guest trapped`) names the
/// name section's functions: no escape sequence or carriage return of theirs reaches the
/// terminal. A newline in a name still starts a line: the guest, which could write anything
/// to its own stderr while it ran, gains nothing by it.
#[test]
fn a_trap_backtrace_prints_function_names_escaped() {
    let out = run_from_registry(&trapping_named(), "trapname");
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(err.contains("RED"), "{}", describe(&out));
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "a module's name reached stderr raw (ANSI escape / carriage return): {err:?}"
    );
}

/// Hole: `compile REF` and `prefetch REF` (which precompiles) print the same validator
/// message raw: an edge node's log of a prefetch shows the module's escapes.
#[test]
fn compile_and_prefetch_print_a_hostile_modules_names_escaped() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.wasm");
    fs::write(&file, duplicate_export()).unwrap();
    let reference = registry.reference("dupcompile:v1");
    let pushed = cli.run(&["push", file.to_str().unwrap(), &reference]);
    assert!(pushed.status.success(), "{}", describe(&pushed));
    let outs: Vec<_> = ["prefetch", "compile"]
        .into_iter()
        .map(|verb| (verb, cli.run(&[verb, &reference])))
        .collect();
    for (verb, out) in &outs {
        eprintln!("{verb}: {}", describe(out));
    }
    for (_, out) in &outs {
        assert_escaped(out);
    }
}

/// Hole: `prune --dry-run` counts the blobs of the references it would remove twice, once
/// with the reference and again as blobs "no remaining reference uses" (they are still on
/// disk in a dry run), whenever they are older than the sweep's grace: it promises to free
/// more blobs and bytes than the real prune then frees.
#[test]
fn a_dry_run_prune_says_what_the_prune_then_does() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = crate::support::testdata("hello.wasm");
    let reference = registry.reference("dryrun:v1");
    cli.ok(&["push", hello.to_str().unwrap(), &reference]);
    cli.ok(&["pull", &reference]);
    // An hour later (libfaketime): the blobs are older than the sweep's ten-minute grace,
    // as any cache's are in real use.
    let before = cli.blobs();
    let report = |args: &[&str]| -> serde_json::Value {
        let out = cli
            .command()
            .env(
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            )
            .env("FAKETIME", "+1h")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dry = report(&["cache", "prune", "--max-size", "1", "--dry-run", "--json"]);
    assert_eq!(cli.blobs(), before, "--dry-run removed something");
    let real = report(&["cache", "prune", "--max-size", "1", "--json"]);
    assert_eq!(
        real["removed_refs"], dry["removed_refs"],
        "dry {dry}\nreal {real}"
    );
    assert_eq!(
        (&dry["removed_blobs"], &dry["freed"]),
        (&real["removed_blobs"], &real["freed"]),
        "the dry run promised other numbers than the prune delivered:\ndry  {dry}\nreal {real}"
    );
}
