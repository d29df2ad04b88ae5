//! A kill always ends a container's guests, and nothing a guest does delays it: a request
//! that loops forever, a guest that uses up its CPU quota. A shim that dies leaves no cgroup
//! behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::containerd::{Containerd, NS, stdout, wait_gone};
use crate::support::http_guests;
use crate::support::{describe, free_port, guests};

const HTTP_IMAGE: &str = "docker.io/library/http:v1";
const PROBE: &str = "docker.io/library/probe:v1";

/// The CPU time process `pid` has used, in clock ticks (`/proc/PID/stat`'s utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 14th and 15th fields; `after` starts at the 3rd.
    field(11) + field(12)
}

/// Waits until process `pid` has used `ticks` more clock ticks of CPU than `from`.
fn wait_cpu(pid: u32, from: u64, ticks: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cpu_ticks(pid) < from + ticks {
        assert!(Instant::now() < deadline, "{what}: the CPU time never grew");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_ends_an_http_container_whose_requests_loop() {
    let c = Containerd::start();
    c.import(
        HTTP_IMAGE,
        &[("proxy.wasm", &http_guests().proxy)],
        &["/proxy.wasm"],
    );
    let port = free_port();
    let env = format!("WASM_OCI_HTTP_ADDR=127.0.0.1:{port}");
    c.run_detached(&["--net-host", "--env", &env], HTTP_IMAGE, "looping", &[]);
    let shim = c.task_pid("looping");
    let hello = || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/hello"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hello() {
        assert!(Instant::now() < deadline, "never served: {}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two requests that never end: as many as the machine has cores, here.
    let before = cpu_ticks(shim);
    let spins: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /spin HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // Two seconds of CPU: the guests loop.
    wait_cpu(shim, before, 200, "the looping requests");
    // The task service still answers while they loop, and the kill ends them.
    let state = stdout(&c.ctr(&["tasks", "ls"]));
    assert!(
        state
            .lines()
            .any(|l| l.starts_with("looping") && l.contains("RUNNING")),
        "{state}"
    );
    let deleted = c.kill_and_delete("looping", "SIGKILL");
    assert!(deleted.contains("137"), "{deleted}");
    // The last container gone, its shim goes too: no guest left burning CPU.
    assert!(wait_gone(shim), "the shim outlived its container");
    drop(spins);
}

/// The cgroup of container `id` under `ctr`'s default parent, in every v1 hierarchy (or the
/// unified one).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(NS).join(id)];
    }
    fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|h| h.path().join(NS).join(id))
        .collect()
}

/// The CPU time container `id`'s cgroup has counted, in nanoseconds.
fn guest_cpu_nanos(id: &str) -> u64 {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let stat = fs::read_to_string(root.join(NS).join(id).join("cpu.stat")).unwrap_or_default();
        return stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |usec| usec * 1000);
    }
    fs::read_to_string(root.join("cpuacct").join(NS).join(id).join("cpuacct.usage"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn sigkill_stops_a_guest_that_uses_up_its_cpu_quota() {
    let c = Containerd::start();
    c.import(PROBE, &[("probe.wasm", &guests().probe)], &["/probe.wasm"]);
    for i in 0..3 {
        let id = format!("quota{i}");
        c.run_detached(&["--cpus", "0.1"], PROBE, &id, &["/probe.wasm", "spin"]);
        let shim = c.task_pid(&id);
        // The guest runs (its cgroup counts its CPU time), at its quota.
        let deadline = Instant::now() + Duration::from_secs(60);
        while guest_cpu_nanos(&id) < 50_000_000 {
            assert!(Instant::now() < deadline, "{id} never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        let deleted = c.kill_and_delete(&id, "SIGKILL");
        assert!(deleted.contains("137"), "{deleted}");
        assert!(wait_gone(shim), "the shim outlived its container");
    }
}

#[test]
fn a_shim_that_dies_leaves_no_cgroup_behind() {
    let c = Containerd::start();
    c.import(PROBE, &[("probe.wasm", &guests().probe)], &["/probe.wasm"]);
    for i in 0..3 {
        let id = format!("dies{i}");
        c.run_detached(
            &["--memory-limit", "67108864"],
            PROBE,
            &id,
            &["/probe.wasm", "spin"],
        );
        let shim = c.task_pid(&id);
        assert!(
            cgroup_dirs(&id).iter().any(|d| d.exists()),
            "no cgroup was made for {id}"
        );
        // The shim dies, as under the OOM killer.
        let out = std::process::Command::new("kill")
            .args(["-9", &shim.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert!(wait_gone(shim));
        // containerd forgets the task of a shim that died.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stdout(&c.ctr(&["tasks", "ls", "-q"]))
            .lines()
            .any(|l| l == id)
        {
            assert!(Instant::now() < deadline, "containerd kept {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: Vec<PathBuf> = cgroup_dirs(&id)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        assert!(
            left.is_empty(),
            "cgroups left behind by a dead shim: {left:?}"
        );
        assert!(c.ctr(&["containers", "rm", &id]).status.success());
    }

    // A cgroup left where a container's goes is taken over, and removed with it.
    let leftover = cgroup_dirs("reused");
    for dir in &leftover {
        if dir.parent().is_some_and(Path::exists) {
            fs::create_dir(dir).unwrap();
        }
    }
    let out = c.run(&[], PROBE, "reused", &["/probe.wasm", "exit", "0"]);
    assert!(out.status.success(), "{}", describe(&out));
    let left: Vec<&PathBuf> = leftover.iter().filter(|d| d.exists()).collect();
    assert!(
        left.is_empty(),
        "a container's cgroup outlived it: {left:?}"
    );
}
