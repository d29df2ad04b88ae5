//! A node holding a catalogue: thousands of references written by `load` of generated
//! layouts (benches/many_layouts.py, as the benchmark writes 100,000), listed, run, verified
//! and pruned; prefetch of a list with references missing. No timings: benches/edge_fleet.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::support::{HELLO, Registry, WasmOci, describe, stderr};

fn many_layouts(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/many_layouts.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn cache_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => cache_bytes(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

#[test]
fn two_thousand_references_load_list_run_verify_and_prune() {
    const N: usize = 2000;
    let layouts = tempfile::tempdir().unwrap();
    // Two layouts, as index.json is capped: the second adds to what the first loaded.
    let dirs = many_layouts(&[
        "layouts",
        &N.to_string(),
        layouts.path().to_str().unwrap(),
        "1200",
    ]);
    let node = WasmOci::new();
    for dir in dirs.lines() {
        node.ok(&["load", dir]);
    }
    // Nothing left in ingest/ by the batches, and every blob whole.
    assert!(node.ingest().is_empty(), "{:?}", node.ingest());
    assert_eq!(
        node.blobs().len(),
        2 * N + 1,
        "a layer and a manifest each, one config"
    );

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed.len(), N);
    let mut names: Vec<&str> = listed
        .iter()
        .map(|l| l["reference"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N);
    assert_eq!(names[1234], "bench.local/fleet/m001234:v1");
    let table = node.ok(&["cache", "ls"]);
    assert_eq!(table.lines().count(), N + 1, "a header and a line each");

    // The one just run is the most recently used: first in the table, kept by a prune.
    let used = "bench.local/fleet/m001999:v1";
    assert_eq!(node.ok(&["run", "--pull", "never", used]), HELLO);
    let table = node.ok(&["cache", "ls"]);
    assert!(table.lines().nth(1).unwrap().starts_with(used), "{table}");

    let out = node.run(&["cache", "verify", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], 2 * N + 1);
    assert_eq!(report["removed"], serde_json::json!([]));

    // Prune to half, with a stale partial download (a day old, nobody's) and a held one.
    let ingest = node.cache.path().join("v1/ingest");
    let stale = ingest.join(format!("{}.partial", "ab".repeat(32)));
    let held = ingest.join(format!("{}.partial", "cd".repeat(32)));
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    for p in [&stale, &held] {
        fs::write(p, b"\0asm").unwrap();
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    // A pull in progress holds its ingest file locked.
    let lock = fs::File::open(&held).unwrap();
    lock.lock().unwrap();
    let before = cache_bytes(&node.cache.path().join("v1"));
    let half = before / 2;
    let out = node.run(&[
        "cache",
        "prune",
        "--max-size",
        &format!("{half}B"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["size"].as_u64().unwrap() <= half, "{report}");
    assert_eq!(report["reclaimed_partials"], 1, "{report}");
    assert!(!stale.exists() && held.exists());
    drop(lock);
    let removed = report["removed_refs"].as_array().unwrap().len();
    assert!(removed > 0 && removed < N, "{removed} removed");
    let left: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(left.len(), N - removed);
    assert!(
        left.iter().any(|l| l["reference"] == used),
        "the newest was pruned"
    );
    // What is left is whole: every reference still runs offline, and verifies.
    assert_eq!(node.ok(&["run", "--pull", "never", used]), HELLO);
    let out = node.run(&["cache", "verify", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], 2 * (N - removed) + 1, "{report}");
}

#[test]
fn prefetch_of_a_list_counts_done_of_total_and_sums_up_with_failures() {
    let registry = Registry::start();
    let good = many_layouts(&["push", &registry.addr, "40"]);
    let mut list = good.clone();
    for i in 40..50 {
        list.push_str(&format!("{}/fleet/m{i:06}:v1\n", registry.addr));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &list).unwrap();
    let node = WasmOci::new();
    let out = node.run(&[
        "prefetch",
        "--no-compile",
        "--from-file",
        file.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "10 are missing");
    // Results on stdout, failures and the summary on stderr.
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let counted: Vec<&str> = said.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(counted.len(), 50, "{said}");
    assert!(counted.iter().any(|l| l.starts_with("[50/50] ")), "{said}");
    assert_eq!(
        counted.iter().filter(|l| l.contains("] failed ")).count(),
        10,
        "{said}"
    );
    assert!(said.contains("prefetched 40 of 50 references"), "{said}");
    for reference in good.lines() {
        assert_eq!(node.ok(&["run", "--pull", "never", reference]), HELLO);
    }
}
