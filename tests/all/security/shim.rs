//! Attacks a pod author can make on a node through `containerd-shim-wasmoci-v1`, under a real
//! containerd: host paths, shared shims, modules from outside the rootfs, code planted under
//! another module's digest, and limits that were only joined.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::containerd::{Containerd, Entry, HELLO, NS, stdout};
use crate::support::{Registry, WasmOci, describe, guests, testdata};

const PROBE: &str = "docker.io/library/probe:v1";

fn with_config(toml: &str) -> (tempfile::TempDir, Containerd) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shim.toml");
    fs::write(&file, toml).unwrap();
    let c = Containerd::start_with_env(&[("WASM_OCI_SHIM_CONFIG", &file)]);
    (dir, c)
}

fn import_probe(c: &Containerd) {
    c.import(PROBE, &[("probe.wasm", &guests().probe)], &["/probe.wasm"]);
}

#[test]
fn a_pod_annotation_cannot_preopen_host_paths() {
    let shared = tempfile::tempdir().unwrap();
    fs::write(shared.path().join("in.txt"), "shared by the operator").unwrap();
    let (_config, c) = with_config(&format!(
        "[profiles.shared]\ndirs = [\"{}::/shared:ro\"]\n",
        shared.path().display()
    ));
    import_probe(&c);
    for (i, hostile) in ["/::/", "/etc::/etc", "shared,/::/"].iter().enumerate() {
        let annotation = format!("io.wasm-oci.preopens={hostile}");
        let out = c.run(
            &["--annotation", &annotation],
            PROBE,
            &format!("hostile{i}"),
            &["/probe.wasm", "cat", "/etc/hostname"],
        );
        assert!(!out.status.success(), "{hostile}: {}", describe(&out));
        assert_eq!(stdout(&out), "", "{hostile} read the host");
        assert!(
            describe(&out).contains("not a preopen profile")
                && describe(&out).contains("never a host path"),
            "{hostile}: {}",
            describe(&out)
        );
    }
    // What the operator named works, read-only as it says.
    let out = c.run(
        &["--annotation", "io.wasm-oci.preopens=shared"],
        PROBE,
        "profile",
        &["/probe.wasm", "cat", "/shared/in.txt"],
    );
    assert_eq!(stdout(&out), "shared by the operator", "{}", describe(&out));
    let out = c.run(
        &["--annotation", "io.wasm-oci.preopens=shared"],
        PROBE,
        "profile-write",
        &["/probe.wasm", "write", "/shared/x", "x"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!shared.path().join("x").exists());
}

#[test]
fn two_pods_naming_the_same_group_get_two_shims() {
    let c = Containerd::start();
    import_probe(&c);
    let sandbox = |pod: &'static str| {
        [
            "--annotation",
            "io.wasm-oci.group=shared",
            "--annotation",
            pod,
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ]
    };
    c.run_detached(
        &sandbox("io.kubernetes.cri.sandbox-id=pod-a"),
        PROBE,
        "pod-a",
        &["/pause"],
    );
    c.run_detached(
        &sandbox("io.kubernetes.cri.sandbox-id=pod-b"),
        PROBE,
        "pod-b",
        &["/pause"],
    );
    // A container naming the group outside any pod is alone too.
    c.run_detached(
        &["--annotation", "io.wasm-oci.group=shared"],
        PROBE,
        "loner",
        &["/probe.wasm", "spin"],
    );
    let (a, b, loner) = (
        c.task_pid("pod-a"),
        c.task_pid("pod-b"),
        c.task_pid("loner"),
    );
    assert_ne!(a, b, "two pods share a shim because they named one group");
    assert_ne!(loner, a);
    assert_ne!(loner, b);
    // A container of pod a still joins pod a's shim.
    c.run_detached(
        &[
            "--annotation",
            "io.wasm-oci.group=shared",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=pod-a",
        ],
        PROBE,
        "pod-a-app",
        &["/probe.wasm", "spin"],
    );
    assert_eq!(c.task_pid("pod-a-app"), a);
    for id in ["pod-a-app", "pod-a", "pod-b", "loner"] {
        c.kill_and_delete(id, "SIGKILL");
    }
}

#[test]
fn the_module_is_read_from_inside_the_rootfs_only() {
    let c = Containerd::start();
    // A module on the host, outside any rootfs: reaching it would run it.
    let host = tempfile::tempdir().unwrap();
    let outside = host.path().join("host.wasm");
    fs::copy(testdata("hello.wasm"), &outside).unwrap();
    let outside_str = outside.display().to_string();
    c.import_entries(
        "docker.io/library/hostile:v1",
        &[
            Entry::File("probe.wasm", &guests().probe),
            Entry::Symlink("escape.wasm", &outside_str),
            Entry::Symlink("up.wasm", "../../../../../../../../../../../../"),
            Entry::Dir("dev"),
            Entry::CharDevice("dev/zero", 1, 5),
            Entry::Symlink("zero.wasm", "/dev/zero"),
            Entry::Fifo("fifo.wasm"),
        ],
        &["/probe.wasm"],
    );
    let climb = format!(
        "/{}{}",
        "../".repeat(30),
        outside_str.trim_start_matches('/')
    );
    for (id, module, why) in [
        ("dotdot", climb.as_str(), "no such file"),
        ("abslink", "/escape.wasm", "no such file"),
        ("uplink", "/up.wasm", "a directory"),
        ("zero", "/zero.wasm", "a character device"),
        ("fifo", "/fifo.wasm", "a FIFO"),
    ] {
        let started = Instant::now();
        let out = c.run(&[], "docker.io/library/hostile:v1", id, &[module]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{module} took {:?}",
            started.elapsed()
        );
        assert!(!out.status.success(), "{module}: {}", describe(&out));
        assert!(
            !stdout(&out).contains("Hello"),
            "{module} ran the host's module"
        );
        assert!(
            describe(&out).contains(why) && describe(&out).contains("from the rootfs"),
            "{module}: {}",
            describe(&out)
        );
    }

    // A guest blocked opening a FIFO is still stopped by SIGKILL.
    c.run_detached(
        &[],
        "docker.io/library/hostile:v1",
        "blocked",
        &["/probe.wasm", "cat", "/fifo.wasm"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(c.kill_and_delete("blocked", "SIGKILL").contains("137"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stdout(&c.ctr(&["tasks", "ls", "-q"])), "");
}

/// An evil module: prints something else than hello.
fn evil_wasm() -> Vec<u8> {
    wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "EVIL\n")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 5))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap()
}

#[test]
fn a_module_swapped_in_a_rootfs_never_runs_under_another_digest() {
    // A pod author's image holds hello; while its container starts, the author swaps the file
    // for evil code, hoping the shim hashes hello and compiles evil under hello's digest,
    // which another tenant runs by reference.
    let registry = Registry::start();
    let reference = registry.reference("tenant/hello:v1");
    WasmOci::new().ok(&["push", testdata("hello.wasm").to_str().unwrap(), &reference]);
    let c = Containerd::start_with(&[], crate::containerd::ALLOW_LOOPBACK);
    c.import(
        "docker.io/library/swap:v1",
        &[("m.wasm", &testdata("hello.wasm"))],
        &["/m.wasm"],
    );
    let work = tempfile::tempdir().unwrap();
    let (good, evil) = (work.path().join("good"), work.path().join("evil"));
    fs::copy(testdata("hello.wasm"), &good).unwrap();
    fs::write(&evil, evil_wasm()).unwrap();
    let snapshots = c
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let stop = Arc::new(AtomicBool::new(false));
    // Written beside the snapshots, then renamed over a container's module: never inside the
    // image's own snapshot, which containerd copies for each container.
    let staging = c.dir.path().join("root/swap-staging");
    fs::create_dir_all(&staging).unwrap();
    let swapper = {
        let stop = stop.clone();
        let (good, evil) = (fs::read(&good).unwrap(), fs::read(&evil).unwrap());
        std::thread::spawn(move || {
            let mut flip = false;
            let mut swaps = 0u64;
            while !stop.load(Ordering::SeqCst) {
                flip = !flip;
                for snapshot in fs::read_dir(&snapshots).into_iter().flatten().flatten() {
                    let module = snapshot.path().join("m.wasm");
                    // Snapshot 1 is the image's layer, the parent of every container's.
                    if snapshot.file_name() == "1" || !module.exists() {
                        continue;
                    }
                    let tmp = staging.join("m.tmp");
                    if fs::write(&tmp, if flip { &evil } else { &good }).is_ok()
                        && fs::rename(&tmp, &module).is_ok()
                    {
                        swaps += 1;
                    }
                }
            }
            swaps
        })
    };
    let compiled = c.cache.join("v1/compiled");
    let annotation = format!("io.wasm-oci.reference={reference}");
    let mut evil_runs = 0;
    for i in 0..200 {
        // A fresh compile every time: the attack is on the compile that fills the cache.
        let _ = fs::remove_dir_all(&compiled);
        let out = c.run(&[], "docker.io/library/swap:v1", &format!("a{i}"), &[]);
        let seen = stdout(&out);
        assert!(seen == HELLO || seen == "EVIL\n", "{}", describe(&out));
        evil_runs += usize::from(seen == "EVIL\n");
        let out = c.run(
            &["--annotation", &annotation],
            "docker.io/library/swap:v1",
            &format!("b{i}"),
            &[],
        );
        assert_eq!(
            stdout(&out),
            HELLO,
            "attempt {i}: the reference ran code compiled from a swapped file: {}",
            describe(&out)
        );
    }
    stop.store(true, Ordering::SeqCst);
    let swaps = swapper.join().unwrap();
    // The swaps did land: the rootfs containers ran both.
    assert!(
        swaps > 200 && evil_runs > 0,
        "swaps {swaps}, evil runs {evil_runs}"
    );
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn the_specs_limits_are_written_to_the_guests_cgroup() {
    let c = Containerd::start();
    import_probe(&c);
    c.run_detached(
        &["--memory-limit", "67108864", "--cpus", "0.1"],
        PROBE,
        "limited",
        &["/probe.wasm", "spin"],
    );
    let pid = c.task_pid("limited");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains(&format!("/{NS}/limited")), "{cgroups}");
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(NS).join("limited");
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("cpu.max")), "10000 100000");
    } else {
        assert_eq!(
            read(
                root.join("memory")
                    .join(NS)
                    .join("limited/memory.limit_in_bytes")
            ),
            "67108864"
        );
        let cpu = root.join("cpu").join(NS).join("limited");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "10000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        // The quota holds: a spinning guest gets about a tenth of a core.
        let usage = || -> u64 {
            read(root.join("cpuacct").join(NS).join("limited/cpuacct.usage"))
                .parse()
                .unwrap()
        };
        let before = usage();
        std::thread::sleep(Duration::from_secs(1));
        let used = usage() - before;
        assert!(used < 300_000_000, "used {used} ns of CPU in a second");
    }
    c.kill_and_delete("limited", "SIGKILL");

    // A systemd-style path, as the CRI plugin sends it with the systemd driver.
    c.run_detached(
        &[
            "--cgroup",
            "wasmtest-pod1.slice:cri-containerd:sys1",
            "--memory-limit",
            "67108864",
        ],
        PROBE,
        "sys1",
        &["/probe.wasm", "spin"],
    );
    let pid = c.task_pid("sys1");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups.contains("/wasmtest.slice/wasmtest-pod1.slice/cri-containerd-sys1.scope"),
        "{cgroups}"
    );
    c.kill_and_delete("sys1", "SIGKILL");
    assert!(
        !root.join("memory/wasmtest.slice").exists() || {
            !root
                .join("memory/wasmtest.slice/wasmtest-pod1.slice/cri-containerd-sys1.scope")
                .exists()
        }
    );

    // Paths out of the cgroup root are refused before anything runs.
    for (id, hostile) in [
        ("up", "/../../escape"),
        ("updeep", "/wasm/../../../escape"),
        ("sysup", "x.slice:..:escape"),
    ] {
        let out = c.run(
            &["--cgroup", hostile],
            PROBE,
            id,
            &["/probe.wasm", "exit", "0"],
        );
        assert!(!out.status.success(), "{hostile}: {}", describe(&out));
        assert!(describe(&out).contains("refused"), "{}", describe(&out));
    }
    assert!(!root.join("memory/escape").exists() && !root.join("escape").exists());
}

#[test]
fn a_guest_with_four_memories_cannot_exceed_the_cap() {
    // Each memory grows a page at a time until refused; the exit code counts the pages.
    let four = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory $m0 (export "memory") 0) (memory $m1 0) (memory $m2 0) (memory $m3 0)
          (func (export "_start") (local $pages i32)
            (block $done0 (loop $l0
              (br_if $done0 (i32.eq (memory.grow $m0 (i32.const 1)) (i32.const -1)))
              (local.set $pages (i32.add (local.get $pages) (i32.const 1))) (br $l0)))
            (block $done1 (loop $l1
              (br_if $done1 (i32.eq (memory.grow $m1 (i32.const 1)) (i32.const -1)))
              (local.set $pages (i32.add (local.get $pages) (i32.const 1))) (br $l1)))
            (block $done2 (loop $l2
              (br_if $done2 (i32.eq (memory.grow $m2 (i32.const 1)) (i32.const -1)))
              (local.set $pages (i32.add (local.get $pages) (i32.const 1))) (br $l2)))
            (block $done3 (loop $l3
              (br_if $done3 (i32.eq (memory.grow $m3 (i32.const 1)) (i32.const -1)))
              (local.set $pages (i32.add (local.get $pages) (i32.const 1))) (br $l3)))
            (call $exit (local.get $pages))))"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("four.wasm");
    fs::write(&module, four).unwrap();
    let out = WasmOci::new().run(&["run", "--max-memory", "1MiB", module.to_str().unwrap()]);
    // 1 MiB is 16 pages of 64 KiB, across all four memories.
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    let out = WasmOci::new().run(&["run", "--max-memory", "4MiB", module.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
}
