//! Attacks a pod author can make on a node through `containerd-shim-wasmoci-v1`, under a real
//! containerd: host paths, shared shims, modules from outside the rootfs, code planted under
//! another module's digest, and limits that were only joined; and the red team's attacks that
//! came after #13 (device nodes as the module or in the image, a pod reference to the node's
//! loopback, an uncapped pulled module).

use std::fs;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::fs::inotify;

use crate::support::{
    Containerd, Entry, HELLO, NS, RUNTIME, Registry, Reply, Server, WasmOci, describe, guests,
    output_within, stdout, testdata,
};

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
        // A FIFO or device opened to read blocks: refused, `ctr run` returns at all.
        let run = c.ctr_command(&[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--runtime",
            RUNTIME,
            "docker.io/library/hostile:v1",
            id,
            module,
        ]);
        let out = output_within(run, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{module} blocked the shim: {}", c.log()));
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
    c.wait_running("blocked");
    assert!(c.kill_and_delete("blocked", "SIGKILL").contains("137"));
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
    let c = Containerd::start_with(&[], crate::support::ALLOW_LOOPBACK);
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

/// The image author ships a character device as its "module". The shim refuses it, but only
/// after it has `open(2)`ed the device as root, in the host's device namespace, with no
/// device cgroup in the way: a runc container could never open it. Opening is all some
/// devices need to act (a watchdog starts its countdown and reboots the node when closed
/// without its magic character; a tape rewinds; a modem hangs up). Here the device is
/// /dev/zero (1:5) and the open is seen through inotify on the rootfs.
#[test]
fn a_device_node_named_as_the_module_is_never_opened() {
    let c = Containerd::start();
    let image = "docker.io/library/devnode:v1";
    c.import_entries(image, &[Entry::CharDevice("m.wasm", 1, 5)], &["/m.wasm"]);
    let out = c.ctr(&[
        "containers",
        "create",
        "--snapshotter",
        "native",
        "--runtime",
        RUNTIME,
        image,
        "dev",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    // Every snapshot holding the device (the container's is a copy of the image's).
    let snapshots = c
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let watch =
        inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    let mut watched = 0;
    for snapshot in fs::read_dir(&snapshots).unwrap().flatten() {
        if snapshot.path().join("m.wasm").exists() {
            inotify::add_watch(&watch, snapshot.path(), inotify::WatchFlags::OPEN).unwrap();
            watched += 1;
        }
    }
    assert!(watched >= 2, "the container's snapshot was not found");
    let out = c.ctr(&["tasks", "start", "dev"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("a character device"),
        "{}",
        describe(&out)
    );
    let mut buf = [MaybeUninit::uninit(); 4096];
    let mut events = inotify::Reader::new(&watch, &mut buf);
    let mut opened = Vec::new();
    while let Ok(event) = events.next() {
        opened.push(format!("{:?}", event.file_name()));
    }
    let _ = c.ctr(&["containers", "rm", "dev"]);
    assert!(
        opened.is_empty(),
        "the shim opened the image's device node as root before refusing it: {opened:?}"
    );
}

/// The pod author names a "registry" on the node's loopback in `io.wasm-oci.reference`.
/// The shim pulls from the host's network namespace, so it reaches services bound to the
/// node's 127.0.0.1, which no container can reach (a pod has its own loopback), and puts
/// their answer (up to 64 KiB of it, escaped) into the error the pod author reads back in
/// the container's status (`kubectl describe pod`). The path is the author's too:
/// `/v2/<repository>/manifests/<tag>`, enough for e.g. etcd's v2 keys API (`/v2/keys/...`).
#[test]
fn a_pod_reference_does_not_reach_the_nodes_loopback() {
    const SECRET: &str = "NODE-LOCAL-ONLY-1c0ffee";
    // A node-local admin service: it answers anyone on loopback.
    let service = Server::start(|_| Reply::new(400).body(format!("{{\"node\":\"{SECRET}\"}}")));
    let port = service.addr.rsplit_once(':').unwrap().1.to_owned();
    let c = Containerd::start();
    c.import_entries(
        "docker.io/library/ssrf:v1",
        &[Entry::Dir("app")],
        &["/nothing.wasm"],
    );
    let annotation = format!("io.wasm-oci.reference=127.0.0.1:{port}/keys/registry/minions:v1");
    let out = c.run(
        &["--annotation", &annotation],
        "docker.io/library/ssrf:v1",
        "ssrf",
        &[],
    );
    let requests: Vec<String> = service
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        requests.is_empty() && !describe(&out).contains(SECRET),
        "a pod's annotation made the shim query the node's loopback ({requests:?}) and read \
         the answer back: {}",
        describe(&out)
    );
}

/// The image author ships device nodes in the rootfs (containerd's unpack makes them with
/// mknod, as root). The rootfs is the guest's `/`, read-write, and the shim opens what the
/// guest asks for as root, in the host's device namespace, with no device cgroup: the guest
/// reaches any device of the node. Here it writes into the host's kernel log (/dev/kmsg,
/// 1:11); a block device of the node's disk (e.g. 254:0, /dev/vda) is read and written the
/// same way, which is the whole node. A runc container's device cgroup refuses both.
#[test]
fn a_guest_cannot_open_a_device_node_of_its_image() {
    let c = Containerd::start();
    let image = "docker.io/library/devices:v1";
    c.import_entries(
        image,
        &[
            Entry::File("probe.wasm", &guests().probe),
            Entry::CharDevice("kmsg", 1, 11),
        ],
        &["/probe.wasm"],
    );
    let mark = format!("wasm-guest-wrote-the-host-kmsg-{}", std::process::id());
    // A newline ends the kernel's log record, so that it shows at once.
    let line = format!("{mark}\n");
    let out = c.run(
        &[],
        image,
        "kmsg",
        &["/probe.wasm", "write", "/kmsg", &line],
    );
    let dmesg = std::process::Command::new("dmesg").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&dmesg.stdout).contains(&mark),
        "the guest wrote into the host's kernel log through a device node of its image: {}",
        describe(&out)
    );
}

/// A pod names a registry that announces a huge layer and sends it slowly or in part. The
/// shim streams it into the node's shared cache with no cap (the operator's
/// `limits.max_module_size`, here 1 MiB, binds only modules read from a rootfs), outside any
/// pod's ephemeral-storage accounting, and a partial download outlives the failed container
/// (kept a day for a resume): pod after pod, each naming a new digest, fills the node's disk.
#[test]
fn a_pulled_module_is_capped_like_a_rootfs_module() {
    use sha2::Digest as _;
    let hex = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let config = b"{}".to_vec();
    let layer_digest = format!("sha256:{}", hex(b"never sent whole"));
    let claimed: u64 = 1 << 40;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": format!("sha256:{}", hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": claimed}],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", hex(&manifest));
    let registry = Server::start(move |request| {
        if request.path.contains("/manifests/") {
            Reply::new(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &manifest_digest)
                .body(manifest.clone())
        } else if request.path.ends_with(&layer_digest) {
            // A terabyte announced; 8 MiB sent, then the connection drops.
            Reply::new(200).short(claimed, vec![0u8; 8 << 20])
        } else if request.path.contains("/blobs/") {
            Reply::new(200).body(config.clone())
        } else {
            Reply::new(200)
        }
    });
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shim.toml");
    // The registry is on loopback: the operator lists it, so that the cap is what is tested.
    fs::write(
        &file,
        format!(
            "[limits]\nmax_module_size = \"1MiB\"\n{}",
            crate::support::ALLOW_LOOPBACK
        ),
    )
    .unwrap();
    let c = Containerd::start_with_env(&[("WASM_OCI_SHIM_CONFIG", &file)]);
    c.import_entries(
        "docker.io/library/fill:v1",
        &[Entry::Dir("app")],
        &["/x.wasm"],
    );
    let annotation = format!("io.wasm-oci.reference=127.0.0.1:{port}/fill/disk:v1");
    let out = c.run(
        &["--annotation", &annotation],
        "docker.io/library/fill:v1",
        "fill",
        &[],
    );
    let left: u64 = fs::read_dir(c.cache.join("v1/ingest"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        left <= 1 << 20,
        "the shim wrote {left} bytes of a pod-named module into the node's cache (the node's \
         module limit is 1 MiB) and left them there after the container failed: {}",
        describe(&out)
    );
}
