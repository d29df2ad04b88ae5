//! Attacks on `wasm-oci serve` (and a pod's HTTP server) that the limits of
//! tests/all/serve_limits.rs do not stop: each test is an attack that still works, and fails
//! until the server stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::serve::wait_until;
use crate::support::{Adapter, WasmOci, build_c_guest, wasi_http_wit};
use crate::support::{Served, push_proxy};

/// The hostile guest (testdata/http_hog.c), built once per test run.
pub(crate) fn hog() -> &'static Path {
    static HOG: OnceLock<PathBuf> = OnceLock::new();
    HOG.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("http-hog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        build_c_guest(
            &dir,
            "http_hog",
            &wasi_http_wit(),
            "wasi:http/proxy@0.2.12",
            Adapter::Proxy,
        )
    })
}

/// The most resident memory process `pid` has had, in bytes.
pub(crate) fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib << 10
}

/// Sends `POST /echo` with a body of `len` bytes and reads nothing back; returns once the
/// whole body is written (the server has read most of it: the kernel holds a few MiB).
fn echo_unread(addr: &str, len: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /echo HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&vec![b'e'; len]).unwrap();
    stream
}

/// `GET /hello` on a connection of its own, waiting `patience` at most for the answer's
/// status line; `None` when none came.
fn status_within(addr: &str, patience: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(patience)).unwrap();
    write!(stream, "GET /hello HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

/// A client that sends a request and then never reads its response holds the guest's slot
/// (its instance and its memory) for as long as the guest writes: the server has a deadline
/// for a request's head and body, none for the client to take its response. With
/// `--max-concurrency 1` and every timeout at a second, one such client stops every other
/// request for good (there is no `--timeout` here: the operator allowed long requests, not
/// clients that hold them).
#[test]
fn a_client_that_never_reads_its_response_does_not_hold_the_only_guest_slot() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-concurrency",
            "1",
            "--idle-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            &p.reference,
        ],
    );
    // 12 MiB echoed is more than the socket buffers take: the guest blocks writing it.
    let _never_reads = echo_unread(&served.addr, 12 << 20);
    // Twenty times every limit the server was given: a request after it is answered.
    let answer = status_within(&served.addr, Duration::from_secs(20));
    assert!(
        answer.is_some(),
        "a client that reads nothing holds the only guest slot past every timeout"
    );
}

/// A guest stopped in the middle of its response (its `--timeout`, here while a client
/// is slow to read) ends a chunked response as if it were complete: the client reads a
/// well-formed 201 whose body is cut short, and cannot tell. A response cut short must break
/// the connection (no terminating chunk), as hyper does for a body that fails.
#[test]
fn a_response_cut_short_by_the_timeout_does_not_look_complete() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", "--timeout", "2s", &p.reference]);
    let sent = 12 << 20;
    let stream = echo_unread(&served.addr, sent);
    // The guest, blocked writing the echo, is stopped at its deadline.
    let log = || std::fs::read_to_string(cli.log_file()).unwrap();
    wait_until(|| log().contains("request ran past its timeout"));
    // Now read it all.
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 201"), "{status:?}");
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
    }
    assert!(chunked, "the echo is sent chunked");
    let mut body = 0usize;
    let complete = loop {
        let mut size = String::new();
        match reader.read_line(&mut size) {
            Ok(n) if n > 0 => {}
            // The connection broke off: the client knows the response is cut short.
            _ => break false,
        }
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break false;
        };
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            break false;
        }
        if size == 0 {
            break true;
        }
        body += size;
    };
    assert!(
        !complete || body == sent,
        "a well-formed response of {body} bytes of the {sent} echoed: cut short, and it looks complete"
    );
}

/// `--max-memory` is "one memory budget for the whole server", but what a guest makes the host
/// hold is outside it: 4096 resources of 64 KiB header maps each is 256 MiB of host memory per
/// instance, every instance at once. Here one request under an 8 MiB budget makes the server
/// take some 240 MiB.
#[test]
fn header_maps_a_guest_makes_the_host_hold_count_against_the_memory_budget() {
    let cli = WasmOci::new();
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-memory",
            "8MiB",
            "--max-concurrency",
            "1",
            hog().to_str().unwrap(),
        ],
    );
    // Warm: the instance pool and the runtime are up.
    let r = served.get("/fields?n=1");
    assert_eq!(r.status, 200, "{r:?}");
    let before = peak_rss(served.child.id());
    let r = served.get("/fields?n=4000");
    // Refused (a trap, 500) or done within the budget: either holds; four times the budget
    // does not.
    let grown = peak_rss(served.child.id()).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "one request under an 8 MiB budget grew the server by {} MiB ({r:?})",
        grown >> 20
    );
}

/// Once a guest is done, what it wrote that the client has not read is the host's to send:
/// the connection counts as busy until it is sent, and no deadline runs for that (the guest's
/// `--timeout` is over, the idle one has not begun). A client that asks for a large answer
/// and reads nothing holds its connection, its share of the budget and the megabytes the
/// guest left behind for good: with `--max-connections 1` and every timeout at a second or
/// five, everyone else is answered 503 forever.
#[test]
fn a_response_the_client_never_reads_does_not_hold_its_connection_once_the_guest_is_done() {
    let cli = WasmOci::new();
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-connections",
            "1",
            "--idle-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--timeout",
            "5s",
            hog().to_str().unwrap(),
        ],
    );
    let mut never_reads = TcpStream::connect(&served.addr).unwrap();
    write!(
        never_reads,
        "GET /flood HTTP/1.1\r\nHost: {}\r\n\r\n",
        served.addr
    )
    .unwrap();
    // Its guest writes until the host takes no more, then returns; the connection must be
    // closed at some deadline, and its slot given to the next client.
    wait_until(|| served.get("/fields?n=1").status == 200);
    drop(never_reads);
}

/// `wasi:random/random.get-random-bytes` makes the host allocate and fill what the guest asks
/// for (up to wasmtime's own cap, 64 MiB) before the guest's memory is asked for room: a
/// guest under an 8 MiB budget makes the server take 64 MiB per call, every request at once,
/// and spends that long in one host call with no epoch check.
#[test]
fn random_bytes_a_guest_asks_for_count_against_the_memory_budget() {
    let cli = WasmOci::new();
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-memory",
            "8MiB",
            "--max-concurrency",
            "1",
            hog().to_str().unwrap(),
        ],
    );
    let r = served.get("/random?mb=1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "got 1048576\n");
    let before = peak_rss(served.child.id());
    // More than the budget: the guest cannot take it, and the host should not make it.
    let r = served.get("/random?mb=64");
    assert_eq!(r.status, 500, "{r:?}");
    let grown = peak_rss(served.child.id()).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "one request under an 8 MiB budget grew the server by {} MiB",
        grown >> 20
    );
}

/// What a client reads of `GET path` on a connection of its own, up to the server's close
/// (or a reset): the raw bytes.
fn read_to_close(addr: &str, path: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Keep-alive, as clients ask: only a response cut short closes the connection.
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "{path}: the connection stayed open after {:?}: {e}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    got
}

/// A guest that writes part of its response and returns without `finish` (holding its
/// outgoing body, or dropping it) has not sent a whole response: the host ended its body
/// when the instance's store went away, which read as a complete chunked response (a last
/// chunk, the connection kept for the next request). It must read as cut short, as
/// wasmtime's own server makes it: the connection closed, with no last chunk and no more
/// than the guest wrote (hyper may close before it sent even the head).
#[test]
fn a_response_body_the_guest_never_finished_does_not_look_complete() {
    let cli = WasmOci::new();
    let served = Served::start(&cli, &["serve", hog().to_str().unwrap()]);
    for path in ["/unfinished", "/unfinished?drop"] {
        let got = read_to_close(&served.addr, path);
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.ends_with("\r\n0\r\n\r\n"),
            "{path}: an unfinished body ended with the last chunk: {text:?}"
        );
        if !text.is_empty() {
            assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text:?}");
            assert!(
                text.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "{path}: {text:?}"
            );
        }
    }
    let got = read_to_close(&served.addr, "/unfinished?length=100");
    let text = String::from_utf8_lossy(&got);
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            text.to_ascii_lowercase().contains("content-length: 100"),
            "{text:?}"
        );
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(body.len() < 100, "{text:?}");
    }
    // The server is well, and answers the next client whole.
    let r = served.get("/fields?n=1");
    assert_eq!(r.status, 200, "{r:?}");
}

/// The header maps a guest makes the host hold were capped per instance (half the budget)
/// but not charged to the budget the guests share: under `--max-memory 32MiB`, 24 requests
/// at once (each with 16 KiB of headers of its own) whose guests each make 200 header maps
/// of some 60 KiB and hold them made the server take a dozen MiB per request, some 300 MiB
/// together. Charged to the one budget, the requests past it are refused (their guests trap:
/// 500) and the server stays within a small multiple of its limit (the runtime's own memory
/// is not in the budget).
#[test]
fn header_maps_of_requests_at_once_share_the_memory_budget() {
    const BUDGET: u64 = 32 << 20;
    const REQUESTS: usize = 24;
    let cli = WasmOci::new();
    let served = Served::start(
        &cli,
        &["serve", "--max-memory", "32MiB", hog().to_str().unwrap()],
    );
    let r = served.get("/fields?n=1");
    assert_eq!(r.status, 200, "{r:?}");
    let before = peak_rss(served.child.id());
    let pad = "p".repeat(16 << 10);
    let streams: Vec<TcpStream> = (0..REQUESTS)
        .map(|_| {
            let mut stream = TcpStream::connect(&served.addr).unwrap();
            write!(
                stream,
                "POST /fields?n=200 HTTP/1.1\r\nHost: {}\r\nX-Pad: {pad}\r\nContent-Length: 1\r\n\r\n",
                served.addr
            )
            .unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    // Every request is either held by its guest (which has made its maps) or answered.
    let answered = |streams: &[TcpStream]| {
        streams
            .iter()
            .filter(|s| s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0))
            .count()
    };
    wait_until(|| {
        served.stderr().matches("guest holds fields").count() + answered(&streams) == REQUESTS
    });
    let grown = peak_rss(served.child.id()).saturating_sub(before);
    let holding = served.stderr().matches("guest holds fields").count();
    eprintln!(
        "{REQUESTS} requests, {holding} held their maps at once: the server grew by {} MiB",
        grown >> 20
    );
    assert!(
        grown < 3 * BUDGET,
        "{REQUESTS} requests under a {} MiB budget grew the server by {} MiB ({holding} held their maps at once)",
        BUDGET >> 20,
        grown >> 20
    );
    // Each is answered in the end, whole or refused; the budget served some, not all.
    let mut statuses = Vec::new();
    for mut stream in streams {
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let _ = stream.write_all(b"x");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        statuses.push(line.split_whitespace().nth(1).unwrap_or("").to_owned());
    }
    let served_whole = statuses.iter().filter(|s| *s == "200").count();
    assert!(served_whole >= 1, "{statuses:?}");
    assert!(served_whole < REQUESTS, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| ["200", "500", "503"].contains(&s.as_str())),
        "{statuses:?}"
    );
    let log = std::fs::read_to_string(cli.log_file()).unwrap();
    assert!(
        log.contains("request asked for memory over its limit"),
        "{log}"
    );
    // What they held is given back: one such request fits again.
    wait_until(|| served.get("/fields?n=200").status == 200);
}
