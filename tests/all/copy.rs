//! `wasm-oci copy` between two Docker Distribution registries and OCI image layouts: the
//! same digests, signatures and referrers along, blobs the destination has not sent again,
//! mounts within a registry; and the reads that mirrors may serve (`tags`, `manifest`,
//! `discover`), `save` carrying referrers, concurrent `attach`es.

use std::fs;
use std::process::Command;

use crate::support::{
    Fault, Proxy, Registry, WasmOci, describe, http, outputs_of_concurrent, stderr, testdata,
};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json";

/// The manifest bytes at `repo`/`name` (a tag or digest); `None` when there is none.
fn manifest_bytes(registry: &Registry, repo: &str, name: &str) -> Option<Vec<u8>> {
    let r = http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/manifests/{name}"),
        &[("Accept", ACCEPT)],
        b"",
    )
    .expect("registry answers");
    match r.status {
        200 => Some(r.body),
        404 => None,
        other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A signing key pair in `dir` (`release.key`, `release.pub`), password `k3y-pass`.
fn key(cli: &WasmOci, dir: &std::path::Path) -> std::path::PathBuf {
    let prefix = dir.join("release");
    let out = cli
        .command()
        .args(["key", "generate", prefix.to_str().unwrap()])
        .env("COSIGN_PASSWORD", "k3y-pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    dir.join("release.key")
}

/// `hello.wasm` pushed to `registry` as `hello:v1` (with `push_args`), signed, with an SBOM
/// attached; the digest the tag names (the index push writes, or with `--no-image` the wasm
/// manifest) and the SBOM's.
fn signed_and_attached(
    cli: &WasmOci,
    registry: &Registry,
    dir: &std::path::Path,
    push_args: &[&str],
) -> (String, String) {
    let mut args = vec!["push", "--json"];
    args.extend(push_args);
    let hello = testdata("hello.wasm");
    let reference = registry.reference("hello:v1");
    args.extend([hello.to_str().unwrap(), &reference]);
    let pushed = json(&cli.ok(&args));
    let key = key(cli, dir);
    let out = cli
        .command()
        .args([
            "sign",
            &registry.reference("hello:v1"),
            "--key",
            key.to_str().unwrap(),
        ])
        .env("COSIGN_PASSWORD", "k3y-pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let sbom = dir.join("sbom.spdx.json");
    fs::write(&sbom, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let attached = json(&cli.ok(&[
        "attach",
        "--json",
        &registry.reference("hello:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
    ]));
    (
        pushed["digest"].as_str().unwrap().to_owned(),
        attached["digest"].as_str().unwrap().to_owned(),
    )
}

fn discover(cli: &WasmOci, reference: &str) -> Vec<String> {
    let found = json(&cli.ok(&["discover", "--json", reference]));
    found["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn copy_between_registries_keeps_digests_signatures_and_referrers() {
    let (a, b) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let (digest, sbom) = signed_and_attached(&cli, &a, dir.path(), &[]);
    let sig_tag = format!("{}.sig", digest.replacen(':', "-", 1));

    let copied = json(&cli.ok(&[
        "copy",
        "--json",
        &a.reference("hello:v1"),
        &b.reference("copied/hello:v2"),
    ]));
    assert_eq!(copied["digest"], digest.as_str());
    // The manifest, its signatures and the SBOM: byte for byte.
    let at_b = manifest_bytes(&b, "copied/hello", "v2").expect("the tag is there");
    assert_eq!(sha256(&at_b), digest);
    assert_eq!(
        manifest_bytes(&b, "copied/hello", &sig_tag),
        manifest_bytes(&a, "hello", &sig_tag)
    );
    assert_eq!(
        manifest_bytes(&b, "copied/hello", &sbom),
        manifest_bytes(&a, "hello", &sbom)
    );
    assert_eq!(copied["signatures"], 1, "{copied}");
    assert_eq!(copied["referrers"], 1, "{copied}");
    assert_eq!(
        discover(&cli, &b.reference("copied/hello:v2")),
        std::slice::from_ref(&sbom)
    );
    // Every blob went: the wasm layer and config, the Linux image's layer and its two
    // configs (amd64, arm64), the signature's payload and config, the SBOM and its empty
    // config.
    assert_eq!(copied["blobs_sent"], 9, "{copied}");
    // The signature is found where it landed, and still names what was signed: the
    // original repository (cosign's identity), which a policy must then accept.
    let out = cli.run(&[
        "verify",
        &b.reference("copied/hello:v2"),
        "--key",
        dir.path().join("release.pub").to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains(&format!("it is signed for {}", a.reference("hello:v1"))),
        "{}",
        describe(&out)
    );

    // Again: nothing is sent, everything is there.
    let again = json(&cli.ok(&[
        "copy",
        "--json",
        &a.reference("hello:v1"),
        &b.reference("copied/hello:v2"),
    ]));
    assert_eq!(again["blobs_sent"], 0, "{again}");
    assert_eq!(again["blobs_present"], 9, "{again}");
    assert_eq!(discover(&cli, &b.reference("copied/hello:v2")), [sbom]);

    // Without the referrers: the artifact alone.
    let bare = json(&cli.ok(&[
        "copy",
        "--json",
        "--no-referrers",
        &a.reference("hello:v1"),
        &b.reference("bare/hello:v1"),
    ]));
    assert_eq!(bare["digest"], digest.as_str());
    assert_eq!(bare["blobs_sent"], 5, "{bare}");
    assert_eq!(manifest_bytes(&b, "bare/hello", &sig_tag), None);
    assert!(discover(&cli, &b.reference("bare/hello:v1")).is_empty());
}

#[test]
fn copy_within_a_registry_mounts_the_blobs() {
    let a = Registry::start();
    let cli = WasmOci::new();
    a.push_hello("hello:v1");
    let copied = json(&cli.ok(&[
        "copy",
        "--json",
        &a.reference("hello:v1"),
        &a.reference("elsewhere/hello:v1"),
    ]));
    // The wasm layer and config, the Linux image's layer and its two configs.
    assert_eq!(copied["blobs_mounted"], 5, "{copied}");
    assert_eq!(copied["blobs_sent"], 0, "{copied}");
    assert_eq!(
        manifest_bytes(&a, "elsewhere/hello", "v1"),
        manifest_bytes(&a, "hello", "v1")
    );
    cli.ok(&["run", &a.reference("elsewhere/hello:v1")]);
}

#[test]
fn an_index_is_copied_with_every_entry() {
    let (a, b) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    // Two plain manifests (no Linux image), indexed as `push --platform` indexes them.
    let one = json(&cli.ok(&[
        "push",
        "--json",
        "--no-image",
        testdata("hello.wasm").to_str().unwrap(),
        &a.reference("multi:one"),
    ]));
    let two = json(&cli.ok(&[
        "push",
        "--json",
        "--no-image",
        "--annotation",
        "variant=two",
        testdata("hello.wasm").to_str().unwrap(),
        &a.reference("multi:two"),
    ]));
    let entry = |pushed: &serde_json::Value, os: &str| {
        let bytes = manifest_bytes(&a, "multi", pushed["digest"].as_str().unwrap()).unwrap();
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": pushed["digest"],
            "size": bytes.len(),
            "platform": {"architecture": "wasm", "os": os},
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&one, "wasip1"), entry(&two, "wasip2")],
    }))
    .unwrap();
    let index_digest = crate::support::put_manifest(
        &a,
        "multi",
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    let copied = json(&cli.ok(&[
        "copy",
        "--json",
        &a.reference("multi:v1"),
        &b.reference("multi:v1"),
    ]));
    assert_eq!(copied["digest"], index_digest.as_str());
    assert_eq!(manifest_bytes(&b, "multi", "v1").unwrap(), index);
    for pushed in [&one, &two] {
        let digest = pushed["digest"].as_str().unwrap();
        assert_eq!(
            manifest_bytes(&b, "multi", digest),
            manifest_bytes(&a, "multi", digest)
        );
    }
    // Both entries share the layer and config: sent once.
    assert_eq!(copied["blobs_sent"], 2, "{copied}");
    cli.ok(&["run", &b.reference("multi:v1")]);
}

#[test]
fn copy_to_a_layout_and_back_keeps_digests_signatures_and_referrers() {
    let (a, b) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let (digest, sbom) = signed_and_attached(&cli, &a, dir.path(), &[]);
    let layout = dir.path().join("layout");
    let to_layout = format!("oci:{}:v1", layout.display());
    let copied = json(&cli.ok(&["copy", "--json", &a.reference("hello:v1"), &to_layout]));
    assert_eq!(copied["digest"], digest.as_str());
    assert_eq!(copied["signatures"], 1, "{copied}");
    assert_eq!(copied["referrers"], 1, "{copied}");
    let index = json(&fs::read_to_string(layout.join("index.json")).unwrap());
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(names.contains(&"v1"), "{index}");
    assert!(
        names.contains(&format!("{}.sig", digest.replacen(':', "-", 1)).as_str()),
        "{index}"
    );
    assert!(
        names.contains(&digest.replacen(':', "-", 1).as_str()),
        "{index}"
    );

    // skopeo reads it as a layout, and the layout runs and loads as one.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", &to_layout])
        .output()
        .expect("skopeo is not installed: run ./scripts/test, which installs it");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256(&out.stdout), digest);
    cli.ok(&["run", &to_layout]);
    WasmOci::new().ok(&["load", layout.to_str().unwrap()]);

    // And back into another registry: the same digests, the SBOM discoverable.
    let back = json(&cli.ok(&["copy", "--json", &to_layout, &b.reference("hello:v1")]));
    assert_eq!(back["digest"], digest.as_str());
    assert_eq!(sha256(&manifest_bytes(&b, "hello", "v1").unwrap()), digest);
    assert_eq!(discover(&cli, &b.reference("hello:v1")), [sbom]);
    let out = cli.run(&[
        "verify",
        &b.reference("hello:v1"),
        "--key",
        dir.path().join("release.pub").to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains(&format!("it is signed for {}", a.reference("hello:v1"))),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_copy_needs_no_policy_but_running_the_copy_does() {
    let (a, b) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    a.push_hello("hello:v1");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    fs::write(&policy, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    let out = cli
        .command()
        .args(["copy", &a.reference("hello:v1"), &b.reference("hello:v1")])
        .env("WASM_OCI_POLICY", &policy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(manifest_bytes(&b, "hello", "v1").is_some());
    let out = cli.run(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        &b.reference("hello:v1"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("reject"), "{}", describe(&out));
}

#[test]
fn save_carries_referrers_into_the_layout() {
    let (a, b) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    // save carries the referrers of the wasm manifest it writes: here the tag names that
    // manifest (an SBOM attached to the index push writes by default is not carried).
    let (digest, sbom) = signed_and_attached(&cli, &a, dir.path(), &["--no-image"]);
    let layout = dir.path().join("saved");
    cli.ok(&[
        "save",
        &a.reference("hello:v1"),
        "-o",
        layout.to_str().unwrap(),
    ]);
    let index = fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(index.contains(&digest.replacen(':', "-", 1)), "{index}");
    // A node loads it as before; another registry gets the SBOM from it.
    WasmOci::new().ok(&["load", layout.to_str().unwrap()]);
    cli.ok(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &b.reference("hello:v1"),
    ]);
    assert_eq!(discover(&cli, &b.reference("hello:v1")), [sbom]);
}

#[test]
fn concurrent_attaches_under_the_tag_schema_all_stay_listed() {
    let a = Registry::start();
    let cli = WasmOci::new();
    let reference = a.push_hello("hello:v1");
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let commands = (0..n).map(|i| {
        let note = dir.path().join(format!("note-{i}.txt"));
        fs::write(&note, format!("note {i}\n")).unwrap();
        let mut cmd = cli.command();
        cmd.args([
            "attach",
            "--json",
            &reference,
            note.to_str().unwrap(),
            "--artifact-type",
            "text/plain",
        ]);
        cmd
    });
    let mut attached = Vec::new();
    for out in outputs_of_concurrent(commands.collect::<Vec<_>>()) {
        assert!(out.status.success(), "{}", describe(&out));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        attached.push(value["digest"].as_str().unwrap().to_owned());
    }
    let mut listed = discover(&cli, &reference);
    listed.sort();
    attached.sort();
    assert_eq!(listed, attached);
}

#[test]
fn tags_manifest_and_discover_are_read_from_a_mirror_when_the_origin_is_down() {
    let (mut origin, mirror) = (Registry::start(), Registry::start());
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let (digest, sbom) = signed_and_attached(&cli, &origin, dir.path(), &[]);
    // What a regional mirror holds: a copy, by the same name.
    cli.ok(&[
        "copy",
        &origin.reference("hello:v1"),
        &mirror.reference("hello:v1"),
    ]);
    let reference = origin.reference("hello:v1");
    let hosts = tempfile::tempdir().unwrap();
    let (host, port) = origin.addr.rsplit_once(':').unwrap();
    let host_dir = hosts.path().join(format!("{host}_{port}_"));
    fs::create_dir_all(&host_dir).unwrap();
    fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.addr
        ),
    )
    .unwrap();
    origin.stop();
    let hosts_dir = hosts.path().to_str().unwrap();
    let tags = json(&cli.ok(&["tags", "--json", "--hosts-dir", hosts_dir, &reference]));
    assert!(
        tags["tags"].as_array().unwrap().iter().any(|t| t == "v1"),
        "{tags}"
    );
    let described = json(&cli.ok(&["manifest", "--json", "--hosts-dir", hosts_dir, &reference]));
    assert_eq!(described["digest"], digest.as_str(), "{described}");
    let found = json(&cli.ok(&["discover", "--json", "--hosts-dir", hosts_dir, &reference]));
    assert_eq!(found["referrers"][0]["digest"], sbom.as_str(), "{found}");
    // A copy reads through the mirror too.
    let third = Registry::start();
    let copied = json(&cli.ok(&[
        "copy",
        "--json",
        "--hosts-dir",
        hosts_dir,
        &reference,
        &third.reference("hello:v1"),
    ]));
    assert_eq!(copied["digest"], digest.as_str(), "{copied}");
    assert_eq!(copied["referrers"], 1, "{copied}");
    // Without the mirror, the origin's absence is what is said.
    let out = cli.run(&["tags", &reference]);
    assert!(!out.status.success(), "{}", describe(&out));
}

#[test]
fn fifty_modules_that_share_a_layer_send_it_once() {
    let (a, b) = (Registry::start(), Registry::start());
    // In front of the destination, counting the uploads it is sent.
    let front = Proxy::start(&b.addr, Fault::None);
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm");
    for i in 0..50 {
        cli.ok(&[
            "push",
            "--annotation",
            &format!("n={i}"),
            hello.to_str().unwrap(),
            &a.reference(&format!("fleet:m{i}")),
        ]);
    }
    let mut digests = std::collections::BTreeSet::new();
    for i in 0..50 {
        let copied = json(&cli.ok(&[
            "copy",
            "--json",
            &a.reference(&format!("fleet:m{i}")),
            &front.reference(&format!("fleet:m{i}")),
        ]));
        digests.insert(copied["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests.len(), 50);
    // The wasm layer and config, the Linux image's layer and two configs, each once; the
    // copies after found them there.
    assert_eq!(front.asked("PUT /v2/fleet/blobs/uploads/"), 5);
    // Each module's wasm manifest and two Linux manifests by digest, and its index by digest
    // and at the tag.
    assert_eq!(front.asked("PUT /v2/fleet/manifests/"), 250);
}
