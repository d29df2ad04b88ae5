//! What a newcomer trips on with private registries, TLS and credentials (issue 27): a
//! self-signed certificate made the usual way, a credential helper that is not installed,
//! credentials stored in clear, a registry spoken to in the wrong scheme, a name that does not
//! resolve.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::support::{
    Registry, Secure, WasmOci, describe, free_port, http, openssl, secret, stderr, testdata,
};

/// The CLI as a user runs it: its warnings on stderr, not in a log file.
fn as_a_user(cli: &WasmOci) -> Command {
    let mut cmd = cli.command();
    cmd.env_remove("WASM_OCI_LOG")
        .env_remove("WASM_OCI_LOG_FILE");
    cmd
}

fn run(cmd: &mut Command, args: &[&str]) -> Output {
    cmd.args(args).output().unwrap()
}

/// A Docker Distribution registry serving TLS with `cert` and `key` (files in `dir`).
struct TlsRegistry {
    child: Child,
    addr: String,
}

impl TlsRegistry {
    fn start(dir: &Path, cert: &str, key: &str) -> TlsRegistry {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join(format!("{cert}.yml"));
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
                dir.join(format!("{cert}.data")).display(),
                dir.join(cert).display(),
                dir.join(key).display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: run ./scripts/test");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        // A TLS registry answers a plain-HTTP request with 400: it is up.
        while http(&addr, "GET", "/v2/", &[], b"").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        TlsRegistry { child, addr }
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl req -x509` as guides write it: a self-signed certificate that the default
/// configuration marks `CA:TRUE`, for `san`.
fn self_signed(dir: &Path, name: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            "/CN=wasm-oci self-signed",
            "-addext",
            &format!("subjectAltName={san}"),
        ],
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join(format!("{name}.crt")))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CA:TRUE"),
        "the usual way makes a CA certificate: {}",
        describe(&out)
    );
}

#[test]
fn a_self_signed_certificate_listed_with_ca_file_is_trusted_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server", "IP:127.0.0.1");
    let registry = TlsRegistry::start(dir.path(), "server.crt", "server.key");
    let reference = format!("{}/tools/hello:v1", registry.addr);
    let ca = dir.path().join("server.crt");
    let ca = ca.to_str().unwrap();
    let hello = testdata("hello.wasm");
    let cli = WasmOci::new();
    // Not listed: refused, and the advice is what then works.
    let out = run(&mut as_a_user(&cli), &["pull", &reference]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("--ca-file"), "{}", describe(&out));
    cli.ok(&["push", "--ca-file", ca, hello.to_str().unwrap(), &reference]);
    cli.ok(&["pull", "--ca-file", ca, &reference]);
    // Listed as it is, it is trusted for its own names only.
    self_signed(dir.path(), "other", "DNS:other.example");
    let other = TlsRegistry::start(dir.path(), "other.crt", "other.key");
    let listed = dir.path().join("other.crt");
    let out = run(
        &mut as_a_user(&cli),
        &[
            "pull",
            "--ca-file",
            listed.to_str().unwrap(),
            &format!("{}/tools/hello:v1", other.addr),
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("cannot verify the TLS certificate"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_credential_helper_that_is_not_installed_is_named_and_public_pulls_go_on() {
    let registry = Registry::start();
    let reference = registry.reference("tools/hello:v1");
    let cli = WasmOci::new();
    cli.ok(&["push", testdata("hello.wasm").to_str().unwrap(), &reference]);
    let docker = tempfile::tempdir().unwrap();
    let config = docker.path().join("config.json");
    fs::write(&config, r#"{"credsStore":"desktop"}"#).unwrap();
    let out = run(
        as_a_user(&cli).env("DOCKER_CONFIG", docker.path()),
        &["pull", &reference],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert!(
        said.contains("docker-credential-desktop")
            && said.contains(config.to_str().unwrap())
            && said.contains("not installed"),
        "{said}"
    );
}

#[test]
fn login_over_plain_http_warns_that_the_password_is_in_clear_and_stored_so() {
    let password = secret("egress-friction-pw");
    let registry = Registry::start_secure(Secure {
        user: Some(("alice", "egress-friction-pw")),
        ..Default::default()
    });
    let docker = tempfile::tempdir().unwrap();
    let cli = WasmOci::new();
    let mut cmd = as_a_user(&cli);
    cmd.env("DOCKER_CONFIG", docker.path()).args([
        "login",
        &registry.addr,
        "-u",
        "alice",
        "--password-stdin",
    ]);
    let out = crate::support::output_with_stdin(cmd, password);
    assert!(out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert!(said.contains("plain HTTP"), "{said}");
    assert!(
        said.contains("stored unencrypted")
            && said.contains(docker.path().join("config.json").to_str().unwrap()),
        "{said}"
    );
    assert!(!said.contains(password), "{said}");
}

#[test]
fn plain_http_against_a_tls_registry_reads_as_one_clean_line() {
    let registry = Registry::start_secure(Secure {
        tls: true,
        ..Default::default()
    });
    let out = run(
        &mut as_a_user(&WasmOci::new()),
        &[
            "pull",
            "--plain-http",
            &registry.reference("tools/hello:v1"),
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert!(said.contains("speaks HTTPS"), "{said}");
    assert!(!said.contains("\\n"), "a literal \\n: {said}");
    assert_eq!(said.matches("pulling").count(), 1, "{said}");
}

#[test]
fn a_name_that_does_not_resolve_is_not_retried() {
    let out = run(
        &mut as_a_user(&WasmOci::new()),
        &["pull", "registry.does-not-exist.invalid/tools/hello:v1"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert!(said.contains("does not resolve"), "{said}");
    assert!(said.contains("failed to lookup address"), "{said}");
    assert!(!said.contains("retrying"), "{said}");
    // Nothing about plain HTTP: no scheme makes a name resolve.
    assert!(!said.contains("--plain-http"), "{said}");
}

#[test]
fn stale_stored_credentials_are_said_to_be_used_and_refused() {
    use base64::Engine as _;
    let registry = Registry::start_secure(Secure {
        user: Some(("alice", "egress-friction-right")),
        ..Default::default()
    });
    secret("egress-friction-right");
    let stale = secret("egress-friction-stale");
    let docker = tempfile::tempdir().unwrap();
    let config = docker.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{stale}"));
    fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr),
    )
    .unwrap();
    let out = run(
        as_a_user(&WasmOci::new()).env("DOCKER_CONFIG", docker.path()),
        &["pull", &registry.reference("tools/hello:v1")],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert!(
        said.contains("were presented and may be stale") && said.contains(config.to_str().unwrap()),
        "{said}"
    );
    assert!(!said.contains(stale), "{said}");
}
