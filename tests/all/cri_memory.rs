//! Compiling never kills a pod: a pod whose memory limit (its cgroup's, as the kubelet sets
//! it) is well below the compile peak of its module runs, because the shim compiles in a
//! helper process outside the pod's cgroup; the pod's cgroup never reaches its limit.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cri::Cri;
use crate::cri_image::{push_image, registry_hosts};
use crate::support::{Registry, WasmOci};

/// The pod's memory limit: well below the compile peak measured below.
const LIMIT: u64 = 16 << 20;

/// A module with `functions` functions of `ops` additions over a few locals each (work for
/// the compiler's register allocator), whose `_start` prints "big module ran".
pub(crate) fn big_module(functions: usize, ops: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut wat = String::from(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "big module ran\0a")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 15))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"#,
    );
    for f in 0..functions {
        writeln!(
            wat,
            "(func (export \"f{f}\") (param i32) (result i32) (local i32 i32 i32 i32 i32 i32 i32)"
        )
        .unwrap();
        for i in 0..ops {
            let (a, b, c) = (i % 8, (i * 3 + 1) % 8, (i * 5 + 2) % 8);
            writeln!(
                wat,
                "local.get {a} local.get {b} i32.add i32.const {i} i32.xor local.set {c}"
            )
            .unwrap();
        }
        wat.push_str("local.get 1)\n");
    }
    wat.push(')');
    wat::parse_str(&wat).unwrap()
}

/// The memory controller's directory of cgroup `relative` (v2's unified one, else v1's).
fn memory_cgroup(relative: &str) -> (PathBuf, bool) {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let root = if v2 {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/memory")
    };
    (root.join(relative), v2)
}

/// The most memory the cgroup at `dir` was charged at once.
fn peak(dir: &Path, v2: bool) -> u64 {
    let file = if v2 {
        "memory.peak"
    } else {
        "memory.max_usage_in_bytes"
    };
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .parse()
        .unwrap()
}

/// How many times the kernel's OOM killer acted in the cgroup at `dir`.
fn oom_kills(dir: &Path, v2: bool) -> u64 {
    let file = if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    let text = fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .unwrap_or_else(|| panic!("no oom_kill in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Removes the cgroup at `dir` and the ones under it, deepest first.
fn remove_cgroup(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The compile peak of `wasm`: the shim's own compile helper, run in a cgroup of its own.
fn compile_peak(wasm: &[u8]) -> u64 {
    let (dir, v2) = memory_cgroup(&format!("wasm-oci-compile-peak-{}", std::process::id()));
    remove_cgroup(&dir);
    fs::create_dir_all(&dir).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_containerd-shim-wasmoci-v1"))
        .arg("--compile-into-cache")
        .arg(cache.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // The helper reads nothing before its stdin ends: it is in the cgroup before it compiles.
    fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(wasm).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let peak = peak(&dir, v2);
    remove_cgroup(&dir);
    peak
}

#[test]
fn a_pod_limited_well_below_its_modules_compile_peak_runs() {
    let wasm = big_module(6, 12000);
    let compile = compile_peak(&wasm);
    eprintln!(
        "module {} bytes: compile peak {} MiB, pod limit {} MiB",
        wasm.len(),
        compile >> 20,
        LIMIT >> 20
    );
    assert!(
        compile > 2 * LIMIT,
        "the module's compile peak ({compile} bytes) is not well above the pod's limit"
    );

    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wasm");
    fs::write(&file, &wasm).unwrap();
    let reference = registry.reference("big:v1");
    push_image(&WasmOci::new(), &file, &reference, false);
    let cri = Cri::start_configured(&[], "", &registry_hosts(&registry));
    cri.pull_image(&reference, None).unwrap();

    // The pod's cgroup with its limit, as the kubelet makes it before the sandbox.
    let name = format!("limited-{}", std::process::id());
    let (pod_cgroup, v2) = memory_cgroup(&format!("wasm-oci-cri/{name}"));
    remove_cgroup(&pod_cgroup);
    fs::create_dir_all(&pod_cgroup).unwrap();
    let limit_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    fs::write(pod_cgroup.join(limit_file), LIMIT.to_string()).unwrap();

    let config = cri.pod_config(&name, &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let id = cri.start_container(&pod, &config, "big", &reference, &[], &[]);
    // A debug build's compile of this module takes tens of seconds on a busy machine: the
    // bound only ends a test that hangs.
    let status = cri.wait_exited(&id, std::time::Duration::from_secs(600));
    let log = cri.log_of(&config, "big");
    assert_eq!(status.exit_code, 0, "{status:?}\n{log}\n{}", cri.c.log());
    assert!(log.contains(" stdout F big module ran"), "{log}");
    let pod_peak = peak(&pod_cgroup, v2);
    eprintln!("pod cgroup peak {} MiB", pod_peak >> 20);
    assert!(pod_peak < LIMIT, "{pod_peak}");
    assert_eq!(oom_kills(&pod_cgroup, v2), 0);
    cri.remove_pod(&pod);
    remove_cgroup(&pod_cgroup);
}
