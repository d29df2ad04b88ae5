//! A second red team's attacks (issue 23), each a test that fails if the attack succeeds:
//! registry names spelled another way (a trailing dot, capitals, a port with leading zeros)
//! must be the same registry to every rule that names it; a Linux container handed to runc's
//! shim gets no namespace of the node's (the wasm pod's sandbox is the shim, on the node).

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::cri::{BUSYBOX_IMAGE, Cri};

use crate::support::{Registry, WasmOci, describe, hello, stderr};

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
/// because the shim waits for its helper before the task ends (so a removal mid-compile
/// waits for the compile: bounded by `max_module_size`, and reported as such).
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
    crate::support::wait_until("the compile helper runs", || {
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
