//! The network a container's HTTP component listens in is the one its spec asks for: a new
//! namespace (`ctr run`), the pod's (CRI, whichever shim the pod's sandbox is in), or the
//! node's only when the spec says so (`--net-host`, `hostNetwork`). Never the node's by
//! accident, where runc's container with the same spec would be unreachable.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::containerd::Containerd;
use crate::cri::Cri;
use crate::cri::{HttpPod, http_pod};
use crate::support::http_guests;
use crate::support::{describe, free_port};

const HTTP_IMAGE: &str = "docker.io/library/http:v1";

/// `curl` of `url`, from the network namespace at `netns` (the test's own when `None`).
fn curl(netns: Option<&str>, url: &str) -> Output {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={ns}")).arg("curl");
            cmd
        }
        None => Command::new("curl"),
    };
    cmd.args(["-s", "-i", "--max-time", "5", url])
        .output()
        .unwrap()
}

/// Polls `curl` until it answers 200, for at most 20 s; returns the answer.
fn wait_answer(netns: Option<&str>, url: &str, context: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = curl(netns, url);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never answered: {text} {}\n{}",
            describe(&out),
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The network namespaces process `pid` holds open (as `/proc/PID/fd/N` paths) that are not
/// this test's own.
fn namespaces_held_by(pid: u32) -> Vec<PathBuf> {
    let ours = fs::read_link("/proc/self/ns/net").unwrap();
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            fs::read_link(p)
                .is_ok_and(|target| target.to_string_lossy().starts_with("net:[") && target != ours)
        })
        .collect()
}

#[test]
fn an_http_container_asking_for_a_network_namespace_gets_one() {
    let c = Containerd::start();
    c.import(
        HTTP_IMAGE,
        &[("proxy.wasm", &http_guests().proxy)],
        &["/proxy.wasm"],
    );
    // `ctr run` asks for a network namespace of the container's own, without a path.
    let port = free_port();
    let env = format!("WASM_OCI_HTTP_ADDR=0.0.0.0:{port}");
    c.run_detached(&["--env", &env], HTTP_IMAGE, "own-net", &[]);
    let shim = c.task_pid("own-net");
    let url = format!("http://127.0.0.1:{port}/hello");
    let held = namespaces_held_by(shim);
    assert_eq!(
        held.len(),
        1,
        "the shim holds no network namespace for the container: {held:?}\n{}",
        c.log()
    );
    let netns = held[0].display().to_string();
    let answer = wait_answer(Some(&netns), &url, || c.log());
    assert!(
        answer.ends_with("hello from wasm: GET /hello\n"),
        "{answer}"
    );
    // ... and the node's network does not reach it.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a container that asked for a network of its own listens in the node's"
    );
    c.kill_and_delete("own-net", "SIGKILL");

    // `--net-host` asks for the node's network: there it is.
    let port = free_port();
    let env = format!("WASM_OCI_HTTP_ADDR=127.0.0.1:{port}");
    c.run_detached(&["--net-host", "--env", &env], HTTP_IMAGE, "host-net", &[]);
    let url = format!("http://127.0.0.1:{port}/hello");
    wait_answer(None, &url, || c.log());
    assert!(namespaces_held_by(c.task_pid("host-net")).is_empty());
    c.kill_and_delete("host-net", "SIGKILL");
}

#[test]
fn a_pods_http_container_in_a_shim_of_its_own_listens_in_the_pods_network() {
    // Every container in a shim of its own: the pod's sandbox is another process, whose
    // `/proc/PID/ns/net` (what the CRI plugin names) is the node's network.
    let cri = Cri::start_with(&[], "[groups]\nby = \"container\"\n");
    let HttpPod {
        config,
        pod,
        id,
        port,
    } = http_pod(&cri, "web-alone");
    assert_ne!(
        cri.c.task_pid(&id),
        cri.c.task_pid(&pod),
        "the container shares its sandbox's shim"
    );
    let netns = cri.pod_netns(&pod);
    let url = format!("http://127.0.0.1:{port}/hello");
    let answer = wait_answer(Some(&netns), &url, || cri.log_of(&config, "web"));
    assert!(
        answer.ends_with("hello from wasm: GET /hello\n"),
        "{answer}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the pod's server is reachable from the node's network"
    );
    cri.stop_container(&id, 10).unwrap();
    assert_eq!(cri.wait_exited(&id, Duration::from_secs(15)).exit_code, 0);
    cri.remove_pod(&pod);
}
