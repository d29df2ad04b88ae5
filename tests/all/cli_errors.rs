//! What a user reads when something goes wrong, and what every verb reports: retries as one
//! plain line, diagnoses that point the right way at once, causes printed once, `digest`
//! meaning the manifest in every output, and result lines on stdout.

use std::fs;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{
    Fault, Proxy, Registry, Secure, WasmOci, describe, free_port, output_with_stdin, padded_hello,
    secret, stderr, testdata,
};

/// `cli`'s command as a user runs it: the default log level, and the log on stderr.
fn as_a_user(cli: &WasmOci) -> Command {
    let mut cmd = cli.command();
    cmd.env_remove("WASM_OCI_LOG")
        .env_remove("WASM_OCI_LOG_FILE");
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of stderr that are about retrying.
fn retry_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("retry"))
        .map(str::to_owned)
        .collect()
}

/// A name of this host that resolves to 127.0.0.1 but is not `localhost` or an address: a
/// registry named so is spoken to over TLS, as any remote one (only loopback ones are probed).
/// The host's own name where /etc/hosts says so, else `0.0.0.0`, which Linux connects to
/// loopback.
fn loopback_by_another_name() -> String {
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hostname = hostname.trim();
    let resolves_to_loopback = !hostname.is_empty()
        && hostname != "localhost"
        && (hostname, 1)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST));
    if resolves_to_loopback {
        hostname.to_owned()
    } else {
        "0.0.0.0".to_owned()
    }
}

#[test]
fn retries_are_one_plain_line_each() {
    let registry = Registry::start();
    WasmOci::new().ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &registry.reference("hello:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, Fault::Every503);
    let out = as_a_user(&WasmOci::new())
        .args(["pull", &proxy.reference("hello:v1")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let lines = retry_lines(&out);
    assert!(!lines.is_empty(), "{}", describe(&out));
    for line in &lines {
        // `retrying in 0.2 s: the registry answered 503`, nothing more.
        let rest = line
            .strip_prefix("retrying in ")
            .unwrap_or_else(|| panic!("{line:?}"));
        let (head, cause) = rest.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
        let wait = head.split(" s").next().unwrap();
        assert!(wait.parse::<f64>().is_ok(), "{line:?}");
        assert_eq!(cause, "the registry answered 503", "{line:?}");
    }
    assert!(!stderr(&out).contains('\x1b'), "{}", describe(&out));
    assert!(!stderr(&out).contains("WARN"), "{}", describe(&out));
}

#[test]
fn a_resumed_download_says_so_in_one_plain_line() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wasm");
    fs::write(&file, padded_hello(1 << 20)).unwrap();
    WasmOci::new().ok(&[
        "push",
        file.to_str().unwrap(),
        &registry.reference("big:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, Fault::CutFirstBlob);
    let out = as_a_user(&WasmOci::new())
        .args(["pull", &proxy.reference("big:v1")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let lines = retry_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let line = &lines[0];
    assert!(line.starts_with("retrying in "), "{line:?}");
    assert!(line.contains(" s from byte "), "{line:?}");
    assert!(line.contains(": the connection broke off"), "{line:?}");
    assert!(!line.contains("Error {"), "no Debug dump: {line:?}");
}

#[test]
fn a_plain_http_registry_reached_over_tls_is_named_at_once() {
    let registry = Registry::start();
    let port = registry.addr.rsplit_once(':').unwrap().1;
    let host = format!("{}:{port}", loopback_by_another_name());
    let cli = WasmOci::new();
    cli.ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &registry.reference("hello:v1"),
    ]);
    let reference = format!("{host}/hello:v1");
    let out = as_a_user(&cli).args(["pull", &reference]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry {host} speaks plain HTTP, not HTTPS: pass --plain-http"
        )),
        "{err}"
    );
    assert!(retry_lines(&out).is_empty(), "no retry can help: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // And the advice is right.
    let out = as_a_user(&cli)
        .args(["--plain-http", "pull", &reference])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_tls_registry_spoken_to_in_plain_http_is_named_at_once() {
    let registry = Registry::start_secure(Secure {
        tls: true,
        user: None,
    });
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let ca = registry.ca_file();
    cli.ok(&[
        "--ca-file",
        ca.to_str().unwrap(),
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &reference,
    ]);
    let out = as_a_user(&cli)
        .args(["--plain-http", "pull", &reference])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry {} speaks HTTPS, not plain HTTP: drop --plain-http",
            registry.addr
        )),
        "{err}"
    );
    assert!(retry_lines(&out).is_empty(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_unreachable_registry_is_reported_at_once_without_pointless_advice() {
    let cli = WasmOci::new();
    // Nothing listens on a loopback port: no retries, and plain HTTP (what the probe of a
    // silent loopback registry settles on) is not suggested again.
    let reference = format!("127.0.0.1:{}/hello:v1", free_port());
    let out = as_a_user(&cli).args(["pull", &reference]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(retry_lines(&out).is_empty(), "{err}");
    assert!(err.contains("cannot reach registry"), "{err}");
    assert!(!err.contains("--plain-http"), "{err}");
    assert_eq!(
        err.matches(&reference).count(),
        1,
        "the reference once: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // --plain-http given, to a name that is not loopback's: still no advice to give it.
    let reference = format!("{}:{}/hello:v1", loopback_by_another_name(), free_port());
    let out = as_a_user(&cli)
        .args(["--plain-http", "pull", &reference])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot reach registry"), "{err}");
    assert!(!err.contains("--plain-http"), "{err}");
}

#[test]
fn a_file_that_is_not_wasm_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("x.txt");
    fs::write(&text, "hello world\nsecond line\n").unwrap();
    let out = WasmOci::new().run(&["run", text.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "Error: {} is not a WebAssembly module (it starts with \"hello world\")\n",
            text.display()
        )
    );
    // Its first bytes are escaped: a file cannot write to the terminal through the error.
    let evil = dir.path().join("evil.bin");
    fs::write(&evil, b"\x1b]0;owned\x07\x1b[2J").unwrap();
    let out = WasmOci::new().run(&["run", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("is not a WebAssembly module"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_io_error_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // A cache under a file: creating it fails with ENOTDIR.
    let blocker = dir.path().join("file");
    fs::write(&blocker, "").unwrap();
    let out = WasmOci::new()
        .command()
        .env("WASM_OCI_CACHE", blocker.join("cache"))
        .args(["cache", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("(os error").count(), 1, "{err}");

    // The fetcher's own I/O error: pushing a file that is not there.
    let registry = Registry::start();
    let missing = dir.path().join("missing.wasm");
    let out = WasmOci::new().run(&[
        "push",
        missing.to_str().unwrap(),
        &registry.reference("x:1"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("(os error").count(), 1, "{err}");
    assert_eq!(err.matches("missing.wasm").count(), 1, "{err}");
}

#[test]
fn a_wrong_password_at_login_is_called_refused_credentials() {
    const USER: &str = "alice";
    let password = secret("correct horse battery");
    let registry = Registry::start_secure(Secure {
        tls: false,
        user: Some((USER, "correct horse battery")),
    });
    let home = tempfile::tempdir().unwrap();
    let cli = WasmOci::new();
    let login = |password: &str, json: bool| {
        let mut cmd = cli.command();
        cmd.env("DOCKER_CONFIG", home.path()).args([
            "login",
            &registry.addr,
            "--username",
            USER,
            "--password-stdin",
        ]);
        if json {
            cmd.arg("--json");
        }
        output_with_stdin(cmd, password)
    };
    let out = login("wrong-password", false);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry {} refused the credentials",
            registry.addr
        )),
        "{err}"
    );
    assert!(
        !err.contains("wasm-oci login"),
        "no advice to do what failed: {err}"
    );
    assert!(
        !err.contains("wasm-oci/login"),
        "no made-up reference: {err}"
    );

    let out = login(password, true);
    assert!(out.status.success(), "{}", describe(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["registry"], registry.addr);
    assert_eq!(result["username"], USER);
    assert_eq!(
        result["stored_in"],
        home.path().join("config.json").to_str().unwrap()
    );
    assert!(!stdout(&out).contains(password) && !stderr(&out).contains(password));
}

/// Pushes hello and returns the push's JSON.
fn push(cli: &WasmOci, reference: &str) -> serde_json::Value {
    let out = cli.ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        reference,
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn json(cli: &WasmOci, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&cli.ok(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn digest_means_the_manifest_in_every_verbs_json() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let cli = WasmOci::new();
    let pushed = push(&cli, &reference);
    // push names both: `digest` what the tag names (the index of the wasm manifest and its
    // Linux image, what docker and the kubelet pin), `manifest_digest` the wasm manifest.
    let (index, digest, layer) = (
        &pushed["digest"],
        &pushed["manifest_digest"],
        &pushed["layer_digest"],
    );
    assert!(digest.is_string(), "{pushed}");
    assert_ne!(index, digest);
    assert_ne!(digest, layer);
    // Either pins: what push prints is what @sha256: pins.
    for pin in [index, digest] {
        let pinned = format!("{}@{}", registry.reference("hello"), pin.as_str().unwrap());
        assert_eq!(json(&cli, &["pull", &pinned, "--json"])["digest"], *digest);
    }

    let node = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layout = layout.to_str().unwrap();
    let each = [
        json(&node, &["pull", &reference, "--json"]),
        json(&node, &["compile", &reference, "--json"]),
        json(&node, &["inspect", &reference, "--json"]),
        json(&node, &["cache", "ls", "--json"])[0].clone(),
        json(&node, &["save", &reference, "-o", layout, "--json"])[0].clone(),
        json(&node, &["prefetch", "--no-compile", &reference, "--json"])[0].clone(),
        json(&WasmOci::new(), &["load", layout, "--json"])[0].clone(),
    ];
    for (i, reported) in each.iter().enumerate() {
        assert_eq!(reported["digest"], *digest, "{i}: {reported}");
        assert_eq!(reported["layer_digest"], *layer, "{i}: {reported}");
        assert!(reported.get("manifest_digest").is_none(), "{i}: {reported}");
    }
}

#[test]
fn result_lines_go_to_stdout_and_agree_on_the_digest() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let cli = WasmOci::new();
    let pushed = push(&cli, &reference);
    let index = pushed["digest"].as_str().unwrap().to_owned();
    let digest = pushed["manifest_digest"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layout = layout.to_str().unwrap();
    let node = WasmOci::new();
    for (cli, args, line) in [
        (
            &cli,
            vec!["push", testdata("hello.wasm").to_str().unwrap(), &reference],
            format!("Pushed: {reference}\nSize: 171\nDigest: {index}\nManifest: {digest}\n"),
        ),
        (
            &node,
            vec!["pull", &reference],
            format!("Pulled: {reference}\nSize: 171\nDigest: {digest}\n"),
        ),
        (
            &node,
            vec!["compile", &reference],
            format!("Compiled: {reference} ({digest})\n"),
        ),
        (
            &node,
            vec!["save", &reference, "-o", layout],
            format!("Saved: {reference} ({digest})\n"),
        ),
        (
            &WasmOci::new(),
            vec!["load", layout],
            format!("Loaded: {reference} ({digest})\n"),
        ),
    ] {
        let out = as_a_user(cli).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        assert_eq!(stdout(&out), line, "{args:?}");
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    let listed = node.ok(&["cache", "ls"]);
    assert!(listed.contains(&digest[..19]), "{listed}");
    let inspected = node.ok(&["inspect", &reference]);
    assert!(
        inspected.contains(&format!("Digest:    {digest}")),
        "{inspected}"
    );
}

#[test]
fn inspect_reads_a_component_section_by_section_as_push_read_it_whole() {
    let component = &crate::support::guests().hello_component;
    let registry = Registry::start();
    let reference = registry.reference("component:v1");
    let cli = WasmOci::new();
    push_file(&cli, component, &reference);
    // push read the file whole into the config's component section; inspect reads only the
    // import and export sections, of the file and of the cached blob.
    let config = manifest_config(&registry, "component", "v1");
    for module in [component.to_str().unwrap(), reference.as_str()] {
        let inspected = json(&cli, &["inspect", "--json", module]);
        assert_eq!(inspected["kind"], "component", "{inspected}");
        assert_eq!(
            inspected["world"], config["component"]["target"],
            "{inspected}"
        );
        let names = |items: &serde_json::Value| -> Vec<String> {
            items
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().rsplit_once(" (").unwrap().0.to_owned())
                .collect()
        };
        assert_eq!(
            names(&inspected["imports"]),
            config["component"]["imports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            names(&inspected["exports"]).len(),
            config["component"]["exports"].as_array().unwrap().len()
        );
    }
}

fn push_file(cli: &WasmOci, file: &Path, reference: &str) {
    cli.ok(&["push", file.to_str().unwrap(), reference]);
}

/// The config blob of `repo:tag`, read from the registry.
fn manifest_config(registry: &Registry, repo: &str, tag: &str) -> serde_json::Value {
    let (_, manifest) = crate::support::wasm_manifest(registry, repo, tag);
    let digest = manifest["config"]["digest"].as_str().unwrap();
    let response = crate::support::http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        b"",
    )
    .unwrap();
    serde_json::from_slice(&response.body).unwrap()
}

#[test]
fn inspect_of_a_big_module_does_not_hold_it() {
    // 96 MiB of module under a 64 MiB limit on the heap: reading it whole fails.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wasm");
    fs::write(&file, padded_hello(96 << 20)).unwrap();
    let registry = Registry::start();
    let reference = registry.reference("big:v1");
    let cli = WasmOci::new();
    cli.ok(&["push", file.to_str().unwrap(), &reference]);
    cli.ok(&["pull", &reference]);
    for module in [file.to_str().unwrap(), reference.as_str()] {
        let limited = cli.command();
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--data={}", 64 << 20)).arg("--");
        cmd.arg(limited.get_program())
            .args(["inspect", "--json", module]);
        for (k, v) in limited.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.output().expect("prlimit (util-linux) is not installed");
        assert!(out.status.success(), "{module}: {}", describe(&out));
        let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(inspected["kind"], "module", "{inspected}");
        assert!(
            inspected["imports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i.as_str().unwrap().contains("fd_write")),
            "{inspected}"
        );
    }
}
