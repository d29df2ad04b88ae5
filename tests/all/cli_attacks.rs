//! Red team of the command line: what a terminal shows when the registry is hostile. A
//! module's names and a registry's text (error bodies, annotations) are registry-controlled;
//! wasm-oci's own lines must print them escaped, as `inspect` already does, never raw (an ANSI
//! escape, a carriage return or a newline that forges a second `Pulled:`/`Valid:` line).

use std::fs;

use crate::support::{
    Artifact, MANIFEST_TYPE, Registry, Reply, Server, WasmOci, assert_no_ansi, describe, honest,
    sha256, stderr,
};

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

#[test]
fn registry_text_reaches_the_terminal_escaped() {
    let hostile = "\u{1b}[2J\u{1b}]0;owned\u{7}\rall is well";
    let envelope = serde_json::json!({
        "errors": [{"code": "UNSUPPORTED", "message": hostile}]
    })
    .to_string();
    for body in [envelope, hostile.to_owned()] {
        let registry = Server::start(move |request| {
            if request.path == "/v2/" {
                Reply::new(200)
            } else {
                Reply::new(400).body(body.clone())
            }
        });
        let out = WasmOci::new().run(&["pull", &format!("{}/hello:v1", registry.addr)]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert_no_ansi(&out);
        assert!(
            stderr(&out).contains(r"\u{1b}[2J\u{1b}]0;owned\u{7}\rall is well"),
            "{}",
            describe(&out)
        );
    }

    // A manifest's strings too: its media types are in the message of a non-wasm artifact.
    let mut artifact = Artifact::hello();
    let manifest = String::from_utf8(artifact.manifest.clone())
        .unwrap()
        .replace("\"application/wasm\"", "\"application/\\u001b[31mevil\"");
    artifact.manifest = manifest.into_bytes();
    let registry = Server::start(honest(artifact));
    let out = WasmOci::new().run(&["pull", &format!("{}/hello:v1", registry.addr)]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_no_ansi(&out);
    assert!(
        stderr(&out).contains(r"application/\u{1b}[31mevil"),
        "{}",
        describe(&out)
    );
}

/// Red team: `inspect` and `pull -o DIR` print registry-controlled text raw. The config's
/// media type, a second (non-wasm) layer's media type and digest, the wasm's own import and
/// export names, and the layer's title (as the written file's name) all come from the
/// registry; none goes through `printable`.
#[test]
fn inspect_and_pull_print_registry_text_escaped() {
    const EVIL: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}";
    let wasm = wat::parse_str(
        r#"(module (import "\1b[2J\1b]0;owned\07" "f" (func))
             (func (export "\1b[31m_start")))"#,
    )
    .unwrap();
    let config = serde_json::to_vec(&serde_json::json!({})).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": format!("application/vnd.wasm.config.v0+json{EVIL}"),
            "digest": sha256(&config), "size": config.len(),
        },
        "layers": [
            {
                "mediaType": "application/wasm",
                "digest": sha256(&wasm), "size": wasm.len(),
                "annotations": {"org.opencontainers.image.title": format!("{EVIL}.wasm")},
            },
            {
                "mediaType": format!("text/plain{EVIL}"),
                "digest": format!("sha256:{EVIL}"), "size": 1,
            },
        ],
    }))
    .unwrap();
    let artifact = Artifact {
        wasm,
        config,
        manifest,
    };
    let registry = Server::start(honest(artifact));
    let node = WasmOci::new();
    let reference = format!("{}/evil:v1", registry.addr);
    let out_dir = tempfile::tempdir().unwrap();
    let pulled = node.run(&["pull", &reference, "-o", out_dir.path().to_str().unwrap()]);
    let inspected = node.run(&["inspect", &reference]);
    let mut raw = Vec::new();
    for (what, out) in [("pull -o", &pulled), ("inspect", &inspected)] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in all.lines() {
            if line.contains('\u{1b}') || line.contains('\u{7}') {
                raw.push(format!("{what}: {line:?}"));
            }
        }
    }
    assert!(
        raw.is_empty(),
        "raw control characters of the registry reached the terminal:\n{}",
        raw.join("\n")
    );
}
