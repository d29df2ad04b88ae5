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

/// Runs a container whose module is `reference` (no allow list: any registry but the
/// node), and returns its `ctr` output.
fn run_reference(c: &Containerd, id: &str, reference: &str) -> std::process::Output {
    c.run(
        &["--label", &format!("io.wasm-oci.reference={reference}")],
        "docker.io/library/wasmhello:v1",
        id,
        &[],
    )
}

/// A listener on every address of the node (`[::]`) that counts the connections it accepts.
struct Counting {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Counting {
    fn start() -> Counting {
        let listener = TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stream.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Counting { port, accepted }
    }
}

/// The red team's attack on the node rule's spellings: IPv4-mapped IPv6 was judged as IPv4,
/// but the other ways an IPv6 address carries an IPv4 one were judged as plain IPv6, so a
/// pod could name the node's loopback as NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4
/// (`2002::/16`), Teredo (`2001::/32`) or IPv4-compatible (`::a.b.c.d`) and the shim tried
/// to connect there. Each is refused as `127.0.0.1` is, before any connection.
#[test]
fn a_pod_cannot_name_the_nodes_loopback_as_ipv4_carried_in_ipv6() {
    let c = Containerd::start_with(&[("WASM_OCI_PLAIN_HTTP", Path::new("1"))], "");
    c.import_hello();
    let port = crate::support::free_port();
    for (i, host) in [
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::169.254.169.254]",
        "[64:ff9b:1::7f00:1]",
        "[64:ff9b:1:7f00:0:100::]",
        "[2002:7f00:1::1]",
        "[2001:0:7f00:1::]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    ]
    .iter()
    .enumerate()
    {
        let out = run_reference(
            &c,
            &format!("embedded{i}"),
            &format!("{host}:{port}/tools/hello:v1"),
        );
        assert!(!out.status.success(), "{host}: {}", describe(&out));
        assert!(
            stderr(&out).contains("an address of the node itself"),
            "{host}: {}",
            describe(&out)
        );
    }
}

/// A route of type local for a whole prefix (AnyIP: `ip -6 route add local PREFIX dev lo`)
/// makes every address in it the node's, though no interface lists them: the rule read the
/// interfaces' addresses only, so a pod reached the node's services at any address of the
/// prefix. The route is the test's own (a documentation prefix), removed when it ends.
struct LocalRoute(String);

impl LocalRoute {
    fn add(prefix: String) -> LocalRoute {
        let out = std::process::Command::new("ip")
            .args([
                "-6", "route", "add", "local", &prefix, "dev", "lo", "table", "local",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip route add: {}", describe(&out));
        LocalRoute(prefix)
    }
}

impl Drop for LocalRoute {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args([
                "-6", "route", "del", "local", &self.0, "dev", "lo", "table", "local",
            ])
            .output();
    }
}

#[test]
fn an_address_the_node_takes_by_a_local_route_is_the_nodes() {
    let node = Counting::start();
    let tag = std::process::id() & 0xffff;
    let _route = LocalRoute::add(format!("2001:db8:5ee:{tag:x}::/64"));
    let address = format!("[2001:db8:5ee:{tag:x}::7]:{}", node.port);
    // It is the node: the kernel delivers it here.
    TcpStream::connect(&address).unwrap();
    while node.accepted.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    let c = Containerd::start_with(&[("WASM_OCI_PLAIN_HTTP", Path::new("1"))], "");
    c.import_hello();
    let out = run_reference(&c, "anyip", &format!("{address}/tools/hello:v1"));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("an address of the node itself"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        node.accepted.load(Ordering::SeqCst),
        1,
        "the shim connected to the node through its local route"
    );
}
