//! `containerd-shim-wasmoci-v1 start` as containerd runs it, without containerd: the bytes
//! containerd 2.3+ writes on stdin (`BootstrapParams`, containerd's
//! `api/runtime/bootstrap/v1/bootstrap.proto`) and what the shim answers (`BootstrapResult`);
//! the older protocol (options or nothing on stdin, the address answered); a start that fails
//! leaves no shim behind; and `--version`.

use std::io::Write as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::Digest as _;

use crate::support::describe;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmoci-v1");

/// A length-delimited protobuf field (wire type 2): tag, varint length, bytes.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2];
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
    out
}

/// A `BootstrapParams` as containerd 2.3's `pkg/shim` marshals it, by bootstrap.proto's field
/// numbers: instance_id = 1, namespace = 2, log_level = 3 (left at INFO, 0, which proto3
/// does not write), containerd_version = 4, containerd_ttrpc_address = 5,
/// containerd_grpc_address = 6, containerd_binary = 7, extensions = 8 (an `Extension` whose
/// `value = 1` is an `Any`: type_url = 1, value = 2), socket_dir = 9.
fn bootstrap_params(s: &Start, shim_cgroup: Option<&str>) -> Vec<u8> {
    let mut params = [
        field(1, s.id.as_bytes()),
        field(2, s.namespace.as_bytes()),
        field(4, b"2.3.4"),
        field(5, s.ttrpc.to_str().unwrap().as_bytes()),
        field(6, s.grpc.to_str().unwrap().as_bytes()),
        field(7, b"/usr/bin/containerd"),
    ]
    .concat();
    if let Some(cgroup) = shim_cgroup {
        // runc's Options: shim_cgroup = 3.
        let any = [
            field(1, b"containerd.runc.v1.Options"),
            field(2, &field(3, cgroup.as_bytes())),
        ]
        .concat();
        params.extend(field(8, &field(1, &any)));
    }
    params.extend(field(9, s.sockets.to_str().unwrap().as_bytes()));
    params
}

/// What `start` needs around it: a bundle to run in, containerd's TTRPC socket (the shim
/// connects to it to publish events), a socket directory of the test's own.
struct Start {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    ttrpc: PathBuf,
    grpc: PathBuf,
    sockets: PathBuf,
    _ttrpc: UnixListener,
    id: String,
    namespace: &'static str,
}

impl Start {
    fn new() -> Start {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        // Where the serving shim logs as containerd's log pipe would take it.
        std::fs::write(bundle.join("log"), "").unwrap();
        // The operator's config: the defaults (never the host's).
        std::fs::write(dir.path().join("shim.toml"), "").unwrap();
        let ttrpc = dir.path().join("containerd.sock.ttrpc");
        let listener = UnixListener::bind(&ttrpc).unwrap();
        Start {
            bundle,
            grpc: dir.path().join("containerd.sock"),
            sockets: dir.path().join("s"),
            ttrpc,
            _ttrpc: listener,
            // Unique to this test: the tests of one binary share a process id.
            id: format!(
                "start-{}",
                dir.path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches('.')
            ),
            namespace: "wasm-oci-start",
            dir,
        }
    }

    /// `start` with `stdin`, the identity on the command line as containerd still passes it.
    fn run(&self, stdin: &[u8]) -> Output {
        let mut child = Command::new(SHIM)
            .args(["-namespace", self.namespace, "-id", &self.id, "-address"])
            .arg(&self.grpc)
            .args(["-publish-binary", "/usr/bin/containerd", "start"])
            .current_dir(&self.bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc)
            .env("WASM_OCI_LOG_FILE", self.dir.path().join("shim.log"))
            .env("WASM_OCI_SHIM_CONFIG", self.dir.path().join("shim.toml"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A start that refuses its input may end before reading all of it.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    /// The socket containerd's shims name for this container in `dir`.
    fn socket_in(&self, dir: &Path) -> PathBuf {
        let key = self.grpc.join(self.namespace).join(&self.id);
        let hash = sha2::Sha256::digest(key.to_str().unwrap().as_bytes());
        dir.join(hex::encode(hash))
    }
}

/// The processes whose command line mentions `needle`, other than this test's own.
fn processes_naming(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Kills the shim a successful start left serving at `socket` (the test's own, by pid), waits
/// for it to go, and removes the socket.
fn stop_shim(socket: &Path) {
    let pids = processes_naming(socket.to_str().unwrap());
    assert_eq!(pids.len(), 1, "one shim serves {}", socket.display());
    let status = Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(crate::support::wait_gone(pids[0]));
    // Killed, it could not remove its socket.
    let _ = std::fs::remove_file(socket);
}

#[test]
fn containerd_2_3s_bootstrap_params_are_answered_with_a_bootstrap_result() {
    let s = Start::new();
    let out = s.run(&bootstrap_params(&s, None));
    assert!(out.status.success(), "{}", describe(&out));
    let socket = s.socket_in(&s.sockets);
    let address = format!("unix://{}", socket.display());
    // BootstrapResult: version = 1 (2: the task API v2 this shim serves), address = 2,
    // protocol = 3, byte for byte.
    let expected = [
        vec![1 << 3, 2],
        field(2, address.as_bytes()),
        field(3, b"ttrpc"),
    ]
    .concat();
    assert_eq!(out.stdout, expected, "{}", describe(&out));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    // The shim serves there, and will remove the socket the bundle's address file names.
    assert!(UnixStream::connect(&socket).is_ok());
    assert_eq!(
        std::fs::read_to_string(s.bundle.join("address")).unwrap(),
        address
    );
    // A second start of the group finds it serving: the same answer, no second process.
    let again = s.run(&bootstrap_params(&s, None));
    assert_eq!(again.stdout, expected, "{}", describe(&again));
    stop_shim(&socket);
}

#[test]
fn containerd_before_2_3_gets_the_address_it_reads() {
    let s = Start::new();
    // ctr and CRI with no runtime options write nothing on stdin; the socket goes where
    // containerd's shims put theirs (named by a hash of this test's containerd address).
    let out = s.run(b"");
    assert!(out.status.success(), "{}", describe(&out));
    let socket = s.socket_in(Path::new("/run/containerd/s"));
    let address = format!("unix://{}", socket.display());
    assert_eq!(String::from_utf8_lossy(&out.stdout), address);
    assert!(UnixStream::connect(&socket).is_ok());
    stop_shim(&socket);
}

#[test]
fn a_failed_start_leaves_no_shim_behind() {
    let s = Start::new();
    // A shim cgroup that does not exist: the shim is spawned, then cannot be placed.
    let cgroup = format!("/wasm-oci-no-such-cgroup-{}", std::process::id());
    let out = s.run(&bootstrap_params(&s, Some(&cgroup)));
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("placing the shim in cgroup {cgroup}")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    // `start` waited for the shim it killed: nothing of it is left, process or socket.
    let socket = s.socket_in(&s.sockets);
    assert_eq!(
        processes_naming(socket.to_str().unwrap()),
        Vec::<u32>::new()
    );
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert!(!s.bundle.join("address").exists());

    // Hostile or garbled input is refused before anything starts: stdin beyond 10 MiB, and
    // bytes that are neither protocol (an end-group wire type where a field starts).
    for input in [vec![0u8; (10 << 20) + 1], vec![0x0c, 0x01]] {
        let out = s.run(&input);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(out.stdout.is_empty(), "{}", describe(&out));
        assert_eq!(processes_naming(&s.id), Vec::<u32>::new());
    }
}

#[test]
fn the_version_flag_prints_the_version() {
    for flag in ["--version", "-v", "-version"] {
        let out = Command::new(SHIM)
            .arg(flag)
            .env_remove("TTRPC_ADDRESS")
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "containerd-shim-wasmoci-v1:\n  Version:  {}\n  Runtime:  \
                 io.containerd.wasmoci.v1\n  Engine:   wasmtime\n",
                env!("CARGO_PKG_VERSION")
            ),
            "{flag}"
        );
        assert!(out.stderr.is_empty(), "{flag}: {}", describe(&out));
    }
}
