//! The cache verbs against the real registry: `cache ls`, `inspect`, `verify`, `rm` and
//! `prune` (by size, by age, dry runs), and a killed download that leaves a cache that
//! verifies.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    Fault, HELLO, Proxy, Registry, WasmOci, describe, guests, hello, locks_in, padded_hello,
    stderr, testdata, wait_until,
};

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
    wait_until("the proxy sent half the layer", || {
        proxy.seen(|s| s.half_sent)
    });
    cli.wait_for_partial();
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
    // In use from the moment it holds its module's blobs (a shared lock on each).
    let blobs = cli.cache.path().join("v1/blobs/sha256");
    wait_until("the running guest holds its module", || {
        !locks_in(&blobs, running.id()).is_empty()
    });
    // Use the modules after the spinner was pulled, so it is the oldest; the order of last
    // use is then set, an hour apart, rather than left to the clock's resolution.
    for r in &refs {
        cli.ok(&["run", r]);
    }
    let now = std::time::SystemTime::now();
    let hours_ago = |n: u64| now - Duration::from_secs(n * 3600);
    cli.set_last_use(&spin, hours_ago(10));
    for (i, r) in refs.iter().enumerate() {
        cli.set_last_use(r, hours_ago(4 - i as u64));
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

/// A registry holding hello.wasm under two tags, both pulled into `cli`'s cache.
fn two_tags(cli: &WasmOci) -> (Registry, String, String) {
    let registry = Registry::start();
    let hello = testdata("hello.wasm");
    let (v1, v2) = (
        registry.reference("hello:v1"),
        registry.reference("hello:v2"),
    );
    for r in [&v1, &v2] {
        cli.ok(&["push", hello.to_str().unwrap(), r]);
        cli.ok(&["pull", r]);
    }
    (registry, v1, v2)
}

fn listed(cli: &WasmOci) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    let mut refs: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reference"].as_str().unwrap().to_owned())
        .collect();
    refs.sort();
    refs
}

#[test]
fn cache_rm_removes_a_reference_and_keeps_what_another_shares() {
    let cli = WasmOci::new();
    let (_registry, v1, v2) = two_tags(&cli);
    let blobs = cli.blobs();

    // A dry run says what would go and removes nothing.
    let out = cli.run(&["cache", "rm", "--dry-run", &v1]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Would remove: {v1}\n")
    );
    assert_eq!(listed(&cli), vec![v1.clone(), v2.clone()]);
    assert_eq!(cli.blobs(), blobs);

    let out = cli.run(&["cache", "rm", &v1]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Removed: {v1}\n")
    );
    assert_eq!(listed(&cli), vec![v2.clone()]);
    // v2 has the same manifest, config and layer: nothing was v1's alone.
    assert_eq!(cli.blobs(), blobs);
    let out = cli.run(&["run", "--pull", "never", &v2]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cli.run(&["run", "--pull", "never", &v1]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));

    // Not cached: said, and exit 1; the other names still go.
    let out = cli.run(&["cache", "rm", &v1, &v2]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("{v1} is not in the cache")),
        "{}",
        describe(&out)
    );
    assert_eq!(listed(&cli), Vec::<String>::new());
    assert!(cli.blobs().is_empty(), "{:?}", cli.blobs());
}

#[test]
fn prune_dry_run_removes_nothing_and_older_than_reads_human_durations() {
    let cli = WasmOci::new();
    let (_registry, v1, v2) = two_tags(&cli);
    let blobs = cli.blobs();
    let out = cli.run(&[
        "cache",
        "prune",
        "--older-than",
        "0s",
        "--dry-run",
        "--json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        report["removed_refs"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert!(report["freed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(listed(&cli), vec![v1.clone(), v2.clone()]);
    assert_eq!(cli.blobs(), blobs);

    for older_than in ["30d", "1h30m", "2 weeks", "720h"] {
        let out = cli.run(&["cache", "prune", "--older-than", older_than]);
        assert!(out.status.success(), "{older_than}: {}", describe(&out));
    }
    assert_eq!(listed(&cli), vec![v1, v2]);
    let out = cli.run(&["cache", "prune", "--older-than", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("1h30m, 30d"), "{}", describe(&out));
}

#[test]
fn cache_ls_does_not_list_a_reference_whose_blob_verify_removed() {
    let cli = WasmOci::new();
    let (_registry, v1, v2) = two_tags(&cli);
    let entry: serde_json::Value =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    let layer = entry[0]["layer_digest"]
        .as_str()
        .or(entry[0]["digest"].as_str())
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let path = cli.cache.path().join("v1/blobs/sha256").join(&layer);
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, b"\0asm\x01\0\0\0 not what was pulled").unwrap();

    let out = cli.run(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    for r in [&v1, &v2] {
        assert!(
            stderr(&out).contains(&format!("removed {r}: it needed a damaged blob")),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(listed(&cli), Vec::<String>::new());
}
