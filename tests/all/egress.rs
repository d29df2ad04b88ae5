//! Where a pull on a pod's behalf may connect (issue 23): the node-local rule and
//! `references.allow` hold for every connection the shim makes, the reference's registry,
//! each redirect hop, token realm and upload location, judged on the address connected to
//! (IPv4-mapped IPv6 is IPv4; a name resolving to the node is the node), and a refusal says
//! nothing of whether a node port is open. Hostile registries are small HTTP servers on
//! 127.0.0.x; the node's secret is a server that counts who reached it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::support::HELLO;
use crate::support::containerd::{Containerd, stdout};
use crate::support::{Registry, WasmOci, describe, free_port, stderr, testdata};

/// What the node's own service answers; it must never reach the pod.
const SECRET: &str = "NODE-SECRET-d41d8cd9";
/// The mark of a connection the test makes itself, to learn who came before it.
const MARK: &[u8] = b"MARK";

/// A service only the node should reach (a metadata service, a kubelet port): it answers
/// every request with [`SECRET`] and counts the connections it accepted.
struct NodeService {
    port: u16,
    /// How many had been accepted when the test's own mark arrived.
    before_mark: Arc<std::sync::Mutex<Option<usize>>>,
}

impl NodeService {
    /// Listening on every address of the node (loopback and its interfaces).
    fn start() -> NodeService {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let before_mark = Arc::new(std::sync::Mutex::new(None));
        let (count, mark) = (accepted, before_mark.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut first = [0u8; 4];
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let n = stream.peek(&mut first).unwrap_or(0);
                if &first[..n] == MARK {
                    *mark.lock().unwrap() = Some(count.load(Ordering::SeqCst));
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.read(&mut [0; 4096]);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SECRET}",
                    SECRET.len()
                );
            }
        });
        NodeService { port, before_mark }
    }

    /// How many connections reached the service before now: connections are accepted in
    /// the order they were made, so once the test's own mark is seen, every earlier one was.
    fn reached(&self) -> usize {
        let mut mark = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        mark.write_all(MARK).unwrap();
        loop {
            if let Some(n) = *self.before_mark.lock().unwrap() {
                return n;
            }
            thread::yield_now();
        }
    }
}

/// A hostile registry on `127.0.0.x`: answers each request with what `answer` makes of its
/// method and path (a whole HTTP response), one request per connection.
struct Hostile {
    addr: String,
}

impl Hostile {
    fn start(ip: &str, answer: impl Fn(&str, &str) -> String + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answer = Arc::new(answer);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let answer = answer.clone();
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = header.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length.min(1 << 20)];
                    let _ = reader.read_exact(&mut body);
                    let mut words = line.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let mut stream = stream;
                    let _ = stream.write_all(answer(method, path).as_bytes());
                });
            }
        });
        Hostile { addr }
    }
}

/// An HTTP response with `status`, extra header lines and a body.
fn response(status: &str, headers: &[String], body: &str) -> String {
    let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    r
}

/// A registry that answers `/v2/` openly and redirects everything else to `to`.
fn redirecting_to(ip: &str, to: String) -> Hostile {
    Hostile::start(ip, move |_, path| {
        if path == "/v2/" {
            response("200 OK", &[], "{}")
        } else {
            response("307 Temporary Redirect", &[format!("Location: {to}")], "")
        }
    })
}

/// A registry whose token service is `realm`.
fn with_realm(ip: &str, realm: String) -> Hostile {
    Hostile::start(ip, move |_, _| {
        response(
            "401 Unauthorized",
            &[format!(
                "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"hostile\""
            )],
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token please\"}]}",
        )
    })
}

/// An address of this node that is not loopback (the source of its default route), when it
/// has one.
fn interface_address() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// Runs a container whose module is `reference`, and returns its `ctr` output.
fn run_reference(c: &Containerd, id: &str, reference: &str) -> std::process::Output {
    c.run(
        &["--label", &format!("io.wasm-oci.reference={reference}")],
        "docker.io/library/wasmhello:v1",
        id,
        &[],
    )
}

/// The shim's error line for a container, with every `port` spelled `PORT`.
fn refusal_line(out: &std::process::Output, ports: &[&str]) -> String {
    let text = stderr(out);
    let line = text
        .lines()
        .find(|l| l.contains("io.wasm-oci.reference") || l.contains("rule forbids"))
        .unwrap_or_default();
    let mut line = line
        .split_once("io.wasm-oci.reference")
        .map_or(line.to_owned(), |(_, rest)| rest.to_owned());
    for port in ports {
        line = line.replace(port, "PORT");
    }
    line
}

#[test]
fn a_pod_cannot_name_the_nodes_loopback_in_an_ipv4_mapped_spelling() {
    let registry = Registry::start();
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    WasmOci::new().ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &registry.reference("tools/hello:v1"),
    ]);
    // Plain HTTP everywhere, as the attack had it; no allow list: any registry but the node.
    let c = Containerd::start_with(&[("WASM_OCI_PLAIN_HTTP", Path::new("1"))], "");
    c.import_hello();
    let closed = free_port().to_string();
    let mut lines = Vec::new();
    for (i, host) in [
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:7f00:1]",
    ]
    .iter()
    .enumerate()
    {
        for (what, p) in [("open", &port), ("closed", &closed)] {
            let out = run_reference(
                &c,
                &format!("m{i}{what}"),
                &format!("{host}:{p}/tools/hello:v1"),
            );
            assert!(!out.status.success(), "{host}:{p}: {}", describe(&out));
            assert_ne!(stdout(&out), HELLO, "{host}:{p} ran the node's module");
            assert!(
                stderr(&out).contains("an address of the node itself"),
                "{host}:{p}: {}",
                describe(&out)
            );
            lines.push(refusal_line(&out, &[&port, &closed]));
        }
    }
    // An open port and a closed one read the same: nothing to probe the node with.
    for pair in lines.chunks(2) {
        assert_eq!(pair[0], pair[1]);
    }
    // As plain 127.0.0.1 always was.
    let out = run_reference(&c, "plain", &registry.reference("tools/hello:v1"));
    assert!(
        stderr(&out).contains("an address of the node itself"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_redirect_to_a_node_service_is_not_followed_whatever_its_spelling() {
    let node = NodeService::start();
    let secret = node.port;
    let mut targets = vec![
        format!("http://127.0.0.1:{secret}/latest/meta-data/"),
        format!("http://[::ffff:127.0.0.1]:{secret}/latest/meta-data/"),
        format!("http://localhost:{secret}/latest/meta-data/"),
        format!("http://2130706433:{secret}/latest/meta-data/"),
    ];
    if let Some(ip) = interface_address() {
        targets.push(format!("http://{ip}:{secret}/latest/meta-data/"));
    }
    let registries: Vec<Hostile> = targets
        .iter()
        .map(|to| redirecting_to("127.0.0.2", to.clone()))
        .collect();
    // references.allow names the registries only (127.0.0.2 on their ports), as the attack had.
    let allow = registries
        .iter()
        .map(|r| format!("\"{}\"", r.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let c = Containerd::start_with(
        &[("WASM_OCI_PLAIN_HTTP", Path::new("1"))],
        &format!("[references]\nallow = [{allow}]\n"),
    );
    c.import_hello();
    for (i, (registry, to)) in registries.iter().zip(&targets).enumerate() {
        let out = run_reference(
            &c,
            &format!("redirect{i}"),
            &format!("{}/x/y:1", registry.addr),
        );
        assert!(!out.status.success(), "{to}: {}", describe(&out));
        assert!(
            !describe(&out).contains(SECRET),
            "{to}: the node's answer reached the pod"
        );
        assert!(
            stderr(&out).contains("not among the registries the operator allows"),
            "{to}: {}",
            describe(&out)
        );
    }
    assert_eq!(
        node.reached(),
        0,
        "the shim connected to the node's service"
    );
}

#[test]
fn without_an_allow_list_no_hop_goes_to_the_node() {
    let node = NodeService::start();
    let secret = node.port;
    let closed = free_port();
    let at = |host: &str, port: u16| format!("http://{host}:{port}/latest/meta-data/");
    let mut targets = vec![
        at("127.0.0.1", secret),
        at("127.0.0.1", closed),
        at("[::ffff:127.0.0.1]", secret),
        at("[::ffff:7f00:1]", secret),
        // A name that resolves to the node is the node.
        at("localhost", secret),
        at("0.0.0.0", secret),
    ];
    if let Some(ip) = interface_address() {
        targets.push(at(&ip, secret));
    }
    let mut registries: Vec<Hostile> = targets
        .iter()
        .map(|to| redirecting_to("127.0.0.2", to.clone()))
        .collect();
    registries.push(with_realm(
        "127.0.0.3",
        format!("http://127.0.0.1:{secret}/latest/meta-data/iam/security-credentials/"),
    ));
    let hosts = tempfile::tempdir().unwrap();
    // The registries the pod names are reached through the operator's hosts.toml (the
    // test has no address off the node to put them on): its `server` is the operator's.
    for (i, registry) in registries.iter().enumerate() {
        let dir = hosts.path().join(format!("r{i}.test"));
        fs::create_dir(&dir).unwrap();
        fs::write(
            dir.join("hosts.toml"),
            format!("server = \"http://{}\"\n", registry.addr),
        )
        .unwrap();
    }
    let c = Containerd::start_with(&[("WASM_OCI_HOSTS_DIR", hosts.path())], "");
    c.import_hello();
    let mut outs = Vec::new();
    for (i, to) in targets.iter().chain([&"the realm".to_owned()]).enumerate() {
        let out = run_reference(&c, &format!("hop{i}"), &format!("r{i}.test/x/y:1"));
        assert!(!out.status.success(), "{to}: {}", describe(&out));
        assert!(
            !describe(&out).contains(SECRET),
            "{to}: the node's answer reached the pod"
        );
        assert!(
            stderr(&out).contains("an address of the node itself"),
            "{to}: {}",
            describe(&out)
        );
        outs.push(out);
    }
    // Whether something listens there or not, the pod reads the same.
    let ports = [secret.to_string(), closed.to_string()];
    assert_eq!(
        refusal_line(&outs[0], &[&ports[0], &ports[1]]).replace("r0.test", "X"),
        refusal_line(&outs[1], &[&ports[0], &ports[1]]).replace("r1.test", "X")
    );
    assert_eq!(
        node.reached(),
        0,
        "the shim connected to the node's service"
    );
}

#[test]
fn a_token_realm_on_the_node_is_not_asked_with_an_allow_list() {
    let node = NodeService::start();
    let realm = with_realm(
        "127.0.0.2",
        format!(
            "http://127.0.0.1:{}/latest/meta-data/iam/security-credentials/",
            node.port
        ),
    );
    let c = Containerd::start_with(
        &[("WASM_OCI_PLAIN_HTTP", Path::new("1"))],
        &format!("[references]\nallow = [\"{}\"]\n", realm.addr),
    );
    c.import_hello();
    let out = run_reference(&c, "realm", &format!("{}/x/y:1", realm.addr));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !describe(&out).contains(SECRET),
        "the realm's answer reached the pod"
    );
    assert!(
        stderr(&out).contains("not among the registries the operator allows"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        node.reached(),
        0,
        "the shim connected to the node's service"
    );
}

/// The fetcher the shim makes, driven directly: the shim never pushes, but an upload
/// location is a hop like any other.
#[test]
fn an_upload_location_on_the_node_is_not_sent_anything() {
    let node = NodeService::start();
    let location = format!("http://127.0.0.1:{}/upload?state=1", node.port);
    let registry = Hostile::start("127.0.0.2", move |method, path| match (method, path) {
        ("GET", "/v2/") => response("200 OK", &[], "{}"),
        ("HEAD", _) => response("404 Not Found", &[], ""),
        ("POST", _) => response("202 Accepted", &[format!("Location: {location}")], ""),
        _ => response("500 Internal Server Error", &[], ""),
    });
    let cache = tempfile::tempdir().unwrap();
    let policy = wasm_oci_fetcher::egress::Policy::new(
        Some(std::slice::from_ref(&registry.addr)),
        "the test's shim config",
    )
    .unwrap();
    let fetcher = wasm_oci_fetcher::Fetcher::new(
        wasm_oci_cache::Cache::open(cache.path()).unwrap(),
        wasm_oci_fetcher::RegistryOptions {
            plain_http: true,
            ..Default::default()
        },
        // A push: the signature policy has nothing to decide.
        Arc::new(wasm_oci_trust::policy::Policy::accept_anything()),
    )
    .with_egress(Arc::new(policy));
    let reference = wasm_oci_fetcher::parse_reference(&format!("{}/x/y:1", registry.addr)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = runtime
        .block_on(fetcher.push(
            &testdata("hello.wasm"),
            &reference,
            wasm_oci_fetcher::PushFormat::Cncf,
        ))
        .unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(e));
    assert!(
        text.contains("not among the registries the operator allows"),
        "{text}"
    );
    assert_eq!(node.reached(), 0, "the upload went to the node's service");
}

#[test]
fn a_mirror_the_operator_named_is_reached_but_not_where_it_redirects() {
    let node = NodeService::start();
    let registry = Registry::start();
    let cli = WasmOci::new();
    cli.ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &registry.reference("tools/hello:v1"),
    ]);
    let mirror = redirecting_to(
        "127.0.0.2",
        format!("http://127.0.0.1:{}/latest/meta-data/", node.port),
    );
    // The operator's hosts.toml: a mirror on the node, then the origin (on loopback here).
    let hosts = tempfile::tempdir().unwrap();
    let dir = hosts.path().join("mirrored.test");
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.addr, mirror.addr
        ),
    )
    .unwrap();
    let c = Containerd::start_with(&[("WASM_OCI_HOSTS_DIR", hosts.path())], "");
    c.import_hello();
    let out = run_reference(&c, "mirrored", "mirrored.test/tools/hello:v1");
    // The mirror's redirect is refused, the mirror passed over, the origin serves.
    assert_eq!(stdout(&out), HELLO, "{}\n{}", describe(&out), c.log());
    let log = fs::read_to_string(c.shim_log()).unwrap_or_default();
    assert!(log.contains("an address of the node itself"), "{log}");
    assert_eq!(
        node.reached(),
        0,
        "the shim connected to the node's service"
    );
}
