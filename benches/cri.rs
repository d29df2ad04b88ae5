//! Kubernetes pods over CRI, side by side in one run: a real containerd with its CRI plugin,
//! driven as the kubelet drives it (the test suite's harness, `tests/all/cri.rs`), every table
//! once on Debian's containerd 1.6 and once on containerd 2.x (`$WASM_OCI_CONTAINERD2`).
//!
//!  1. Pod start: RunPodSandbox + CreateContainer + StartContainer until the container has
//!     exited, through `wasmoci` (hello.wasm) and through runc (`busybox echo`), same pods.
//!  2. 20 pods created in parallel vs one, through `wasmoci`: all running within 2x one's time.
//!  3. The shim's proportional set size (`Pss` of `/proc/PID/smaps_rollup`) per idle pod: 20
//!     with a sleeping guest, and 50 HTTP pods (a wasi:http/proxy component each), every one of
//!     which must answer from inside its network namespace.
//!
//! `cargo bench --bench cri` (`./scripts/bench` runs it).

#![allow(
    dead_code,
    unused_imports,
    reason = "the test harness, shared with tests/all"
)]

#[path = "../tests/all/cri.rs"]
mod cri;
#[path = "../tests/all/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cri::{BUSYBOX_IMAGE, Cri, HELLO_IMAGE, PROBE_IMAGE};
use support::Version;

const RUNS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One pod through `handler`, from RunPodSandbox to its container's exit; the pod is removed
/// afterwards, outside the time.
fn pod_start(cri: &Cri, name: &str, handler: &str, image: &str, command: &[&str]) -> Duration {
    let config = cri.pod_config(name, &[]);
    let started = Instant::now();
    let pod = cri.run_pod(&config, handler);
    let status = cri.run_to_exit(&pod, &config, "c", image, command);
    let took = started.elapsed();
    assert_eq!(status.exit_code, 0, "{status:?}");
    cri.remove_pod(&pod);
    took
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    for (version, name) in [(Version::V1_6, "1.6"), (Version::V2, "2.x")] {
        println!("\n## containerd {name}\n");
        bench(Cri::start_on(version, &[], ""));
    }
}

fn bench(cri: Cri) {
    // Warm both paths once (images unpacked, the shim binary in the page cache).
    pod_start(&cri, "warm-w", "wasmoci", HELLO_IMAGE, &[]);
    pod_start(
        &cri,
        "warm-r",
        "runc",
        BUSYBOX_IMAGE,
        &["/bin/busybox", "echo", "hi"],
    );
    let (mut wasm, mut runc) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        // Interleaved, so that both see the same machine.
        wasm.push(pod_start(
            &cri,
            &format!("w{i}"),
            "wasmoci",
            HELLO_IMAGE,
            &[],
        ));
        runc.push(pod_start(
            &cri,
            &format!("r{i}"),
            "runc",
            BUSYBOX_IMAGE,
            &["/bin/busybox", "echo", "Hello from WebAssembly!"],
        ));
    }
    let (wasm, runc) = (median(wasm), median(runc));
    println!("| pod start to exit ({RUNS} runs, medians) | ms | ratio to runc | target |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| runc, busybox echo (anchor) | {:.1} | 1.00x | |",
        ms(runc)
    );
    println!(
        "| wasmoci, hello.wasm | {:.1} | {:.2}x | <= 0.6x |",
        ms(wasm),
        wasm.as_secs_f64() / runc.as_secs_f64()
    );

    // 20 pods at once, each with a sleeping guest, until all are running; runc's pods the
    // same way, for the floor that containerd, the CNI plugin and the snapshotter set.
    let sleeping = |handler: &str| -> (&'static str, Vec<&'static str>) {
        match handler {
            "runc" => (BUSYBOX_IMAGE, vec!["/bin/busybox", "sleep", "600"]),
            _ => (PROBE_IMAGE, vec!["/probe.wasm", "sleep", "600"]),
        }
    };
    let running = |pod: &str, config: &k8s_cri::v1::PodSandboxConfig, handler: &str| {
        let (image, command) = sleeping(handler);
        let id = cri.start_container(pod, config, "c", image, &command, &[]);
        assert_eq!(
            cri.status(&id).state,
            k8s_cri::v1::ContainerState::ContainerRunning as i32
        );
        id
    };
    let one = |handler: &str, name: &str| {
        let config = cri.pod_config(name, &[]);
        let started = Instant::now();
        let pod = cri.run_pod(&config, handler);
        running(&pod, &config, handler);
        let took = started.elapsed();
        cri.remove_pod(&pod);
        took
    };
    let twenty = |handler: &str, prefix: &str| {
        let configs: Vec<_> = (0..20)
            .map(|i| cri.pod_config(&format!("{prefix}{i}"), &[]))
            .collect();
        let started = Instant::now();
        let pods: Vec<(String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = configs
                .iter()
                .map(|config| {
                    let (cri, running) = (&cri, &running);
                    s.spawn(move || {
                        let pod = cri.run_pod(config, handler);
                        let id = running(&pod, config, handler);
                        (pod, id)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        (started.elapsed(), pods)
    };
    // The floor under ours: sandboxes alone (the CRI plugin, the CNI plugin, the snapshot and
    // a shim process each, but no guest), one and 20 at once.
    let sandboxes = |n: usize, prefix: &str| {
        let configs: Vec<_> = (0..n)
            .map(|i| cri.pod_config(&format!("{prefix}{i}"), &[]))
            .collect();
        let started = Instant::now();
        let pods: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = configs
                .iter()
                .map(|config| {
                    let cri = &cri;
                    s.spawn(move || cri.run_pod(config, "wasmoci"))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let took = started.elapsed();
        for pod in &pods {
            cri.remove_pod(pod);
        }
        took
    };
    let (one_sandbox, twenty_sandboxes) = (sandboxes(1, "sb-one"), sandboxes(20, "sb"));
    let (one_runc, one_wasm) = (one("runc", "one-r"), one("wasmoci", "one-w"));
    let (twenty_runc, runc_pods) = twenty("runc", "pr");
    for (pod, _) in &runc_pods {
        cri.remove_pod(pod);
    }
    let (twenty_wasm, pods) = twenty("wasmoci", "pw");
    // The shims' proportional set size, per idle pod.
    let pss: u64 = pods.iter().map(|(_, id)| pss_kib(cri.c.task_pid(id))).sum();
    println!();
    println!("| pods running | one pod, ms | 20 in parallel, ms | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| runc, busybox sleep (floor) | {:.1} | {:.1} | {:.2}x | |",
        ms(one_runc),
        ms(twenty_runc),
        twenty_runc.as_secs_f64() / one_runc.as_secs_f64()
    );
    println!(
        "| RunPodSandbox alone, wasmoci (floor) | {:.1} | {:.1} | {:.2}x | |",
        ms(one_sandbox),
        ms(twenty_sandboxes),
        twenty_sandboxes.as_secs_f64() / one_sandbox.as_secs_f64()
    );
    println!(
        "| wasmoci, probe sleep | {:.1} | {:.1} | {:.2}x | <= 2x |",
        ms(one_wasm),
        ms(twenty_wasm),
        twenty_wasm.as_secs_f64() / one_wasm.as_secs_f64()
    );
    println!();
    println!("| idle pods | shim Pss per pod | target |");
    println!("| --- | ---: | --- |");
    println!(
        "| 20, a sleeping guest each | {:.1} MiB | <= 8 MiB |",
        pss as f64 / 20.0 / 1024.0
    );
    for (pod, _) in &pods {
        cri.remove_pod(pod);
    }

    // 50 HTTP pods, each serving on 8080 in its own network namespace.
    cri.c.import(
        "registry.test/http:v1",
        &[("proxy.wasm", &support::http_guests().proxy)],
        &["/proxy.wasm"],
    );
    let mut http = Vec::new();
    for i in 0..50 {
        let config = cri.pod_config(&format!("web{i}"), &[]);
        let pod = cri.run_pod(&config, "wasmoci");
        let id = cri.start_container(&pod, &config, "web", "registry.test/http:v1", &[], &[]);
        http.push((pod, id));
    }
    let answered = http
        .iter()
        .filter(|(pod, _)| {
            let netns = cri.pod_netns(pod);
            (0..100).any(|_| {
                let out = std::process::Command::new("nsenter")
                    .arg(format!("--net={netns}"))
                    .args([
                        "curl",
                        "-s",
                        "--max-time",
                        "2",
                        "http://127.0.0.1:8080/hello",
                    ])
                    .output()
                    .unwrap();
                let ok = out.stdout.starts_with(b"hello from wasm");
                if !ok {
                    std::thread::sleep(Duration::from_millis(50));
                }
                ok
            })
        })
        .count();
    let pss: u64 = http.iter().map(|(_, id)| pss_kib(cri.c.task_pid(id))).sum();
    println!(
        "| 50 HTTP pods, {answered} of 50 answering | {:.1} MiB | <= 8 MiB |",
        pss as f64 / 50.0 / 1024.0
    );
    for (pod, _) in &http {
        cri.remove_pod(pod);
    }
}
