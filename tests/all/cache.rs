//! Edge nodes: prefetch, offline starts and cache care, against the real registry.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::padded_hello;
use crate::support::{Fault, Proxy};
use crate::support::{Registry, WasmOci, describe, guests, stderr, testdata};

const HELLO: &str = "Hello from WebAssembly!\n";

fn hello() -> String {
    testdata("hello.wasm").display().to_string()
}

#[test]
fn prefetch_downloads_shared_blobs_once_and_everything_then_runs_offline() {
    let mut registry = Registry::start();
    let cli = WasmOci::new();
    for r in ["a/hello:v1", "b/hello:v1", "c/hello:v2"] {
        cli.ok(&["push", &hello(), &registry.reference(r)]);
    }
    cli.ok(&[
        "push",
        guests().probe.to_str().unwrap(),
        &registry.reference("probe:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, Fault::None);
    let refs: Vec<String> = ["a/hello:v1", "b/hello:v1", "c/hello:v2", "probe:v1"]
        .iter()
        .map(|r| proxy.reference(r))
        .collect();
    let list = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        list.path(),
        format!("# edge modules\n{}\n\n{}\n", refs[2], refs[3]),
    )
    .unwrap();

    let edge = WasmOci::new();
    let out = edge.run(&[
        "prefetch",
        &refs[0],
        &refs[1],
        "--from-file",
        list.path().to_str().unwrap(),
        "--jobs",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes.len(), 4);
    assert!(
        outcomes
            .iter()
            .all(|o| o["compiled"] == true && o["error"].is_null()),
        "{outcomes:?}"
    );

    // hello's layer (and its config) went over the wire once for three references.
    let hello_layer =
        outcomes.iter().find(|o| o["reference"] == refs[0]).unwrap()["layer_digest"].clone();
    let gets = proxy.seen(|s| s.blob_gets.clone());
    let layer_gets = gets
        .iter()
        .filter(|g| g.contains(hello_layer.as_str().unwrap()))
        .count();
    assert_eq!(layer_gets, 1, "{gets:#?}");
    // Two distinct layers and two distinct configs in all.
    assert_eq!(gets.len(), 4, "{gets:#?}");

    // No registry, no proxy: every prefetched reference starts, from precompiled code.
    drop(proxy);
    registry.stop();
    for r in &refs[..3] {
        let out = edge
            .command()
            .args(["run", r])
            .env("WASM_OCI_LOG", "wasm_oci_shim=debug")
            .env_remove("WASM_OCI_LOG_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
        assert!(
            stderr(&out).contains("precompiled cache hit"),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(
        edge.ok(&["run", "--pull", "never", &refs[3], "--", "exit", "0"]),
        ""
    );
}

#[test]
fn prefetch_reports_failures_and_lands_the_rest() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    cli.ok(&["push", &hello(), &registry.reference("hello:v1")]);
    let out = cli.run(&[
        "prefetch",
        &registry.reference("hello:v1"),
        &registry.reference("missing:v1"),
        "Not/A Reference",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("prefetched 1 of 3 references"), "{err}");
    assert!(
        err.contains(&format!("failed {}: ", registry.reference("missing:v1"))),
        "{err}"
    );
    assert!(err.contains("was not found in the registry"), "{err}");
    assert!(
        err.contains("failed Not/A Reference: invalid reference"),
        "{err}"
    );
    assert_eq!(
        cli.ok(&["run", "--pull", "never", &registry.reference("hello:v1")]),
        HELLO
    );
}

#[test]
fn cache_ls_inspect_and_verify() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello(), &reference]);
    cli.ok(&["pull", &reference]);

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["reference"], reference);
    assert_eq!(
        listed[0]["size"],
        fs::metadata(testdata("hello.wasm")).unwrap().len()
    );
    let table = cli.ok(&["cache", "ls"]);
    assert!(table.starts_with("REFERENCE"), "{table}");
    assert!(table.contains(&reference), "{table}");

    let inspected: serde_json::Value =
        serde_json::from_str(&cli.ok(&["inspect", &reference, "--json"])).unwrap();
    assert_eq!(inspected["kind"], "module");
    assert_eq!(
        inspected["imports"][0],
        "wasi_snapshot_preview1::fd_write (func)"
    );
    assert!(
        inspected["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "_start (func)")
    );
    assert_eq!(inspected["config"]["os"], "wasip1");
    assert_eq!(
        inspected["manifest"]["layers"][0]["mediaType"],
        "application/wasm"
    );
    let human = cli.ok(&["inspect", &reference]);
    assert!(human.contains("core module (WASI preview 1)"), "{human}");
    // A reader that goes away (`| head -1`) ends the output quietly.
    let mut child = cli
        .command()
        .args(["inspect", &reference])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", describe(&out));

    let out = cli.run(&["cache", "verify"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("verified 3 blobs"),
        "{}",
        describe(&out)
    );

    // Damage the layer: verify removes it and says so, and the next run fetches it again.
    let layer = listed[0]["layer_digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    let path = cli.cache.path().join("v1/blobs/sha256").join(&layer);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, b"bit rot").unwrap();
    let out = cli.run(&["cache", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"][0]["expected"], listed[0]["layer_digest"]);
    assert!(!path.exists());
    assert_eq!(cli.ok(&["run", &reference]), HELLO);
}

#[test]
fn a_killed_download_leaves_a_cache_that_verifies() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    fs::write(&big, padded_hello(4 << 20)).unwrap();
    WasmOci::new().ok(&["push", big.to_str().unwrap(), &registry.reference("big:v1")]);
    let proxy = Proxy::start(&registry.addr, Fault::StallFirstBlob);
    let cli = WasmOci::new();
    let mut child = cli
        .command()
        .args(["pull", &proxy.reference("big:v1")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.seen(|s| s.half_sent) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = cli.run(&["cache", "verify"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("1 partial downloads kept for resuming"),
        "{}",
        describe(&out)
    );
}

#[test]
fn prune_keeps_the_cache_under_the_size_asked_and_spares_blobs_in_use() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let mut refs = Vec::new();
    for i in 0..4 {
        let file = dir.path().join(format!("m{i}.wasm"));
        fs::write(&file, padded_hello((1 << 20) + i)).unwrap();
        let r = registry.reference(&format!("m{i}:v1"));
        cli.ok(&["push", file.to_str().unwrap(), &r]);
        cli.ok(&["pull", &r]);
        std::thread::sleep(Duration::from_millis(20));
        refs.push(r);
    }
    // m0 is the least recently used, but it is running.
    cli.ok(&[
        "push",
        guests().probe.to_str().unwrap(),
        &registry.reference("spin:v1"),
    ]);
    let spin = registry.reference("spin:v1");
    cli.ok(&["pull", &spin]);
    let mut running = cli
        .command()
        .args(["run", "--timeout", "30s", &spin, "--", "spin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Use the modules after the spinner was pulled, so it is the oldest.
    for r in &refs {
        cli.ok(&["run", r]);
    }
    let out = cli.run(&["cache", "prune", "--max-size", "2MiB", "--json"]);
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["size"].as_u64().unwrap() <= 2 << 20, "{report}");
    assert_eq!(report["in_use"], serde_json::json!([spin]), "{report}");
    // Least recently used first: the newest module stays.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .iter()
        .map(|l| l["reference"].as_str().unwrap())
        .collect();
    assert!(names.contains(&refs[3].as_str()), "{names:?}");
    assert!(names.contains(&spin.as_str()), "{names:?}");
    assert!(!names.contains(&refs[0].as_str()), "{names:?}");
    assert_eq!(cli.ok(&["run", "--pull", "never", &refs[3]]), HELLO);
}
