//! The containerd runtime `io.containerd.wasmoci.v1` under a real containerd, each test once
//! on Debian's 1.6 and once on containerd 2.x (`support::Containerd`, `each_containerd!`):
//! pods sharing a shim, private registries, the shared cache, kills, preopen profiles, memory
//! limits and task events.

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    ALLOW_LOOPBACK, Containerd, HELLO, RUNTIME, Registry, Version, WasmOci, alive, describe,
    each_containerd, guests, stdout, testdata, wait_gone,
};

fn containers_of_a_group_share_one_shim_and_a_pod_sandbox_waits(v: Version) {
    // On a single-tenant node the operator may let io.wasm-oci.group decide.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("shim.toml");
    fs::write(&file, "[groups]\nby = \"annotation\"\n").unwrap();
    let c = Containerd::start_on(v, &[("WASM_OCI_SHIM_CONFIG", &file)], "");
    let image = "docker.io/library/probe:v1";
    c.import(image, &[("probe.wasm", &guests().probe)], &["/probe.wasm"]);

    // io.wasm-oci.group: two spinning guests in one shim process; a third container is alone.
    let group = ["--label", "io.wasm-oci.group=g1"];
    c.run_detached(&group, image, "g1-a", &["/probe.wasm", "spin"]);
    c.run_detached(&group, image, "g1-b", &["/probe.wasm", "spin"]);
    c.run_detached(&[], image, "alone", &["/probe.wasm", "spin"]);
    let shim = c.task_pid("g1-a");
    assert_eq!(c.task_pid("g1-b"), shim, "one shim for the group");
    assert_ne!(c.task_pid("alone"), shim);
    let shims = stdout(
        &Command::new("pgrep")
            .args(["-f", "containerd-shim-wasmoci-v1 -namespace"])
            .output()
            .unwrap(),
    );
    assert!(shims.lines().count() >= 2, "{shims}");

    // Killing one container of the group leaves the other running, in the group's cgroup.
    assert!(c.kill_and_delete("g1-a", "SIGKILL").contains("137"));
    assert!(alive(shim));
    let state = stdout(&c.ctr(&["tasks", "ls"]));
    assert!(
        state
            .lines()
            .any(|l| l.starts_with("g1-b") && l.contains("RUNNING")),
        "{state}"
    );
    let cgroups = fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap();
    assert!(
        cgroups.contains(&format!("/{}/g1-b", c.namespace)),
        "{cgroups}"
    );
    // The last one out stops the shim.
    assert!(c.kill_and_delete("g1-b", "SIGTERM").contains("143"));
    assert!(wait_gone(shim), "the group's shim outlived its containers");
    let alone = c.task_pid("alone");
    c.kill_and_delete("alone", "SIGKILL");
    assert!(wait_gone(alone));

    // A pod as the CRI plugin creates one: the sandbox container (no wasm; it waits to be
    // killed), then a container of the pod, which joins the sandbox's shim.
    let pod = ["--label", "io.kubernetes.cri.sandbox-id=pod1"];
    let sandbox = [
        pod[0],
        pod[1],
        "--label",
        "io.kubernetes.cri.container-type=sandbox",
    ];
    c.run_detached(&sandbox, image, "pod1", &["/pause"]);
    let app = [
        pod[0],
        pod[1],
        "--label",
        "io.kubernetes.cri.container-type=container",
    ];
    let out = c.run(
        &app,
        image,
        "pod1-hello",
        &["/probe.wasm", "args", "in", "a", "pod"],
    );
    assert_eq!(
        stdout(&out),
        "/probe.wasm\nargs\nin\na\npod\n",
        "{}\n{}",
        describe(&out),
        c.log()
    );
    c.run_detached(&app, image, "pod1-spin", &["/probe.wasm", "spin"]);
    let pod_shim = c.task_pid("pod1");
    assert_eq!(c.task_pid("pod1-spin"), pod_shim);
    c.wait_running("pod1-spin");
    let state = stdout(&c.ctr(&["tasks", "ls"]));
    assert!(
        state
            .lines()
            .any(|l| l.starts_with("pod1 ") && l.contains("RUNNING")),
        "{state}"
    );
    c.kill_and_delete("pod1-spin", "SIGKILL");
    assert!(c.kill_and_delete("pod1", "SIGKILL").contains("137"));
    assert!(wait_gone(pod_shim));
    assert_eq!(stdout(&c.ctr(&["tasks", "ls", "-q"])), "");
}

fn the_shim_pulls_from_a_private_tls_registry_with_docker_credentials(v: Version) {
    use base64::Engine as _;
    const USER: &str = "shim-user";
    const PASSWORD: &str = "shim-secret-Pa55";
    let registry = Registry::start_secure(crate::support::Secure {
        tls: true,
        user: Some((USER, PASSWORD)),
    });
    let reference = registry.reference("private/probe:v1");
    let w = WasmOci::new();
    let ca = registry.ca_file();
    let mut push = w.command();
    push.args([
        "push",
        "--ca-file",
        ca.to_str().unwrap(),
        "--username",
        USER,
        "--password-stdin",
    ])
    .arg(&guests().probe)
    .arg(&reference);
    let out = crate::support::output_with_stdin(push, PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));

    let docker = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    fs::write(
        docker.path().join("config.json"),
        serde_json::json!({ "auths": { &registry.addr: { "auth": auth } } }).to_string(),
    )
    .unwrap();
    let c = Containerd::start_on(
        v,
        &[("DOCKER_CONFIG", docker.path()), ("SSL_CERT_FILE", &ca)],
        ALLOW_LOOPBACK,
    );
    c.import_hello();
    let annotation = format!("io.wasm-oci.reference={reference}");
    let out = c.run(
        &["--label", &annotation, "--label", "io.wasm-oci.pull=always"],
        "docker.io/library/wasmhello:v1",
        "private",
        &["probe", "args", "ok"],
    );
    assert_eq!(
        stdout(&out),
        "probe\nargs\nok\n",
        "{}\n{}",
        describe(&out),
        c.log()
    );
    assert!(!c.log().contains(PASSWORD) && !c.log().contains(&auth));
}

fn ctr_runs_wasm_through_the_shim(v: Version) {
    let c = Containerd::start_on(v, &[], "");
    c.import_hello();
    c.import(
        "docker.io/library/probe:v1",
        &[("probe.wasm", &guests().probe)],
        &["/probe.wasm"],
    );

    // hello from a module in the rootfs
    let out = c.run(&[], "docker.io/library/wasmhello:v1", "hello", &[]);
    assert!(out.status.success(), "{}\n{}", describe(&out), c.log());
    assert_eq!(stdout(&out), HELLO);
    // The shim logs what each request cost it, into WASM_OCI_LOG_FILE.
    let shim_log = fs::read_to_string(c.shim_log()).unwrap();
    for step in [
        "task created",
        "task started",
        "guest exited",
        "task deleted",
    ] {
        assert!(
            shim_log
                .lines()
                .any(|l| l.contains(step) && l.contains("id=hello") && l.contains("micros=")),
            "no {step:?} for hello in the shim's log:\n{shim_log}"
        );
    }

    // the guest's exit status is ctr's
    let out = c.run(
        &[],
        "docker.io/library/probe:v1",
        "exit7",
        &["/probe.wasm", "exit", "7"],
    );
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));

    // --env reaches the guest
    let out = c.run(
        &["--env", "GREETING=hi"],
        "docker.io/library/probe:v1",
        "env",
        &["/probe.wasm", "env", "GREETING"],
    );
    assert_eq!(stdout(&out), "hi\n", "{}", describe(&out));

    // a bind mount is a preopen at its destination, read-only when it says ro
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in.txt"), "from the host").unwrap();
    let ro = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.path().display()
    );
    let out = c.run(
        &["--mount", &ro],
        "docker.io/library/probe:v1",
        "ro-read",
        &["/probe.wasm", "cat", "/data/in.txt"],
    );
    assert_eq!(stdout(&out), "from the host", "{}", describe(&out));
    let out = c.run(
        &["--mount", &ro],
        "docker.io/library/probe:v1",
        "ro-write",
        &["/probe.wasm", "write", "/data/out.txt", "x"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!host.path().join("out.txt").exists());
    let rw = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        host.path().display()
    );
    let out = c.run(
        &["--mount", &rw],
        "docker.io/library/probe:v1",
        "rw-write",
        &["/probe.wasm", "write", "/data/out.txt", "x"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "x"
    );

    // nothing is left behind
    let tasks = c.ctr(&["tasks", "ls", "-q"]);
    assert_eq!(stdout(&tasks), "", "{}", describe(&tasks));
}

fn the_reference_annotation_pulls_into_the_shared_cache(v: Version) {
    let registry = Registry::start();
    let reference = registry.reference("tools/probe:v1");
    WasmOci::new().ok(&["push", guests().probe.to_str().unwrap(), &reference]);
    let c = Containerd::start_on(v, &[], ALLOW_LOOPBACK);
    c.import_hello();
    let annotation = format!("io.wasm-oci.reference={reference}");
    let out = c.run(
        &["--label", &annotation],
        "docker.io/library/wasmhello:v1",
        "byref",
        &["probe", "args", "from", "registry"],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), c.log());
    assert_eq!(stdout(&out), "probe\nargs\nfrom\nregistry\n");
    // Code that `wasm-oci compile` made on this node is what the shim runs: nothing new.
    let compiled = |dir: &Path| -> usize {
        fs::read_dir(dir.join("v1/compiled"))
            .map(|keys| {
                keys.flatten()
                    .map(|k| fs::read_dir(k.path()).unwrap().count())
                    .sum()
            })
            .unwrap_or(0)
    };
    let other = registry.reference("tools/hello:v1");
    WasmOci::new().ok(&["push", testdata("hello.wasm").to_str().unwrap(), &other]);
    let out = WasmOci::new()
        .command()
        .env("WASM_OCI_CACHE", &c.cache)
        .args(["compile", &other])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let before = compiled(&c.cache);
    let annotation = format!("io.wasm-oci.reference={other}");
    let out = c.run(
        &["--label", &annotation],
        "docker.io/library/wasmhello:v1",
        "precompiled",
        &[],
    );
    assert_eq!(stdout(&out), HELLO, "{}", describe(&out));
    assert_eq!(compiled(&c.cache), before, "the shim compiled again");

    // It landed in the shared cache, where wasm-oci itself finds it offline.
    let cli = WasmOci::with_cache(tempfile::TempDir::new_in(c.cache.parent().unwrap()).unwrap());
    let out = cli
        .command()
        .env("WASM_OCI_CACHE", &c.cache)
        .args(["run", "--pull", "never", &reference, "--", "exit", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

fn kill_stops_a_spinning_guest_and_ten_run_in_parallel(v: Version) {
    let c = Containerd::start_on(v, &[], "");
    c.import(
        "docker.io/library/probe:v1",
        &[("probe.wasm", &guests().probe)],
        &["/probe.wasm"],
    );
    c.import_hello();
    let out = c.ctr(&[
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--runtime",
        RUNTIME,
        "docker.io/library/probe:v1",
        "spin",
        "/probe.wasm",
        "spin",
    ]);
    assert!(out.status.success(), "{}\n{}", describe(&out), c.log());
    c.wait_running("spin");
    // The guest runs inside the container's cgroup.
    let pid = stdout(&c.ctr(&["tasks", "ls"]))
        .lines()
        .find(|l| l.starts_with("spin"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups.contains(&format!("/{}/spin", c.namespace)),
        "{cgroups}"
    );
    // The guest spins forever: stopped at all, it was stopped by the kill.
    let out = c.ctr(&["tasks", "kill", "-s", "SIGKILL", "spin"]);
    assert!(out.status.success(), "{}", describe(&out));
    c.wait_stopped("spin");
    let out = c.ctr(&["tasks", "delete", "spin"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("137") || describe(&out).contains("137"),
        "{}",
        describe(&out)
    );
    assert!(c.ctr(&["containers", "rm", "spin"]).status.success());
    // ... and its cgroup is gone with it.
    let leftover = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .any(|h| h.path().join(c.namespace).join("spin").exists());
    assert!(!leftover, "the container's cgroup was left behind");

    let runs = (0..10).map(|i| {
        c.ctr_command(&[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--runtime",
            RUNTIME,
            "docker.io/library/wasmhello:v1",
            &format!("par{i}"),
        ])
    });
    for out in crate::support::outputs_of_concurrent(runs) {
        assert_eq!(stdout(&out), HELLO, "{}", describe(&out));
    }
    assert_eq!(stdout(&c.ctr(&["tasks", "ls", "-q"])), "");
    assert_eq!(stdout(&c.ctr(&["containers", "ls", "-q"])), "");
}

fn sigterm_preopen_profiles_the_memory_limit_and_events(v: Version) {
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in.txt"), "chosen").unwrap();
    let config = host.path().join("shim.toml");
    fs::write(
        &config,
        format!(
            "[profiles.chosen]\ndirs = [\"{}::/chosen:ro\"]\n",
            host.path().display()
        ),
    )
    .unwrap();
    let c = Containerd::start_on(v, &[("WASM_OCI_SHIM_CONFIG", &config)], "");
    c.import(
        "docker.io/library/probe:v1",
        &[("probe.wasm", &guests().probe)],
        &["/probe.wasm"],
    );
    let mut events = c
        .ctr_command(&["events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen_events = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen_events.clone();
        let mut out = events.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };

    // io.wasm-oci.preopens picks a profile of the operator's config, beside the rootfs.
    let out = c.run(
        &["--annotation", "io.wasm-oci.preopens=chosen"],
        "docker.io/library/probe:v1",
        "pre",
        &["/probe.wasm", "cat", "/chosen/in.txt"],
    );
    assert_eq!(stdout(&out), "chosen", "{}", describe(&out));
    let out = c.run(
        &["--annotation", "io.wasm-oci.preopens=chosen"],
        "docker.io/library/probe:v1",
        "pre2",
        &["/probe.wasm", "cat", "/probe.wasm"],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // linux.resources.memory.limit caps guest memory (and the cgroup the guest runs in).
    let out = c.run(
        &["--memory-limit", "67108864"],
        "docker.io/library/probe:v1",
        "mem",
        &["/probe.wasm", "alloc"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        describe(&out),
        c.log()
    );
    let mib: u32 = stdout(&out)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((32..64).contains(&mib), "{}", stdout(&out));

    // SIGTERM stops a spinning guest with 143.
    let out = c.ctr(&[
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--runtime",
        RUNTIME,
        "docker.io/library/probe:v1",
        "term",
        "/probe.wasm",
        "spin",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    c.wait_running("term");
    assert!(c.ctr(&["tasks", "kill", "term"]).status.success());
    c.wait_stopped("term");
    let out = c.ctr(&["tasks", "delete", "term"]);
    assert!(describe(&out).contains("143"), "{}", describe(&out));
    assert!(c.ctr(&["containers", "rm", "term"]).status.success());

    // ... and a guest asleep in a host call just as promptly.
    let image = "docker.io/library/probe:v1";
    c.run_detached(&[], image, "asleep", &["/probe.wasm", "sleep", "3600"]);
    c.wait_running("asleep");
    // Asleep for an hour: stopped within kill_and_delete's wait, it was stopped by SIGTERM.
    assert!(c.kill_and_delete("asleep", "SIGTERM").contains("143"));

    // ... and one waiting for input that never comes (`ctr run` passes its stdin, held open).
    let mut waiting = c
        .ctr_command(&[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--runtime",
            RUNTIME,
            image,
            "reading",
            "/probe.wasm",
            "stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _held_open = waiting.stdin.take();
    c.wait_running("reading");
    let killed = c.ctr(&["tasks", "kill", "reading"]);
    assert!(killed.status.success(), "{}", describe(&killed));
    // Its stdin stays open: exiting at all, it was stopped by the signal.
    let status = crate::support::exit_within(&mut waiting, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a guest waiting for stdin was not stopped: {}", c.log()));
    assert_eq!(status.code(), Some(143));

    // The task events containerd saw from the shim.
    let topics = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let arrived = || {
        let seen = seen_events.lock().unwrap();
        topics.iter().all(|t| seen.contains(t))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !arrived() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = events.kill();
    let _ = events.wait();
    reader.join().unwrap();
    let seen = seen_events.lock().unwrap().clone();
    for topic in topics {
        assert!(seen.contains(topic), "no {topic} event in:\n{seen}");
    }
}

each_containerd!(
    containers_of_a_group_share_one_shim_and_a_pod_sandbox_waits,
    the_shim_pulls_from_a_private_tls_registry_with_docker_credentials,
    ctr_runs_wasm_through_the_shim,
    the_reference_annotation_pulls_into_the_shared_cache,
    kill_stops_a_spinning_guest_and_ten_run_in_parallel,
    sigterm_preopen_profiles_the_memory_limit_and_events,
);
