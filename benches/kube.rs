//! Kubernetes pods through a real kubelet, side by side in one run: etcd, kube-apiserver and a
//! kubelet v1.20.2 driving containerd 1.6 over CRI (the test suite's node, `tests/all/support/
//! kube.rs`), pods created with `kubectl` and followed with `kubectl get pods --watch`.
//!
//!  1. Pod start to exit: from `kubectl create` until the API server reports the pod
//!     `Succeeded`, through `wasmoci` (hello.wasm, as `image:` as `push` writes it, and
//!     named by the `io.wasm-oci.reference` annotation) and through runc (`busybox echo`), on
//!     the same node, interleaved. Each image is on the node already (`IfNotPresent`), as
//!     busybox's is.
//!  2. 20 pods created at once (one `kubectl create` of a list) until all are reported
//!     `Running`: a sleeping guest each through `wasmoci`, against runc's 20 `busybox sleep`.
//!
//! What the kubelet adds to both is large: it notices a container's exit on its PLEG relist
//! (every second) and reports status through the API server, so the ratios here are smaller than
//! over CRI alone (`benches/cri.rs`).
//!
//! Needs `WASM_OCI_KUBE` (`./scripts/kube-build` prints it); `cargo bench --bench kube`
//! (`./scripts/bench` runs it).

#![allow(
    dead_code,
    unused_imports,
    unused_macros,
    reason = "the test harness, shared with tests/all"
)]

#[path = "../tests/all/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{
    ALLOW_LOOPBACK, Kube, Registry, WasmOci, WasmPod, guests, image_pod_json, runc_pod_json,
};

const RUNS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Creates `pods` (JSON objects) with one `kubectl create`, all labelled `bench=<label>`, and
/// returns how long it took until each was reported in `phase`; they are deleted afterwards,
/// outside the time.
fn until_all(kube: &Kube, label: &str, pods: &[String], phase: &str) -> Duration {
    let mut watch = kube.watch_pods(&format!("bench={label}"));
    let started = Instant::now();
    kube.create_all(pods);
    let mut done = HashSet::new();
    while done.len() < pods.len() {
        let (name, now) = watch
            .next_change()
            .unwrap_or_else(|| panic!("the watch ended\n{}", kube.log("kubelet")));
        assert!(
            now != "Failed",
            "pod {name} failed\n{}",
            kube.describe_pod(&name)
        );
        if now == phase {
            done.insert(name);
        }
    }
    let took = started.elapsed();
    kube.kubectl_ok(&["delete", "pods", "-l", &format!("bench={label}")]);
    took
}

fn main() {
    let registry = Registry::start();
    let hello = registry.push_hello("bench/hello:v1");
    let probe = registry.reference("bench/probe:v1");
    WasmOci::new().ok(&["push", guests().probe.to_str().unwrap(), &probe]);
    let image = registry.reference("bench/hello-image:v1");
    WasmOci::new().ok(&[
        "push",
        support::testdata("hello.wasm").to_str().unwrap(),
        &image,
    ]);
    // containerd pulls `image:` itself, from the registry in plain HTTP.
    let mirror = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{addr}\"]\n  endpoint = [\"http://{addr}\"]\n",
        addr = registry.addr
    );
    let kube = Kube::start_configured(ALLOW_LOOPBACK, &mirror, &[]);

    let wasm_pod = |name: &str, module: &str, args: &[&str], label: &str| {
        WasmPod {
            name,
            module,
            args,
            env: &[],
            restart: "Never",
            labels: &[("bench", label)],
        }
        .json()
    };
    #[derive(Clone, Copy)]
    enum Kind {
        Image,
        Annotation,
        Runc,
    }
    let start_to_exit = |name: &str, kind: Kind| {
        let labels = [("bench", name)];
        let pod = match kind {
            Kind::Image => image_pod_json(name, &image, "IfNotPresent", None, &labels),
            Kind::Annotation => wasm_pod(name, &hello, &[], name),
            Kind::Runc => runc_pod_json(
                name,
                &["/bin/busybox", "echo", "Hello from busybox!"],
                "Never",
                &labels,
            ),
        };
        until_all(&kube, name, &[pod], "Succeeded")
    };
    // Warm each path once (the modules in the shim's cache, the images pulled and unpacked).
    start_to_exit("warm-i", Kind::Image);
    start_to_exit("warm-w", Kind::Annotation);
    start_to_exit("warm-r", Kind::Runc);
    let (mut image_runs, mut wasm, mut runc) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        // Interleaved, so that all see the same machine.
        image_runs.push(start_to_exit(&format!("i{i}"), Kind::Image));
        wasm.push(start_to_exit(&format!("w{i}"), Kind::Annotation));
        runc.push(start_to_exit(&format!("r{i}"), Kind::Runc));
    }
    let (image_run, wasm, runc) = (median(image_runs), median(wasm), median(runc));
    println!(
        "| pod start to exit through the kubelet ({RUNS} runs, medians) | ms | ratio to runc | target |"
    );
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| runc, busybox echo (anchor) | {:.0} | 1.00x | |",
        ms(runc)
    );
    println!(
        "| wasmoci, `image:` hello.wasm (as pushed) | {:.0} | {:.2}x | <= 0.5x |",
        ms(image_run),
        image_run.as_secs_f64() / runc.as_secs_f64()
    );
    println!(
        "| wasmoci, hello.wasm by annotation | {:.0} | {:.2}x | |",
        ms(wasm),
        wasm.as_secs_f64() / runc.as_secs_f64()
    );

    // Pods that stay up: a sleeping guest, or busybox sleeping.
    let sleeping = |name: &str, wasm: bool, label: &str| {
        if wasm {
            wasm_pod(name, &probe, &["sleep", "600"], label)
        } else {
            runc_pod_json(
                name,
                &["/bin/busybox", "sleep", "600"],
                "Never",
                &[("bench", label)],
            )
        }
    };
    let many = |n: usize, wasm: bool, label: &str| {
        let pods: Vec<String> = (0..n)
            .map(|i| sleeping(&format!("{label}-{i}"), wasm, label))
            .collect();
        until_all(&kube, label, &pods, "Running")
    };
    let (one_runc, one_wasm) = (many(1, false, "one-r"), many(1, true, "one-w"));
    let twenty_runc = many(20, false, "twenty-r");
    let twenty_wasm = many(20, true, "twenty-w");
    println!();
    println!(
        "| pods Running through the kubelet | one pod, ms | 20 at once, ms | ratio to one | 20 vs runc's 20 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| runc, busybox sleep | {:.0} | {:.0} | {:.2}x | 1.00x |",
        ms(one_runc),
        ms(twenty_runc),
        twenty_runc.as_secs_f64() / one_runc.as_secs_f64()
    );
    println!(
        "| wasmoci, probe sleep | {:.0} | {:.0} | {:.2}x | {:.2}x |",
        ms(one_wasm),
        ms(twenty_wasm),
        twenty_wasm.as_secs_f64() / one_wasm.as_secs_f64(),
        twenty_wasm.as_secs_f64() / twenty_runc.as_secs_f64()
    );
}
