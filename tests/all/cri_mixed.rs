//! Mixed pods: a pod under the `wasmoci` handler with a wasm container and an ordinary Linux
//! container (busybox) beside it; the shim hands the Linux one to containerd's runc shim, in
//! the pod's network namespace, never the node's.

use std::os::unix::fs::MetadataExt as _;

use crate::cri::{BUSYBOX_IMAGE, Cri, HELLO_IMAGE};

/// The namespace links busybox printed (`... net -> net:[4026532...]`), by kind.
fn namespaces(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|line| {
            let (_, link) = line.rsplit_once(" -> ")?;
            let (kind, rest) = link.split_once(":[")?;
            Some((kind.to_owned(), rest.trim_end_matches(']').parse().ok()?))
        })
        .collect()
}

fn inode(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_linux_sidecar_runs_under_runc_beside_a_wasm_container_in_the_pods_network() {
    let cri = Cri::start();
    let config = cri.pod_config("mixed", &[]);
    let pod = cri.run_pod(&config, "wasmoci");

    let status = cri.run_to_exit(&pod, &config, "wasm", HELLO_IMAGE, &[]);
    assert_eq!(status.exit_code, 0, "{status:?}\n{}", cri.c.log());
    assert!(
        cri.log_of(&config, "wasm")
            .contains(" stdout F Hello from WebAssembly!"),
        "{}",
        cri.log_of(&config, "wasm")
    );

    let status = cri.run_to_exit(
        &pod,
        &config,
        "sidecar",
        BUSYBOX_IMAGE,
        &[
            "/bin/busybox",
            "ls",
            "-l",
            "/proc/self/ns/net",
            "/proc/self/ns/uts",
            "/proc/self/ns/ipc",
        ],
    );
    let log = cri.log_of(&config, "sidecar");
    assert_eq!(status.exit_code, 0, "{status:?}\n{log}\n{}", cri.c.log());
    let seen = namespaces(&log);
    let of = |kind: &str| {
        seen.iter()
            .find(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no {kind} in {log}"))
            .1
    };
    // The pod's network (the one CNI set up), not the node's (this test's).
    assert_eq!(of("net"), inode(&cri.pod_netns(&pod)), "{log}");
    assert_ne!(of("net"), inode("/proc/self/ns/net"), "{log}");
    assert_ne!(of("uts"), inode("/proc/self/ns/uts"), "{log}");
    assert_ne!(of("ipc"), inode("/proc/self/ns/ipc"), "{log}");

    // A long-running sidecar stops at its SIGTERM on the kubelet's StopContainer (143), as
    // under runc. It is PID 1 of its own PID namespace (never the node's: see
    // red_team_shim.rs), where a signal without a handler is ignored, as under runc: so it
    // handles SIGTERM, and a SIGKILL after the grace period would read 137.
    let id = cri.start_container(
        &pod,
        &config,
        "sleeper",
        BUSYBOX_IMAGE,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "trap 'exit 143' TERM; /bin/busybox sleep 600 & wait",
        ],
        &[],
    );
    cri.stop_container(&id, 1).unwrap();
    let status = cri.wait_exited(&id, std::time::Duration::from_secs(20));
    assert_eq!(status.exit_code, 143, "{status:?}");
    cri.remove_pod(&pod);
}
