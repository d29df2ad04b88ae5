//! A hostile registry: small HTTP(S) servers written for each test, on loopback, that control
//! every byte they send (digests, sizes, redirects, upload locations, token services, error
//! bodies). Each test checks what the user sees: the exit code, the message, and which
//! headers reached which server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;

use crate::support::{WasmOci, describe, exit_within, output_with_stdin, stderr, testdata};

const USER: &str = "mallory-victim";
const PASSWORD: &str = "h0stile-Registry-Pa55";
const HELLO: &str = "Hello from WebAssembly!\n";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// One request as a server received it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// Path and query.
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a server answers.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// 64 KiB of `x` every 10 ms until the client hangs up: a body with no end.
    Endless,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }
    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = Body::Bytes(body.into());
        self
    }
    fn endless(mut self) -> Reply {
        self.body = Body::Endless;
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP/1.1 server, one request per connection, answering with `handler` and remembering
/// every request; TLS when given a configuration. Stops when dropped.
struct Server {
    addr: String,
    scheme: &'static str,
    seen: Arc<Mutex<Vec<Request>>>,
    /// Bytes of endless bodies written (into the socket's buffers, at least).
    streamed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Self::serve(None, Arc::new(handler))
    }

    fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Server {
        Self::serve(Some(tls), Arc::new(handler))
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>, handler: Arc<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap().to_string(),
            scheme: if tls.is_some() { "https" } else { "http" },
            seen: Arc::default(),
            streamed: Arc::default(),
            stop: Arc::default(),
        };
        let (seen, streamed, stop) = (
            server.seen.clone(),
            server.streamed.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let (seen, streamed, stop, handler, tls) = (
                    seen.clone(),
                    streamed.clone(),
                    stop.clone(),
                    handler.clone(),
                    tls.clone(),
                );
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        // A client that speaks plain HTTP to it (the scheme probe) fails here.
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let tls = rustls::StreamOwned::new(connection, stream);
                        exchange(tls, &*handler, &seen, &streamed, &stop);
                    }
                    None => exchange(stream, &*handler, &seen, &streamed, &stop),
                });
            }
        });
        server
    }

    /// `scheme://addr{path}`
    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request from `stream`, answers it and closes.
fn exchange(
    mut stream: impl Read + Write,
    handler: &Handler,
    seen: &Mutex<Vec<Request>>,
    streamed: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };
    let mut request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers: Vec::new(),
    };
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            request
                .headers
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length: usize = request
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    drop(reader);
    seen.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    let mut head = format!(
        "HTTP/1.1 {} Whatever\r\nConnection: close\r\n",
        reply.status
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match reply.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            let _ = stream.write_all(head.as_bytes());
            if request.method != "HEAD" {
                let _ = stream.write_all(&bytes);
            }
        }
        Body::Endless => {
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 << 10];
            while !stop.load(Ordering::SeqCst) && stream.write_all(&chunk).is_ok() {
                streamed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let _ = stream.flush();
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// hello.wasm as a CNCF wasm artifact: config, manifest, and the blobs by digest.
struct Artifact {
    wasm: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl Artifact {
    fn hello() -> Artifact {
        Self::with_annotation("hello")
    }

    /// A different manifest of the same module: another annotation.
    fn with_annotation(note: &str) -> Artifact {
        let wasm = std::fs::read(testdata("hello.wasm")).unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm", "os": "wasip1", "layerDigests": [sha256(&wasm)],
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": "application/vnd.wasm.config.v0+json",
            "config": {
                "mediaType": "application/vnd.wasm.config.v0+json",
                "digest": sha256(&config), "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/wasm",
                "digest": sha256(&wasm), "size": wasm.len(),
            }],
            "annotations": {"note": note},
        }))
        .unwrap();
        Artifact {
            wasm,
            config,
            manifest,
        }
    }

    /// The answer to a blob request, when `request` asks for one of ours.
    fn blob(&self, request: &Request) -> Option<Reply> {
        let digest = request.path.rsplit('/').next()?;
        let bytes = [&self.wasm, &self.config]
            .into_iter()
            .find(|b| sha256(b) == digest)?;
        request
            .path
            .contains("/blobs/")
            .then(|| Reply::new(200).body(bytes.clone()))
    }

    fn manifest_reply(&self) -> Reply {
        Reply::new(200)
            .header("Content-Type", MANIFEST_TYPE)
            .header("Docker-Content-Digest", &sha256(&self.manifest))
            .body(self.manifest.clone())
    }
}

/// A registry that wants nothing and serves `artifact` at every tag and digest.
fn honest(artifact: Artifact) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    move |request| {
        if request.path == "/v2/" {
            Reply::new(200)
        } else if request.path.contains("/manifests/") {
            artifact.manifest_reply()
        } else {
            artifact.blob(request).unwrap_or_else(|| Reply::new(404))
        }
    }
}

fn credentials() -> String {
    crate::support::secret(PASSWORD);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    crate::support::secret(&basic).to_owned()
}

/// `wasm-oci ARGS --username USER --password-stdin`, in `cli`.
fn with_password(cli: &WasmOci, args: &[&str]) -> std::process::Output {
    let mut cmd = cli.command();
    // Before the verb: after `run`'s module, everything is the guest's.
    cmd.args(["--username", USER, "--password-stdin"])
        .args(args);
    output_with_stdin(cmd, PASSWORD)
}

/// A server TLS configuration for 127.0.0.1, and the CA file that trusts it.
fn tls(dir: &Path) -> (Arc<rustls::ServerConfig>, String) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::support::make_certificates(dir);
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (
        Arc::new(config),
        dir.join("ca.crt").to_str().unwrap().to_owned(),
    )
}

fn assert_no_ansi(out: &std::process::Output) {
    let text = stderr(out);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'),
        "raw control characters of the registry reached the terminal: {text:?}"
    );
}

#[test]
fn a_reference_pinned_by_sha512_is_verified_with_sha512() {
    let artifact = Artifact::hello();
    let pinned = format!(
        "sha512:{}",
        hex::encode(sha2::Sha512::digest(&artifact.manifest))
    );
    // The registry answers the pinned digest with another manifest (announced with its own
    // sha256, so only the pinned sha512 tells them apart).
    let other = Artifact::with_annotation("not what was pinned");
    let lying = Server::start(honest(other));
    let reference = format!("{}/hello@{pinned}", lying.addr);
    let cli = WasmOci::new();
    let out = cli.run(&["run", &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("corrupted content") && stderr(&out).contains(&pinned),
        "{}",
        describe(&out)
    );
    assert!(cli.blobs().is_empty(), "{:?}", cli.blobs());

    // The manifest that was pinned passes the same check, and runs.
    let truthful = Server::start(honest(Artifact::hello()));
    let reference = format!("{}/hello@{pinned}", truthful.addr);
    assert_eq!(WasmOci::new().ok(&["run", &reference]), HELLO);

    // A digest of an algorithm that cannot be verified is refused before anything is asked.
    let reference = format!("{}/hello@sha1:{}", truthful.addr, "0".repeat(40));
    let out = WasmOci::new().run(&["pull", &reference]);
    assert!(!out.status.success(), "{}", describe(&out));
}

/// An index with one wasm entry for `child`, under `digest` and claiming `size` bytes.
fn index(digest: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": digest, "size": size,
            "platform": {"os": "wasip1", "architecture": "wasm"},
        }],
    }))
    .unwrap()
}

/// A registry serving `index` at every tag and `child` at every digest.
fn index_registry(index: Vec<u8>, child: Artifact) -> Server {
    Server::start(move |request| {
        if request.path == "/v2/" {
            Reply::new(200)
        } else if request.path.contains("/manifests/v1") {
            Reply::new(200)
                .header("Content-Type", INDEX_TYPE)
                .body(index.clone())
        } else if request.path.contains("/manifests/") {
            // No Docker-Content-Digest: only the index's digest can catch a swap.
            Reply::new(200)
                .header("Content-Type", MANIFEST_TYPE)
                .body(child.manifest.clone())
        } else {
            child.blob(request).unwrap_or_else(|| Reply::new(404))
        }
    })
}

#[test]
fn an_index_entry_pinned_by_sha384_is_verified_with_sha384() {
    let pinned = Artifact::hello();
    let digest = format!(
        "sha384:{}",
        hex::encode(sha2::Sha384::digest(&pinned.manifest))
    );
    let size = pinned.manifest.len();

    let swapped = index_registry(index(&digest, size), Artifact::with_annotation("swapped!"));
    let out = WasmOci::new().run(&["run", &format!("{}/hello:v1", swapped.addr)]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("corrupted content") && stderr(&out).contains(&digest),
        "{}",
        describe(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    let faithful = index_registry(index(&digest, size), pinned);
    assert_eq!(
        WasmOci::new().ok(&["run", &format!("{}/hello:v1", faithful.addr)]),
        HELLO
    );
}

#[test]
fn an_index_entry_size_must_be_the_manifests_size() {
    let child = Artifact::hello();
    let digest = sha256(&child.manifest);
    let size = child.manifest.len();
    let registry = index_registry(index(&digest, size + 7), child);
    let out = WasmOci::new().run(&["run", &format!("{}/hello:v1", registry.addr)]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!(
            "says {} bytes, but that manifest is {size} bytes",
            size + 7
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn an_upload_location_on_another_host_gets_no_credentials() {
    let basic = format!("Basic {}", credentials());
    let elsewhere = Server::start(|request| match request.method.as_str() {
        "PUT" => Reply::new(201),
        _ => Reply::new(404),
    });
    let upload = elsewhere.url("/upload/1?state=abc");
    let expected = basic.clone();
    let registry = Server::start(move |request| {
        if request.header("authorization") != Some(expected.as_str()) {
            return Reply::new(401).header("WWW-Authenticate", "Basic realm=\"hostile\"");
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/v2/") => Reply::new(200),
            ("HEAD", _) => Reply::new(404),
            ("POST", p) if p.ends_with("/blobs/uploads/") => {
                Reply::new(202).header("Location", &upload)
            }
            ("PUT", p) if p.contains("/manifests/") => Reply::new(201),
            _ => Reply::new(404),
        }
    });
    let hello = testdata("hello.wasm");
    let out = with_password(
        &WasmOci::new(),
        &[
            "push",
            hello.to_str().unwrap(),
            &format!("{}/hello:v1", registry.addr),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let uploads = elsewhere.requests();
    assert_eq!(uploads.len(), 2, "the layer and the config: {uploads:?}");
    for upload in uploads {
        assert_eq!(upload.method, "PUT");
        assert!(
            upload.header("authorization").is_none(),
            "the registry's credentials went to another host: {}",
            upload.path
        );
    }
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.header("authorization") == Some(basic.as_str())),
        "the registry itself got the credentials"
    );
}

#[test]
fn an_https_registry_cannot_send_an_upload_to_plain_http() {
    let certs = tempfile::tempdir().unwrap();
    let (config, ca) = tls(certs.path());
    let plain = Server::start(|_| Reply::new(201));
    let upload = plain.url("/upload/1");
    let registry = Server::start_tls(config, move |request| {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/v2/") => Reply::new(200),
            ("HEAD", _) => Reply::new(404),
            ("POST", p) if p.ends_with("/blobs/uploads/") => {
                Reply::new(202).header("Location", &upload)
            }
            _ => Reply::new(201),
        }
    });
    let hello = testdata("hello.wasm");
    let out = WasmOci::new().run(&[
        "push",
        "--ca-file",
        &ca,
        hello.to_str().unwrap(),
        &format!("{}/hello:v1", registry.addr),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("not sent there in clear"),
        "{}",
        describe(&out)
    );
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
}

#[test]
fn credentials_never_go_to_a_plain_http_realm_of_an_https_registry() {
    credentials();
    let certs = tempfile::tempdir().unwrap();
    let (config, ca) = tls(certs.path());
    let realm = Server::start(|_| {
        Reply::new(200)
            .header("Content-Type", "application/json")
            .body(r#"{"token":"anonymous-token"}"#)
    });
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"hostile\"",
        realm.url("/token")
    );
    let registry = Server::start_tls(config, move |request| {
        match request.header("authorization") {
            Some("Bearer anonymous-token") if request.path != "/v2/" => Reply::new(404),
            _ => Reply::new(401).header("WWW-Authenticate", &challenge),
        }
    });
    let reference = format!("{}/private/hello:v1", registry.addr);

    // --username: pull and login refuse to send them, and say why.
    for args in [
        vec!["pull", "--ca-file", &ca, &reference],
        vec!["login", "--ca-file", &ca, &registry.addr],
    ] {
        let out = with_password(&WasmOci::new(), &args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            stderr(&out).contains("plain-HTTP token service"),
            "{}",
            describe(&out)
        );
    }

    // An identity token in docker's config is not exchanged there either.
    let docker = tempfile::tempdir().unwrap();
    let identity = crate::support::secret("identity-t0ken-never-in-clear");
    std::fs::write(
        docker.path().join("config.json"),
        serde_json::json!({"auths": {&registry.addr: {"identitytoken": identity}}}).to_string(),
    )
    .unwrap();
    let out = WasmOci::new()
        .command()
        .args(["pull", "--ca-file", &ca, &reference])
        .env("DOCKER_CONFIG", docker.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("plain-HTTP token service"),
        "{}",
        describe(&out)
    );

    // Anonymous, the token service is asked (and the repository is not found with its token).
    let out = WasmOci::new().run(&["pull", "--ca-file", &ca, &reference]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("was not found"), "{}", describe(&out));
    let asked = realm.requests();
    assert!(!asked.is_empty());
    for request in asked {
        assert!(
            request.header("authorization").is_none(),
            "credentials reached the plain-HTTP token service: {}",
            request.path
        );
        assert_eq!(request.method, "GET", "{}", request.path);
    }
}

#[test]
fn an_https_registry_cannot_redirect_to_plain_http() {
    let certs = tempfile::tempdir().unwrap();
    let (config, ca) = tls(certs.path());
    let artifact = Artifact::hello();
    let layer = sha256(&artifact.wasm);
    let wasm = artifact.wasm.clone();
    let plain = Server::start(move |_| Reply::new(200).body(wasm.clone()));
    let downgrade = plain.url("/the-layer");
    let serve = honest(artifact);
    let registry = Server::start_tls(config, move |request| {
        if request.path.ends_with(&layer) {
            Reply::new(307).header("Location", &downgrade)
        } else {
            serve(request)
        }
    });
    let out = WasmOci::new().run(&[
        "run",
        "--ca-file",
        &ca,
        &format!("{}/hello:v1", registry.addr),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("redirect from HTTPS to plain HTTP"),
        "{}",
        describe(&out)
    );
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
}

/// A guard more than a fix: reqwest already drops `Authorization` when a redirect leaves the
/// origin, and this keeps it so under the fetcher's own redirect policy.
#[test]
fn a_redirect_to_another_host_carries_no_credentials() {
    let basic = format!("Basic {}", credentials());
    let artifact = Artifact::hello();
    let layer = sha256(&artifact.wasm);
    let wasm = artifact.wasm.clone();
    let storage = Server::start(move |_| Reply::new(200).body(wasm.clone()));
    let elsewhere = storage.url("/signed/layer");
    let expected = basic.clone();
    let serve = honest(artifact);
    let registry = Server::start(move |request| {
        if request.header("authorization") != Some(expected.as_str()) {
            Reply::new(401).header("WWW-Authenticate", "Basic realm=\"hostile\"")
        } else if request.path.ends_with(&layer) {
            Reply::new(307).header("Location", &elsewhere)
        } else {
            serve(request)
        }
    });
    let out = with_password(
        &WasmOci::new(),
        &["run", &format!("{}/hello:v1", registry.addr)],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
    let fetched = storage.requests();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(
        fetched[0].header("authorization").is_none(),
        "the registry's credentials followed the redirect to another host"
    );
    assert!(fetched[0].header("referer").is_none(), "{:?}", fetched[0]);
}

#[test]
fn an_endless_token_answer_is_cut_off() {
    for status in [200, 401] {
        let realm = Server::start(move |_| Reply::new(status).endless());
        let challenge = format!(
            "Bearer realm=\"{}\",service=\"hostile\"",
            realm.url("/token")
        );
        let registry =
            Server::start(move |_| Reply::new(401).header("WWW-Authenticate", &challenge));
        let cli = WasmOci::new();
        let mut child = cli
            .command()
            .args(["pull", &format!("{}/hello:v1", registry.addr)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // At 6.4 MB/s, twenty seconds of buffering would be 128 MB; a cap is reached at once.
        let status = exit_within(&mut child, Duration::from_secs(20));
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "an endless token answer held the pull: {}",
            describe(&out)
        );
        assert!(!realm.requests().is_empty());
        // Cut off, not buffered: what went out is the cap (1 MiB for a token, 64 KiB for an
        // error) plus what the kernel's socket buffers took, far from 20 s worth (128 MB).
        let streamed = realm.streamed.load(Ordering::SeqCst);
        assert!(
            streamed < 16 << 20,
            "{streamed} bytes of an endless answer were read"
        );
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

#[test]
fn username_credentials_go_to_the_named_registry_only() {
    let basic = format!("Basic {}", credentials());
    let expected = basic.clone();
    let named = Server::start(move |request| {
        if request.header("authorization") != Some(expected.as_str()) {
            return Reply::new(401).header("WWW-Authenticate", "Basic realm=\"named\"");
        }
        honest(Artifact::hello())(request)
    });
    let other =
        Server::start(|_| Reply::new(401).header("WWW-Authenticate", "Basic realm=\"other\""));

    // One registry named: its credentials go there.
    let out = with_password(
        &WasmOci::new(),
        &["pull", &format!("{}/hello:v1", named.addr)],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // A batch over two registries cannot say which one the password is for: refused, and
    // neither gets it.
    let before = named.requests().len();
    let out = with_password(
        &WasmOci::new(),
        &[
            "prefetch",
            "--no-compile",
            &format!("{}/hello:v1", named.addr),
            &format!("{}/hello:v1", other.addr),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--username gives credentials for one registry"),
        "{}",
        describe(&out)
    );
    assert_eq!(named.requests().len(), before);
    let asked = other.requests();
    assert!(
        asked
            .iter()
            .all(|r| r.header("authorization") != Some(basic.as_str())),
        "the other registry got the password: {asked:?}"
    );
    assert!(asked.is_empty(), "{asked:?}");
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
