//! Attacks on the egress rule of pulls on a pod's behalf (issue 23): holes found in it, each
//! a test that fails while the hole is open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::support::HELLO;
use crate::support::containerd::{Containerd, stdout};
use crate::support::{Registry, WasmOci, describe, stderr, testdata};

/// An operator's forward HTTP proxy (`HTTP_PROXY`) on the node. It resolves the names it is
/// asked for itself, as every proxy does; its resolver answers loopback for every name (as a
/// node-local proxy's does for a name rebound to 127.0.0.1 after the shim looked it up, or
/// for a name only the proxy's resolver knows). It counts the requests it forwarded.
struct ForwardProxy {
    addr: String,
    forwarded: Arc<AtomicUsize>,
}

impl ForwardProxy {
    fn start(ip: &str) -> ForwardProxy {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let forwarded = Arc::new(AtomicUsize::new(0));
        let count = forwarded.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let count = count.clone();
                thread::spawn(move || {
                    let _ = forward(stream, &count);
                });
            }
        });
        ForwardProxy { addr, forwarded }
    }
}

/// One absolute-form request (`GET http://name:port/path`), sent on to 127.0.0.1:port in
/// origin form; the answer is copied back and the connection closed.
fn forward(client: TcpStream, count: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let Some(rest) = target.strip_prefix("http://") else {
        return Ok(());
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port = authority.rsplit_once(':').map_or("80", |(_, p)| p);
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        let name = header.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name != "connection" && name != "proxy-connection" {
            head.push_str(&header);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(format!("127.0.0.1:{port}"))?;
    count.fetch_add(1, Ordering::SeqCst);
    upstream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    // One request per connection: the client is told so.
    let mut client = client;
    if let Some(end) = answer.windows(2).position(|w| w == b"\r\n") {
        client.write_all(&answer[..end + 2])?;
        client.write_all(b"Connection: close\r\n")?;
        client.write_all(&answer[end + 2..])?;
    }
    Ok(())
}

/// The red team's attack: with the operator's `HTTP_PROXY` set, the shim judged the name the
/// pod wrote as its own resolver answered it (admitting a name it could not resolve, "the
/// proxy's to resolve"), but the connection was the proxy's, which resolved the name anew and
/// connected where its answer pointed: a name the node-local proxy resolves to loopback
/// reached the node's own registry, and the pod ran what the node's loopback serves. A pull
/// for a pod now never goes through a proxy of the environment, so the address judged is the
/// address connected to.
#[test]
fn a_pods_pull_never_goes_through_the_operators_proxy_to_the_node() {
    let registry = Registry::start();
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    WasmOci::new().ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &registry.reference("tools/hello:v1"),
    ]);
    let proxy = ForwardProxy::start("127.0.0.3");
    let proxy_url = format!("http://{}", proxy.addr);
    // No allow list: any registry but the node; the operator's proxy for every pull.
    let c = Containerd::start_with(
        &[
            ("WASM_OCI_PLAIN_HTTP", Path::new("1")),
            ("HTTP_PROXY", Path::new(&proxy_url)),
            ("http_proxy", Path::new(&proxy_url)),
        ],
        "",
    );
    c.import_hello();
    let out = c.run(
        &[
            "--label",
            &format!("io.wasm-oci.reference=node-registry.invalid:{port}/tools/hello:v1"),
        ],
        "docker.io/library/wasmhello:v1",
        "viaproxy",
        &[],
    );
    let forwarded = proxy.forwarded.load(Ordering::SeqCst);
    assert_ne!(
        stdout(&out),
        HELLO,
        "the pod ran the module the node's loopback registry serves, through the proxy ({forwarded} requests forwarded to 127.0.0.1:{port})"
    );
    assert_eq!(
        forwarded,
        0,
        "the proxy was asked to reach the node's loopback: {}",
        describe(&out)
    );
    // A pull for a pod never goes through the environment's proxy: the shim resolves the
    // name itself, which this node cannot, so nothing is connected to at all.
    assert!(
        stderr(&out).contains("does not resolve"),
        "{}",
        describe(&out)
    );
}
