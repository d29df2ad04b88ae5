//! A fault-injecting HTTP proxy in front of the test registry, on loopback: it forwards one
//! request per connection and can cut or stall the first layer download and hide range requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Blob bodies over this size are layers, which the blob faults act on.
const LARGE: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything faithfully.
    None,
    /// Send half of the first layer's body (a blob over 64 KiB), then close the connection.
    CutFirstBlob,
    /// Send half of the first layer's body, then hang until the proxy is dropped.
    StallFirstBlob,
    /// Answer every other request for the same URL with 503, starting with the first,
    /// without asking the registry.
    Every503,
    /// Answer the first N requests with 429 and `Retry-After: 1`.
    Throttle(u32),
    /// Answer the first N requests with 503.
    First503(u32),
    /// A rate limit: for N seconds from the first request, answer everything with 429 and
    /// `Retry-After` saying how long is left.
    RateLimit(u64),
    /// Send half of every layer's body, then close the connection.
    CutEveryBlob,
    /// Flip a byte in every blob body.
    CorruptBlobs,
    /// For the first layer, claim a Content-Length of half the body and send that half.
    ShortFirstBlob,
    /// For the first layer, claim a Content-Length larger than the body, send it, and close.
    LongFirstBlob,
    /// Refuse every blob upload (the `PUT` that completes one) with 400, without asking the
    /// registry: a destination that fails a copy midway.
    RefuseBlobUploads,
}

#[derive(Debug, Default)]
pub struct Seen {
    /// Body bytes of blob responses sent to the client.
    pub blob_bytes: u64,
    /// `Range` headers of blob requests that resume, as received; `bytes=0-<last>` asks for
    /// the whole blob (wasm-oci always sends a range) and is not among them.
    pub ranges: Vec<String>,
    /// Whether the first layer's first half went out.
    pub half_sent: bool,
    /// Request lines of blob downloads.
    pub blob_gets: Vec<String>,
    /// Requests received.
    pub requests: u32,
    /// Requests answered 429 under `RateLimit`.
    pub throttled: u32,
    /// Under `RateLimit`: how long after the first request the first one was let through,
    /// as this proxy saw it.
    pub passed_after: Option<Duration>,
    /// `Authorization` headers received, as sent.
    pub authorizations: Vec<String>,
    first_request: Option<Instant>,
    per_url: std::collections::HashMap<String, u32>,
    blob_responses: u32,
}

pub struct Proxy {
    pub addr: String,
    seen: Arc<Mutex<Seen>>,
    fault: Arc<Mutex<Fault>>,
    ignore_range: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let proxy = Proxy {
            addr,
            seen: Arc::default(),
            fault: Arc::new(Mutex::new(fault)),
            ignore_range: Arc::default(),
            stop: Arc::default(),
        };
        let (seen, fault, ignore, stop) = (
            proxy.seen.clone(),
            proxy.fault.clone(),
            proxy.ignore_range.clone(),
            proxy.stop.clone(),
        );
        let upstream = upstream.to_owned();
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (seen, fault, ignore, stop, upstream) = (
                            seen.clone(),
                            fault.clone(),
                            ignore.clone(),
                            stop.clone(),
                            upstream.clone(),
                        );
                        thread::spawn(move || {
                            let _ = serve(client, &upstream, &seen, &fault, &ignore, &stop);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        proxy
    }

    /// `proxy-addr/repo:tag`
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
        self.seen.lock().unwrap().blob_responses = 0;
    }

    /// Drop `Range` headers, like a registry (or CDN) that does not support them.
    pub fn ignore_range(&self, ignore: bool) {
        self.ignore_range.store(ignore, Ordering::SeqCst);
    }

    /// How many requests had a request line starting with `prefix` (`GET /v2/ `, ...).
    pub fn asked(&self, prefix: &str) -> u32 {
        self.seen(|s| {
            s.per_url
                .iter()
                .filter(|(line, _)| line.starts_with(prefix))
                .map(|(_, n)| n)
                .sum()
        })
    }

    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    pub fn reset_counts(&self) {
        let mut s = self.seen.lock().unwrap();
        s.blob_bytes = 0;
        s.ranges.clear();
        s.half_sent = false;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(
    client: TcpStream,
    upstream: &str,
    seen: &Mutex<Seen>,
    fault: &Mutex<Fault>,
    ignore_range: &AtomicBool,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let is_blob_get = head[0].starts_with("GET ") && head[0].contains("/blobs/sha256:");
    let (n, this_url) = {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        s.first_request.get_or_insert_with(Instant::now);
        let requests = s.requests;
        if let Some(authorization) = header(&head, "authorization") {
            s.authorizations.push(authorization.to_owned());
        }
        let this_url = s.per_url.entry(head[0].clone()).or_default();
        *this_url += 1;
        (requests, *this_url)
    };
    let f = *fault.lock().unwrap();
    let refuse = match f {
        Fault::First503(first) if n <= first => {
            Some("503 Service Unavailable\r\nContent-Length: 0\r\n".to_owned())
        }
        Fault::RateLimit(seconds) => {
            let mut s = seen.lock().unwrap();
            let since = s.first_request.expect("set above").elapsed();
            let limit = Duration::from_secs(seconds);
            if since < limit {
                s.throttled += 1;
                let left = (limit - since).as_secs_f64().ceil() as u64;
                let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limited"}]}"#;
                Some(format!(
                    "429 Too Many Requests\r\nRetry-After: {left}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ))
            } else {
                s.passed_after.get_or_insert(since);
                None
            }
        }
        Fault::RefuseBlobUploads
            if head[0].starts_with("PUT ") && head[0].contains("/blobs/uploads/") =>
        {
            let body = r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"refused"}]}"#;
            Some(format!(
                "400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        }
        Fault::Every503 if this_url % 2 == 1 => {
            Some("503 Service Unavailable\r\nContent-Length: 0\r\n".to_owned())
        }
        Fault::Throttle(first) if n <= first => {
            let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
            Some(format!(
                "429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        }
        _ => None,
    };
    if let Some(answer) = refuse {
        let answer = if answer.ends_with("\r\n") && !answer.contains("\r\n\r\n") {
            format!("HTTP/1.1 {answer}Connection: close\r\n\r\n")
        } else {
            format!("HTTP/1.1 {answer}")
        };
        client.write_all(answer.as_bytes())?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    if is_blob_get {
        let mut s = seen.lock().unwrap();
        s.blob_gets.push(head[0].clone());
        if let Some(range) = header(&head, "range").filter(|r| !r.starts_with("bytes=0-")) {
            s.ranges.push(range.to_owned());
        }
    }
    let mut request = format!("{}\r\n", head[0]);
    for line in &head[1..] {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if name == "connection" || (name == "range" && ignore_range.load(Ordering::SeqCst)) {
            continue;
        }
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(request.as_bytes())?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let (resp_head, resp_body) = (
        &response[..split],
        response.get(split + 4..).unwrap_or_default(),
    );
    let status_ok = resp_head.starts_with(b"HTTP/1.1 20") || resp_head.starts_with(b"HTTP/1.0 20");
    // The first wasm layer: configs and manifests are small, and the layer of a pull may be
    // asked for before or after its config, which is fetched alongside.
    let first_blob = is_blob_get && status_ok && resp_body.len() > LARGE && {
        let mut s = seen.lock().unwrap();
        s.blob_responses += 1;
        s.blob_responses == 1
    };
    // The length to claim, and how much of the body to send.
    let (claimed, sent) = match f {
        Fault::ShortFirstBlob if first_blob => (resp_body.len() / 2, resp_body.len() / 2),
        Fault::LongFirstBlob if first_blob => (resp_body.len() + 1000, resp_body.len()),
        _ => (resp_body.len(), resp_body.len()),
    };
    let mut out_head = String::new();
    for line in String::from_utf8_lossy(resp_head).lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-length:") {
            out_head.push_str(&format!("Content-Length: {claimed}\r\n"));
        } else if !lower.starts_with("connection:") {
            out_head.push_str(line);
            out_head.push_str("\r\n");
        }
    }
    out_head.push_str("Connection: close\r\n\r\n");
    client.write_all(out_head.as_bytes())?;
    let ok = status_ok;
    if sent != resp_body.len() || claimed != resp_body.len() {
        client.write_all(&resp_body[..sent])?;
        seen.lock().unwrap().blob_bytes += sent as u64;
        return client.shutdown(std::net::Shutdown::Both);
    }
    if is_blob_get && ok && f == Fault::CorruptBlobs && !resp_body.is_empty() {
        let mut body = resp_body.to_vec();
        let last = body.len() - 1;
        body[last] ^= 0xff;
        client.write_all(&body)?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    let cut = match f {
        Fault::CutFirstBlob | Fault::StallFirstBlob => first_blob,
        Fault::CutEveryBlob => is_blob_get && ok && resp_body.len() > LARGE,
        _ => false,
    };
    if cut {
        let half = &resp_body[..resp_body.len() / 2];
        client.write_all(half)?;
        client.flush()?;
        {
            let mut s = seen.lock().unwrap();
            s.blob_bytes += half.len() as u64;
            s.half_sent = true;
        }
        if f == Fault::StallFirstBlob {
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        return client.shutdown(std::net::Shutdown::Both);
    }
    client.write_all(resp_body)?;
    if is_blob_get && ok {
        seen.lock().unwrap().blob_bytes += resp_body.len() as u64;
    }
    client.shutdown(std::net::Shutdown::Both)
}
