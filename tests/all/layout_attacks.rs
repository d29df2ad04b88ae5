//! Issue #13, the cache and layout half: an OCI layout handed to `load` or `run oci:DIR` is data
//! from elsewhere, `save` writes into a directory someone else may have prepared, and other
//! processes (pulls, `cache prune`) share the cache.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::support::padded_hello;
use crate::support::{Fault, Proxy};
use crate::support::{
    Registry, WasmOci, describe, exit_within, guests, outputs_of_concurrent, stderr, testdata,
};

const HELLO: &str = "Hello from WebAssembly!\n";

/// Runs `cmd`, killing it when it takes longer than `limit`; `None` then.
fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let status = exit_within(&mut child, limit)?;
    Some(Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    })
}

/// hello.wasm pushed and saved to a layout; the layout's directory and its layer's hex digest.
fn hello_layout(tmp: &Path) -> (Registry, PathBuf, String, String) {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = registry.reference("hello:v1");
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &hello,
        "--json",
    ]))
    .unwrap();
    let dir = tmp.join("layout");
    cli.ok(&["save", &hello, "-o", dir.to_str().unwrap()]);
    let layer = pushed["layer_digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    (registry, dir, layer, hello)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn mkfifo(path: &Path) {
    let out = Command::new("mkfifo").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn load_and_run_refuse_layout_blobs_that_are_symlinks_fifos_or_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let (_registry, layout, layer, _) = hello_layout(tmp.path());
    // The same bytes elsewhere: a symlink to them hashes right, and must still be refused.
    let elsewhere = tmp.path().join("elsewhere.wasm");
    fs::copy(layout.join("blobs/sha256").join(&layer), &elsewhere).unwrap();

    type Plant<'a> = &'a dyn Fn(&Path);
    let plant: [(&str, Plant); 3] = [
        ("symlink", &|p| symlink(&elsewhere, p).unwrap()),
        ("fifo", &|p| mkfifo(p)),
        ("directory", &|p| fs::create_dir(p).unwrap()),
    ];
    for (kind, plant) in plant {
        let dir = tmp.path().join(kind);
        copy_dir(&layout, &dir);
        let blob = dir.join("blobs/sha256").join(&layer);
        fs::remove_file(&blob).unwrap();
        plant(&blob);

        let node = WasmOci::new();
        let mut load = node.command();
        load.args(["load", dir.to_str().unwrap()]);
        let out = output_within(load, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("load hung on a layer that is a {kind}"));
        assert_eq!(out.status.code(), Some(1), "{kind}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("blobs/sha256/{layer}")) && err.contains("not a regular file"),
            "{kind}: {err}"
        );
        assert!(node.blobs().is_empty(), "{kind}: {:?}", node.blobs());
        assert_eq!(node.ok(&["cache", "ls", "--json"]).trim(), "[]", "{kind}");

        let mut run = node.command();
        run.args(["run", &format!("oci:{}:v1", dir.display())]);
        let out = output_within(run, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("run oci: hung on a layer that is a {kind}"));
        assert_eq!(out.status.code(), Some(125), "{kind}: {}", describe(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{kind}: {}",
            describe(&out)
        );
        assert!(out.stdout.is_empty(), "{kind}: {}", describe(&out));
    }

    // Every blob where it belongs, but blobs/sha256 itself leads elsewhere.
    let dir = tmp.path().join("linked-dir");
    copy_dir(&layout, &dir);
    let away = tmp.path().join("away");
    fs::rename(dir.join("blobs/sha256"), &away).unwrap();
    symlink(&away, dir.join("blobs/sha256")).unwrap();
    let node = WasmOci::new();
    for args in [
        vec!["load".to_owned(), dir.display().to_string()],
        vec!["run".to_owned(), format!("oci:{}:v1", dir.display())],
    ] {
        let out = node.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("symlink"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    assert!(node.blobs().is_empty(), "{:?}", node.blobs());
}

#[test]
fn oversized_layout_documents_are_refused_without_reading_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (_registry, layout, _, hello) = hello_layout(tmp.path());

    // A 10 GiB index.json (sparse: it costs no disk).
    let huge = tmp.path().join("huge-index");
    copy_dir(&layout, &huge);
    let index = huge.join("index.json");
    fs::File::options()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let node = WasmOci::new();
    for args in [
        vec!["load".to_owned(), huge.display().to_string()],
        vec!["run".to_owned(), format!("oci:{}:v1", huge.display())],
    ] {
        let started = Instant::now();
        let mut cmd = node.command();
        cmd.args(&args);
        let out = output_within(cmd, Duration::from_secs(20)).expect("refused, not hung");
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains("index.json") && err.contains("10737418240 bytes"),
            "{args:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
    }
    assert!(node.blobs().is_empty(), "{:?}", node.blobs());
    // save adds to a layout: one whose index it cannot read is refused, not replaced.
    let out = node.run(&["save", &hello, "-o", huge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("index.json"), "{}", describe(&out));
    assert_eq!(fs::metadata(&index).unwrap().len(), 10 << 30);

    // A config of 5 MiB: configs over 4 MiB are refused, as a pull refuses them.
    let dir = tmp.path().join("big-config");
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| -> String {
        use sha2::Digest as _;
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let wasm = fs::read(testdata("hello.wasm")).unwrap();
    let layer = put(&wasm);
    let config = format!(
        r#"{{"architecture":"wasm","os":"wasip1","padding":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    let config_digest = put(config.as_bytes());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer, "size": wasm.len()}],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"io.containerd.image.name": "airgap.local/big-config:v1", "org.opencontainers.image.ref.name": "v1"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    let node = WasmOci::new();
    let out = node.run(&["load", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&config_digest) && err.contains("4194304"),
        "{err}"
    );
    assert!(node.blobs().is_empty(), "{:?}", node.blobs());
}

#[test]
fn save_never_writes_through_a_planted_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    let cli = WasmOci::new();
    let hello = registry.reference("hello:v1");
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &hello,
        "--json",
    ]))
    .unwrap();
    cli.ok(&["pull", &hello]);
    let hex = |key: &str| {
        pushed[key]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_owned()
    };
    let (layer, manifest) = (hex("layer_digest"), hex("digest"));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed[0]["digest"], pushed["digest"]);

    // Someone prepared the output directory: the layer's name, and every name a writer might
    // use beside a blob, point at files of theirs.
    let victims = tmp.path().join("victims");
    fs::create_dir(&victims).unwrap();
    let out_dir = tmp.path().join("out");
    let blobs = out_dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut planted = Vec::new();
    for name in [
        layer.clone(),
        format!("{layer}.partial"),
        format!("{manifest}.partial"),
    ] {
        let victim = victims.join(&name);
        fs::write(&victim, b"precious").unwrap();
        symlink(&victim, blobs.join(&name)).unwrap();
        planted.push(victim);
    }
    cli.ok(&["save", &hello, "-o", out_dir.to_str().unwrap()]);
    for victim in &planted {
        assert_eq!(
            fs::read(victim).unwrap(),
            b"precious",
            "{}",
            victim.display()
        );
    }
    let blob = blobs.join(&layer);
    assert!(
        fs::symlink_metadata(&blob).unwrap().file_type().is_file(),
        "the layout's layer is still the planted symlink"
    );
    assert_eq!(
        fs::read(&blob).unwrap(),
        fs::read(testdata("hello.wasm")).unwrap()
    );
    assert_eq!(
        WasmOci::new().ok(&["run", &format!("oci:{}:v1", out_dir.display())]),
        HELLO
    );

    // blobs/sha256 as a symlink to a directory elsewhere: nothing is written there.
    let linked = tmp.path().join("linked");
    let away = tmp.path().join("away");
    fs::create_dir_all(linked.join("blobs")).unwrap();
    fs::create_dir(&away).unwrap();
    symlink(&away, linked.join("blobs/sha256")).unwrap();
    let out = cli.run(&["save", &hello, "-o", linked.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("symlink"), "{}", describe(&out));
    assert_eq!(fs::read_dir(&away).unwrap().count(), 0);

    // index.json as a symlink: save cannot add to an index it must not read; it says so and
    // leaves both the link and its target alone.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let victim = victims.join("index.json");
    fs::write(&victim, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
    symlink(&victim, other.join("index.json")).unwrap();
    let out = cli.run(&["save", &hello, "-o", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("index.json") && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(
        fs::read(&victim).unwrap(),
        br#"{"schemaVersion":2,"manifests":[]}"#
    );
    assert!(
        fs::symlink_metadata(other.join("index.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn load_does_not_silently_replace_a_reference_with_other_content() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    let elsewhere = Registry::start();
    let cli = WasmOci::new();
    let hello = registry.reference("hello:v1");
    cli.ok(&["push", testdata("hello.wasm").to_str().unwrap(), &hello]);
    let probe = elsewhere.reference("probe:v1");
    cli.ok(&["push", guests().probe.to_str().unwrap(), &probe]);

    // The node pulled hello from its registry.
    let node = WasmOci::new();
    node.ok(&["pull", &hello]);

    // A layout from elsewhere claims that name for other content.
    let dir = tmp.path().join("claims-hello");
    cli.ok(&["save", &probe, "-o", dir.to_str().unwrap()]);
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = hello.clone().into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let out = node.run(&["load", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains(&hello) && err.contains("--force"), "{err}");
    assert_eq!(node.ok(&["run", "--pull", "never", &hello]), HELLO);

    // Loading the content the node has already is no conflict.
    let same = tmp.path().join("same");
    cli.ok(&["save", &hello, "-o", same.to_str().unwrap()]);
    node.ok(&["load", same.to_str().unwrap()]);

    let help = node.ok(&["load", "--help"]);
    assert!(help.contains("--force"), "{help}");
    let out = node.run(&["load", "--force", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("replaced"), "{}", describe(&out));
    assert_eq!(
        node.ok(&["run", "--pull", "never", &hello, "--", "exit", "0"]),
        ""
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

fn wait_for_half(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.seen(|s| s.half_sent) {
        assert!(
            Instant::now() < deadline,
            "the stalled download never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
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
    wait_for_half(&proxy);
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
    wait_for_half(&proxy);

    let started = Instant::now();
    let mut pull = node.command();
    pull.args(["pull", &healthy.reference("big:v1")]);
    let out = output_within(pull, Duration::from_secs(30))
        .expect("the pull from the healthy registry waited for the stalled one");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        node.ok(&["run", "--pull", "never", &healthy.reference("big:v1")]),
        HELLO
    );
    // The stalled writer still holds its partial file; nothing of it reached the store.
    assert!(exit_within(&mut stalled, Duration::from_millis(100)).is_none());
    assert!(node.run(&["cache", "verify"]).status.success());
}

/// Red team: a layout's `org.opencontainers.image.ref.name` is the layout author's text, and
/// the messages of `load` (and `run oci:DIR`) print it raw: an entry without a wasm layer, or
/// without a full name, puts the author's escape sequences on the user's terminal.
#[test]
fn a_layouts_ref_name_reaches_the_terminal_escaped() {
    use sha2::Digest as _;
    const EVIL: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let blob = |bytes: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let config = blob(b"{}");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config, "size": 2},
        "layers": [],
    }))
    .unwrap();
    let manifest_digest = blob(&manifest);
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": EVIL},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    let node = WasmOci::new();
    let d = dir.to_str().unwrap();
    let mut raw = Vec::new();
    for args in [
        vec!["load", d],
        vec!["load", d, "--repository", "localhost:5000/x"],
        vec!["run", &format!("oci:{d}")],
    ] {
        let out = node.run(&args);
        let text = describe(&out);
        if text.contains('\u{1b}') || text.contains('\u{7}') {
            raw.push(format!("{args:?}: {text:?}"));
        }
    }
    assert!(
        raw.is_empty(),
        "a layout's ref name reached the terminal raw:\n{}",
        raw.join("\n")
    );
}
