//! A second red team's attacks (issue 23), each a test that fails if the attack succeeds:
//! registry names spelled another way (a trailing dot, capitals, a port with leading zeros)
//! must be the same registry to every rule that names it; a Linux container handed to runc's
//! shim gets no namespace of the node's (the wasm pod's sandbox is the shim, on the node).
//!
//! A third round, on what the earlier ones tested through one door only: a kill of guests
//! that spin at a CPU quota, in a pod (a command and an HTTP server's requests); a guest of a
//! pod running as a user that holds every descriptor the shim may open, then makes its
//! blocking pool grow; an HTTP container that asks for a network namespace of its own while
//! it shares its shim with one in the node's network; the cgroups of a pod whose shim is
//! killed.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::cri::{BUSYBOX_IMAGE, Cri, PROBE_IMAGE};

use crate::support::{
    Containerd, Registry, Version, WasmOci, describe, each_containerd, free_port, hello,
    http_guests, stderr, stdout, wait_until, wait_until_within,
};

/// A `reject` scope written for `localhost:PORT` holds for `LocalHost:PORT` and for the
/// port with leading zeros (the same socket), and `localhost.:PORT` (the fully qualified
/// spelling, which resolves to the same socket) is no reference at all: the module never runs.
#[test]
fn a_reject_scope_holds_for_capitals_and_leading_zeros_and_a_trailing_dot_is_refused() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    cli.ok(&["push", &hello(), &format!("localhost:{port}/hello:v1")]);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("reject-localhost.json");
    let json = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {format!("localhost:{port}"): [{"type": "reject"}]}},
    });
    fs::write(&policy, json.to_string()).unwrap();
    for host in ["localhost.", "LOCALHOST.", "LocalHost"] {
        for p in [port.clone(), format!("00{port}")] {
            let reference = format!("{host}:{p}/hello:v1");
            let out = cli
                .command()
                .env("WASM_OCI_PLAIN_HTTP", "1")
                .args(["run", "--policy", policy.to_str().unwrap(), &reference])
                .output()
                .unwrap();
            assert!(out.stdout.is_empty(), "{reference} ran: {}", describe(&out));
            let e = stderr(&out);
            assert!(!out.status.success(), "{reference}: {}", describe(&out));
            // A trailing dot is no reference's registry (an empty label); every other
            // spelling is the scope's registry.
            if host.ends_with('.') {
                assert!(e.contains("invalid reference"), "{reference}: {e}");
            } else {
                assert!(e.contains("rejects every image"), "{reference}: {e}");
            }
        }
    }
}

/// A pod that shares its process namespace (`shareProcessNamespace: true`, which any pod may
/// ask for): the CRI plugin names the sandbox process's PID namespace for its containers, and
/// a wasm pod's sandbox process is the shim, in the node's. A Linux sidecar handed to runc's
/// shim must not land in the node's PID namespace (where it could see and signal every
/// process of the node: what `hostPID` gives, which no unprivileged pod may have).
#[test]
fn a_linux_sidecar_never_joins_the_nodes_pid_namespace() {
    let cri = Cri::start();
    let mut config = cri.pod_config("sharepid", &[]);
    let options = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    options.pid = cri::NamespaceMode::Pod as i32;
    let pod = cri.run_pod(&config, "wasmoci");
    let request = cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "sidecar".to_owned(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: BUSYBOX_IMAGE.to_owned(),
                ..Default::default()
            }),
            command: ["/bin/busybox", "ls", "-l", "/proc/self/ns/pid"]
                .map(str::to_owned)
                .to_vec(),
            log_path: "sidecar.log".to_owned(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: cri::NamespaceMode::Pod as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(config.clone()),
    };
    let created = cri.rt(|mut rt| async move { rt.create_container(request).await });
    let id = created
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cri.c.log()))
        .container_id;
    let start = cri::StartContainerRequest {
        container_id: id.clone(),
    };
    let started = cri.rt(|mut rt| async move { rt.start_container(start).await });
    if started.is_ok() {
        let status = cri.wait_exited(&id, Duration::from_secs(20));
        let log = cri.log_of(&config, "sidecar");
        assert_eq!(status.exit_code, 0, "{status:?}\n{log}\n{}", cri.c.log());
        let node = fs::metadata("/proc/self/ns/pid").unwrap().ino();
        let seen: u64 = log
            .lines()
            .find_map(|l| l.rsplit_once("pid:[")?.1.trim_end_matches(']').parse().ok())
            .unwrap_or_else(|| panic!("no pid namespace in {log}"));
        assert_ne!(
            seen, node,
            "the sidecar ran in the node's PID namespace: {log}"
        );
    }
    cri.remove_pod(&pod);
}

/// The pids of the compile helpers (`--compile-into-cache`) whose parent is `shim`.
fn compile_helpers_of(shim: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            fs::read_to_string(format!("/proc/{pid}/stat")),
            fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == shim
            && cmdline
                .split(|b| *b == 0)
                .any(|a| a == b"--compile-into-cache")
        {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` still runs (exists and is no zombie).
fn runs(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// The compile helper runs outside the pod's cgroup (so outside its memory and CPU limits):
/// once the pod is removed, nothing of its compile may go on charging the node. A pod that
/// is removed mid-compile (and restarted, as a crash loop does) would otherwise stack
/// compiles of up to `max_module_size` (256 MiB) each, outside every limit. It holds
/// because the kill of the container kills its helper (see `compile_limits.rs`).
#[test]
fn a_removed_pods_compile_helper_does_not_outlive_it() {
    let wasm = crate::cri_memory::big_module(6, 12000);
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wasm");
    fs::write(&file, &wasm).unwrap();
    let reference = registry.reference("big:v1");
    crate::cri_image::push_image(&WasmOci::new(), &file, &reference, false);
    let cri = Cri::start_configured(&[], "", &crate::cri_image::registry_hosts(&registry));
    cri.pull_image(&reference, None).unwrap();
    let config = cri.pod_config("compiling", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let shim = cri.c.task_pid(&pod);
    cri.start_container(&pod, &config, "big", &reference, &[], &[]);
    let mut helpers = Vec::new();
    wait_until("the compile helper runs", || {
        helpers = compile_helpers_of(shim);
        !helpers.is_empty()
    });
    cri.remove_pod(&pod);
    let left: Vec<_> = helpers.into_iter().filter(|p| runs(*p)).collect();
    assert!(
        left.is_empty(),
        "compile helpers {left:?} of removed pod still run, outside every cgroup limit"
    );
}

/// How long the attacks below wait for what they observe: a hang detector on a loaded
/// machine, never a measure.
const PATIENCE: Duration = Duration::from_secs(90);

/// A container config of `image` running `command`, with `linux` as its Linux part.
fn container(
    name: &str,
    image: &str,
    command: &[&str],
    env: &[(&str, &str)],
    linux: cri::LinuxContainerConfig,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        envs: env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        log_path: format!("{name}.log"),
        linux: Some(linux),
        ..Default::default()
    }
}

/// CreateContainer + StartContainer of `config` in `pod`; its id.
fn create_and_start(
    cri: &Cri,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let name = config.metadata.as_ref().unwrap().name.clone();
    let request = cri::CreateContainerRequest {
        pod_sandbox_id: pod.to_owned(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    let id = cri
        .rt(|mut rt| async move { rt.create_container(request).await })
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", cri.c.log()))
        .container_id;
    cri.start_created(&id);
    id
}

/// A CPU limit of a tenth of a core, as `resources.limits.cpu: 100m` gives it.
fn a_tenth_of_a_core() -> cri::LinuxContainerConfig {
    cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The CPU time the CRI reports for container `id`, in nanoseconds.
fn cpu_of(cri: &Cri, id: &str) -> u64 {
    cri.stats(id)
        .ok()
        .and_then(|s| s.cpu)
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |u| u.value)
}

/// Attack: guests that spin at a CPU quota of 0.1 in one pod's shim, a command and an HTTP
/// server's requests (whose server runtime, born of the guest's thread, is in the quota too),
/// then the kubelet's SIGKILL (StopContainer with no grace). The shim's task service must
/// never wait behind its guests: each container stops, is removed, and the pod goes with its
/// shim. (Earlier tests killed one command guest through `ctr` only.)
fn sigkill_stops_spinning_guests_at_a_cpu_quota_in_a_pod(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    cri.c.import(
        "registry.test/http:v1",
        &[("proxy.wasm", &http_guests().proxy)],
        &["/proxy.wasm"],
    );
    let config = cri.pod_config("quota", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let shim = cri.c.task_pid(&pod);
    let spin = create_and_start(
        &cri,
        &pod,
        &config,
        container(
            "spin",
            PROBE_IMAGE,
            &["/probe.wasm", "spin"],
            &[],
            a_tenth_of_a_core(),
        ),
    );
    let port = free_port();
    let web = create_and_start(
        &cri,
        &pod,
        &config,
        container(
            "web",
            "registry.test/http:v1",
            &[],
            &[("WASM_OCI_HTTP_ADDR", &format!("0.0.0.0:{port}"))],
            a_tenth_of_a_core(),
        ),
    );
    assert_eq!(
        cri.c.task_pid(&web),
        shim,
        "the pod's containers are not grouped"
    );
    // Requests that loop forever, from inside the pod's network.
    let netns = cri.pod_netns(&pod);
    let curl = |path: &str, max: &str| {
        let mut command = std::process::Command::new("nsenter");
        command
            .arg(format!("--net={netns}"))
            .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", max])
            .arg(format!("http://127.0.0.1:{port}{path}"));
        command
    };
    wait_until_within("the pod serves", PATIENCE, || {
        curl("/hello", "5")
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    });
    let mut spins: Vec<std::process::Child> = (0..3)
        .map(|_| {
            curl("/spin", "600")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both spin, each at its quota: the CRI's CPU figures of each grow.
    for id in [&spin, &web] {
        let before = cpu_of(&cri, id);
        wait_until_within("the guest spins", PATIENCE, || {
            cpu_of(&cri, id) > before + 20_000_000
        });
    }
    for id in [&spin, &web] {
        cri.stop_container(id, 0)
            .unwrap_or_else(|e| panic!("StopContainer {id}: {e}\n{}", cri.c.log()));
        let status = cri.wait_exited(id, PATIENCE);
        assert_eq!(status.exit_code, 137, "{status:?}");
        let id = id.clone();
        cri.rt(|mut rt| async move {
            rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await
        })
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", cri.c.log()));
    }
    cri.remove_pod(&pod);
    wait_until_within("the pod's shim is gone", PATIENCE, || {
        !crate::support::alive(shim)
    });
    for child in &mut spins {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A module that opens its own file (`/hog.wasm`) until the shim may open no more
/// descriptors, keeps them all, sleeps 12 s (the blocking pool's idle thread ends after
/// 10 s), then reads from the first: a new blocking-pool thread, started while every
/// descriptor is taken. Exits 0 when that read worked; with the WASI errno when its opens
/// stopped for another reason than the descriptor limit (the attack did not happen); 125
/// when the read failed.
fn descriptor_hog() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hog.wasm")
  (data (i32.const 32) "read after exhausting descriptors\0a")
  (func (export "_start") (local $first i32) (local $errno i32)
    (local.set $first (i32.const -1))
    (block $done
      (loop $more
        (local.set $errno
          (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 0)
            (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 404)))
        (br_if $done (local.get $errno))
        (if (i32.eq (local.get $first) (i32.const -1))
          (then (local.set $first (i32.load (i32.const 404)))))
        (br $more)))
    ;; 33: mfile, the process's descriptor limit (which WASI 0.2's file errors, under
    ;; preview 1, report as 29: io).
    (if (i32.and (i32.ne (local.get $errno) (i32.const 33)) (i32.ne (local.get $errno) (i32.const 29)))
      (then (call $exit (local.get $errno))))
    (i64.store (i32.const 200) (i64.const 0))
    (i32.store8 (i32.const 208) (i32.const 0))
    (i32.store (i32.const 216) (i32.const 1))
    (i64.store (i32.const 224) (i64.const 12000000000))
    (i64.store (i32.const 232) (i64.const 0))
    (i32.store16 (i32.const 240) (i32.const 0))
    (drop (call $poll (i32.const 200) (i32.const 304) (i32.const 1) (i32.const 400)))
    (i32.store (i32.const 412) (i32.const 1024))
    (i32.store (i32.const 416) (i32.const 64))
    (if (call $read (local.get $first) (i32.const 412) (i32.const 1) (i32.const 408))
      (then (call $exit (i32.const 125))))
    (i32.store (i32.const 420) (i32.const 32))
    (i32.store (i32.const 424) (i32.const 34))
    (drop (call $write (i32.const 1) (i32.const 420) (i32.const 1) (i32.const 428)))
    (call $exit (i32.const 0))))"#,
    )
    .unwrap()
}

/// Attack: a pod running as a user (`runAsUser: 1000`) whose guest holds every descriptor
/// the shim may open, then makes its blocking pool start a thread. That thread checked that
/// it is the guest's user by reading `/proc/thread-self/status`, failed with no descriptor
/// left, and aborted the shim, with every container grouped in it. (The earlier test of
/// `process.user` reads one file: its pool never grows while it is starved.) Another
/// container of the pod must keep running, and the guest's read work.
fn a_guest_as_a_user_that_starves_descriptors_aborts_no_shim(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hog.wasm");
    fs::write(&file, descriptor_hog()).unwrap();
    cri.c.import(
        "registry.test/hog:v1",
        &[("hog.wasm", &file)],
        &["/hog.wasm"],
    );
    let config = cri.pod_config("starved", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let shim = cri.c.task_pid(&pod);
    let sleeper = create_and_start(
        &cri,
        &pod,
        &config,
        container(
            "sleeper",
            PROBE_IMAGE,
            &["/probe.wasm", "sleep", "3600"],
            &[],
            cri::LinuxContainerConfig::default(),
        ),
    );
    // The attack begins once the pod's other container runs its guest, its module compiled:
    // a compile that a starved shim cannot watch fails its container (closed), which is not
    // the property under attack here.
    wait_until_within("the sleeper's module is compiled", PATIENCE, || {
        let log = fs::read_to_string(cri.c.shim_log()).unwrap_or_default();
        log.contains("compiled by the helper") || log.contains("precompiled cache hit")
    });
    let as_user = cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hog = create_and_start(
        &cri,
        &pod,
        &config,
        container("hog", "registry.test/hog:v1", &[], &[], as_user),
    );
    assert_eq!(
        cri.c.task_pid(&hog),
        shim,
        "the pod's containers are not grouped"
    );
    // The attack happens: the shim holds (nearly) every descriptor it may open.
    let limit: usize = fs::read_to_string(format!("/proc/{shim}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap();
    wait_until_within("the guest holds every descriptor", PATIENCE, || {
        fs::read_dir(format!("/proc/{shim}/fd")).map_or(0, |d| d.count()) + 64 >= limit
    });
    let status = cri.wait_exited(&hog, PATIENCE);
    let log = cri.log_of(&config, "hog");
    assert!(
        runs(shim),
        "the shim died with its pod's other container: {status:?}\n{log}\n{}",
        cri.c.log()
    );
    assert_eq!(status.exit_code, 0, "{status:?}\n{log}");
    assert!(log.contains("read after exhausting descriptors"), "{log}");
    // The pod's other container runs on, and stops when asked.
    let running = cri.status(&sleeper);
    assert_eq!(
        running.state,
        cri::ContainerState::ContainerRunning as i32,
        "{running:?}\n{}\n{}",
        cri.log_of(&config, "sleeper"),
        cri.c.log()
    );
    cri.stop_container(&sleeper, 0).unwrap();
    assert_eq!(cri.wait_exited(&sleeper, PATIENCE).exit_code, 137);
    cri.remove_pod(&pod);
}

/// The network namespaces process `pid` holds open (as `/proc/PID/fd/N` paths) that are not
/// this test's own.
fn namespaces_held_by(pid: u32) -> Vec<std::path::PathBuf> {
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

/// Whether anything answers on `port` at one of the node's addresses (its loopbacks, and
/// each address of its interfaces).
fn node_answers_on(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    let mut addrs: Vec<String> = vec!["127.0.0.1".into(), "[::1]".into()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if (w == "inet" || w == "inet6")
                && let Some(a) = words.next().and_then(|a| a.split('/').next())
                && !a.starts_with("fe80")
            {
                addrs.push(if w == "inet6" {
                    format!("[{a}]")
                } else {
                    a.to_owned()
                });
            }
        }
    }
    addrs
        .into_iter()
        .filter(|a| {
            let target = format!("{a}:{port}");
            std::net::ToSocketAddrs::to_socket_addrs(&target)
                .ok()
                .and_then(|mut s| s.next())
                .is_some_and(|s| {
                    std::net::TcpStream::connect_timeout(&s, Duration::from_secs(2)).is_ok()
                })
        })
        .collect()
}

/// Attack: an HTTP container that asks for a network namespace without a path, grouped (by
/// the operator's `io.wasm-oci.group`) in one shim with a container of the node's network
/// (`--net-host`), which started first; it listens on every address, IPv6 and IPv4
/// (`[::]`). It must be reachable in its own namespace and at none of the node's addresses.
/// (Earlier tests: one container alone in its shim, probed at `127.0.0.1` only, on 1.6.)
fn a_new_network_namespace_is_never_the_nodes_even_beside_a_host_network_container(v: Version) {
    let c = Containerd::start_on(v, &[], "[groups]\nby = \"annotation\"\n");
    c.import(
        "docker.io/library/http:v1",
        &[("proxy.wasm", &http_guests().proxy)],
        &["/proxy.wasm"],
    );
    let group = "--annotation=io.wasm-oci.group=netmix";
    let host_port = free_port();
    let env = format!("WASM_OCI_HTTP_ADDR=127.0.0.1:{host_port}");
    c.run_detached(
        &["--net-host", group, "--env", &env],
        "docker.io/library/http:v1",
        "on-host",
        &[],
    );
    let port = free_port();
    let env = format!("WASM_OCI_HTTP_ADDR=[::]:{port}");
    c.run_detached(
        &[group, "--env", &env],
        "docker.io/library/http:v1",
        "own",
        &[],
    );
    let shim = c.task_pid("own");
    assert_eq!(
        c.task_pid("on-host"),
        shim,
        "the containers are not grouped"
    );
    let held = namespaces_held_by(shim);
    assert_eq!(held.len(), 1, "{held:?}\n{}", c.log());
    let netns = held[0].display().to_string();
    wait_until_within("the container serves in its namespace", PATIENCE, || {
        std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "5", &format!("http://[::1]:{port}/hello")])
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    });
    // The host-network container is where it asked to be: the node's loopback answers it.
    wait_until_within("the host-network container serves", PATIENCE, || {
        std::net::TcpStream::connect(("127.0.0.1", host_port)).is_ok()
    });
    let reached = node_answers_on(port);
    assert!(
        reached.is_empty(),
        "a container that asked for a network namespace of its own answers at the node's {reached:?}"
    );
    for id in ["own", "on-host"] {
        c.kill_and_delete(id, "SIGKILL");
    }
}

/// The directories of cgroup `relative` in every hierarchy (the unified one, or each v1's).
fn cgroup_dirs(relative: &str) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(relative)];
    }
    fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|h| h.path().join(relative))
        .collect()
}

/// Attack: a pod's shim killed (`kill -9`, as by the OOM killer) while its containers have
/// memory and CPU limits (a cgroup in every hierarchy, a guest's threads in the `cpu` one).
/// Every container's cgroup the dead shim made must go when containerd cleans up after it
/// (and the kubelet stops and removes the pod). (Earlier test: `ctr`, containerd 1.6, a
/// memory limit alone.)
fn a_killed_pod_shims_cgroups_are_removed(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    let config = cri.pod_config("killed-shim", &[]);
    let parent = config.linux.as_ref().unwrap().cgroup_parent.clone();
    let pod = cri.run_pod(&config, "wasmoci");
    let shim = cri.c.task_pid(&pod);
    let mut limited = a_tenth_of_a_core();
    limited.resources.as_mut().unwrap().memory_limit_in_bytes = 64 << 20;
    let ids: Vec<String> = ["one", "two"]
        .into_iter()
        .map(|name| {
            create_and_start(
                &cri,
                &pod,
                &config,
                container(
                    name,
                    PROBE_IMAGE,
                    &["/probe.wasm", "spin"],
                    &[],
                    limited.clone(),
                ),
            )
        })
        .collect();
    // The cgroups the shim made, in every hierarchy: found by the container's id.
    let dirs: Vec<std::path::PathBuf> = ids
        .iter()
        .chain([&pod])
        .flat_map(|id| cgroup_dirs(&format!("{}/{id}", parent.trim_start_matches('/'))))
        .filter(|d| d.exists())
        .collect();
    for id in &ids {
        assert!(
            dirs.iter().any(|d| d.ends_with(id)),
            "no cgroup was made for {id}: {dirs:?}"
        );
    }
    for id in &ids {
        let before = cpu_of(&cri, id);
        wait_until_within("the guest spins", PATIENCE, || {
            cpu_of(&cri, id) > before + 20_000_000
        });
    }
    let out = std::process::Command::new("kill")
        .args(["-9", &shim.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    wait_until("the shim is dead", || !crate::support::alive(shim));
    for id in &ids {
        wait_until_within("the container is seen to have exited", PATIENCE, || {
            cri.status(id).state == cri::ContainerState::ContainerExited as i32
        });
    }
    cri.remove_pod(&pod);
    wait_until_within("the dead shim's cgroups are removed", PATIENCE, || {
        dirs.iter().all(|d| !d.exists())
    });
    // What `ctr` says: no task left.
    let tasks = stdout(&cri.c.ctr(&["tasks", "ls", "-q"]));
    assert!(tasks.trim().is_empty(), "tasks left: {tasks}");
}

each_containerd!(
    sigkill_stops_spinning_guests_at_a_cpu_quota_in_a_pod,
    a_guest_as_a_user_that_starves_descriptors_aborts_no_shim,
    a_new_network_namespace_is_never_the_nodes_even_beside_a_host_network_container,
    a_killed_pod_shims_cgroups_are_removed,
);
