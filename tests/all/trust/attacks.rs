//! The red team's attacks on signatures and the signature policy (issue #16): each test is a
//! hole found in the feature, written failing, and passing since it was closed; each also
//! checks that the refusal is the policy's, for the reason it gives. They start a real
//! Docker Distribution (and containerd, for the shim) and run the real CLI.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{
    HELLO, Registry, Request, Server, WasmOci, describe, digest_of, forward, generate_key,
    has_signatures, hello_wasm, http, policy_requiring, sha256, stderr,
};

const PASSWORD: &str = "red team password";

/// A policy that accepts anything but needs, for docker scope `scope`, a signature by `key`
/// (signedIdentity left to its default, matchRepoDigestOrExact, unless `identity` is given).
fn policy(dir: &Path, name: &str, scope: &str, key: &Path, identity: Option<&str>) -> PathBuf {
    policy_requiring(&dir.join(name), scope, key, identity)
}

/// A registry front that forwards every request to `upstream`, with the path `rewrite` makes
/// of the request line (`METHOD PATH HTTP/1.1`), as a hostile registry answers what it likes.
fn hostile(upstream: &str, rewrite: fn(&str) -> String) -> Server {
    let upstream = upstream.to_owned();
    Server::start(move |r: &Request| {
        let line = rewrite(&format!("{} {} {}", r.method, r.path, r.version));
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        forward(&upstream, r, &path)
    })
}

/// HOLE (closed): `push --sign-key` signs whatever digest the registry answers for the tag
/// after the push, not the digest it just pushed. A hostile registry (or a tag moved by anyone with
/// push rights between the push and the signature) gets the publisher's key to sign content
/// of its choosing, and every node enforcing the publisher's key then runs it.
#[test]
fn push_sign_key_signs_the_digest_it_pushed_not_what_the_registry_answers_for_the_tag() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = generate_key(&cli, keys.path(), "release", PASSWORD);
    // The attacker's module, already in the repository under another tag.
    cli.ok(&[
        "push",
        &crate::support::guests().probe.display().to_string(),
        &registry.reference("hello:evil"),
    ]);
    let evil = digest_of(&registry.addr, "hello", "evil");
    // The registry answers reads of the tag v1 with the attacker's manifest; writes go through.
    let hostile = hostile(&registry.addr, |line| {
        if line.starts_with("GET ") || line.starts_with("HEAD ") {
            line.replace("/manifests/v1 ", "/manifests/evil ")
        } else {
            line.to_owned()
        }
    });
    let reference = format!("{}/hello:v1", hostile.addr);
    let out = cli
        .command()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["push", &hello_wasm(), &reference, "--sign-key"])
        .arg(&private)
        .output()
        .unwrap();
    let pushed = digest_of(&registry.addr, "hello", "v1");
    assert_ne!(pushed, evil);
    assert!(out.status.success(), "{}", describe(&out));
    // It reports the digest it pushed, and signed that one.
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains(&format!("Digest: {pushed}"))
            && printed.contains(&format!("Signed: {}.sig", pushed.replacen(':', "-", 1))),
        "{}",
        describe(&out)
    );
    // What must hold: the key signed what was pushed, and nothing else.
    let signed_evil = has_signatures(&registry.addr, "hello", &evil);
    let signed_pushed = has_signatures(&registry.addr, "hello", &pushed);
    // The consequence on a node that trusts the publisher's key for this registry.
    let policy = policy(keys.path(), "policy.json", &hostile.addr, &public, None);
    let node = WasmOci::new();
    let run = node.run(&["run", "--policy", policy.to_str().unwrap(), &reference]);
    // The probe guest answers no arguments with its usage: it ran.
    let ran_other = stderr(&run).contains("usage: probe")
        || (run.status.success() && String::from_utf8_lossy(&run.stdout) != HELLO);
    assert!(
        !signed_evil && signed_pushed && !ran_other,
        "push --sign-key signed {evil} (the attacker's manifest, answered for the tag) \
         instead of {pushed} (what it pushed): signed attacker digest: {signed_evil}, \
         signed pushed digest: {signed_pushed}; a node enforcing the key ran the attacker's \
         module: {ran_other}\npush: {}\nrun: {}",
        describe(&out),
        describe(&run)
    );
    // Refused for the reason a node gives: what the tag now names carries no signature.
    assert!(
        !run.status.success() && stderr(&run).contains("no signature"),
        "{}",
        describe(&run)
    );
}

/// `sign REF:tag` reads the tag once, signs that digest and says which (with cosign's warning
/// about signing by tag on stderr); `sign REF@digest` signs the digest named, nothing else.
#[test]
fn sign_names_the_digest_it_signed_and_signs_a_digest_reference() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    cli.ok(&["push", &hello_wasm(), &registry.reference("hello:v1")]);
    cli.ok(&[
        "push",
        &crate::support::guests().probe.display().to_string(),
        &registry.reference("hello:v2"),
    ]);
    let v1 = digest_of(&registry.addr, "hello", "v1");
    let v2 = digest_of(&registry.addr, "hello", "v2");
    let keys = tempfile::tempdir().unwrap();
    let (private, _) = generate_key(&cli, keys.path(), "release", PASSWORD);
    let sign = |reference: &str| {
        cli.command()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(["sign", reference, "--key"])
            .arg(&private)
            .output()
            .unwrap()
    };
    let by_tag = sign(&registry.reference("hello:v1"));
    assert!(by_tag.status.success(), "{}", describe(&by_tag));
    assert!(
        String::from_utf8_lossy(&by_tag.stdout).contains(&format!("({v1})")),
        "{}",
        describe(&by_tag)
    );
    assert!(
        stderr(&by_tag).contains("by tag") && stderr(&by_tag).contains(&v1),
        "{}",
        describe(&by_tag)
    );
    assert!(has_signatures(&registry.addr, "hello", &v1));
    assert!(!has_signatures(&registry.addr, "hello", &v2));
    let by_digest = sign(&format!("{}@{v2}", registry.reference("hello")));
    assert!(by_digest.status.success(), "{}", describe(&by_digest));
    assert!(
        !stderr(&by_digest).contains("by tag"),
        "{}",
        describe(&by_digest)
    );
    assert!(has_signatures(&registry.addr, "hello", &v2));
    // A digest the repository does not hold is not signed.
    let absent = sha256(b"nothing pushed");
    let out = sign(&format!("{}@{absent}", registry.reference("hello")));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!has_signatures(&registry.addr, "hello", &absent));
}

/// HOLE (closed): a docker scope is looked up by the registry name exactly as the reference spells
/// it, but the same registry has other spellings: host names are case-insensitive
/// (`LOCALHOST:<port>` is `localhost:<port>`, and the fetcher itself treats it as loopback),
/// and a port may carry leading zeros (`127.0.0.1:0<port>` connects to `<port>`). Either
/// misses the scope, falls to the default and runs unsigned. A pod author names the image:
/// any scope that protects a host is escaped by respelling its name.
#[test]
fn a_respelled_registry_name_stays_under_the_scope_of_its_host() {
    let registry = Registry::start();
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    let cli = WasmOci::new();
    cli.ok(&["push", &hello_wasm(), &registry.reference("hello:v1")]);
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = generate_key(&cli, keys.path(), "release", PASSWORD);
    let mut escaped = Vec::new();
    for (scope, variant) in [
        (format!("localhost:{port}"), format!("LOCALHOST:{port}")),
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:0{port}")),
        // Other spellings of the address, which the connection reads as 127.0.0.1.
        (format!("127.0.0.1:{port}"), format!("127.1:{port}")),
        (format!("127.0.0.1:{port}"), format!("2130706433:{port}")),
    ] {
        let policy = policy(keys.path(), "policy.json", &scope, &public, None);
        let policy = policy.to_str().unwrap();
        // The host as the operator wrote it: refused, unsigned.
        let as_written = cli.run(&["run", "--policy", policy, &format!("{scope}/hello:v1")]);
        assert!(
            !as_written.status.success() && stderr(&as_written).contains("no signature"),
            "{}",
            describe(&as_written)
        );
        // The same registry, respelled.
        let reference = format!("{variant}/hello:v1");
        let out = cli.run(&["run", "--policy", policy, &reference]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == HELLO {
            escaped.push(format!("{reference} escaped scope {scope:?}"));
        } else {
            // Refused by the scope of its registry, under its one canonical name.
            assert!(
                stderr(&out).contains(&format!(
                    "{scope}/hello:v1 is refused by scope docker \"{scope}\""
                )) && stderr(&out).contains("no signature"),
                "{}",
                describe(&out)
            );
        }
    }
    assert!(
        escaped.is_empty(),
        "ran unsigned although the scope of its registry needs a signature: {escaped:?}"
    );
}

/// HOLE (closed): `run oci:DIR[:TAG]` runs a module from an OCI layout without looking at the
/// policy, although the layout names the reference it holds and `load` refuses the same
/// layout under the same policy. A layout is data from elsewhere (the README's air gap):
/// the check `load` makes is skipped by running the layout in place.
#[test]
fn running_a_layout_in_place_is_held_to_the_policy_that_load_enforces() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello_wasm(), &reference]);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    cli.ok(&["save", &reference, "-o", layout.to_str().unwrap()]);
    let (_, public) = generate_key(&cli, dir.path(), "release", PASSWORD);
    let policy = policy(dir.path(), "policy.json", &registry.addr, &public, None);
    let policy = policy.to_str().unwrap();
    // load: refused, the layout carries no signature.
    let node = WasmOci::new();
    let load = node.run(&["load", "--policy", policy, layout.to_str().unwrap()]);
    assert!(!load.status.success(), "{}", describe(&load));
    // run, in place: the same module, the same name, the same policy.
    for module in [
        format!("oci:{}", layout.display()),
        format!("oci:{}:v1", layout.display()),
    ] {
        let out = node.run(&["run", "--policy", policy, &module]);
        assert!(
            stderr(&out).contains(&format!("{reference} is refused by scope docker"))
                && stderr(&out).contains("no signature"),
            "{}",
            describe(&out)
        );
        // serve takes the same path, and refuses before it listens.
        let served = node.run(&["serve", "--policy", policy, &module]);
        assert!(
            !served.status.success()
                && stderr(&served).contains(&format!("{reference} is refused by scope docker")),
            "{}",
            describe(&served)
        );
        assert!(
            !(out.status.success() && String::from_utf8_lossy(&out.stdout) == HELLO),
            "{module} ({reference} in the layout) ran although the policy refuses it unsigned \
             (and load refused it: {}): {}",
            stderr(&load).trim(),
            describe(&out)
        );
    }
}

/// A layout entry without a name cannot be matched to a scope: it runs in place only under a
/// policy that accepts anything everywhere, and the refusal says how to name it.
#[test]
fn a_layout_entry_without_a_name_runs_only_under_a_policy_that_accepts_anything() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello_wasm(), &reference]);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    cli.ok(&["save", &reference, "-o", saved.to_str().unwrap()]);
    let layout = dir.path().join("unnamed");
    renamed_layout(&saved, &layout, "");
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        m["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("io.containerd.image.name");
    }
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let module = format!("oci:{}:v1", layout.display());
    let (_, public) = generate_key(&cli, dir.path(), "release", PASSWORD);
    let strict = policy(dir.path(), "policy.json", &registry.addr, &public, None);
    let out = cli.run(&["run", "--policy", strict.to_str().unwrap(), &module]);
    assert!(
        !out.status.success()
            && stderr(&out).contains("no reference name")
            && stderr(&out).contains(strict.to_str().unwrap()),
        "{}",
        describe(&out)
    );
    let open = dir.path().join("open.json");
    fs::write(&open, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let out = cli.run(&["run", "--policy", open.to_str().unwrap(), &module]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
}

/// A TLS registry on 127.0.0.1:443, the port `https` implies, with a certificate for
/// 127.0.0.1 from a CA made for the test (`dir/ca.crt`), in a network namespace of the test's
/// own (so the port is free whatever else runs on the machine): the commands that speak to it
/// run in there too (`netns.wrap`).
struct DefaultPortRegistry {
    child: std::process::Child,
    netns: crate::support::Netns,
}

impl Drop for DefaultPortRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DefaultPortRegistry {
    /// `cli ARGS` run in the registry's network namespace.
    fn run(&self, cli: &WasmOci, args: &[&str]) -> std::process::Output {
        let mut cmd = cli.command();
        cmd.args(args);
        self.netns.wrap(&cmd).output().unwrap()
    }
}

fn start_on_443(dir: &Path) -> DefaultPortRegistry {
    let netns = crate::support::Netns::new();
    crate::support::make_certificates(dir);
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:443\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("data").display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.join("registry.log")).unwrap();
    let mut registry = std::process::Command::new("docker-registry");
    registry.arg("serve").arg(&config);
    let child = netns
        .wrap(&registry)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry is installed by scripts/test");
    let mut registry = DefaultPortRegistry { child, netns };
    // Up once it answers /v2/ on 443, as the CLI will ask it.
    let mut probe = std::process::Command::new("curl");
    probe
        .args(["-sf", "-o", "/dev/null", "--cacert"])
        .arg(dir.join("ca.crt"))
        .arg("https://127.0.0.1:443/v2/");
    let mut probe = registry.netns.wrap(&probe);
    crate::support::wait_until("the registry answers on 127.0.0.1:443", || {
        assert!(
            registry.child.try_wait().unwrap().is_none(),
            "the registry on 443 exited: {}",
            fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        probe.status().unwrap().success()
    });
    registry
}

/// HOLE (closed): a scope that names a host without a port (as the README's `registry.internal`)
/// covers `host/...` only: the same registry named with the port `https` implies,
/// `host:443/...`, is looked up as another scope and falls to the default. Both a `reject`
/// scope and a `sigstoreSigned` one are escaped by writing `:443` into the image name.
#[test]
fn the_default_https_port_written_out_stays_under_a_host_scope() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_on_443(dir.path());
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();
    let cli = WasmOci::new();
    let pushed = registry.run(
        &cli,
        &["push", "--ca-file", ca, &hello_wasm(), "127.0.0.1/hello:v1"],
    );
    assert!(pushed.status.success(), "{}", describe(&pushed));
    let (_, public) = generate_key(&cli, dir.path(), "release", PASSWORD);
    // The host as the README's example names it: a signature is needed for everything there.
    let policy = policy(dir.path(), "policy.json", "127.0.0.1", &public, None);
    let policy = policy.to_str().unwrap();
    let without_port = registry.run(
        &cli,
        &[
            "run",
            "--ca-file",
            ca,
            "--policy",
            policy,
            "127.0.0.1/hello:v1",
        ],
    );
    assert!(
        !without_port.status.success() && stderr(&without_port).contains("no signature"),
        "{}",
        describe(&without_port)
    );
    // The same registry, the same image, the port written out.
    let out = registry.run(
        &cli,
        &[
            "run",
            "--ca-file",
            ca,
            "--policy",
            policy,
            "127.0.0.1:443/hello:v1",
        ],
    );
    assert!(
        stderr(&out).contains("is refused by scope docker \"127.0.0.1\"")
            && stderr(&out).contains("no signature"),
        "{}",
        describe(&out)
    );
    assert!(
        !(out.status.success() && String::from_utf8_lossy(&out.stdout) == HELLO),
        "127.0.0.1:443/hello:v1 ran unsigned although scope \"127.0.0.1\" needs a signature: {}",
        describe(&out)
    );
}

/// A copy of the layout `from` whose artifact is named `name` (io.containerd.image.name).
fn renamed_layout(from: &Path, to: &Path, name: &str) {
    fs::create_dir_all(to).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    let index_path = to.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        m["annotations"]["io.containerd.image.name"] = name.into();
    }
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// HOLE (closed): Docker Hub answers as docker.io and as registry-1.docker.io (its API host;
/// `Identity::of` in policy.rs already treats them as one), but scopes are looked up by the
/// name as written: `registry-1.docker.io/library/hello:v1` escapes a `docker.io` scope. Shown
/// offline with `load` (a layout names its references) and `run --pull never`; a pull by
/// reference takes the same scope lookup.
#[test]
fn docker_hub_by_its_api_host_is_under_a_docker_io_scope() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello_wasm(), &reference]);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    cli.ok(&["save", &reference, "-o", saved.to_str().unwrap()]);
    let policy = dir.path().join("policy.json");
    fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {"docker.io": [{"type": "reject"}]}},
        })
        .to_string(),
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    // Named docker.io: refused.
    let hub = dir.path().join("hub");
    renamed_layout(&saved, &hub, "docker.io/library/hello:v1");
    let node = WasmOci::new();
    let out = node.run(&["load", "--policy", policy, hub.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("rejects every image"),
        "{}",
        describe(&out)
    );
    // The same registry by its API host name.
    let api = dir.path().join("api");
    let alias = "registry-1.docker.io/library/hello:v1";
    renamed_layout(&saved, &api, alias);
    let load = node.run(&["load", "--policy", policy, api.to_str().unwrap()]);
    assert!(
        !load.status.success()
            && stderr(&load)
                .contains("docker.io/library/hello:v1 is refused by scope docker \"docker.io\"")
            && stderr(&load).contains("rejects every image"),
        "{}",
        describe(&load)
    );
    let run = node.run(&["run", "--pull", "never", "--policy", policy, alias]);
    assert!(
        !(run.status.success() && String::from_utf8_lossy(&run.stdout) == HELLO),
        "{alias} was loaded and ran although scope \"docker.io\" rejects every image:\nload: {}\nrun: {}",
        describe(&load),
        describe(&run)
    );
}

/// BUG (fixed; availability, not a bypass): a reference that resolves to an image index is signed,
/// verified and cached by the index's digest, `save` writes its signatures under the index
/// digest's `.sig` tag, but `load` looks them up by the chosen entry's digest: a signed
/// multi-platform artifact verified online cannot be carried through an air gap.
#[test]
fn a_signed_index_survives_save_and_load_under_the_policy() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    // A plain manifest for a hand-written index, and the index push writes by default (the
    // wasm manifest and its Linux image).
    let pushed: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "push",
        "--no-image",
        &hello_wasm(),
        &registry.reference("hello:module"),
        "--json",
    ]))
    .unwrap();
    cli.ok(&["push", &hello_wasm(), &registry.reference("hello:v1")]);
    let module = http(
        &registry.addr,
        "GET",
        "/v2/hello/manifests/module",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": pushed["digest"],
            "size": module.body.len(),
            "platform": {"os": "wasip1", "architecture": "wasm"},
        }],
    }))
    .unwrap();
    crate::support::put_manifest(
        &registry,
        "hello",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = generate_key(&cli, dir.path(), "release", PASSWORD);
    for tag in ["multi", "v1"] {
        signed_index_saved_and_loaded(&registry, dir.path(), &private, &public, tag);
    }
}

/// `hello:TAG` (an index) signed with `private`, run, saved and loaded under a policy naming
/// `public`, then run from the cache and from the layout in place.
fn signed_index_saved_and_loaded(
    registry: &Registry,
    keys: &Path,
    private: &Path,
    public: &Path,
    tag: &str,
) {
    let cli = WasmOci::new();
    let dir = tempfile::tempdir_in(keys).unwrap();
    let reference = registry.reference(&format!("hello:{tag}"));
    let out = cli
        .command()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["sign", &reference, "--key"])
        .arg(private)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let policy = policy(dir.path(), "policy.json", &registry.addr, public, None);
    let policy = policy.to_str().unwrap();
    // Verified online.
    let run = cli.run(&["run", "--policy", policy, &reference]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        HELLO,
        "{}",
        describe(&run)
    );
    let layout = dir.path().join("layout");
    let out = cli
        .command()
        .env("WASM_OCI_POLICY", policy)
        .args(["save", &reference, "-o", layout.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // The air-gapped node with the same policy.
    let node = WasmOci::new();
    let load = node.run(&["load", "--policy", policy, layout.to_str().unwrap()]);
    assert!(
        load.status.success(),
        "the layout of a signed, verified index is refused: {}",
        describe(&load)
    );
    let run = node.run(&["run", "--pull", "never", "--policy", policy, &reference]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        HELLO,
        "{}",
        describe(&run)
    );
    // And in place, verified against the same index digest.
    let in_place = node.run(&[
        "run",
        "--policy",
        policy,
        &format!("oci:{}:{tag}", layout.display()),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&in_place.stdout),
        HELLO,
        "{}",
        describe(&in_place)
    );
}

/// HOLE (closed), in the shim (a pod author names the reference): the respelled registry name of
/// `a_respelled_registry_name_stays_under_the_scope_of_its_host` passes the operator's
/// `references.allow` (host patterns ignore the port) and escapes the operator's scope in
/// containerd's policy: an unsigned module runs in a pod.
#[test]
fn the_shim_refuses_an_unsigned_pod_module_named_with_a_respelled_registry() {
    use crate::support::{ALLOW_LOOPBACK, Containerd, stdout};
    let registry = Registry::start();
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    let cli = WasmOci::new();
    let probe = crate::support::guests().probe.display().to_string();
    cli.ok(&["push", &probe, &registry.reference("tools/probe:v1")]);
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = generate_key(&cli, dir.path(), "release", PASSWORD);
    // The operator: everything on this registry must be signed by the release key.
    let policy = policy(dir.path(), "policy.json", &registry.addr, &public, None);
    let c = Containerd::start_with(&[("WASM_OCI_POLICY", &policy)], ALLOW_LOOPBACK);
    c.import_hello();
    let label = |r: &str| format!("io.wasm-oci.reference={r}");
    // As the registry is named in the policy: refused.
    let out = c.run(
        &["--label", &label(&registry.reference("tools/probe:v1"))],
        "docker.io/library/wasmhello:v1",
        "as-written",
        &["probe", "args", "unsigned"],
    );
    assert!(!out.status.success(), "{}\n{}", describe(&out), c.log());
    // The pod respells it.
    let respelled = format!("127.0.0.1:0{port}/tools/probe:v1");
    let out = c.run(
        &["--label", &label(&respelled)],
        "docker.io/library/wasmhello:v1",
        "respelled",
        &["probe", "args", "unsigned"],
    );
    assert!(
        stderr(&out).contains(&format!(
            "{} is refused by scope docker",
            registry.reference("tools/probe:v1")
        )) && stderr(&out).contains("no signature"),
        "{}\n{}",
        describe(&out),
        c.log()
    );
    assert!(
        !(out.status.success() && stdout(&out) == "probe\nargs\nunsigned\n"),
        "a pod ran the unsigned {respelled} although scope {:?} needs a signature: {}",
        registry.addr,
        describe(&out)
    );
}

/// GAP (closed; by the README's letter, "the shim's pulls by reference", but against "a refused
/// module never runs"): the policy is consulted only when a pod names its module with
/// `io.wasm-oci.reference`. A pod that leaves the annotation out runs whatever module its
/// image's rootfs carries, under a policy whose default is `reject`.
#[test]
fn the_shim_refuses_a_rootfs_module_under_a_policy_that_rejects_everything() {
    use crate::support::{ALLOW_LOOPBACK, Containerd, stdout};
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    fs::write(&policy, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    let c = Containerd::start_with(&[("WASM_OCI_POLICY", &policy)], ALLOW_LOOPBACK);
    c.import_hello();
    let out = c.run(&[], "docker.io/library/wasmhello:v1", "rootfs", &[]);
    assert!(
        !(out.status.success() && stdout(&out) == HELLO),
        "a pod ran its rootfs module under a policy that rejects every image: {}",
        describe(&out)
    );
    // containerd shows why and what to do.
    assert!(
        stderr(&out).contains("needs a signed reference")
            && stderr(&out).contains("annotate io.wasm-oci.reference")
            && stderr(&out).contains("rootfs_modules"),
        "{}\n{}",
        describe(&out),
        c.log()
    );
    // The image's name, where containerd gives it, picks the scope: a reject default
    // covers it too.
    let out = c.run(
        &[
            "--label",
            "io.kubernetes.cri.image-name=docker.io/library/wasmhello:v1",
        ],
        "docker.io/library/wasmhello:v1",
        "rootfs-named",
        &[],
    );
    assert!(
        stderr(&out).contains("the default of policy")
            && stderr(&out).contains("docker.io/library/wasmhello:v1")
            && stderr(&out).contains("needs a signed reference"),
        "{}\n{}",
        describe(&out),
        c.log()
    );
}

/// The operator may still run rootfs modules under a policy: `[trust] rootfs_modules =
/// "allow"` in the shim config. A policy that accepts the image's name needs no opt-in.
#[test]
fn the_operator_may_allow_rootfs_modules_under_a_policy() {
    use crate::support::{Containerd, stdout};
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("reject.json");
    fs::write(&reject, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    let c = Containerd::start_with(
        &[("WASM_OCI_POLICY", &reject)],
        "[trust]\nrootfs_modules = \"allow\"\n",
    );
    c.import_hello();
    let out = c.run(&[], "docker.io/library/wasmhello:v1", "allowed", &[]);
    assert_eq!(stdout(&out), HELLO, "{}\n{}", describe(&out), c.log());
    drop(c);
    // Signatures needed elsewhere only: the image's own scope accepts it.
    let scoped = dir.path().join("scoped.json");
    fs::write(
        &scoped,
        r#"{"default":[{"type":"insecureAcceptAnything"}],
            "transports":{"docker":{"registry.example":[{"type":"reject"}]}}}"#,
    )
    .unwrap();
    let c = Containerd::start_with(&[("WASM_OCI_POLICY", &scoped)], "");
    c.import_hello();
    let out = c.run(
        &[
            "--label",
            "io.kubernetes.cri.image-name=docker.io/library/wasmhello:v1",
        ],
        "docker.io/library/wasmhello:v1",
        "accepted",
        &[],
    );
    assert_eq!(stdout(&out), HELLO, "{}\n{}", describe(&out), c.log());
    // Without the name, which scope applies is unknown: refused.
    let out = c.run(&[], "docker.io/library/wasmhello:v1", "unnamed", &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("name is not known"),
        "{}\n{}",
        describe(&out),
        c.log()
    );
}
