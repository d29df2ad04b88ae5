//! Faults between us and the registry: every case succeeds through retries or fails cleanly,
//! and the cache passes `cache verify` after each. Also many processes at once, and kills.

use std::fs;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::support::{Fault, HELLO, Proxy, Registry, WasmOci, describe, padded_hello, stderr};

/// A registry holding a 1 MiB hello, and a proxy in front of it.
fn setup(fault: Fault) -> (Registry, Proxy, String, tempfile::TempDir) {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    fs::write(&file, padded_hello(1 << 20)).unwrap();
    WasmOci::new().ok(&[
        "push",
        file.to_str().unwrap(),
        &registry.reference("hello:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, fault);
    let reference = proxy.reference("hello:v1");
    (registry, proxy, reference, dir)
}

fn assert_cache_verifies(cli: &WasmOci) {
    let out = cli.run(&["cache", "verify", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"], serde_json::json!([]), "{report}");
}

#[test]
fn a_pull_asks_for_each_document_once_and_for_v2_once() {
    let (_registry, proxy, reference, _dir) = setup(Fault::None);
    let other = reference.replace("hello:v1", "other:v1");
    let cli = WasmOci::new();
    cli.ok(&[
        "push",
        &_dir.path().join("hello.wasm").display().to_string(),
        &other,
    ]);
    let before = proxy.asked("GET /v2/ ");
    cli.ok(&["prefetch", "--no-compile", &reference, &other]);
    // The manifest, the config and the layer of each; `/v2/` once for the scheme (loopback)
    // and once for what the registry wants, not before every request.
    assert_eq!(proxy.asked("GET /v2/hello/manifests/v1"), 1);
    assert_eq!(proxy.asked("GET /v2/other/manifests/v1"), 1);
    // And where cosign keeps signatures, once each: prefetch keeps them for offline checks.
    assert_eq!(proxy.asked("GET /v2/hello/manifests/sha256-"), 1);
    assert_eq!(proxy.asked("GET /v2/other/manifests/sha256-"), 1);
    // Both hold the same two blobs: each is fetched once, through either repository.
    let blobs = proxy.asked("GET /v2/hello/blobs/") + proxy.asked("GET /v2/other/blobs/");
    assert_eq!(blobs, 2);
    let probes = proxy.asked("GET /v2/ ") - before;
    assert!(probes <= 2, "{probes} requests for /v2/");
}

/// Runs wasm-oci with `args` (`{}` standing for a reference through a rate-limiting proxy
/// in front of `registry`): it must succeed after waiting the 2 s the `Retry-After` said,
/// having been refused no more than `refusals` times.
fn waits_as_told(cli: &WasmOci, registry: &Registry, args: &[&str], refusals: u32) -> Output {
    let proxy = Proxy::start(&registry.addr, Fault::RateLimit(2));
    let reference = proxy.reference("hello:v1");
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "{}" { reference.as_str() } else { a })
        .collect();
    let out = cli
        .command()
        .args(&args)
        .env("WASM_OCI_LOG", "warn")
        .env_remove("WASM_OCI_LOG_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    // When the proxy let a request through, as it saw it: the client waited out the window
    // the `Retry-After` announced instead of retrying inside it.
    let passed_after = proxy.seen(|s| s.passed_after);
    assert!(
        passed_after.is_some_and(|d| d >= Duration::from_secs(2)),
        "{args:?}: the first request let through came {passed_after:?} after the first"
    );
    assert!(
        stderr(&out).contains("retrying in 2.0 s: the registry answered 429"),
        "{args:?}: {}",
        describe(&out)
    );
    let refused = proxy.seen(|s| s.throttled);
    assert!(
        refused <= refusals,
        "{args:?}: {refused} requests were refused"
    );
    out
}

#[test]
fn a_rate_limited_registry_is_waited_for_as_its_retry_after_says() {
    let (registry, _proxy, _reference, dir) = setup(Fault::None);
    // The scheme probe, the handshake and one request; backoff alone (0.1 s, 0.2 s, 0.4 s,
    // ...) would have asked four or five times more within the two seconds.
    let cli = WasmOci::new();
    let out = waits_as_told(&cli, &registry, &["run", "{}"], 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
    assert_cache_verifies(&cli);
    // A push (of new blobs: uploads, not only existence checks) waits as it is told, too.
    let module = dir.path().join("other.wasm");
    fs::write(&module, padded_hello(1 << 19)).unwrap();
    let pusher = WasmOci::new();
    waits_as_told(
        &pusher,
        &registry,
        &["push", module.to_str().unwrap(), "{}"],
        3,
    );
}

#[test]
fn flaky_and_throttling_registries_are_retried() {
    for fault in [Fault::Every503, Fault::Throttle(3)] {
        let (_registry, proxy, reference, _dir) = setup(fault);
        let cli = WasmOci::new();
        let out = cli
            .command()
            .args(["run", &reference])
            .env("WASM_OCI_LOG", "warn")
            .env_remove("WASM_OCI_LOG_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{fault:?}: {}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
        assert!(
            stderr(&out).contains("retrying"),
            "{fault:?}: {}",
            describe(&out)
        );
        assert!(proxy.seen(|s| s.requests) > 3);
        assert_cache_verifies(&cli);
    }
}

#[test]
fn pushes_through_a_flaky_registry_are_retried() {
    let (registry, _proxy, _reference, dir) = setup(Fault::None);
    let file = dir.path().join("hello.wasm");
    // Upload sessions have fresh URLs, so "every other request per URL" would never let one
    // through; these fail the first requests, then let everything pass.
    for (i, fault) in [Fault::First503(6), Fault::Throttle(6)]
        .into_iter()
        .enumerate()
    {
        let proxy = Proxy::start(&registry.addr, fault);
        let target = format!("pushed/hello:v{i}");
        let out = WasmOci::new()
            .command()
            .args(["push", file.to_str().unwrap(), &proxy.reference(&target)])
            .env("WASM_OCI_LOG", "warn")
            .env_remove("WASM_OCI_LOG_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{fault:?}: {}", describe(&out));
        assert!(stderr(&out).contains("retrying"), "{}", describe(&out));
        assert_eq!(
            WasmOci::new().ok(&["run", &registry.reference(&target)]),
            HELLO
        );
    }
}

#[test]
fn a_connection_cut_every_time_fails_cleanly_and_resumes_later() {
    let (_registry, proxy, reference, _dir) = setup(Fault::CutEveryBlob);
    let cli = WasmOci::new();
    let out = cli.run(&["pull", &reference]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    // Bounded by attempts, not by a clock: the config once, five downloads of the layer, then
    // it gives up.
    let gets = proxy.seen(|s| s.blob_gets.clone());
    let mut per_blob: Vec<usize> = gets
        .iter()
        .map(|g| gets.iter().filter(|h| *h == g).count())
        .collect();
    per_blob.sort();
    per_blob.dedup();
    assert_eq!(per_blob, [1, 5], "{gets:?}");
    let err = stderr(&out);
    assert!(err.contains("broke off after"), "{err}");
    assert!(err.contains("after 5 attempts"), "{err}");
    assert!(err.contains("run the command again to resume"), "{err}");
    assert_cache_verifies(&cli);
    assert_eq!(cli.ingest().len(), 1, "the partial download is kept");

    proxy.set_fault(Fault::None);
    assert_eq!(cli.ok(&["run", &reference]), HELLO);
    assert_cache_verifies(&cli);
    assert!(cli.ingest().is_empty());
}

#[test]
fn a_content_length_that_lies_is_survived() {
    for fault in [Fault::ShortFirstBlob, Fault::LongFirstBlob] {
        let (_registry, proxy, reference, _dir) = setup(fault);
        let cli = WasmOci::new();
        let out = cli.run(&["run", &reference]);
        assert!(out.status.success(), "{fault:?}: {}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
        // A short response is resumed with one range request; one that promised more than it
        // sent had everything already and needs none.
        let expected = if fault == Fault::ShortFirstBlob { 1 } else { 0 };
        assert_eq!(proxy.seen(|s| s.ranges.len()), expected, "{fault:?}");
        assert_cache_verifies(&cli);
    }
}

#[test]
fn corrupted_bytes_on_the_wire_are_caught() {
    let (_registry, _proxy, reference, _dir) = setup(Fault::CorruptBlobs);
    let cli = WasmOci::new();
    let out = cli.run(&["run", &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("corrupted content"),
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty());
    assert!(cli.ingest().is_empty(), "{:?}", cli.ingest());
    assert_cache_verifies(&cli);
}

#[test]
fn thirty_two_concurrent_runs_of_one_uncached_reference_fetch_it_once() {
    let (_registry, proxy, reference, _dir) = setup(Fault::None);
    let cli = WasmOci::new();
    let runs = (0..32).map(|_| {
        let mut cmd = cli.command();
        cmd.args(["run", &reference]);
        cmd
    });
    for out in crate::support::outputs_of_concurrent(runs) {
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
    }
    let gets = proxy.seen(|s| s.blob_gets.clone());
    // One layer and one config, each downloaded once, whoever downloaded them.
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_cache_verifies(&cli);
}

#[test]
fn fifty_pulls_killed_at_random_moments_leave_a_sound_cache() {
    let (_registry, _proxy, reference, _dir) = setup(Fault::None);
    let cli = WasmOci::new();
    let mut seed = 0x9e37_79b9_u32;
    for _ in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let mut child = cli
            .command()
            .args(["pull", &reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(u64::from(seed % 40)));
        let _ = child.kill(); // SIGKILL; it may have finished already
        child.wait().unwrap();
        // Start the next from an empty store now and then, so kills land mid-download too.
        if seed.is_multiple_of(3) {
            for blob in cli.blobs() {
                let path = cli.cache.path().join("v1/blobs/sha256").join(blob);
                let _ = fs::remove_file(path);
            }
        }
    }
    assert_cache_verifies(&cli);
    assert_eq!(cli.ok(&["run", &reference]), HELLO);
    assert_cache_verifies(&cli);
}
