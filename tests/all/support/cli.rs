//! The wasm-oci binary with a private cache, and what tests check of its runs: output, exit,
//! secrets kept out of logs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait_until;

/// Every password and token the suite hands out; no log line may hold one (see `WasmOci`).
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records `secret` (a test password, a token the test token server issued) and returns it.
pub fn secret(secret: &str) -> &str {
    SECRETS.lock().unwrap().push(secret.to_owned());
    secret
}

/// What every command logs, unless a test asks for something else: everything, but the
/// compiler's own tracing, which is large and never sees a registry.
pub const LOG_EVERYTHING: &str = "trace,cranelift_codegen=warn,cranelift_frontend=warn,\
    regalloc2=warn,wasmtime_internal_cranelift=warn,wasmtime_cranelift=warn,\
    wasmtime_internal_environ=warn,wasmtime_environ=warn,wasmparser=warn,wit_parser=warn";

/// The wasm-oci binary with a private cache. Every command logs at trace level to a file of
/// its own; when the test ends, every line of it is searched for every secret of the suite.
pub struct WasmOci {
    pub cache: tempfile::TempDir,
    logs: tempfile::TempDir,
}

impl WasmOci {
    pub fn new() -> WasmOci {
        Self::with_cache(tempfile::tempdir().unwrap())
    }

    pub fn with_cache(cache: tempfile::TempDir) -> WasmOci {
        WasmOci {
            cache,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    /// The trace log every command of this instance appended to.
    pub fn log_file(&self) -> PathBuf {
        self.logs.path().join("wasm-oci.log")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasm-oci"));
        cmd.env("WASM_OCI_CACHE", self.cache.path())
            // Never the host's docker credentials; auth tests set their own.
            .env("DOCKER_CONFIG", self.cache.path().join("no-docker-config"))
            .env_remove("SSL_CERT_FILE")
            .env("WASM_OCI_LOG", LOG_EVERYTHING)
            .env("WASM_OCI_LOG_FILE", self.log_file())
            // As for the shim (support/containerd.rs): at trace level every WASI call's error
            // is logged with its Debug form, which resolves a captured backtrace when
            // RUST_BACKTRACE is set, some 100 MiB of debug info that memory tests would
            // measure. Not what a server runs.
            .env("RUST_BACKTRACE", "0")
            .env_remove("WASM_OCI_PLAIN_HTTP")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wasm-oci {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The files in the cache's blob store.
    pub fn blobs(&self) -> Vec<String> {
        let dir = self.cache.path().join("v1/blobs/sha256");
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Waits until the ingest area holds one partial file, with bytes in it (its writer holds
    /// the file from its creation on; other downloads of the same pull have finished), for at
    /// most 30 s; that file.
    pub fn wait_for_partial(&self) -> PathBuf {
        let mut found = Vec::new();
        wait_until("one download wrote into a partial file", || {
            found = self.ingest();
            found.len() == 1 && fs::metadata(&found[0]).is_ok_and(|m| m.len() > 0)
        });
        found.remove(0)
    }

    /// Records `reference` in this cache as last used at `at`, as `run` would have then:
    /// tests of least-recently-used order set the order instead of waiting for the clock.
    pub fn set_last_use(&self, reference: &str, at: std::time::SystemTime) {
        let refs = self.cache.path().join("v1/refs");
        let record = fs::read_dir(&refs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let json: serde_json::Value =
                    serde_json::from_slice(&fs::read(p).unwrap_or_default()).unwrap_or_default();
                json["reference"] == reference
            })
            .unwrap_or_else(|| panic!("{reference} is not recorded in {}", refs.display()));
        fs::File::options()
            .write(true)
            .open(&record)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    /// Whatever is left in the ingest area.
    pub fn ingest(&self) -> Vec<PathBuf> {
        fs::read_dir(self.cache.path().join("v1/ingest"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for WasmOci {
    fn drop(&mut self) {
        assert_no_secret_in(&self.log_file());
    }
}

/// Searches every line of the log at `path` for every secret of the suite (unless the test
/// is failing already).
pub fn assert_no_secret_in(path: &Path) {
    let log = fs::read_to_string(path).unwrap_or_default();
    let secrets = SECRETS.lock().unwrap().clone();
    for line in log.lines() {
        if let Some(s) = secrets.iter().find(|s| line.contains(s.as_str())) {
            assert!(
                std::thread::panicking(),
                "a secret is in a log line of {}: {}",
                path.display(),
                line.replace(s.as_str(), "<SECRET>")
            );
        }
    }
}

/// Waits up to `limit` for `child` to exit; a child still running then is killed, and the
/// answer is `None`.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `cmd` run as on a host with no trust store of its own (a minimal image): no
/// `SSL_CERT_FILE`, and an empty `SSL_CERT_DIR`, which lives as long as the value returned.
pub fn without_trust_store(cmd: &mut Command) -> tempfile::TempDir {
    let bare = tempfile::tempdir().unwrap();
    cmd.env_remove("SSL_CERT_FILE")
        .env("SSL_CERT_DIR", bare.path());
    bare
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` with `stdin` written to its standard input, capturing its output.
pub fn output_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Starts every command at once and collects their outputs, in order.
pub fn outputs_of_concurrent(commands: impl IntoIterator<Item = Command>) -> Vec<Output> {
    let children: Vec<Child> = commands
        .into_iter()
        .map(|mut cmd| {
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

/// Runs `cmd`, killing it when it takes longer than `limit`; `None` then.
pub fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let status = exit_within(&mut child, limit)?;
    Some(Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    })
}
