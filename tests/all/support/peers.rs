//! The interop peers from Debian sid, run as they are: the `oras` and `crane` CLIs (their
//! paths in `$WASM_OCI_ORAS` and `$WASM_OCI_CRANE`, which `./scripts/test` exports), and
//! `crane registry serve`, go-containerregistry's in-memory registry, a second registry
//! implementation beside Docker Distribution.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::*;

/// A registry a test can push to and read from: Docker Distribution ([`Registry`]) or
/// go-containerregistry's ([`CraneRegistry`]).
pub trait TestRegistry {
    /// `127.0.0.1:<port>`
    fn addr(&self) -> &str;

    /// `127.0.0.1:<port>/<repo>`
    fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr())
    }
}

impl TestRegistry for Registry {
    fn addr(&self) -> &str {
        &self.addr
    }
}

/// The path of a peer binary from the environment variable `var`; a clear failure (never a
/// skip) when it is unset.
fn peer(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).unwrap_or_else(|| {
        panic!(
            "{var} is not set: this test runs Debian sid's {name}, which ./scripts/test \
             extracts and exports as {var}"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{var}={} is not a file: run ./scripts/test, which extracts {name}",
        path.display()
    );
    path
}

/// Runs a peer CLI with `args`; its output.
fn run_peer(var: &str, name: &str, args: &[&str], cwd: Option<&Path>) -> Output {
    let mut command = Command::new(peer(var, name));
    command
        .args(args)
        .stdin(Stdio::null())
        // Never the host's credentials or settings.
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("wasm-oci-peers-no-config"),
        )
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY");
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command.output().unwrap()
}

/// Runs `oras` in `cwd`, asserting success; its stdout.
pub fn oras_in(cwd: Option<&Path>, args: &[&str]) -> String {
    let out = run_peer("WASM_OCI_ORAS", "oras 1.3.3", args, cwd);
    assert!(out.status.success(), "oras {args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `crane --insecure ARGS` and returns its stdout, asserting success.
pub fn crane(args: &[&str]) -> String {
    String::from_utf8(crane_bytes(args)).unwrap()
}

/// Runs `crane --insecure ARGS` and returns its stdout as bytes (a blob), asserting success.
pub fn crane_bytes(args: &[&str]) -> Vec<u8> {
    let mut all = vec!["--insecure"];
    all.extend_from_slice(args);
    let out = run_peer("WASM_OCI_CRANE", "crane 0.20.7", &all, None);
    assert!(out.status.success(), "crane {args:?}: {}", describe(&out));
    out.stdout
}

/// `crane registry serve`: go-containerregistry's registry, in memory, on a loopback port it
/// picks itself; stopped when dropped.
pub struct CraneRegistry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub addr: String,
}

impl CraneRegistry {
    pub fn start() -> CraneRegistry {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("serve.log");
        let log = fs::File::create(&log_path).unwrap();
        // Port 0: it binds a free port and says which, so no other test can take it between
        // a probe and the bind.
        let mut child = Command::new(peer("WASM_OCI_CRANE", "crane 0.20.7"))
            .args(["registry", "serve", "--address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut port = None;
        wait_until("crane registry serve says its port", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "crane registry serve exited ({status}): {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            port = fs::read_to_string(&log_path).ok().and_then(|log| {
                log.lines().find_map(|line| {
                    line.split_once("serving on port ")
                        .and_then(|(_, p)| p.trim().parse::<u16>().ok())
                })
            });
            port.is_some()
        });
        let registry = CraneRegistry {
            child,
            _dir: dir,
            addr: format!("127.0.0.1:{}", port.unwrap()),
        };
        let r = http(&registry.addr, "GET", "/v2/", &[], b"")
            .expect("crane registry serve answers once it has said its port");
        assert_eq!(r.status, 200);
        registry
    }
}

impl TestRegistry for CraneRegistry {
    fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for CraneRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest `repo:reference` names in the registry at `addr`, as JSON, and its bytes.
pub fn manifest_at(addr: &str, repo: &str, reference: &str) -> (serde_json::Value, Vec<u8>) {
    let accept =
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
    let r = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", accept)],
        b"",
    )
    .expect("registry answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    (serde_json::from_slice(&r.body).unwrap(), r.body)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
