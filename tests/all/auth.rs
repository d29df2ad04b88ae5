//! Private registries: basic auth (htpasswd, bcrypt) over TLS with a private CA, credentials from
//! the command line, docker's config file and credential helpers, and no secret in any output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::support::{
    HELLO, Registry, Secure, WasmOci, describe, output_with_stdin, stderr, testdata,
    without_trust_store,
};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55word";
fn secure_registry() -> Registry {
    Registry::start_secure(Secure {
        tls: true,
        user: Some((USER, PASSWORD)),
    })
}

fn assert_no_secret(out: &Output) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        assert!(!text.contains(&b64), "the basic credentials leaked: {text}");
    }
}

/// `wasm-oci run --ca-file CA --username USER --password-stdin REFERENCE`, in `cli`.
fn run_with_ca(cli: &WasmOci, ca: &str, reference: &str) -> Command {
    let mut cmd = cli.command();
    cmd.args([
        "run",
        "--ca-file",
        ca,
        "--username",
        USER,
        "--password-stdin",
        reference,
    ]);
    cmd
}

#[test]
fn basic_auth_over_tls_with_a_private_ca() {
    let registry = secure_registry();
    let ca = registry.ca_file();
    let ca = ca.to_str().unwrap();
    let reference = registry.reference("private/hello:v1");
    let hello = testdata("hello.wasm");
    let cli = WasmOci::new();

    // No credentials: refused, and told how to log in.
    let out = cli.run(&["push", "--ca-file", ca, hello.to_str().unwrap(), &reference]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("registry {} refused access", registry.addr)),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("wasm-oci login"),
        "{}",
        describe(&out)
    );

    // --username and --password-stdin, as global options after the verb.
    let mut cmd = cli.command();
    cmd.args([
        "push",
        hello.to_str().unwrap(),
        &reference,
        "--ca-file",
        ca,
        "--username",
        USER,
        "--password-stdin",
    ]);
    let out = output_with_stdin(cmd, &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", describe(&out));

    // ... and before it, at trace level: nothing secret in the logs.
    let mut cmd = cli.command();
    cmd.args([
        "--ca-file",
        ca,
        "--username",
        USER,
        "--password-stdin",
        "run",
        &reference,
    ])
    .env("WASM_OCI_LOG", "trace")
    .env_remove("WASM_OCI_LOG_FILE");
    let out = output_with_stdin(cmd, PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
    assert_no_secret(&out);

    // A wrong password fails clearly.
    let fresh = WasmOci::new();
    let mut cmd = run_with_ca(&fresh, ca, &reference);
    cmd.env("WASM_OCI_LOG", "trace")
        .env_remove("WASM_OCI_LOG_FILE");
    let out = output_with_stdin(cmd, "wrong-password");
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused access"),
        "{}",
        describe(&out)
    );
    assert_no_secret(&out);

    // Without the CA: the certificate is not trusted, and never downgraded to plain HTTP.
    let fresh = WasmOci::new();
    let mut cmd = fresh.command();
    cmd.args(["run", "--username", USER, "--password-stdin", &reference]);
    let out = output_with_stdin(cmd, PASSWORD);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("cannot verify the TLS certificate"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("--ca-file"), "{}", describe(&out));
    // A certificate that is not trusted now will not be in a second: not retried.
    assert!(!stderr(&out).contains("retrying"), "{}", describe(&out));

    // SSL_CERT_FILE works as --ca-file does.
    let cli = WasmOci::new();
    let mut cmd = cli.command();
    cmd.args(["run", "--username", USER, "--password-stdin", &reference])
        .env("SSL_CERT_FILE", ca);
    let out = output_with_stdin(cmd, PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));
    // Every command of the suite logs at trace level to a file that is searched for the
    // suite's secrets when the test ends; this one logged the authenticated exchange (a Basic
    // registry and a bearer one are answered by the same client; the bearer test covers its log).
    let log = fs::read_to_string(cli.log_file()).unwrap();
    for expected in ["TRACE", "wasm_oci_fetcher", "hyper"] {
        assert!(log.contains(expected), "no {expected} in the trace log");
    }

    // A host with no trust store of its own (a minimal edge image): --ca-file is enough.
    let fresh = WasmOci::new();
    let mut cmd = run_with_ca(&fresh, ca, &reference);
    let _bare = without_trust_store(&mut cmd);
    let out = output_with_stdin(cmd, PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);

    // --insecure-skip-tls-verify works, loudly.
    let fresh = WasmOci::new();
    let mut cmd = fresh.command();
    cmd.args([
        "run",
        "--insecure-skip-tls-verify",
        "--username",
        USER,
        "--password-stdin",
        &reference,
    ]);
    let out = output_with_stdin(cmd, PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("WARNING: --insecure-skip-tls-verify"),
        "{}",
        describe(&out)
    );
}

#[test]
fn login_writes_docker_config_and_logout_removes_it() {
    let registry = secure_registry();
    let ca = registry.ca_file();
    let ca = ca.to_str().unwrap();
    let reference = registry.reference("private/hello:v1");
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.json");
    let cli = WasmOci::new();
    let docker = |mut cmd: Command| {
        cmd.env("DOCKER_CONFIG", home.path());
        cmd
    };

    let login = |password: &str| {
        let mut cmd = docker(cli.command());
        cmd.args([
            "login",
            &registry.addr,
            "--ca-file",
            ca,
            "--username",
            USER,
            "--password-stdin",
        ]);
        output_with_stdin(cmd, password)
    };

    let out = login("wrong-password");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!config.exists(), "nothing is stored for a failed login");

    let out = login(PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"),
        "{}",
        describe(&out)
    );
    assert_no_secret(&out);
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(
        stored["auths"][&registry.addr]["auth"].is_string(),
        "{stored}"
    );

    // Now every verb finds the credentials on its own.
    let out = docker(cli.command())
        .args([
            "push",
            "--ca-file",
            ca,
            testdata("hello.wasm").to_str().unwrap(),
            &reference,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let fresh = WasmOci::new();
    let out = docker(fresh.command())
        .args(["run", "--ca-file", ca, &reference])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );

    let out = docker(cli.command())
        .args(["logout", &registry.addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(stored["auths"].get(&registry.addr).is_none(), "{stored}");
    let out = docker(WasmOci::new().command())
        .args(["run", "--ca-file", ca, &reference])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
}

#[test]
fn credential_helpers_are_asked() {
    let registry = secure_registry();
    let ca = registry.ca_file();
    let ca = ca.to_str().unwrap();
    let reference = registry.reference("private/hello:v1");
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-wasmocitest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             read server\n\
             case \"$1\" in get) ;; *) exit 1 ;; esac\n\
             [ \"$server\" = \"{addr}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            addr = registry.addr
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        home.path().join("config.json"),
        format!(
            r#"{{"credHelpers": {{"{}": "wasmocitest"}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let cli = WasmOci::new();
    let out = cli
        .command()
        .args([
            "push",
            "--ca-file",
            ca,
            testdata("hello.wasm").to_str().unwrap(),
            &reference,
        ])
        .env("DOCKER_CONFIG", home.path())
        .env("PATH", &path)
        .env("WASM_OCI_LOG", "trace")
        .env_remove("WASM_OCI_LOG_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_no_secret(&out);
    let out = WasmOci::new()
        .command()
        .args(["run", "--ca-file", ca, &reference])
        .env("DOCKER_CONFIG", home.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
}
