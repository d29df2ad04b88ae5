//! The containerd runtime `io.containerd.wasmoci.v1` under a real containerd (Debian's 1.6),
//! started per test with a private root, state and socket, and the shim first on its PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    LOG_EVERYTHING, Registry, WasmOci, assert_no_secret_in, describe, guests, testdata,
};

pub(crate) const HELLO: &str = "Hello from WebAssembly!\n";
pub(crate) const NS: &str = "wasm-oci-test";
pub(crate) const RUNTIME: &str = "io.containerd.wasmoci.v1";
/// A shim config that lets references name the tests' registries, on loopback.
pub(crate) const ALLOW_LOOPBACK: &str = "[references]\nallow = [\"127.0.0.1\"]\n";

pub(crate) struct Containerd {
    child: Option<Child>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) cache: PathBuf,
    /// The namespace `ctr` works in.
    pub(crate) namespace: &'static str,
}

impl Containerd {
    pub(crate) fn start() -> Containerd {
        Self::start_with_env(&[])
    }

    /// containerd (and so the shim) with extra environment, such as `DOCKER_CONFIG`.
    pub(crate) fn start_with_env(env: &[(&str, &Path)]) -> Containerd {
        Self::start_with(env, "")
    }

    /// containerd with extra environment, and `shim_toml` as the operator's shim config.
    pub(crate) fn start_with(env: &[(&str, &Path)], shim_toml: &str) -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n{}",
            base_config(dir.path())
        );
        Self::start_in(dir, &config, NS, env, shim_toml)
    }

    /// containerd with `config` (the `[plugins]` part; root, state and sockets are added) in
    /// `dir`, `ctr` working in `namespace`.
    pub(crate) fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        namespace: &'static str,
        env: &[(&str, &Path)],
        shim_toml: &str,
    ) -> Containerd {
        let d = dir.path();
        let cache = d.join("wasm-oci-cache");
        fs::write(d.join("config.toml"), config).unwrap();
        let shim_dir = Path::new(env!("CARGO_BIN_EXE_containerd-shim-wasmoci-v1"))
            .parent()
            .unwrap();
        // The operator's shim config: empty unless a test gives one (never the host's).
        fs::write(d.join("shim.toml"), shim_toml).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env(
                "PATH",
                format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("WASM_OCI_CACHE", &cache)
            // The shim logs everything to a file of its own, searched for secrets at the end.
            .env("WASM_OCI_LOG", LOG_EVERYTHING)
            .env("WASM_OCI_LOG_FILE", d.join("shim.log"))
            .env("DOCKER_CONFIG", d.join("no-docker-config"))
            .env("WASM_OCI_SHIM_CONFIG", d.join("shim.toml"))
            // At trace level every WASI call's error is logged with its Debug form, which
            // resolves a captured backtrace when RUST_BACKTRACE is set: tens of MiB of debug
            // info charged to the container's memory cgroup. Not what a node runs.
            .env("RUST_BACKTRACE", "0")
            .env_remove("SSL_CERT_FILE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is not installed: run ./scripts/test, which installs it");
        let c = Containerd {
            child: Some(child),
            dir,
            cache,
            namespace,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// What the shims logged (`WASM_OCI_LOG_FILE`).
    pub(crate) fn shim_log(&self) -> PathBuf {
        self.dir.path().join("shim.log")
    }

    pub(crate) fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", self.namespace])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub(crate) fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().unwrap()
    }

    /// Imports an OCI image whose rootfs holds `files` at `/`, with `entrypoint`.
    pub(crate) fn import(&self, name: &str, files: &[(&str, &Path)], entrypoint: &[&str]) {
        let entries: Vec<Entry> = files.iter().map(|(n, p)| Entry::File(n, p)).collect();
        self.import_entries(name, &entries, entrypoint);
    }

    /// Imports an OCI image whose rootfs holds `entries`: files, and what a hostile image may
    /// hold too (symlinks, FIFOs, devices).
    pub(crate) fn import_entries(&self, name: &str, entries: &[Entry<'_>], entrypoint: &[&str]) {
        let archive = self
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let entries_json = serde_json::to_string(
            &entries
                .iter()
                .map(|e| match e {
                    Entry::File(n, p) => serde_json::json!([n, "file", p.display().to_string()]),
                    Entry::Symlink(n, target) => serde_json::json!([n, "symlink", target]),
                    Entry::Fifo(n) => serde_json::json!([n, "fifo", ""]),
                    Entry::CharDevice(n, major, minor) => {
                        serde_json::json!([n, "chr", format!("{major}:{minor}")])
                    }
                    Entry::Dir(n) => serde_json::json!([n, "dir", ""]),
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let script = r#"
import hashlib, io, json, sys, tarfile
name, entries, entrypoint, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for n, kind, arg in entries:
            info = tarfile.TarInfo(n); data = None
            if kind == "file":
                data = arg if isinstance(arg, bytes) else open(arg, "rb").read()
                info.size = len(data); info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE; info.linkname = arg
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE; info.mode = 0o644
            elif kind == "chr":
                info.type = tarfile.CHRTYPE; info.mode = 0o666
                info.devmajor, info.devminor = (int(x) for x in arg.split(":"))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE; info.mode = 0o755
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
layer = tar_bytes(entries)
sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": entrypoint},
    "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": sha(manifest), "size": len(manifest), "annotations": {"io.containerd.image.name": name}}]}).encode()
files = [("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", "file", index)]
files += [("blobs/sha256/" + hashlib.sha256(b).hexdigest(), "file", b) for b in (layer, config, manifest)]
open(out, "wb").write(tar_bytes(files))
"#;
        let out = Command::new("python3")
            .args([
                "-c",
                script,
                name,
                &entries_json,
                &serde_json::to_string(entrypoint).unwrap(),
            ])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let out = self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            archive.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "import: {}", describe(&out));
    }

    /// Imports `docker.io/library/wasmhello:v1`: hello.wasm at `/`, its entrypoint.
    pub(crate) fn import_hello(&self) {
        self.import(
            "docker.io/library/wasmhello:v1",
            &[("hello.wasm", &testdata("hello.wasm"))],
            &["/hello.wasm"],
        );
    }

    /// Waits until task `id` is STOPPED, for at most 10 s.
    pub(crate) fn wait_stopped(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ls = stdout(&self.ctr(&["tasks", "ls"]));
            if ls
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains("STOPPED"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "task {id} was not stopped: {ls}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr run --rm` with the wasm runtime.
    pub(crate) fn run(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--runtime",
            RUNTIME,
        ];
        all.extend_from_slice(extra);
        all.extend_from_slice(&[image, id]);
        all.extend_from_slice(args);
        self.ctr(&all)
    }
}

/// The part of a test containerd's config.toml every test shares: its own root, state and
/// sockets under `dir`.
pub(crate) fn base_config(dir: &Path) -> String {
    format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
         [grpc]\n  address = \"{0}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{0}/containerd-ttrpc.sock\"\n",
        dir.display()
    )
}

/// What an image's layer holds at a path.
pub(crate) enum Entry<'a> {
    /// A copy of a host file.
    File(&'a str, &'a Path),
    /// A symlink to a target.
    Symlink(&'a str, &'a str),
    /// A named pipe.
    Fifo(&'a str),
    /// A character device (major, minor).
    CharDevice(&'a str, u32, u32),
    /// A directory.
    Dir(&'a str),
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Stop what still runs, then containerd, then anything left mounted under our root.
        if let Ok(out) = self.ctr_command(&["tasks", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["tasks", "delete", id]);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A shim whose task could not be deleted is not left running.
        let _ = Command::new("pkill")
            .args([
                "-9",
                "-f",
                &format!(
                    "containerd-shim-wasmoci-v1 -namespace {} .*{}",
                    self.namespace,
                    self.dir.path().display()
                ),
            ])
            .status();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path())
            .stderr(Stdio::null())
            .status();
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().display().to_string();
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&root))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        assert_no_secret_in(&self.shim_log());
    }
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Containerd {
    /// `ctr run -d` with the wasm runtime.
    pub(crate) fn run_detached(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) {
        let mut all = vec!["run", "-d", "--snapshotter", "native", "--runtime", RUNTIME];
        all.extend_from_slice(extra);
        all.extend_from_slice(&[image, id]);
        all.extend_from_slice(args);
        let out = self.ctr(&all);
        assert!(out.status.success(), "{}\n{}", describe(&out), self.log());
    }

    /// The pid `ctr tasks ls` shows for task `id`.
    pub(crate) fn task_pid(&self, id: &str) -> u32 {
        let ls = stdout(&self.ctr(&["tasks", "ls"]));
        ls.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no task {id}: {ls}"))
    }

    /// Kills task `id` with `signal`, deletes it and its container; returns what delete said.
    pub(crate) fn kill_and_delete(&self, id: &str, signal: &str) -> String {
        let out = self.ctr(&["tasks", "kill", "-s", signal, id]);
        assert!(out.status.success(), "{}", describe(&out));
        self.wait_stopped(id);
        let out = self.ctr(&["tasks", "delete", id]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(self.ctr(&["containers", "rm", id]).status.success());
        describe(&out)
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits up to 5 s for process `pid` to exit.
pub(crate) fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

#[test]
fn containers_of_a_group_share_one_shim_and_a_pod_sandbox_waits() {
    // On a single-tenant node the operator may let io.wasm-oci.group decide.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("shim.toml");
    fs::write(&file, "[groups]\nby = \"annotation\"\n").unwrap();
    let c = Containerd::start_with_env(&[("WASM_OCI_SHIM_CONFIG", &file)]);
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
    assert!(cgroups.contains(&format!("/{NS}/g1-b")), "{cgroups}");
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
    std::thread::sleep(Duration::from_millis(300));
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

#[test]
fn the_shim_pulls_from_a_private_tls_registry_with_docker_credentials() {
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
    let c = Containerd::start_with(
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

#[test]
fn ctr_runs_wasm_through_the_shim() {
    let c = Containerd::start();
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

#[test]
fn the_reference_annotation_pulls_into_the_shared_cache() {
    let registry = Registry::start();
    let reference = registry.reference("tools/probe:v1");
    WasmOci::new().ok(&["push", guests().probe.to_str().unwrap(), &reference]);
    let c = Containerd::start_with(&[], ALLOW_LOOPBACK);
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

#[test]
fn kill_stops_a_spinning_guest_and_ten_run_in_parallel() {
    let c = Containerd::start();
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
    std::thread::sleep(Duration::from_millis(500));
    // The guest runs inside the container's cgroup.
    let pid = stdout(&c.ctr(&["tasks", "ls"]))
        .lines()
        .find(|l| l.starts_with("spin"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains(&format!("/{NS}/spin")), "{cgroups}");
    let started = Instant::now();
    let out = c.ctr(&["tasks", "kill", "-s", "SIGKILL", "spin"]);
    assert!(out.status.success(), "{}", describe(&out));
    c.wait_stopped("spin");
    assert!(started.elapsed() < Duration::from_secs(5));
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
        .any(|h| h.path().join(NS).join("spin").exists());
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

#[test]
fn sigterm_preopen_profiles_the_memory_limit_and_events() {
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
    let c = Containerd::start_with_env(&[("WASM_OCI_SHIM_CONFIG", &config)]);
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
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.ctr(&["tasks", "kill", "term"]).status.success());
    c.wait_stopped("term");
    let out = c.ctr(&["tasks", "delete", "term"]);
    assert!(describe(&out).contains("143"), "{}", describe(&out));
    assert!(c.ctr(&["containers", "rm", "term"]).status.success());

    // ... and a guest asleep in a host call just as promptly.
    let image = "docker.io/library/probe:v1";
    c.run_detached(&[], image, "asleep", &["/probe.wasm", "sleep", "3600"]);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(c.kill_and_delete("asleep", "SIGTERM").contains("143"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

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
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let killed = c.ctr(&["tasks", "kill", "reading"]);
    assert!(killed.status.success(), "{}", describe(&killed));
    let status = crate::support::exit_within(&mut waiting, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a guest waiting for stdin was not stopped: {}", c.log()));
    assert_eq!(status.code(), Some(143));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The task events containerd saw from the shim.
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let seen = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(seen.contains(topic), "no {topic} event in:\n{seen}");
    }
}
