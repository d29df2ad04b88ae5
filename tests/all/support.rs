//! Test harness: a private registry per test, the wasm-oci binary with a private cache, raw HTTP.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository's `testdata/` directory.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port on loopback")
        .port()
}

/// A Docker Distribution registry (Debian's `docker-registry`) on a loopback port, with its
/// storage in a temporary directory; stopped when dropped.
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub addr: String,
}

/// TLS and basic auth for a [`Registry`].
#[derive(Default)]
pub struct Secure {
    /// Serve TLS with a certificate for 127.0.0.1 signed by a CA made for the test.
    pub tls: bool,
    /// Require this user and password (htpasswd, bcrypt).
    pub user: Option<(&'static str, &'static str)>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_secure(Secure::default())
    }

    /// The CA certificate of a TLS registry.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A plain-HTTP registry with this `auth:` section of its configuration.
    pub fn start_with_auth(auth: &str) -> Registry {
        Self::start_config(Secure::default(), auth.to_owned())
    }

    pub fn start_secure(secure: Secure) -> Registry {
        Self::start_config(secure, String::new())
    }

    fn start_config(secure: Secure, auth: String) -> Registry {
        // The free port may be taken by another test between probe and bind: try again.
        for _ in 0..3 {
            if let Some(registry) = Self::try_start(&secure, auth.clone()) {
                return registry;
            }
        }
        panic!("the registry did not start on three ports in a row");
    }

    fn try_start(secure: &Secure, mut auth: String) -> Option<Registry> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let d = dir.path();
        let mut extra_http = String::new();
        if secure.tls {
            make_certificates(d);
            extra_http = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
        }
        if let Some((user, password)) = secure.user {
            use base64::Engine as _;
            secret(password);
            secret(&base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect(
                    "htpasswd is not installed: run ./scripts/test, which installs apache2-utils",
                );
            assert!(out.status.success(), "{}", describe(&out));
            fs::write(d.join("htpasswd"), out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wasm-oci-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 {auth}\
                 http:\n  addr: {addr}\n{extra_http}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is not installed: run ./scripts/test, which installs it");
        let mut registry = Registry {
            child: Some(child),
            dir,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        // Any HTTP answer means it is up: 200, 401 with auth, 400 "use HTTPS" with TLS.
        loop {
            // Ours must still be running, or the answer would come from someone else.
            let exited = registry
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return None;
            }
            if http(&registry.addr, "GET", "/v2/", &[], b"").is_some() {
                return Some(registry);
            }
            assert!(
                Instant::now() < deadline,
                "registry did not come up: {}",
                fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>/<repo>`
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Where the registry keeps a blob's bytes on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `wasm-oci` binary with its own cache directory and no inherited settings.
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

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.0 exchange, enough to read and write manifests on the test registry.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpResponse> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(HttpResponse {
        status,
        body: response[split + 4..].to_vec(),
    })
}

/// The manifest `reference` (`repo:tag`) points to, as JSON.
pub fn manifest(registry: &Registry, repo: &str, tag: &str) -> serde_json::Value {
    let accept =
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
    let r = http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", accept)],
        b"",
    )
    .expect("registry answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

/// Stores a manifest under `tag` and returns its digest.
pub fn put_manifest(
    registry: &Registry,
    repo: &str,
    tag: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    use sha2::Digest;
    let r = http(
        &registry.addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", media_type)],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// Runs python3 with the ORAS SDK; `./scripts/test` installs it.
pub fn oras_python(script: &str, cwd: &Path) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ORAS Python SDK script failed (install it with ./scripts/test): {}",
        describe(&out)
    );
}

/// Test guests built from `testdata/` sources once per test run: the C probe (clang and
/// Debian's wasi-libc, installed by ./scripts/test) as a module and as a component, and hello
/// as a component (wit-component with the wasi_snapshot_preview1 command adapter).
pub struct Guests {
    pub probe: PathBuf,
    pub probe_component: PathBuf,
    pub hello_component: PathBuf,
}

pub fn guests() -> &'static Guests {
    static GUESTS: std::sync::OnceLock<Guests> = std::sync::OnceLock::new();
    GUESTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let probe = dir.join("probe.wasm");
        let out = Command::new("clang")
            .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
            .arg(&probe)
            .arg(testdata("probe.c"))
            .output()
            .expect("clang is not installed: run ./scripts/test, which installs clang, lld and wasi-libc");
        assert!(out.status.success(), "building probe.wasm failed: {}", describe(&out));
        let probe_component = dir.join("probe.component.wasm");
        fs::write(&probe_component, componentize(&fs::read(&probe).unwrap())).unwrap();
        let hello_component = dir.join("hello.component.wasm");
        fs::write(&hello_component, componentize(&fs::read(testdata("hello.wasm")).unwrap())).unwrap();
        Guests {
            probe,
            probe_component,
            hello_component,
        }
    })
}

/// Wraps a WASI preview 1 command module into a WASI 0.2 command component.
pub fn componentize(core: &[u8]) -> Vec<u8> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(core)
        .unwrap()
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// Runs openssl in `dir`, asserting success.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
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

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl: `ca.crt`,
/// `server.crt` and `server.key` (PKCS#8 PEM) in `dir`.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=wasm-oci test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
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
