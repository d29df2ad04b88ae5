//! A real containerd per test, with a private root, state and socket, and the shim
//! `containerd-shim-wasmoci-v1` first on its PATH: images imported with `ctr`, tasks run,
//! killed and waited for. Two versions: Debian's 1.6 (config version 2) and containerd 2.x
//! (Debian sid's, `$WASM_OCI_CONTAINERD2`; config version 3); [`each_containerd!`] runs a test
//! body against both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{LOG_EVERYTHING, assert_no_secret_in, describe, testdata};

pub const NS: &str = "wasm-oci-test";
pub const RUNTIME: &str = "io.containerd.wasmoci.v1";
/// A shim config that lets references name the tests' registries, on loopback.
pub const ALLOW_LOOPBACK: &str = "[references]\nallow = [\"127.0.0.1\"]\n";

/// Which containerd a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Debian's containerd 1.6 (on PATH), config version 2, CRI v1 and v1alpha2.
    V1_6,
    /// containerd 2.x from `$WASM_OCI_CONTAINERD2` (a directory holding `containerd`,
    /// `containerd-shim-runc-v2` and `ctr`), config version 3, CRI v1 only.
    V2,
}

impl Version {
    /// The directory of containerd 2.x's binaries, or a failure that says how to get them.
    fn containerd2_dir() -> PathBuf {
        let dir = std::env::var_os("WASM_OCI_CONTAINERD2").unwrap_or_else(|| {
            panic!(
                "WASM_OCI_CONTAINERD2 is not set: run ./scripts/test, which extracts containerd \
                 2.x and names its bin directory there"
            )
        });
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("containerd").is_file(),
            "no containerd in WASM_OCI_CONTAINERD2={}",
            dir.display()
        );
        dir
    }

    /// The program `name` (`containerd`, `ctr`) of this version.
    pub fn program(self, name: &str) -> PathBuf {
        match self {
            Version::V1_6 => PathBuf::from(name),
            Version::V2 => Self::containerd2_dir().join(name),
        }
    }

    /// The namespace `ctr` works in: one per version, so that the two runs of a test, which
    /// run at once, never share a container's cgroup (`/NAMESPACE/ID`).
    pub fn namespace(self) -> &'static str {
        match self {
            Version::V1_6 => NS,
            Version::V2 => "wasm-oci-test2",
        }
    }

    /// What goes before the shim's directory on containerd's PATH: 2.x's own runc shim.
    fn path_prefix(self) -> Option<PathBuf> {
        match self {
            Version::V1_6 => None,
            Version::V2 => Some(Self::containerd2_dir()),
        }
    }

    /// The config of a containerd that only `ctr` drives: CRI and NRI off.
    fn ctr_config(self, dir: &Path) -> String {
        match self {
            Version::V1_6 => format!(
                "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n{}",
                base_config(dir)
            ),
            Version::V2 => format!(
                "disabled_plugins = [\"io.containerd.grpc.v1.cri\", \
                 \"io.containerd.cri.v1.images\", \"io.containerd.cri.v1.runtime\", \
                 \"io.containerd.nri.v1.nri\"]\n{}",
                self.base_config(dir)
            ),
        }
    }

    /// The part of a test containerd's config.toml every test shares: its config version,
    /// its own root, state and sockets under `dir`; for 2.x, whose `ctr` imports through the
    /// transfer service, unpacking into the native snapshotter the tests name.
    pub fn base_config(self, dir: &Path) -> String {
        let common = |version: u8| {
            format!(
                "version = {version}\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/containerd-ttrpc.sock\"\n",
                dir.display()
            )
        };
        match self {
            Version::V1_6 => common(2),
            Version::V2 => {
                let arch = match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                };
                format!(
                    "{}[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n  \
                     platform = \"linux/{arch}\"\n  snapshotter = \"native\"\n",
                    common(3)
                )
            }
        }
    }
}

/// Runs each named test body (`fn NAME(v: Version)`) once per containerd version, as the
/// tests `NAME::containerd_1_6` and `NAME::containerd_2`.
macro_rules! each_containerd {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn containerd_1_6() {
                super::$name($crate::support::Version::V1_6)
            }

            #[test]
            fn containerd_2() {
                super::$name($crate::support::Version::V2)
            }
        }
    )*};
}
pub(crate) use each_containerd;

pub struct Containerd {
    child: Option<Child>,
    /// The version that runs.
    pub version: Version,
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
        Self::start_on(Version::V1_6, env, shim_toml)
    }

    /// containerd `version`, with extra environment and `shim_toml` as the operator's shim
    /// config.
    pub fn start_on(version: Version, env: &[(&str, &Path)], shim_toml: &str) -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let config = version.ctr_config(dir.path());
        Self::start_version_in(version, dir, &config, version.namespace(), env, shim_toml)
    }

    /// containerd with `config` (the `[plugins]` part; root, state and sockets are added) in
    /// `dir`, `ctr` working in `namespace`.
    #[allow(
        dead_code,
        reason = "containerd 1.6 by the name tests of other branches use"
    )]
    pub fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        namespace: &'static str,
        env: &[(&str, &Path)],
        shim_toml: &str,
    ) -> Containerd {
        Self::start_version_in(Version::V1_6, dir, config, namespace, env, shim_toml)
    }

    /// containerd `version` with `config` (whole, of that version's config format) in `dir`,
    /// `ctr` working in `namespace`.
    pub fn start_version_in(
        version: Version,
        dir: tempfile::TempDir,
        config: &str,
        namespace: &'static str,
        env: &[(&str, &Path)],
        shim_toml: &str,
    ) -> Containerd {
        Self::launch(version, dir, config, namespace, env, shim_toml, false)
    }

    /// containerd `version`, driven by `ctr`, as a systemd unit runs it: no `HOME`, no
    /// `WASM_OCI_CACHE`. It runs in a mount namespace of its own whose `/var/lib` is an empty
    /// tmpfs, so the node's cache (`/var/lib/wasm-oci`) is this test's alone; [`Self::cache`]
    /// is that directory as the host sees it (through `/proc/PID/root`).
    pub fn start_as_a_service(version: Version, shim_toml: &str) -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let config = version.ctr_config(dir.path());
        Self::launch(
            version,
            dir,
            &config,
            version.namespace(),
            &[],
            shim_toml,
            true,
        )
    }

    fn launch(
        version: Version,
        dir: tempfile::TempDir,
        config: &str,
        namespace: &'static str,
        env: &[(&str, &Path)],
        shim_toml: &str,
        service: bool,
    ) -> Containerd {
        let d = dir.path();
        let mut cache = d.join("wasm-oci-cache");
        fs::write(d.join("config.toml"), config).unwrap();
        let shim_dir = Path::new(env!("CARGO_BIN_EXE_containerd-shim-wasmoci-v1"))
            .parent()
            .unwrap();
        // The operator's shim config: empty unless a test gives one (never the host's).
        fs::write(d.join("shim.toml"), shim_toml).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let path = std::iter::once(shim_dir.to_owned())
            .chain(version.path_prefix())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap()))
            .collect::<Vec<_>>();
        let mut command = if service {
            let mut unshare = Command::new("unshare");
            unshare
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount -t tmpfs -o mode=0755 tmpfs /var/lib && exec "$0" "$@""#)
                .arg(version.program("containerd"));
            unshare
                .env_remove("HOME")
                .env_remove("XDG_CACHE_HOME")
                .env_remove("WASM_OCI_CACHE");
            unshare
        } else {
            let mut containerd = Command::new(version.program("containerd"));
            containerd.env("WASM_OCI_CACHE", &cache);
            containerd
        };
        let child = command
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", std::env::join_paths(path).unwrap())
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
        if service {
            // unshare and sh exec containerd: the pid is containerd's.
            cache = PathBuf::from(format!("/proc/{}/root/var/lib/wasm-oci", child.id()));
        }
        let c = Containerd {
            child: Some(child),
            version,
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
        let mut cmd = Command::new(self.version.program("ctr"));
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

/// The part of a test containerd 1.6's config.toml every test shares: its own root, state
/// and sockets under `dir`.
pub fn base_config(dir: &Path) -> String {
    Version::V1_6.base_config(dir)
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

/// The test CNI plugin: `loopback` and `wasmtest` are this one script, which brings `lo` up in
/// the pod's namespace and reports an `eth0` with a link-local address on ADD.
const CNI_PLUGIN: &str = r#"#!/bin/sh
set -e
case "$CNI_COMMAND" in
VERSION)
    echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
ADD)
    nsenter --net="$CNI_NETNS" ip link set lo up
    if [ "$(basename "$0")" = loopback ]; then
        echo '{"cniVersion":"0.4.0","interfaces":[{"name":"lo","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"version":"4","address":"127.0.0.1/8","interface":0}]}'
    else
        echo '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"version":"4","address":"169.254.77.2/32","interface":0}]}'
    fi ;;
DEL|CHECK) ;;
*) exit 1 ;;
esac
"#;

/// Installs the test CNI plugin under `dir` for a CRI-enabled containerd: its binaries
/// directory and its config directory (one network, `wasmtest`).
pub fn install_test_cni(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("cni/bin");
    let conf = dir.join("cni/conf");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&conf).unwrap();
    for name in ["loopback", "wasmtest"] {
        let path = bin.join(name);
        fs::write(&path, CNI_PLUGIN).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(
        conf.join("10-wasmtest.conf"),
        r#"{"cniVersion":"0.4.0","name":"wasmtest","type":"wasmtest"}"#,
    )
    .unwrap();
    (bin, conf)
}
