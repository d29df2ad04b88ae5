//! Attacks on the cache by concurrent processes: prunes racing pulls and loads, partial
//! downloads held by live writers or left behind, a stalled download of a blob another
//! registry also serves, and a dry-run prune that must say what the prune then does.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::support::{
    Fault, HELLO, Proxy, Registry, WasmOci, describe, exit_within, locks_in, output_within,
    outputs_of_concurrent, padded_hello, stderr, testdata, wait_until,
};

/// Hole: `prune --dry-run` counts the blobs of the references it would remove twice, once
/// with the reference and again as blobs "no remaining reference uses" (they are still on
/// disk in a dry run), whenever they are older than the sweep's grace: it promises to free
/// more blobs and bytes than the real prune then frees.
#[test]
fn a_dry_run_prune_says_what_the_prune_then_does() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm");
    let reference = registry.reference("dryrun:v1");
    cli.ok(&["push", hello.to_str().unwrap(), &reference]);
    cli.ok(&["pull", &reference]);
    // An hour later (libfaketime): the blobs are older than the sweep's ten-minute grace,
    // as any cache's are in real use.
    let before = cli.blobs();
    let report = |args: &[&str]| -> serde_json::Value {
        let out = cli
            .command()
            .env(
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            )
            .env("FAKETIME", "+1h")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dry = report(&["cache", "prune", "--max-size", "1", "--dry-run", "--json"]);
    assert_eq!(cli.blobs(), before, "--dry-run removed something");
    let real = report(&["cache", "prune", "--max-size", "1", "--json"]);
    assert_eq!(
        real["removed_refs"], dry["removed_refs"],
        "dry {dry}\nreal {real}"
    );
    assert_eq!(
        (&dry["removed_blobs"], &dry["freed"]),
        (&real["removed_blobs"], &real["freed"]),
        "the dry run promised other numbers than the prune delivered:\ndry  {dry}\nreal {real}"
    );
}

/// Runs `pulls` while `prune_args` runs in a loop; the pulls' outputs, in order.
fn pulls_under_prune(node: &WasmOci, pulls: Vec<Command>, prune_args: &[&str]) -> Vec<Output> {
    let stop = AtomicBool::new(false);
    let (outputs, prunes) = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut prunes = 0;
            while !stop.load(Ordering::SeqCst) {
                let out = node.run(prune_args);
                assert!(out.status.success(), "{}", describe(&out));
                prunes += 1;
            }
            prunes
        });
        let outputs = outputs_of_concurrent(pulls);
        stop.store(true, Ordering::SeqCst);
        (outputs, pruner.join().unwrap())
    });
    assert!(prunes >= 2, "the pruner ran {prunes} times");
    outputs
}

#[test]
fn prune_in_a_loop_costs_no_pull() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let modules: Vec<Vec<u8>> = (0..40).map(|i| padded_hello(1000 + i)).collect();
    let refs: Vec<String> = modules
        .iter()
        .enumerate()
        .map(|(i, module)| {
            let file = dir.path().join(format!("m{i}.wasm"));
            fs::write(&file, module).unwrap();
            let r = registry.reference(&format!("m{i}:v1"));
            cli.ok(&["push", file.to_str().unwrap(), &r]);
            r
        })
        .collect();
    let failures = |outputs: &[Output]| -> Vec<String> {
        outputs
            .iter()
            .zip(&refs)
            .filter(|(o, _)| !o.status.success())
            .map(|(o, r)| format!("{r}: {}", describe(o)))
            .collect()
    };

    // Every reference is younger than an hour, so each prune only sweeps blobs that no
    // reference uses, which is what a blob is between its commit and its pull's record.
    let node = WasmOci::new();
    let pulls = refs.iter().map(|r| {
        let mut cmd = node.command();
        cmd.args(["pull", r]);
        cmd
    });
    let outputs = pulls_under_prune(
        &node,
        pulls.collect(),
        &["cache", "prune", "--older-than", "1h"],
    );
    let failed = failures(&outputs);
    assert!(
        failed.is_empty(),
        "{} of 40 pulls failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // Every pull recorded its reference with its blobs, and it runs offline.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed.len(), 40);
    let broken: Vec<String> = refs
        .iter()
        .filter_map(|r| {
            let out = node.run(&["run", "--pull", "never", r]);
            (!out.status.success()).then(|| format!("{r}: {}", stderr(&out)))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "{} of 40 pulled references lost a blob:\n{}",
        broken.len(),
        broken.join("\n")
    );

    // A prune that removes every reference it may: a pull still hands over what it pulled.
    let node = WasmOci::new();
    let out_dir = tempfile::tempdir().unwrap();
    let pulls = refs.iter().enumerate().map(|(i, r)| {
        let mut cmd = node.command();
        cmd.args(["pull", r, "--out"])
            .arg(out_dir.path().join(format!("m{i}.wasm")));
        cmd
    });
    let outputs = pulls_under_prune(
        &node,
        pulls.collect(),
        &["cache", "prune", "--max-size", "0"],
    );
    let failed = failures(&outputs);
    assert!(
        failed.is_empty(),
        "{} of 40 pulls failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    for (i, module) in modules.iter().enumerate() {
        assert_eq!(
            &fs::read(out_dir.path().join(format!("m{i}.wasm"))).unwrap(),
            module
        );
    }
    assert!(node.run(&["cache", "verify"]).status.success());
}

/// A 4 MiB module in `registry` as `big:v1`.
fn push_big(registry: &Registry, dir: &Path) {
    let file = dir.join("big.wasm");
    fs::write(&file, padded_hello(4 << 20)).unwrap();
    WasmOci::new().ok(&[
        "push",
        file.to_str().unwrap(),
        &registry.reference("big:v1"),
    ]);
}

/// Waits until the stalled download has written into its partial file (and so holds it).
fn wait_for_half(proxy: &Proxy, node: &WasmOci) {
    wait_until("the stalled download started", || {
        proxy.seen(|s| s.half_sent)
    });
    node.wait_for_partial();
}

fn age(path: &Path, by: Duration) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn stale_partial_downloads_are_reclaimed_but_never_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    push_big(&registry, dir.path());
    let proxy = Proxy::start(&registry.addr, Fault::StallFirstBlob);
    let node = WasmOci::new();
    let mut stalled = node
        .command()
        .args(["pull", &proxy.reference("big:v1")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_half(&proxy, &node);
    let partials = node.ingest();
    assert_eq!(partials.len(), 1, "{partials:?}");
    let two_days = Duration::from_secs(2 * 86400);
    age(&partials[0], two_days);

    // Old, but a live writer holds it: kept by both.
    let out = node.run(&["cache", "prune", "--older-than", "720h"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = node.run(&["cache", "verify"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(node.ingest(), partials);

    stalled.kill().unwrap();
    stalled.wait().unwrap();
    // A recent leftover nobody holds is kept for resuming.
    let recent = node
        .cache
        .path()
        .join("v1/ingest")
        .join(format!("{}.partial", "0".repeat(64)));
    fs::write(&recent, b"half").unwrap();
    age(&partials[0], two_days);

    let out = node.run(&["cache", "prune", "--older-than", "720h"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("reclaimed 1 stale partial download"),
        "{}",
        describe(&out)
    );
    assert_eq!(node.ingest(), vec![recent.clone()]);

    // verify reclaims too.
    age(&recent, two_days);
    let out = node.run(&["cache", "verify"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("reclaimed 1 stale partial download"),
        "{}",
        describe(&out)
    );
    assert!(node.ingest().is_empty(), "{:?}", node.ingest());
}

#[test]
fn a_stalled_download_does_not_block_the_same_blob_from_another_registry() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Registry::start();
    let healthy = Registry::start();
    push_big(&slow, dir.path());
    push_big(&healthy, dir.path());
    let proxy = Proxy::start(&slow.addr, Fault::StallFirstBlob);
    let node = WasmOci::new();
    let mut stalled = node
        .command()
        .args(["pull", &proxy.reference("big:v1")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_half(&proxy, &node);

    // The stalled download never ends on its own: a pull that finishes while it still runs
    // did not wait for it.
    let mut pull = node.command();
    pull.args(["pull", &healthy.reference("big:v1")]);
    let out = output_within(pull, Duration::from_secs(30))
        .expect("the pull from the healthy registry waited for the stalled one");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        node.ok(&["run", "--pull", "never", &healthy.reference("big:v1")]),
        HELLO
    );
    // The stalled writer still holds its partial file; nothing of it reached the store.
    assert!(exit_within(&mut stalled, Duration::from_millis(100)).is_none());
    assert!(node.run(&["cache", "verify"]).status.success());
}

/// `load` of a catalogue (#17's cache work) stores every blob first, in batches, and records
/// the references only after all of them, a chunk at a time. Blobs the cache had before are
/// held while their reference is recorded; the blobs it stored itself are held by nothing
/// and rely on being "young" (SWEEP_GRACE, ten minutes from their rename) to survive a
/// concurrent `cache prune` (the code before held every blob of the load throughout). A
/// load that takes longer than that between its first blob batch and its references (a
/// large catalogue; here, one waiting its turn for a blob another process has locked, with
/// the prune's clock fifteen minutes ahead to stand for the time passed) has its new blobs
/// swept as debris, then records references that point at blobs the cache no longer has.
#[test]
fn a_load_racing_a_prune_never_records_a_reference_whose_blobs_are_gone() {
    let libfaketime = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libfaketime is not installed (apt-get install faketime)");
    let origin = Registry::start();
    let hello_ref = origin.push_hello("edge/hello:v1");
    // A second module: hello.wasm with a custom section, so its blobs are new to the node.
    let other_wasm = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = fs::read(testdata("hello.wasm")).unwrap();
    bytes.extend_from_slice(b"\x00\x09\x08redteam!");
    fs::write(other_wasm.path(), &bytes).unwrap();
    let pusher = WasmOci::new();
    let other_ref = origin.reference("edge/other:v2");
    let out = pusher.run(&["push", other_wasm.path().to_str().unwrap(), &other_ref]);
    assert!(out.status.success(), "{}", describe(&out));

    // A layout holding both.
    let source = WasmOci::new();
    let layout = tempfile::tempdir().unwrap();
    let layout_dir = layout.path().join("catalogue");
    let out = source.run(&[
        "save",
        "-o",
        layout_dir.to_str().unwrap(),
        &hello_ref,
        &other_ref,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let pull_json = |node: &WasmOci, r: &str| -> serde_json::Value {
        let out = node.run(&["pull", "--json", r]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let other = pull_json(&source, &other_ref);

    // The node has hello already (so load holds its blobs), not the other module.
    let node = WasmOci::new();
    let hello = pull_json(&node, &hello_ref);
    let blob = |d: &serde_json::Value| {
        let hex = d
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_owned();
        node.cache.path().join("v1/blobs/sha256").join(hex)
    };
    let hello_layer = blob(&hello["layer_digest"]);
    let other_layer = blob(&other["layer_digest"]);
    let other_manifest = blob(&other["digest"]);

    // Another process holds hello's layer exclusively (as a prune does while it decides):
    // the load waits there, between storing its blobs and recording its references.
    let lock = fs::File::open(&hello_layer).unwrap();
    lock.lock().unwrap();
    let mut load = node
        .command()
        .args(["load"])
        .arg(&layout_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let blobs = node.cache.path().join("v1/blobs/sha256");
    wait_until(
        "load stored the new blobs and waits for hello's layer",
        || {
            assert!(load.try_wait().unwrap().is_none(), "load is waiting");
            other_layer.exists() && locks_in(&blobs, load.id()).iter().any(|l| l.waiting)
        },
    );

    // A prune, its clock standing for a load that has taken fifteen minutes so far.
    let out = node
        .command()
        .env("LD_PRELOAD", libfaketime)
        .env("FAKETIME", "+15m")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(["cache", "prune", "--older-than", "100000h", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let pruned = String::from_utf8_lossy(&out.stdout).into_owned();

    drop(lock);
    let loaded = load.wait_with_output().unwrap();
    // The load stores again what the prune took, and records both references whole.
    assert!(loaded.status.success(), "{}", describe(&loaded));
    {
        let listed = node.ok(&["cache", "ls", "--json"]);
        let recorded_other = listed.contains("edge/other:v2");
        assert!(recorded_other, "load recorded {other_ref}: {listed}");
        assert!(
            other_layer.exists() && other_manifest.exists(),
            "load recorded {other_ref} but a concurrent prune removed its blobs \
             (layer present: {}, manifest present: {}); prune said {pruned}",
            other_layer.exists(),
            other_manifest.exists()
        );
        let out = node.run(&["cache", "verify", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
    }
}
