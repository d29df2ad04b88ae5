//! Kubernetes through a real kubelet: kubelet and kube-apiserver v1.20.2 with etcd, the kubelet
//! driving containerd 1.6 over CRI (`support/kube.rs`), pods created, read and deleted with
//! `kubectl` as an operator does. Each wasm pod names its module as [`WasmPod`] says (the one
//! place that knows how), under the RuntimeClass `wasmoci`; busybox pods under runc run beside
//! them for comparison. A pod whose `image:` is the module (as `push` writes it) is pulled by the
//! kubelet itself, with the pod's pull secret and pull policy.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::cri_image::{PASSWORD, USER, printers, push_image, registry_hosts};
use crate::support::{
    ALLOW_LOOPBACK, Kube, Registry, Secure, WasmOci, WasmPod, guests, image_pod_json, kube_wait,
    runc_pod_json,
};

/// Pushes `module` to `registry` as `name` with `wasm-oci push`; its reference.
fn push(registry: &Registry, module: &Path, name: &str) -> String {
    let reference = registry.reference(name);
    WasmOci::new().ok(&["push", module.to_str().unwrap(), &reference]);
    reference
}

/// `(exit code, reason)` of a pod's terminated container, from the kubelet's status.
fn terminated(kube: &Kube, pod: &str) -> (String, String) {
    let state = "{.status.containerStatuses[0].state.terminated";
    (
        kube.jsonpath(&["pod", pod], &format!("{state}.exitCode}}")),
        kube.jsonpath(&["pod", pod], &format!("{state}.reason}}")),
    )
}

#[test]
fn a_wasm_pod_runs_through_the_kubelet_beside_a_runc_pod() {
    let registry = Registry::start();
    let hello = registry.push_hello("kube/hello:v1");
    let kube = Kube::start();
    kube.create(
        &WasmPod {
            name: "hello",
            module: &hello,
            args: &[],
            env: &[],
            restart: "Never",
            labels: &[],
        }
        .json(),
    );
    kube.create(&runc_pod_json(
        "busybox",
        &["/bin/busybox", "echo", "Hello from busybox!"],
        "Never",
        &[],
    ));
    for pod in ["hello", "busybox"] {
        kube.wait_phase(pod, "Succeeded");
        assert_eq!(
            terminated(&kube, pod),
            ("0".to_owned(), "Completed".to_owned()),
            "{}",
            kube.describe_pod(pod)
        );
    }
    // The kubelet reads the container's log through the API server, as `kubectl logs` does.
    assert_eq!(
        kube.kubectl_ok(&["logs", "hello"]),
        "Hello from WebAssembly!\n"
    );
    assert_eq!(
        kube.kubectl_ok(&["logs", "busybox"]),
        "Hello from busybox!\n"
    );
    // The wasm pod ran under the shim's handler, the other under runc.
    assert_eq!(
        kube.jsonpath(&["pod", "hello"], "{.spec.runtimeClassName}"),
        "wasmoci"
    );
    let sandbox = kube.sandbox_id(&kube.jsonpath(&["pod", "hello"], "{.metadata.uid}"));
    let info = kube.containerd().ctr(&["containers", "info", &sandbox]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        info["Runtime"]["Name"], "io.containerd.wasmoci.v1",
        "{info}"
    );
}

#[test]
fn port_forward_reaches_an_http_pod_and_delete_leaves_nothing() {
    let registry = Registry::start();
    let web = push(
        &registry,
        &crate::support::http_guests().proxy,
        "kube/web:v1",
    );
    let kube = Kube::start();
    let uid = kube.create(
        &WasmPod {
            name: "web",
            module: &web,
            args: &[],
            env: &[],
            restart: "Always",
            labels: &[],
        }
        .json(),
    );
    kube.wait_phase("web", "Running");
    // The shim says in the container's log when the component listens (once compiled).
    kube_wait(
        "the HTTP pod listens",
        || {
            String::from_utf8_lossy(&kube.kubectl(&["logs", "web"]).stdout)
                .contains("Serving HTTP on http://0.0.0.0:8080/")
        },
        || {
            format!(
                "{}\n{}",
                crate::support::describe(&kube.kubectl(&["logs", "web"])),
                kube.describe_pod("web")
            )
        },
    );

    // `kubectl port-forward`: kubectl -> API server -> kubelet -> the CRI plugin's streaming
    // server, which connects to the port inside the pod's network namespace, where the shim
    // serves the component on WASM_OCI_HTTP_ADDR's default, 0.0.0.0:8080.
    let mut forward = kube
        .kubectl_command(&["port-forward", "pod/web", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap());
    let forward_errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = BufReader::new(forward.stderr.take().unwrap());
    let errors = forward_errors.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
            errors.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let local = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"))
        .to_owned();
    let url = format!("http://127.0.0.1:{local}/hello");
    let get = || {
        std::process::Command::new("curl")
            .args(["-s", "-S", "-i", "--max-time", "10", &url])
            .output()
            .unwrap()
    };
    let mut answer = String::new();
    kube_wait(
        "the pod answers through kubectl port-forward",
        || {
            answer = String::from_utf8_lossy(&get().stdout).into_owned();
            answer.starts_with("HTTP/1.1 200")
        },
        || {
            format!(
                "curl: {}\nkubectl port-forward: {}\n{}\n{}\n{}",
                crate::support::describe(&get()),
                forward_errors.lock().unwrap(),
                kube.describe_pod("web"),
                kube.log("apiserver"),
                kube.containerd().log()
            )
        },
    );
    assert!(
        answer.ends_with("hello from wasm: GET /hello\n"),
        "{answer}"
    );
    let _ = forward.kill();
    let _ = forward.wait();

    // What the pod holds on the node while it runs: its shim, the shim's socket, its network
    // namespace, its cgroups, its containers' mounts.
    let sandbox = kube.sandbox(&uid);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sandbox.pid)).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("containerd-shim-wasmoci-v1"),
        "the pod's sandbox is not in the wasm shim: {sandbox:?}"
    );
    assert!(sandbox.shim_socket.exists(), "no shim socket: {sandbox:?}");
    assert!(sandbox.netns.exists(), "no network namespace: {sandbox:?}");
    assert!(
        !kube.pod_cgroups(&uid).is_empty(),
        "no cgroup for pod {uid} under {}",
        kube.cgroup_root
    );
    let containers = kube.containers_of(&uid);
    assert!(
        containers.len() >= 2 && containers.contains(&sandbox.id),
        "{containers:?}"
    );
    let mounts_of_pod = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .filter(|l| containers.iter().any(|id| l.contains(id.as_str())))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(!mounts_of_pod().is_empty(), "no mount for {containers:?}");

    // `kubectl delete` returns once the kubelet has stopped the pod and the API object is gone.
    kube.kubectl_ok(&["delete", "pod", "web"]);
    assert!(
        !kube.kubectl(&["get", "pod", "web"]).status.success(),
        "the pod is still there"
    );
    let left = || {
        let mut left = Vec::new();
        if crate::support::alive(sandbox.pid) {
            left.push(format!("shim process {}", sandbox.pid));
        }
        if sandbox.shim_socket.exists() {
            left.push(format!("socket {}", sandbox.shim_socket.display()));
        }
        if sandbox.netns.exists() {
            left.push(format!("network namespace {}", sandbox.netns.display()));
        }
        for cgroup in kube.pod_cgroups(&uid) {
            left.push(format!("cgroup {}", cgroup.display()));
        }
        for mount in mounts_of_pod() {
            left.push(format!("mount {mount}"));
        }
        left
    };
    kube_wait(
        "deleting the pod leaves no shim, socket, network namespace, cgroup or mount",
        || left().is_empty(),
        || format!("left behind: {:#?}\n{}", left(), kube.log("kubelet")),
    );
}

#[test]
fn a_failing_module_crash_loops_under_restart_policy_always() {
    let registry = Registry::start();
    let probe = push(&registry, &guests().probe, "kube/probe:v1");
    let kube = Kube::start();
    kube.create(
        &WasmPod {
            name: "fails",
            module: &probe,
            args: &["exit", "7"],
            env: &[],
            restart: "Always",
            labels: &[],
        }
        .json(),
    );
    kube.create(&runc_pod_json(
        "runc-fails",
        &["/bin/busybox", "sh", "-c", "exit 7"],
        "Always",
        &[],
    ));
    // Each pod's container exits 7, is restarted by the kubelet, and is then held back.
    for pod in ["fails", "runc-fails"] {
        let status = |path: &str| {
            kube.jsonpath(
                &["pod", pod],
                &format!("{{.status.containerStatuses[0].{path}}}"),
            )
        };
        kube_wait(
            &format!("pod {pod} is in CrashLoopBackOff after a restart"),
            || {
                status("state.waiting.reason") == "CrashLoopBackOff"
                    && status("restartCount").parse::<u32>().unwrap_or(0) >= 1
            },
            || kube.describe_pod(pod),
        );
        assert_eq!(status("lastState.terminated.exitCode"), "7");
        assert_eq!(status("lastState.terminated.reason"), "Error");
        assert_eq!(kube.phase(pod), "Running");
    }
}

/// `image:` is the module, through the kubelet: the pod's `imagePullSecrets` are the only
/// credentials (the node has none), `imagePullPolicy` decides whether the kubelet pulls
/// again, and the imageID it reports is the digest whose module ran.
#[test]
fn image_is_the_module_with_the_pods_pull_secret_and_pull_policy() {
    let registry = Registry::start_secure(Secure {
        tls: false,
        user: Some((USER, PASSWORD)),
    });
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let [first, second] = printers(dir.path(), ["first push", "second push"]);
    let reference = registry.reference("kube/module:v1");
    let pushed = push_image(&cli, &first, &reference, true);

    let kube = Kube::start_configured(ALLOW_LOOPBACK, &registry_hosts(&registry), &[]);
    kube.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "pull-secret",
        "--docker-server",
        &registry.addr,
        "--docker-username",
        USER,
        "--docker-password",
        PASSWORD,
    ]);
    let status = |pod: &str, path: &str| {
        kube.jsonpath(
            &["pod", pod],
            &format!("{{.status.containerStatuses[0].{path}}}"),
        )
    };
    let waiting_for = |pod: &str, reasons: &[&str]| {
        kube_wait(
            &format!("pod {pod} waits with a reason among {reasons:?}"),
            || reasons.contains(&status(pod, "state.waiting.reason").as_str()),
            || kube.describe_pod(pod),
        );
    };
    let ran = |pod: &str, message: &str, digest: &serde_json::Value| {
        kube.wait_phase(pod, "Succeeded");
        assert_eq!(
            kube.kubectl_ok(&["logs", pod]),
            format!("{message}\n"),
            "{}",
            kube.describe_pod(pod)
        );
        let image_id = status(pod, "imageID");
        assert!(
            image_id.ends_with(&format!("kube/module@{}", digest.as_str().unwrap())),
            "{image_id}"
        );
    };

    // Without the pod's secret the node cannot pull: it has no credentials of its own.
    kube.create(&image_pod_json(
        "no-secret",
        &reference,
        "Always",
        None,
        &[],
    ));
    waiting_for("no-secret", &["ErrImagePull", "ImagePullBackOff"]);
    // With it, the module runs: no command, no annotation.
    kube.create(&image_pod_json(
        "first",
        &reference,
        "IfNotPresent",
        Some("pull-secret"),
        &[],
    ));
    ran("first", "first push", &pushed["digest"]);

    // The tag moves. IfNotPresent: the kubelet runs the image the node has, the first module.
    let moved = push_image(&cli, &second, &reference, true);
    assert_ne!(moved["digest"], pushed["digest"]);
    kube.create(&image_pod_json(
        "present",
        &reference,
        "IfNotPresent",
        Some("pull-secret"),
        &[],
    ));
    ran("present", "first push", &pushed["digest"]);
    // Always: it pulls again, and the second module runs under the second digest.
    kube.create(&image_pod_json(
        "always",
        &reference,
        "Always",
        Some("pull-secret"),
        &[],
    ));
    ran("always", "second push", &moved["digest"]);
    // Never, for an image the node does not have: not pulled, not run.
    let absent = registry.reference("kube/absent:v1");
    kube.create(&image_pod_json(
        "never",
        &absent,
        "Never",
        Some("pull-secret"),
        &[],
    ));
    waiting_for("never", &["ErrImageNeverPull"]);
}
