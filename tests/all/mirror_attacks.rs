//! Attacks on registry mirrors (#17), each a hole a red team found in review: a mirror's
//! redirect, trickle, oversize or empty answer, and a silent mirror. (The load racing a prune
//! found with them is in cache_attacks.rs.)

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::support::{Registry, WasmOci, describe, testdata};

const REPO: &str = "edge/hello:v1";

/// A minimal HTTP/1.1 server on a loopback port: every request's head is recorded, and
/// `answer(method, path)` says what to send back (a whole response, head and body).
struct Fake {
    addr: String,
    heads: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Fake {
    fn start(answer: impl Fn(&str, &str) -> String + Send + Sync + 'static) -> Fake {
        Self::streaming(move |method, path, out| {
            out.write_all(answer(method, path).as_bytes()).is_ok()
        })
    }

    /// As [`Fake::start`], `answer` writing the response itself (false: close).
    fn streaming(
        answer: impl Fn(&str, &str, &mut TcpStream) -> bool + Send + Sync + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let heads: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let answer = Arc::new(answer);
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                let answer = answer.clone();
                std::thread::spawn(move || serve(stream, &seen, &*answer));
            }
        });
        Fake { addr, heads }
    }

    /// Every header line any request carried, lower-cased.
    fn header_lines(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .flat_map(|h| h.iter().skip(1).map(|l| l.to_ascii_lowercase()))
            .collect()
    }

    fn requests(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .map(|h| h[0].clone())
            .collect()
    }
}

fn serve(
    stream: TcpStream,
    seen: &Mutex<Vec<Vec<String>>>,
    answer: &dyn Fn(&str, &str, &mut TcpStream) -> bool,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        if head.is_empty() {
            return;
        }
        let mut parts = head[0].split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        seen.lock().unwrap().push(head);
        if !answer(&method, &path, &mut stream) {
            return;
        }
    }
}

fn not_found() -> String {
    let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#;
    format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn redirect_to(addr: &str, path: &str) -> String {
    format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{addr}{path}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An origin holding hello.wasm as `edge/hello:v1`.
fn origin_with_hello() -> Registry {
    let origin = Registry::start();
    let pusher = WasmOci::new();
    let out = pusher.run(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    origin
}

/// `DIR/<host>_<port>_/hosts.toml` for `registry` (`host:port`).
fn hosts_toml(dir: &std::path::Path, registry: &str, text: &str) {
    let (host, port) = registry.rsplit_once(':').unwrap();
    let d = dir.join(format!("{host}_{port}_"));
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("hosts.toml"), text).unwrap();
}

/// The operator gives a mirror a secret header in hosts.toml (`[host."..".header]`, as an
/// API key some mirrors want). The fetcher attaches it only to URLs of the mirror's own origin
/// (`Registry::send` checks `owns`), but reqwest follows the mirror's redirect with every
/// header of the original request except `Authorization`/`Cookie`: a mirror (or the origin,
/// redirecting blobs to a CDN) sends the key to any host it names.
#[test]
fn a_hosts_toml_header_does_not_follow_a_redirect_to_another_host() {
    const KEY: &str = "mirror-api-key-9f3b1c";
    let origin = origin_with_hello();
    let elsewhere = Fake::start(|_, _| not_found());
    let target = elsewhere.addr.clone();
    let mirror = Fake::start(move |_, path| redirect_to(&target, path));
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"http://{}\".header]\n    x-mirror-key = \"{KEY}\"\n",
            mirror.addr, mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    // The mirror fails; the origin serves.
    assert!(out.status.success(), "{}", describe(&out));
    let at_mirror = mirror.header_lines();
    assert!(
        at_mirror.iter().any(|l| l.contains(KEY)),
        "the mirror was sent its header: {at_mirror:?}"
    );
    assert!(
        !elsewhere.requests().is_empty(),
        "the mirror's redirect was followed"
    );
    let leaked: Vec<_> = elsewhere
        .header_lines()
        .into_iter()
        .filter(|l| l.contains(KEY))
        .collect();
    assert!(
        leaked.is_empty(),
        "the mirror's hosts.toml header reached {} , a host the mirror redirected to: {leaked:?}",
        elsewhere.addr
    );
}

/// A mirror that answers, but trickles a blob (a chunk of one byte every two seconds) is
/// never "failing": reqwest's read timeout (60 s) restarts with every byte, the mirror gets no
/// deadline of its own, and is not marked down. Every node pulling through it waits for it,
/// here until the blob's declared size is exceeded (minutes); a larger layer, for ever. A
/// mirror is less trusted than the origin, and "a failing mirror is skipped for the next
/// host": the pull must reach the origin in bounded time.
#[test]
fn a_mirror_trickling_a_blob_does_not_stall_the_pull() {
    let origin = origin_with_hello();
    let mirror = Fake::streaming(|_, path, out| {
        if path.contains("/blobs/") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            if out.write_all(head.as_bytes()).is_err() {
                return false;
            }
            loop {
                if out
                    .write_all(b"1\r\nx\r\n")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
        }
        // `/v2/` and anything else: open, empty.
        out.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .is_ok()
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            mirror.addr
        ),
    );
    let node = WasmOci::new();
    let mut child = node
        .command()
        .args(["pull", "--json", "--hosts-dir"])
        .arg(hosts.path())
        .arg(origin.reference(REPO))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(45);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let blob_requests = mirror
        .requests()
        .into_iter()
        .filter(|r| r.contains("/blobs/"))
        .count();
    assert!(blob_requests > 0, "the mirror was asked for a blob");
    let status = status.unwrap_or_else(|| {
        panic!(
            "a pull of a 171-byte module through a trickling mirror was still running after {}s, \
             not given up for the origin",
            limit.as_secs()
        )
    });
    assert!(
        status.success(),
        "the origin serves once the mirror is given up"
    );
}

/// A pull-only mirror asked for a manifest by digest answers with more than the 4 MiB a
/// manifest may be. `Registry::manifest` verifies the digest only when the body is within the
/// limit, so the oversize answer comes back as the mirror's success; `pull` then refuses it
/// with `check_document_size` — an error of the whole pull, not of the mirror. One bad
/// answer from a less-trusted mirror fails every pull by digest instead of the next host
/// (the origin, which has it) being asked.
#[test]
fn a_mirror_answering_an_oversize_manifest_is_skipped_for_the_origin() {
    let origin = origin_with_hello();
    // The manifest's digest, as the origin has it.
    let first = WasmOci::new();
    let out = first.run(&["pull", "--json", &origin.reference(REPO)]);
    assert!(out.status.success(), "{}", describe(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest_digest = pulled["digest"].as_str().unwrap().to_owned();

    let mirror = Fake::start(|_, path| {
        if path.contains("/manifests/") {
            let body = " ".repeat((4 << 20) + 1);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else if path.contains("/blobs/") {
            not_found()
        } else {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_owned()
        }
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            mirror.addr
        ),
    );
    let by_digest = format!("{}/edge/hello@{manifest_digest}", origin.addr);
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &by_digest,
    ]);
    assert!(
        mirror.requests().iter().any(|r| r.contains("/manifests/")),
        "the mirror was asked for the manifest"
    );
    assert!(
        out.status.success(),
        "a mirror's oversize manifest failed the pull instead of the origin being asked: {}",
        describe(&out)
    );
}

/// A resolve-capable mirror answering a tag with a 200 that is not a manifest is one bad
/// answer of a less-trusted host: the next host (the origin) is asked, and the pull succeeds.
#[test]
fn a_mirror_answering_a_tag_with_no_manifest_is_skipped_for_the_origin() {
    let origin = origin_with_hello();
    let mirror = Fake::start(|_, path| {
        if path.contains("/manifests/") {
            let body = "<html>mirror maintenance</html>";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else if path.contains("/blobs/") {
            not_found()
        } else {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_owned()
        }
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.contains("/manifests/v1")),
        "the mirror was asked for the tag"
    );
    assert!(
        out.status.success(),
        "a mirror's unparseable manifest failed the pull: {}",
        describe(&out)
    );
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        pulled["sources"].to_string().contains(&origin.addr),
        "{pulled}"
    );
}

/// A mirror that accepts connections and never says a word times out once (its own read
/// timeout, shorter than the origin's), and is then passed over for the rest of the pull: it
/// is not asked again for the config or the layer, each of which would cost another timeout.
#[test]
fn a_silent_mirror_is_asked_once_and_the_origin_serves() {
    let origin = origin_with_hello();
    let mirror = Fake::streaming(|_, _, _| {
        std::thread::sleep(std::time::Duration::from_secs(300));
        false
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"2s\"\n",
            mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        mirror.requests().len(),
        1,
        "the silent mirror was asked again after it timed out: {:?}",
        mirror.requests()
    );
}
