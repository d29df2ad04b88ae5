//! A scripted HTTP/1.1 server on loopback, plain or TLS: one request per connection, answered
//! by a handler the test gives, every request remembered. Tests make it a hostile registry
//! (it controls every byte it sends: digests, sizes, redirects, upload locations, token
//! services, endless bodies) or a small service of their own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;

use super::{WasmOci, output_with_stdin, stderr, testdata};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// One request as a server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1`, as the request line says.
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The body, as long as its `Content-Length` said.
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a server answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// 64 KiB of `x` every 10 ms until the client hangs up: a body with no end.
    Endless,
    /// A `Content-Length` of `claimed`, then only `bytes`, then the connection closes.
    Short {
        claimed: u64,
        bytes: Vec<u8>,
    },
    /// A chunked body of one `x` per `every`, until `max` bytes went out (then it ends) or
    /// the client hangs up; each byte counts in [`Server::streamed`].
    Trickle {
        every: Duration,
        max: u64,
    },
    /// Nothing at all, not even a head: the connection is held open until the client hangs
    /// up (or the server stops).
    Silent,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = Body::Bytes(body.into());
        self
    }
    pub fn endless(mut self) -> Reply {
        self.body = Body::Endless;
        self
    }
    /// One byte per `every`, chunked, up to `max` bytes.
    pub fn trickle(mut self, every: Duration, max: u64) -> Reply {
        self.body = Body::Trickle { every, max };
        self
    }
    /// Says nothing, and holds the connection.
    pub fn silent() -> Reply {
        Reply {
            body: Body::Silent,
            ..Reply::new(0)
        }
    }
    /// Announces `claimed` bytes, sends `bytes` and hangs up.
    pub fn short(mut self, claimed: u64, bytes: impl Into<Vec<u8>>) -> Reply {
        self.body = Body::Short {
            claimed,
            bytes: bytes.into(),
        };
        self
    }
}

pub type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP/1.1 server, one request per connection, answering with `handler` and remembering
/// every request; TLS when given a configuration. Stops when dropped.
pub struct Server {
    pub addr: String,
    pub scheme: &'static str,
    seen: Arc<Mutex<Vec<Request>>>,
    /// Bytes of endless and trickled bodies written (into the socket's buffers, at least).
    pub streamed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Self::serve(None, Arc::new(handler))
    }

    pub fn start_tls(
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
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests whose path contains `part`.
    pub fn asked_for(&self, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.contains(part))
            .count()
    }

    /// Every header of every request, as `name: value` lower-cased.
    pub fn header_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .flat_map(|r| r.headers.iter())
            .map(|(k, v)| format!("{k}: {v}").to_ascii_lowercase())
            .collect()
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
        version: parts.next().unwrap_or_default().to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
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
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        match read_chunked(&mut reader) {
            Some(body) => request.body = body,
            None => return,
        }
    } else {
        let length: usize = request
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        request.body = vec![0; length];
        if reader.read_exact(&mut request.body).is_err() {
            return;
        }
    }
    drop(reader);
    seen.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    if let Body::Silent = reply.body {
        // Until the client hangs up: a read that ends (or fails otherwise than by the read
        // timeout) says it did.
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::SeqCst) {
            match stream.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        return;
    }
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
        Body::Short { claimed, bytes } => {
            head.push_str(&format!("Content-Length: {claimed}\r\n\r\n"));
            if stream.write_all(head.as_bytes()).is_ok() {
                let _ = stream.write_all(&bytes);
            }
        }
        Body::Silent => unreachable!("answered above"),
        Body::Trickle { every, max } => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            for _ in 0..max {
                if stop.load(Ordering::SeqCst)
                    || stream
                        .write_all(b"1\r\nx\r\n")
                        .and_then(|()| stream.flush())
                        .is_err()
                {
                    return;
                }
                streamed.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(every);
            }
            let _ = stream.write_all(b"0\r\n\r\n");
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

/// A chunked request body, whole.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Asks `upstream` (`host:port`, plain HTTP) what `request` asks, at `path` instead of the
/// request's own, and answers what it answered: the body of a handler that fronts a real
/// registry and changes some of what passes. HTTP/1.0, so that the registry closes after
/// answering.
pub fn forward(upstream: &str, request: &Request, path: &str) -> Reply {
    let mut head = format!("{} {path} HTTP/1.0\r\n", request.method);
    for (k, v) in &request.headers {
        let k_lower = k.to_ascii_lowercase();
        if !["content-length", "transfer-encoding", "connection"].contains(&k_lower.as_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    let mut response = Vec::new();
    let asked = TcpStream::connect(upstream).and_then(|mut up| {
        up.write_all(head.as_bytes())?;
        up.write_all(&request.body)?;
        up.read_to_end(&mut response)
    });
    let Some(end) = asked
        .ok()
        .and_then(|_| response.windows(4).position(|w| w == b"\r\n\r\n"))
    else {
        return Reply::new(502);
    };
    let text = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut reply = Reply::new(status);
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<u64>().ok(),
            "connection" | "transfer-encoding" => {}
            _ => reply = reply.header(k.trim(), v.trim()),
        }
    }
    let body = response[end + 4..].to_vec();
    match (request.method.as_str(), length) {
        // A HEAD's length is that of the body a GET would have had.
        ("HEAD", Some(claimed)) => reply.short(claimed, Vec::new()),
        _ => reply.body(body),
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// hello.wasm as a CNCF wasm artifact: config, manifest, and the blobs by digest.
pub struct Artifact {
    pub wasm: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Artifact {
    pub fn hello() -> Artifact {
        Self::with_annotation("hello")
    }

    /// A different manifest of the same module: another annotation.
    pub fn with_annotation(note: &str) -> Artifact {
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
    pub fn blob(&self, request: &Request) -> Option<Reply> {
        let digest = request.path.rsplit('/').next()?;
        let bytes = [&self.wasm, &self.config]
            .into_iter()
            .find(|b| sha256(b) == digest)?;
        request
            .path
            .contains("/blobs/")
            .then(|| Reply::new(200).body(bytes.clone()))
    }

    pub fn manifest_reply(&self) -> Reply {
        Reply::new(200)
            .header("Content-Type", MANIFEST_TYPE)
            .header("Docker-Content-Digest", &sha256(&self.manifest))
            .body(self.manifest.clone())
    }
}

/// A registry that wants nothing and serves `artifact` at every tag and digest.
pub fn honest(artifact: Artifact) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
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

/// The victim whose credentials a hostile registry tries to steal.
pub const USER: &str = "mallory-victim";
pub const PASSWORD: &str = "h0stile-Registry-Pa55";
pub fn credentials() -> String {
    super::secret(PASSWORD);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    super::secret(&basic).to_owned()
}

/// `wasm-oci ARGS --username USER --password-stdin`, in `cli`.
pub fn with_password(cli: &WasmOci, args: &[&str]) -> std::process::Output {
    let mut cmd = cli.command();
    // Before the verb: after `run`'s module, everything is the guest's.
    cmd.args(["--username", USER, "--password-stdin"])
        .args(args);
    output_with_stdin(cmd, PASSWORD)
}

/// A server TLS configuration for 127.0.0.1, and the CA file that trusts it.
pub fn tls(dir: &Path) -> (Arc<rustls::ServerConfig>, String) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    super::make_certificates(dir);
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

pub fn assert_no_ansi(out: &std::process::Output) {
    let text = stderr(out);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'),
        "raw control characters of the registry reached the terminal: {text:?}"
    );
}
