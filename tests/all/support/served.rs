//! `wasm-oci serve` (or `run` of a proxy) as a test runs it: the process on a free loopback
//! port ([`Served`]), a raw HTTP/1.1 client that keeps its connection ([`Client`]) and what
//! it reads ([`Response`]), and the test proxy pushed to a registry of its own
//! ([`push_proxy`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Registry, WasmOci, describe, http_guests};

/// A `wasm-oci serve` (or `run`) process listening on a free loopback port; killed when
/// dropped.
pub struct Served {
    pub child: Child,
    pub addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `wasm-oci ARGS --addr 127.0.0.1:0` and waits for its "Serving HTTP on" line.
    pub fn start(cli: &WasmOci, args: &[&str]) -> Served {
        Self::start_command(cli.command(), args)
    }

    /// As [`Served::start`], with a command set up by the caller (its limits, say).
    pub fn start_command(mut command: Command, args: &[&str]) -> Served {
        let mut child = command
            .arg(args[0])
            .args(["--addr", "127.0.0.1:0"])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let addr = loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("wasm-oci {args:?} exited ({status}) before serving: {seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("Serving HTTP on http://") {
                break rest.trim_end_matches('/').to_owned();
            }
        };
        let stderr = Arc::new(Mutex::new(seen));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            for line in lines.lines() {
                let Ok(line) = line else { break };
                rest.push_str(&line);
                rest.push('\n');
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Served {
            child,
            addr,
            stderr,
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.addr)
    }

    /// One request on a connection of its own.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.connect().send(method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn terminate(&mut self) {
        let out = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "kill -TERM: {}", describe(&out));
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client that keeps its connection open between requests.
pub struct Client {
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
            addr: addr.to_owned(),
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(request.as_bytes())?;
        stream.write_all(body)?;
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line)? == 0 {
            return Err(eof());
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(eof());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let mut body = Vec::new();
        if let Some(n) = headers.get("content-length") {
            body.resize(n.parse().unwrap(), 0);
            self.reader.read_exact(&mut body)?;
        } else if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The proxy pushed to a fresh registry.
pub struct Pushed {
    pub registry: Registry,
    pub reference: String,
}

pub fn push_proxy(cli: &WasmOci) -> Pushed {
    let registry = Registry::start();
    let reference = registry.reference("services/hello-http:v1");
    cli.ok(&["push", http_guests().proxy.to_str().unwrap(), &reference]);
    Pushed {
        registry,
        reference,
    }
}
