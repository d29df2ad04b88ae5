//! A real containerd (Debian's 1.6) per test, with a private root, state and socket, and the
//! shim `containerd-shim-wasmoci-v1` first on its PATH: images imported with `ctr`, tasks run,
//! killed and waited for.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{LOG_EVERYTHING, assert_no_secret_in, describe, testdata};

pub const NS: &str = "wasm-oci-test";
pub const RUNTIME: &str = "io.containerd.wasmoci.v1";
/// A shim config that lets references name the tests' registries, on loopback.
pub const ALLOW_LOOPBACK: &str = "[references]\nallow = [\"127.0.0.1\"]\n";

pub struct Containerd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    /// The namespace `ctr` works in.
    pub namespace: &'static str,
}

impl Containerd {
    pub fn start() -> Containerd {
        Self::start_with_env(&[])
    }

    /// containerd (and so the shim) with extra environment, such as `DOCKER_CONFIG`.
    pub fn start_with_env(env: &[(&str, &Path)]) -> Containerd {
        Self::start_with(env, "")
    }

    /// containerd with extra environment, and `shim_toml` as the operator's shim config.
    pub fn start_with(env: &[(&str, &Path)], shim_toml: &str) -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n{}",
            base_config(dir.path())
        );
        Self::start_in(dir, &config, NS, env, shim_toml)
    }

    /// containerd with `config` (the `[plugins]` part; root, state and sockets are added) in
    /// `dir`, `ctr` working in `namespace`.
    pub fn start_in(
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

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// What the shims logged (`WASM_OCI_LOG_FILE`).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.path().join("shim.log")
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", self.namespace])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().unwrap()
    }

    /// Imports an OCI image whose rootfs holds `files` at `/`, with `entrypoint`.
    pub fn import(&self, name: &str, files: &[(&str, &Path)], entrypoint: &[&str]) {
        let entries: Vec<Entry> = files.iter().map(|(n, p)| Entry::File(n, p)).collect();
        self.import_entries(name, &entries, entrypoint);
    }

    /// Imports an OCI image whose rootfs holds `entries`: files, and what a hostile image may
    /// hold too (symlinks, FIFOs, devices).
    pub fn import_entries(&self, name: &str, entries: &[Entry<'_>], entrypoint: &[&str]) {
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
    pub fn import_hello(&self) {
        self.import(
            "docker.io/library/wasmhello:v1",
            &[("hello.wasm", &testdata("hello.wasm"))],
            &["/hello.wasm"],
        );
    }

    /// Waits until task `id` is STOPPED, for at most 10 s.
    pub fn wait_stopped(&self, id: &str) {
        self.wait_state(id, "STOPPED", Duration::from_secs(10));
    }

    /// Waits until the shim has started task `id` (`ctr tasks ls` says RUNNING), for at most
    /// 30 s.
    pub fn wait_running(&self, id: &str) {
        self.wait_state(id, "RUNNING", Duration::from_secs(30));
    }

    fn wait_state(&self, id: &str, state: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ls = stdout(&self.ctr(&["tasks", "ls"]));
            if ls
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains(state))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} was not {state}: {ls}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr run --rm` with the wasm runtime.
    pub fn run(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
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
pub fn base_config(dir: &Path) -> String {
    format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
         [grpc]\n  address = \"{0}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{0}/containerd-ttrpc.sock\"\n",
        dir.display()
    )
}

/// What an image's layer holds at a path.
pub enum Entry<'a> {
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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Containerd {
    /// `ctr run -d` with the wasm runtime.
    pub fn run_detached(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) {
        let mut all = vec!["run", "-d", "--snapshotter", "native", "--runtime", RUNTIME];
        all.extend_from_slice(extra);
        all.extend_from_slice(&[image, id]);
        all.extend_from_slice(args);
        let out = self.ctr(&all);
        assert!(out.status.success(), "{}\n{}", describe(&out), self.log());
    }

    /// The pid `ctr tasks ls` shows for task `id`.
    pub fn task_pid(&self, id: &str) -> u32 {
        let ls = stdout(&self.ctr(&["tasks", "ls"]));
        ls.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no task {id}: {ls}"))
    }

    /// Kills task `id` with `signal`, deletes it and its container; returns what delete said.
    pub fn kill_and_delete(&self, id: &str, signal: &str) -> String {
        let out = self.ctr(&["tasks", "kill", "-s", signal, id]);
        assert!(out.status.success(), "{}", describe(&out));
        self.wait_stopped(id);
        let out = self.ctr(&["tasks", "delete", id]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(self.ctr(&["containers", "rm", id]).status.success());
        describe(&out)
    }
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits up to 5 s for process `pid` to exit.
pub fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}
