//! Attacks through OCI layouts (issue #13): a layout handed to `load` or `run oci:DIR` is data
//! from elsewhere (blobs that are symlinks, FIFOs or directories, oversized documents, names
//! with escapes), and `save` writes into a directory someone else may have prepared.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{
    HELLO, Reads, Registry, WasmOci, describe, guests, output_within, stderr, testdata,
};

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
        let reads = Reads::of(&index);
        let mut cmd = node.command();
        cmd.args(&args);
        let out = output_within(cmd, Duration::from_secs(20)).expect("refused, not hung");
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains("index.json") && err.contains("10737418240 bytes"),
            "{args:?}: {err}"
        );
        assert_eq!(reads.count(), 0, "{args:?} read the oversized index.json");
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
    // The wasm manifest (the tag names the index beside it): what save writes.
    let (layer, manifest) = (hex("layer_digest"), hex("manifest_digest"));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&cli.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed[0]["digest"], pushed["manifest_digest"]);

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
