//! The compile helper's limits (issue 23): a pod author chooses the module, and its compile
//! runs outside the pod's cgroup (issue 24), so the operator's `[compile]` limits hold it:
//! past its `timeout` or its `max_memory` it is stopped, the container fails naming the limit
//! and the option that raises it, and the cache holds no code of it; a kill of its container
//! or of its shim ends it, and a dead shim's compile cgroup is removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cri_memory::big_module;
use crate::support::{
    Containerd, Version, describe, each_containerd, stdout, wait_until, wait_until_within,
};

const BIG: &str = "docker.io/library/big-compile:v1";

/// A containerd whose shim has `shim_toml`, with [`BIG`] imported: a module whose compile
/// takes seconds and tens of MiB (`functions` functions; see [`big_module`]).
fn with_big_module(v: Version, shim_toml: &str, functions: usize) -> Containerd {
    let c = Containerd::start_on(v, &[], shim_toml);
    let file = c.dir.path().join("big.wasm");
    fs::write(&file, big_module(functions, 12000)).unwrap();
    c.import(BIG, &[("big.wasm", &file)], &["/big.wasm"]);
    c
}

/// What the shim logged of its compiles.
fn compile_log(c: &Containerd) -> String {
    fs::read_to_string(c.shim_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("compile"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The compiled code (and partial files) in `c`'s cache (`<root>/v1/compiled/...`).
fn compiled_files(c: &Containerd) -> Vec<PathBuf> {
    let dir = c.cache.join("v1");
    assert!(dir.is_dir(), "no cache at {}", dir.display());
    files_under(&dir.join("compiled"))
}

/// Waits until the helper `pid` is where its memory is capped, for at most 30 s (it is
/// moved there before it reads the module); where, and the cap.
fn capped(pid: u32) -> (Option<PathBuf>, Option<u64>) {
    let mut cap = (None, None);
    wait_until("the helper is in its memory cap", || {
        cap = memory_cap(pid);
        cap.1.is_some() || !runs(pid)
    });
    cap
}

/// The pids of the compile helpers that compile into a cache under `c`'s directory.
pub(crate) fn helpers_of(c: &Containerd) -> Vec<u32> {
    let dir = c.dir.path().display().to_string();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "--compile-into-cache")
            && args.iter().any(|a| a.starts_with(&dir))
            && runs(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` still runs (exists and is no zombie).
pub(crate) fn runs(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Where process `pid`'s memory is capped: its memory cgroup's directory when that is a
/// compile helper's own (`wasm-oci-compile-...`) with the limit it has, else `None` and
/// its `RLIMIT_DATA` (bytes).
fn memory_cap(pid: u32) -> (Option<PathBuf>, Option<u64>) {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cgroup = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let root = match (v2, controllers.split(',').any(|c| c == "memory")) {
            (true, _) if controllers.is_empty() => "/sys/fs/cgroup".to_owned(),
            (false, true) => "/sys/fs/cgroup/memory".to_owned(),
            _ => return None,
        };
        Some(Path::new(&root).join(path.trim_start_matches('/')))
    });
    if let Some(dir) = cgroup.filter(|d| {
        d.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("wasm-oci-compile-"))
    }) {
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let limit = fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        return (Some(dir), limit);
    }
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let data = limits
        .lines()
        .find(|l| l.starts_with("Max data size"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    (None, data)
}

/// A compile past `[compile] timeout` (here 10 ms, where the module takes seconds): the helper
/// is stopped, the container fails with an error that names the limit and the option, and
/// no code (whole or partial) is left in the cache.
fn a_compile_past_its_time_limit_is_stopped_and_named(v: Version) {
    let c = with_big_module(v, "[compile]\ntimeout = \"10ms\"\n", 6);
    let out = c.run(&[], BIG, "slow", &[]);
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(125), "{text}\n{}", c.log());
    assert!(
        text.contains("took longer than 10ms")
            && text.contains("[compile] timeout")
            && text.contains("shim.toml"),
        "the error does not name the limit: {text}"
    );
    assert!(
        !text.contains("big module ran"),
        "the module ran after all: {text}"
    );
    assert!(helpers_of(&c).is_empty(), "a helper outlived its limit");
    let left = compiled_files(&c);
    assert!(left.is_empty(), "a stopped compile left {left:?}");
}

/// A compile past `[compile] max_memory` (16 MiB, where the module peaks above 32 MiB): the
/// helper is stopped, and the container fails naming that limit.
fn a_compile_past_its_memory_limit_is_stopped_and_named(v: Version) {
    let c = with_big_module(v, "[compile]\nmax_memory = \"16MiB\"\n", 6);
    let out = c.run(&[], BIG, "hungry", &[]);
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(125), "{text}\n{}", compile_log(&c));
    assert!(
        text.contains("needed more memory than 16MiB") && text.contains("[compile] max_memory"),
        "the error does not name the limit: {text}"
    );
    assert!(helpers_of(&c).is_empty(), "a helper outlived its limit");
    // Whatever it wrote is not code the cache keeps.
    let code: Vec<PathBuf> = compiled_files(&c)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "module"))
        .collect();
    assert!(code.is_empty(), "a stopped compile left {code:?}");
    // Within its limits the same module runs, its code compiled by the helper.
    let c = with_big_module(v, "", 6);
    let out = c.run(&[], BIG, "fits", &[]);
    assert!(out.status.success(), "{}\n{}", describe(&out), c.log());
    assert!(
        stdout(&out).contains("big module ran"),
        "{}",
        describe(&out)
    );
    assert!(!compiled_files(&c).is_empty(), "nothing was compiled");
}

/// A container killed while its module compiles: the helper (outside the container's cgroup)
/// is killed with it, no code of the stopped compile is kept, and the task stops and is
/// deleted. The helper runs within the memory cap the operator set, while it runs.
fn a_killed_containers_compile_helper_is_gone(v: Version) {
    let c = with_big_module(v, "[compile]\nmax_memory = \"1GiB\"\n", 48);
    c.run_detached(&[], BIG, "killed", &[]);
    let mut helpers = Vec::new();
    wait_until("the compile helper runs", || {
        helpers = helpers_of(&c);
        !helpers.is_empty()
    });
    let (cgroup, cap) = capped(helpers[0]);
    assert_eq!(
        cap,
        Some(1 << 30),
        "the helper's memory is not capped at [compile] max_memory (cgroup {cgroup:?})"
    );
    let out = c.ctr(&["tasks", "kill", "-s", "SIGKILL", "killed"]);
    assert!(out.status.success(), "{}", describe(&out));
    wait_until_within(
        "the killed container's compile helper is gone",
        Duration::from_secs(60),
        || helpers.iter().all(|p| !runs(*p)),
    );
    c.wait_stopped("killed");
    let out = c.ctr(&["tasks", "delete", "killed"]);
    assert!(out.status.success(), "{}", describe(&out));
    let left = compiled_files(&c);
    assert!(
        left.is_empty(),
        "the compile went on after the kill (or left a partial file): {left:?}"
    );
    if let Some(dir) = cgroup {
        wait_until("the helper's cgroup is removed", || !dir.exists());
    }
}

/// A shim killed (`kill -9`, as by the OOM killer) while its helper compiles: the helper dies
/// with it, and the helper's memory cgroup is removed when containerd cleans up after the
/// dead shim (its `delete` runs this program, which removes dead shims' compile cgroups).
fn a_dead_shims_compile_helper_and_its_cgroup_are_gone(v: Version) {
    let c = with_big_module(v, "", 48);
    c.run_detached(&[], BIG, "orphan", &[]);
    let shim = c.task_pid("orphan");
    let mut helpers = Vec::new();
    wait_until("the compile helper runs", || {
        helpers = helpers_of(&c);
        !helpers.is_empty()
    });
    let (cgroup, cap) = capped(helpers[0]);
    assert_eq!(cap, Some(2 << 30), "the default cap is not set: {cgroup:?}");
    let out = std::process::Command::new("kill")
        .args(["-9", &shim.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    wait_until_within(
        "the dead shim's compile helper is gone",
        Duration::from_secs(60),
        || helpers.iter().all(|p| !runs(*p)),
    );
    wait_until("containerd forgets the dead shim's task", || {
        !stdout(&c.ctr(&["tasks", "ls", "-q"]))
            .lines()
            .any(|l| l == "orphan")
    });
    if let Some(dir) = cgroup {
        wait_until_within(
            "the dead shim's compile cgroup is removed",
            Duration::from_secs(60),
            || !dir.exists(),
        );
    }
    assert!(c.ctr(&["containers", "rm", "orphan"]).status.success());
}

/// A module that does not compile (a function returns an i64 where its type says i32): the
/// helper's error is the container's, and the shim does not compile it again in process (a
/// module that fails after minutes of compiling would take them again, outside every limit).
fn a_module_that_does_not_compile_is_not_compiled_again_in_the_shim(v: Version) {
    let c = Containerd::start_on(v, &[], "");
    let file = c.dir.path().join("bad.wasm");
    let wasm =
        wat::parse_str(r#"(module (func (export "_start")) (func (result i32) (i64.const 0)))"#)
            .unwrap();
    fs::write(&file, wasm).unwrap();
    c.import(
        "docker.io/library/bad:v1",
        &[("bad.wasm", &file)],
        &["/bad.wasm"],
    );
    let out = c.run(&[], "docker.io/library/bad:v1", "bad", &[]);
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(125), "{text}");
    assert!(text.contains("the module does not compile"), "{text}");
    let log = compile_log(&c);
    assert!(!log.contains("compiling in process"), "{log}");
}

/// Where no memory cgroup of its own can be made (cgroup v2 whose home cgroup holds
/// processes), the helper's cap is `RLIMIT_DATA`, counted from what its engine reserved
/// (pools of address space): within the default cap a module compiles, and past a small one
/// the helper fails, saying so (the words the shim reads as "past its memory limit").
#[test]
fn without_a_memory_cgroup_the_helpers_cap_is_its_data_limit() {
    use std::io::Write as _;
    let wasm = big_module(6, 12000);
    for (limit, compiles) in [(2u64 << 30, true), (16 << 20, false)] {
        let cache = tempfile::tempdir().unwrap();
        let mut child =
            std::process::Command::new(env!("CARGO_BIN_EXE_containerd-shim-wasmoci-v1"))
                .arg("--compile-into-cache")
                .arg(cache.path())
                .env("WASM_OCI_COMPILE_DATA_LIMIT", limit.to_string())
                .env("RUST_BACKTRACE", "0")
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        child.stdin.take().unwrap().write_all(&wasm).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        let code = files_under(&cache.path().join("v1/compiled"));
        if compiles {
            assert!(out.status.success(), "{limit}: {said}");
            assert_eq!(code.len(), 1, "{code:?}");
        } else {
            assert!(!out.status.success(), "{limit}: compiled");
            assert!(
                said.contains("memory allocation of")
                    || said.contains("past its memory limit (RLIMIT_DATA)"),
                "{limit}: {said}"
            );
            assert!(code.is_empty(), "{code:?}");
        }
    }
}

each_containerd!(
    a_module_that_does_not_compile_is_not_compiled_again_in_the_shim,
    a_compile_past_its_time_limit_is_stopped_and_named,
    a_compile_past_its_memory_limit_is_stopped_and_named,
    a_killed_containers_compile_helper_is_gone,
    a_dead_shims_compile_helper_and_its_cgroup_are_gone,
);
