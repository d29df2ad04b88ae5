//! What no client and no request may do to `wasm-oci serve` (and a pod's HTTP server): hold
//! every connection or descriptor with idle or slow clients, starve the other requests with a
//! loop, outlive a shutdown, hold every slot with a slow body, or take more memory together
//! than the limit. Each test is an attack that worked before the server had these limits.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::serve::wait_until;
use crate::support::{Client, Served, push_proxy};
use crate::support::{WasmOci, exit_within};

/// A connection that sends nothing.
fn idle(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Whether the server closed `stream` without answering: end of file or a reset, not bytes.
fn closed_without_answer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Writes `head` and then `trickle` one byte at a time, `every` apart, on a thread of its
/// own, until they are all sent, a write fails, or `stop` is set; returns how many bytes of
/// `trickle` went out.
fn trickle(
    mut stream: TcpStream,
    head: String,
    trickle: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        if stream.write_all(head.as_bytes()).is_err() {
            return 0;
        }
        for sent in 0..trickle {
            if stop.load(Ordering::SeqCst) || stream.write_all(b"x").is_err() {
                return sent;
            }
            std::thread::sleep(every);
        }
        trickle
    })
}

#[test]
fn connections_over_the_cap_are_answered_503_and_admitted_again_when_one_closes() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", "--max-connections", "4", &p.reference]);
    // Four connections that send nothing hold every slot (the idle timeout is a minute).
    let mut holders: Vec<TcpStream> = (0..4).map(|_| idle(&served.addr)).collect();
    // Accepted in order: the next ones are over the cap, and told so.
    for _ in 0..3 {
        let r = served.get("/hello");
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.headers["retry-after"], "1", "{r:?}");
        assert_eq!(r.headers["connection"], "close", "{r:?}");
    }
    // One closes: its slot is free again.
    holders.pop().unwrap().shutdown(Shutdown::Both).unwrap();
    wait_until(|| served.get("/hello").status == 200);
    let log = std::fs::read_to_string(cli.log_file()).unwrap();
    assert_eq!(
        log.matches("too many connections").count(),
        1,
        "one warning for the whole episode: {log}"
    );
}

#[test]
fn idle_connections_and_slow_heads_are_closed_and_free_their_slots() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-connections",
            "4",
            "--idle-timeout",
            "1s",
            "--header-timeout",
            "1s",
            &p.reference,
        ],
    );
    // Two that send nothing, two that send a head one byte every 100 ms (30 s in all),
    // and between them every slot.
    let mut silent: Vec<TcpStream> = (0..2).map(|_| idle(&served.addr)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let stream = idle(&served.addr);
            let reader = stream.try_clone().unwrap();
            let writer = trickle(
                stream,
                format!("GET /hello HTTP/1.1\r\nHost: {}\r\nX-Slow: ", served.addr),
                300,
                Duration::from_millis(100),
                stop.clone(),
            );
            (reader, writer)
        })
        .collect();
    for stream in &mut silent {
        assert!(
            closed_without_answer(stream),
            "an idle connection got an answer"
        );
    }
    for (mut reader, writer) in slow {
        assert!(
            closed_without_answer(&mut reader),
            "a head sent one byte at a time got an answer"
        );
        stop.store(true, Ordering::SeqCst);
        let sent = writer.join().unwrap();
        assert!(
            sent < 300,
            "the whole slow head went out before the server closed"
        );
    }
    // Their slots are free.
    let r = served.get("/hello");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn running_out_of_descriptors_pauses_accepting_quietly_and_it_recovers() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let mut command = cli.command();
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(96),
                maximum: Some(96),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                .map_err(std::io::Error::from)
        });
    }
    // A cap above what 96 descriptors hold, so that they run out.
    let served = Served::start_command(
        command,
        &[
            "serve",
            "--max-connections",
            "1000",
            "--idle-timeout",
            "1s",
            &p.reference,
        ],
    );
    let log = || std::fs::read_to_string(cli.log_file()).unwrap();
    wait_until(|| log().contains("the connection cap is above what the descriptor limit holds"));
    let mut silent: Vec<TcpStream> = (0..120).map(|_| idle(&served.addr)).collect();
    wait_until(|| log().contains("cannot accept connections: out of file descriptors"));
    // Every one of them is accepted in the end (as others time out) and closed.
    for stream in &mut silent {
        assert!(
            closed_without_answer(stream),
            "an idle connection got an answer"
        );
    }
    drop(silent);
    wait_until(|| served.get("/hello").status == 200);
    let log = log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("accept"))
        .count();
    // A few episodes at most (descriptors run out again as the backlog is accepted), never
    // one line per attempt.
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} warnings about accepting: {log}"
    );
}

#[test]
fn a_looping_request_neither_starves_the_others_nor_outlives_a_shutdown() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    // No --timeout: the loops run until the server stops them.
    let mut served = Served::start(&cli, &["serve", "--shutdown-timeout", "1s", &p.reference]);
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let addr = served.addr.clone();
            std::thread::spawn(move || Client::connect(&addr).try_send("GET", "/spin", &[], b""))
        })
        .collect();
    // More loops than this machine has cores of its own to give them.
    wait_until(|| served.stderr().matches("guest spinning").count() >= 4);
    for _ in 0..3 {
        let r = served.get("/hello");
        assert_eq!(r.status, 200, "{r:?}");
    }
    served.terminate();
    let status = exit_within(&mut served.child, Duration::from_secs(60))
        .expect("serve ends after its shutdown timeout, loops or not");
    assert_eq!(status.code(), Some(0), "{}", served.stderr());
    for spinner in spinners {
        // Stopped: a 504 or the connection closed, never an answer from the loop.
        if let Ok(r) = spinner.join().unwrap() {
            assert_eq!(r.status, 504, "{r:?}");
        }
    }
}

#[test]
fn slow_request_bodies_are_answered_408_and_free_their_slots() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-concurrency",
            "2",
            "--body-timeout",
            "1s",
            &p.reference,
        ],
    );
    // Two bodies of 300 bytes, one byte every 100 ms: every slot, for 30 s.
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let stream = idle(&served.addr);
            let reader = stream.try_clone().unwrap();
            let writer = trickle(
                stream,
                format!(
                    "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 300\r\n\r\n",
                    served.addr
                ),
                300,
                Duration::from_millis(100),
                stop.clone(),
            );
            (reader, writer)
        })
        .collect();
    for (mut reader, writer) in slow {
        let mut answer = String::new();
        let _ = reader.read_to_string(&mut answer);
        stop.store(true, Ordering::SeqCst);
        let sent = writer.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "a slow body was answered {answer:?}"
        );
        assert!(
            sent < 300,
            "the whole slow body went out before it was answered"
        );
    }
    let r = served.get("/hello");
    assert_eq!(r.status, 200, "{r:?}");
    let r = served.request("POST", "/echo", &[], b"a body sent at once");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.text(), "a body sent at once");
}

#[test]
fn concurrent_requests_share_the_memory_limit() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", "--max-memory", "24MiB", &p.reference]);
    // One request holds 16 MiB until its body (one byte) comes.
    let mut holder = idle(&served.addr);
    write!(
        holder,
        "POST /alloc?mb=16 HTTP/1.1\r\nHost: {}\r\nContent-Length: 1\r\n\r\n",
        served.addr
    )
    .unwrap();
    wait_until(|| served.stderr().contains("guest allocated"));
    // Another 16 MiB at the same time is over the limit for both together.
    let r = served.get("/alloc?mb=16");
    assert_eq!(r.status, 500, "{r:?}");
    let log = std::fs::read_to_string(cli.log_file()).unwrap();
    assert!(
        log.contains("request asked for memory over its limit"),
        "{log}"
    );
    // Small requests still fit beside it.
    let r = served.get("/alloc?mb=1");
    assert_eq!(r.status, 200, "{r:?}");
    holder.write_all(b"x").unwrap();
    let mut answer = [0u8; 12];
    holder.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Once it is done, its memory is the next request's.
    wait_until(|| served.get("/alloc?mb=16").status == 200);
}

/// A pod's HTTP server, reached from inside its network namespace as another container of
/// the pod would reach it.
struct Pod {
    cri: crate::cri::Cri,
    config: k8s_cri::v1::PodSandboxConfig,
    pod: String,
    id: String,
    url: String,
}

impl Pod {
    /// An HTTP pod of the test proxy, under `shim_toml`, answering `/hello`.
    fn serve(shim_toml: &str) -> Pod {
        let cri = crate::cri::Cri::start_with(&[], shim_toml);
        cri.c.import(
            "registry.test/http:v1",
            &[("proxy.wasm", &crate::support::http_guests().proxy)],
            &["/proxy.wasm"],
        );
        let config = cri.pod_config("web", &[]);
        let pod = cri.run_pod(&config, "wasmoci");
        let port = crate::support::free_port();
        let addr = format!("0.0.0.0:{port}");
        let id = cri
            .create_container_with_env(
                &pod,
                &config,
                "web",
                "registry.test/http:v1",
                &[],
                &[],
                &[("WASM_OCI_HTTP_ADDR", &addr)],
            )
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cri.c.log()));
        let start = k8s_cri::v1::StartContainerRequest {
            container_id: id.clone(),
        };
        cri.rt(|mut rt| async move { rt.start_container(start).await })
            .unwrap();
        let pod = Pod {
            url: format!("http://127.0.0.1:{port}"),
            cri,
            config,
            pod,
            id,
        };
        wait_until(|| pod.curl("/hello").starts_with("HTTP/1.1 200"));
        pod
    }

    /// `curl -i URL/PATH` in the pod's network namespace: the status line, headers and body.
    fn curl(&self, path: &str) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.cri.pod_netns(&self.pod)))
            .args(["curl", "-s", "-i", "--max-time", "60"])
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        self.cri.log_of(&self.config, "web")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.cri.remove_pod(&self.pod);
    }
}

#[test]
fn a_pods_http_requests_run_within_the_operators_time_limit() {
    let pod = Pod::serve("[http]\nrequest_timeout = \"1s\"\n");
    // A loop in a pod's request is stopped and answered, and the server goes on.
    let answer = pod.curl("/spin");
    assert!(
        answer.starts_with("HTTP/1.1 504"),
        "{answer}\n{}",
        pod.log()
    );
    assert!(pod.curl("/hello").starts_with("HTTP/1.1 200"));
}

#[test]
fn a_kill_stops_a_pods_requests_at_once() {
    let pod = Pod::serve("");
    let spinning = {
        let (netns, url) = (pod.cri.pod_netns(&pod.pod), format!("{}/spin", pod.url));
        std::thread::spawn(move || {
            std::process::Command::new("nsenter")
                .arg(format!("--net={netns}"))
                .args(["curl", "-s", "-i", "--max-time", "120", &url])
                .output()
                .unwrap()
        })
    };
    wait_until(|| pod.log().contains("guest spinning"));
    // A grace period of 0 is a SIGKILL: no drain, the loop ends with the container.
    pod.cri.stop_container(&pod.id, 0).unwrap();
    let status = pod.cri.wait_exited(&pod.id, Duration::from_secs(60));
    assert_eq!(status.exit_code, 137, "{}", pod.log());
    let out = spinning.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"),
        "{}",
        crate::support::describe(&out)
    );
}
