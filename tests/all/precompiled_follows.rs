//! Precompiled code follows its module: a `copy` to another registry, a `save` to a layout
//! loaded on a node that reaches no registry, a hosts.toml mirror holding the copy while the
//! origin is down. Wherever it came from, the node (`run`, and the shim under containerd)
//! adopts it only when it verifies as from the registry (a key the policy names, this
//! module, this engine, whole bytes); a layout whose code is signed by another key, or whose
//! bytes were swapped, is compiled locally.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::precompiled::{
    ADOPTED, COMPILED_LOCALLY, COMPILED_TYPE, Fleet, assert_hello, compiled_files, log,
};
use crate::support::{
    ALLOW_LOOPBACK, Containerd, HELLO, Registry, Version, WasmOci, describe, each_containerd,
    manifest, sha256_digest, stdout, wasm_manifest,
};

/// The line of `node`'s log that says code was adopted.
fn adopted_line(node: &WasmOci) -> String {
    let log = log(node);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(ADOPTED)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    lines[0].to_owned()
}

/// The node ran hello with the code of the `run` engine's referrer, byte for byte, adopted
/// from `from` (a registry's `host:port`, or `cache`), and compiled nothing.
fn adopted_from(node: &WasmOci, out: &std::process::Output, code: &[u8], from: &str) {
    assert_hello(out);
    let line = adopted_line(node);
    assert!(line.contains(&format!("from={from}")), "{line}");
    let log = log(node);
    assert!(!log.contains(COMPILED_LOCALLY), "{log}");
    let files = compiled_files(node);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, code);
}

/// The node ran hello with code it compiled itself, having refused the layout's for
/// `reason`; none of `foreign` (bytes no compiler of this engine makes) was ever kept as
/// compiled code.
fn compiled_here(node: &WasmOci, out: &std::process::Output, reason: &str, foreign: &[&[u8]]) {
    assert_hello(out);
    let log = log(node);
    assert!(log.contains(COMPILED_LOCALLY), "{log}");
    assert!(!log.contains(ADOPTED), "{log}");
    assert!(log.contains(reason), "{reason}: {log}");
    for (path, bytes) in compiled_files(node) {
        for code in foreign {
            assert!(&bytes != code, "{} holds the layout's code", path.display());
        }
    }
}

/// A policy for `scope` (`registry/repository`) that requires the fleet's key on signatures
/// naming the fleet's own repository, as a node that reads a copy of it writes one.
fn policy_for_copy(fleet: &Fleet, scope: &str) -> PathBuf {
    let path = fleet.dir.path().join("copy-policy.json");
    fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {scope: [{
                "type": "sigstoreSigned",
                "keyPath": fleet.dir.path().join("fleet.pub"),
                "signedIdentity": {
                    "type": "exactRepository",
                    "dockerRepository": fleet.registry.reference("hello"),
                },
            }]}},
        }))
        .unwrap(),
    )
    .unwrap();
    path
}

/// The code of each referrer `compile --push` attached, `run`'s engine first.
fn codes(fleet: &Fleet, attached: &[serde_json::Value]) -> Vec<Vec<u8>> {
    attached
        .iter()
        .map(|a| fleet.code_of(a["digest"].as_str().unwrap()))
        .collect()
}

/// The digest of the code layer of the referrer `digest` in the fleet's registry.
fn code_digest(fleet: &Fleet, digest: &str) -> String {
    manifest(&fleet.registry, "hello", digest)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `save` of hello under the fleet's policy (its signatures and referrers go with it) by a
/// node of its own, into a new layout.
fn save(fleet: &Fleet, layout: &Path) {
    let saver = WasmOci::new();
    let out = saver.run(&[
        "save",
        "--policy",
        fleet.policy.to_str().unwrap(),
        &fleet.hello,
        "-o",
        layout.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("referrers saved"),
        "{}",
        describe(&out)
    );
}

/// `load` of `layout` under the fleet's policy on `node`.
fn load(fleet: &Fleet, node: &WasmOci, layout: &Path) -> std::process::Output {
    let out = node.run(&[
        "load",
        "--policy",
        fleet.policy.to_str().unwrap(),
        layout.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    out
}

#[test]
fn code_copied_to_another_registry_is_adopted_from_it() {
    let fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    let code = codes(&fleet, &attached);
    let second = Registry::start();
    let copy = second.reference("hello:v1");
    let copied: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["copy", "--json", &fleet.hello, &copy])).unwrap();
    assert_eq!(copied["referrers"], 2, "{copied}");

    let policy = policy_for_copy(&fleet, &second.reference("hello"));
    let node = WasmOci::new();
    let out = node.run(&["run", "--policy", policy.to_str().unwrap(), &copy]);
    adopted_from(&node, &out, &code[0], &second.addr);
}

#[test]
fn code_saved_to_a_layout_is_adopted_on_a_node_without_a_registry() {
    let mut fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    let code = codes(&fleet, &attached);
    let code_blobs: Vec<String> = attached
        .iter()
        .map(|a| code_digest(&fleet, a["digest"].as_str().unwrap()))
        .collect();
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    save(&fleet, &dir);
    // Nothing to ask from here on.
    fleet.registry.stop();

    let node = WasmOci::new();
    load(&fleet, &node, &dir);
    // The code of both engines is kept with the reference, as blobs.
    let blobs = node.blobs();
    for digest in &code_blobs {
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert!(blobs.iter().any(|b| b == hex), "{digest}: {blobs:?}");
    }
    let out = fleet.run(&node, &fleet.hello, &[]);
    adopted_from(&node, &out, &code[0], "cache");
    // `cache ls` counts the kept code; `rm` takes it with the reference.
    let listed: serde_json::Value =
        serde_json::from_str(&node.ok(&["cache", "ls", "--json"])).unwrap();
    let kept = listed[0]["kept_referrers"].as_u64().unwrap_or(0);
    let codes_len: usize = code.iter().map(Vec::len).sum();
    assert!(kept > codes_len as u64, "{listed}");
    assert_eq!(listed[0]["compiled"], code[0].len(), "{listed}");
    node.ok(&["cache", "rm", &fleet.hello]);
    assert!(node.blobs().is_empty(), "{:?}", node.blobs());

    // Told not to ask the registry at all, a node adopts the kept code just the same.
    let offline = WasmOci::new();
    load(&fleet, &offline, &dir);
    let out = fleet.run(&offline, &fleet.hello, &["--pull", "never"]);
    adopted_from(&offline, &out, &code[0], "cache");

    // And passes it on: saved again from its cache, loaded by the next node.
    let again = layout.path().join("again");
    let out = offline.run(&[
        "save",
        "--policy",
        fleet.policy.to_str().unwrap(),
        &fleet.hello,
        "-o",
        again.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the 2 kept in the cache are saved"),
        "{}",
        describe(&out)
    );
    let next = WasmOci::new();
    load(&fleet, &next, &again);
    let out = fleet.run(&next, &fleet.hello, &["--pull", "never"]);
    adopted_from(&next, &out, &code[0], "cache");
}

#[test]
fn code_copied_to_a_mirror_is_adopted_while_the_origin_is_down() {
    let mut fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    let code = codes(&fleet, &attached);
    // What a regional mirror holds: a copy, by the same name.
    let mirror = Registry::start();
    fleet.ok(&["copy", &fleet.hello, &mirror.reference("hello:v1")]);
    let hosts = tempfile::tempdir().unwrap();
    let (host, port) = fleet.registry.addr.rsplit_once(':').unwrap();
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
    fleet.registry.stop();

    let node = WasmOci::new();
    let out = fleet.run(
        &node,
        &fleet.hello,
        &["--hosts-dir", hosts.path().to_str().unwrap()],
    );
    // Listed, verified and read where it was listed: the mirror.
    adopted_from(&node, &out, &code[0], &mirror.addr);
}

/// A layout's code signed by a key the policy does not name is kept (it is whole) and
/// refused at the gate when adopted: the node compiles.
#[test]
fn a_layout_whose_code_another_key_signed_is_compiled_locally() {
    let mut fleet = Fleet::new();
    let other = Fleet::generate_key(&fleet.builder, fleet.dir.path(), "other");
    let attached: Vec<serde_json::Value> = serde_json::from_str(&fleet.ok(&[
        "compile",
        "--json",
        "--push",
        "--sign-key",
        other.to_str().unwrap(),
        &fleet.hello,
    ]))
    .unwrap();
    assert_eq!(attached.len(), 2, "{attached:?}");
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    save(&fleet, &dir);
    fleet.registry.stop();

    let node = WasmOci::new();
    load(&fleet, &node, &dir);
    let out = fleet.run(&node, &fleet.hello, &[]);
    // (Compiling is deterministic: the node's own code may equal the refused bytes; what
    // tells them apart is that it compiled.)
    compiled_here(&node, &out, "precompiled referrer refused", &[]);
}

/// A layout whose code bytes were swapped after signing (the `run` engine's code replaced by
/// the shim's, a file of the right size and the wrong digest): `load` keeps the rest, and
/// leaves that referrer out, and the node compiles. Code swapped in the cache after a load
/// is refused the same way, by its digest.
#[test]
fn code_swapped_in_a_layout_or_in_the_cache_is_compiled_locally() {
    let mut fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    let code = codes(&fleet, &attached);
    let run_code = code_digest(&fleet, attached[0]["digest"].as_str().unwrap());
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    save(&fleet, &dir);
    fleet.registry.stop();

    // In the layout: the run engine's code file holds other bytes.
    let blob = dir
        .join("blobs/sha256")
        .join(run_code.strip_prefix("sha256:").unwrap());
    let mut swapped = code[1].clone();
    swapped.resize(code[0].len(), 0);
    fs::write(&blob, &swapped).unwrap();
    let node = WasmOci::new();
    let loaded = load(&fleet, &node, &dir);
    assert!(
        String::from_utf8_lossy(&loaded.stderr).contains("precompiled code of the layout not kept")
            || log(&node).contains("precompiled code of the layout not kept"),
        "{}",
        describe(&loaded)
    );
    let out = fleet.run(&node, &fleet.hello, &[]);
    // Only the shim's code was kept, which is not for `run`'s engine.
    compiled_here(&node, &out, "and this one loads", &[&code[1], &swapped]);

    // In the cache: loaded whole, then the kept code changed in place.
    fs::write(&blob, &code[0]).unwrap();
    let node = WasmOci::new();
    load(&fleet, &node, &dir);
    let kept = node
        .cache
        .path()
        .join("v1/blobs/sha256")
        .join(run_code.strip_prefix("sha256:").unwrap());
    fs::set_permissions(&kept, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&kept, &swapped).unwrap();
    let out = fleet.run(&node, &fleet.hello, &["--pull", "never"]);
    compiled_here(&node, &out, "hashes to", &[&code[1], &swapped]);
    // `cache verify` drops the damaged code and keeps the module, which a node without a
    // registry could not pull again.
    let out = node.run(&["cache", "verify", "--json"]);
    // Damage found is a failure to report, as for any blob.
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["dropped_referrers"],
        serde_json::json!([fleet.hello]),
        "{report}"
    );
    assert_eq!(report["removed_refs"], serde_json::json!([]), "{report}");
    assert_hello(&fleet.run(&node, &fleet.hello, &["--pull", "never"]));
}

/// The shim under containerd (1.6 and 2.x), on a node that reaches no registry: the layout
/// loaded into containerd's shared cache, a container naming the module by
/// `io.wasm-oci.reference` starts on the shim engine's code from the layout, verified by the
/// node's policy, and compiles nothing.
fn the_shim_adopts_code_a_layout_brought(v: Version) {
    let mut fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    let code = codes(&fleet, &attached);
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    save(&fleet, &dir);
    fleet.registry.stop();

    let c = Containerd::start_on(v, &[("WASM_OCI_POLICY", &fleet.policy)], ALLOW_LOOPBACK);
    c.import_hello();
    let out = WasmOci::new()
        .command()
        .env("WASM_OCI_CACHE", &c.cache)
        .args(["load", "--policy", fleet.policy.to_str().unwrap()])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let annotation = format!("io.wasm-oci.reference={}", fleet.hello);
    let out = c.run(
        &["--label", &annotation],
        "docker.io/library/wasmhello:v1",
        "adopted",
        &[],
    );
    assert_eq!(stdout(&out), HELLO, "{}\n{}", describe(&out), c.log());
    let log = fs::read_to_string(c.shim_log()).unwrap_or_default();
    let adopted: Vec<&str> = log.lines().filter(|l| l.contains(ADOPTED)).collect();
    assert_eq!(adopted.len(), 1, "{log}");
    assert!(adopted[0].contains("from=cache"), "{}", adopted[0]);
    assert!(!log.contains(COMPILED_LOCALLY), "{log}");
    // The shim engine's code, byte for byte, in the shared cache.
    let files: Vec<Vec<u8>> = fs::read_dir(c.cache.join("v1/compiled"))
        .unwrap()
        .flatten()
        .flat_map(|key| fs::read_dir(key.path()).unwrap().flatten())
        .map(|file| fs::read(file.path()).unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{} files", files.len());
    assert!(
        files[0] == code[1],
        "the shim's compiled code is not the layout's"
    );
}

each_containerd!(the_shim_adopts_code_a_layout_brought);

/// A layout whose referrers index lists a thousand forged entries before the honest ones:
/// `load` looks at a few dozen, keeps none of them, says it stopped, and the node compiles.
#[test]
fn a_layout_listing_a_thousand_forged_referrers_costs_a_few_dozen_looks() {
    let mut fleet = Fleet::new();
    fleet.compile_push(&fleet.hello, &[]);
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("airgap");
    save(&fleet, &dir);
    // The code's subject: the wasm manifest of the index at v1.
    let (module, _) = wasm_manifest(&fleet.registry, "hello", "v1");
    fleet.registry.stop();

    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let name = |m: &serde_json::Value| {
        m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let entries = index["manifests"].as_array_mut().unwrap();
    let tag = module.replacen(':', "-", 1);
    let listing = entries.iter_mut().find(|m| name(m) == tag).unwrap();
    let blob = |digest: &str| dir.join("blobs/sha256").join(&digest[7..]);
    let honest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(listing["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let mut forged: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{i:064x}"),
                "size": 500,
                "artifactType": COMPILED_TYPE,
            })
        })
        .collect();
    forged.extend(honest["manifests"].as_array().unwrap().iter().cloned());
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": forged,
    }))
    .unwrap();
    let digest = sha256_digest(&body);
    fs::write(blob(&digest), &body).unwrap();
    listing["digest"] = digest.into();
    listing["size"] = body.len().into();
    fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();

    let node = WasmOci::new();
    load(&fleet, &node, &dir);
    let log = log(&node);
    let looked_at = log
        .lines()
        .filter(|l| l.contains("precompiled code of the layout not kept"))
        .count();
    assert_eq!(looked_at, 32, "{log}");
    assert!(log.contains("than is looked at"), "{log}");
    let out = fleet.run(&node, &fleet.hello, &["--pull", "never"]);
    assert_hello(&out);
    let log = self::log(&node);
    assert!(log.contains(COMPILED_LOCALLY), "{log}");
    assert!(!log.contains(ADOPTED), "{log}");
}
