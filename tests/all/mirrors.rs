//! Registry mirrors from containerd's `hosts.toml`: a second Docker Distribution holding
//! copies made with `skopeo copy` (what a regional mirror or Spegel holds), a counting proxy
//! in front of the origin, and the CLI and the shim reading the same host directory.

use std::fs;
use std::process::Command;

use crate::support::{
    ALLOW_LOOPBACK, Containerd, Fault, HELLO, Proxy, Registry, Secure, WasmOci, describe, secret,
    stderr, stdout, testdata,
};

const REPO: &str = "edge/hello:v1";

fn skopeo_copy(from: &str, to: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all"])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{from}"))
        .arg(format!("docker://{to}"))
        .output()
        .expect("skopeo is not installed: run ./scripts/test, which installs it");
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        describe(&out)
    );
}

/// The origin registry behind a counting proxy (what nodes name in references), and a
/// mirror registry holding a copy of `edge/hello:v1`.
struct Fleet {
    origin: Registry,
    /// In front of the origin: the registry every reference names.
    front: Proxy,
    mirror: Registry,
    hosts: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        Self::start_with(Registry::start(), None, Registry::start(), &[])
    }

    /// `hello.wasm` pushed to the origin (as `user`, when it wants one) as `edge/hello:v1`,
    /// copied to the mirror by skopeo (with `copy_args`, e.g. the mirror's credentials).
    fn start_with(
        origin: Registry,
        user: Option<(&str, &str)>,
        mirror: Registry,
        copy_args: &[&str],
    ) -> Fleet {
        let pusher = WasmOci::new();
        let push = |reference: &str| {
            let mut cmd = pusher.command();
            cmd.args(["push", testdata("hello.wasm").to_str().unwrap(), reference]);
            cmd
        };
        let out = match user {
            Some((user, password)) => {
                let mut cmd = push(&origin.reference(REPO));
                cmd.args(["--username", user, "--password-stdin"]);
                crate::support::output_with_stdin(cmd, password)
            }
            None => push(&origin.reference(REPO)).output().unwrap(),
        };
        assert!(out.status.success(), "{}", describe(&out));
        let mut src = Vec::new();
        if let Some((user, password)) = user {
            src.push(format!("--src-creds={user}:{password}"));
        }
        let mut args: Vec<&str> = src.iter().map(String::as_str).collect();
        args.extend_from_slice(copy_args);
        skopeo_copy(&origin.reference(REPO), &mirror.reference(REPO), &args);
        let front = Proxy::start(&origin.addr, Fault::None);
        Fleet {
            origin,
            front,
            mirror,
            hosts: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `hosts.toml` for the origin's front, in the directory named `host_port_` as
    /// containerd names it for a registry with a port.
    fn hosts_toml(&self, text: &str) {
        let (host, port) = self.front.addr.rsplit_once(':').unwrap();
        let dir = self.hosts.path().join(format!("{host}_{port}_"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("hosts.toml"), text).unwrap();
    }

    /// `[host."http://mirror"]` with `capabilities`, then the origin.
    fn mirror_at(&self, addr: &str, capabilities: &str) {
        self.hosts_toml(&format!(
            "[host.\"http://{addr}\"]\n  capabilities = [{capabilities}]\n"
        ));
    }

    fn reference(&self) -> String {
        self.front.reference(REPO)
    }

    fn node(&self) -> WasmOci {
        WasmOci::new()
    }

    fn pull(&self, node: &WasmOci, reference: &str) -> serde_json::Value {
        let out = node.run(&[
            "pull",
            "--json",
            "--hosts-dir",
            self.hosts.path().to_str().unwrap(),
            reference,
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Blob downloads the origin served.
    fn origin_blobs(&self) -> usize {
        self.front.seen(|s| s.blob_gets.len())
    }
}

fn hello_bytes() -> Vec<u8> {
    fs::read(testdata("hello.wasm")).unwrap()
}

/// The layer in the cache of `node` is hello.wasm, byte for byte, and every blob verifies.
fn assert_stored_well(node: &WasmOci, layer: &str) {
    let hex = layer.strip_prefix("sha256:").unwrap();
    let stored = fs::read(node.cache.path().join("v1/blobs/sha256").join(hex)).unwrap();
    assert_eq!(stored, hello_bytes());
    let out = node.run(&["cache", "verify", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"], serde_json::json!([]), "{report}");
    assert!(
        node.ingest().is_empty(),
        "left in ingest: {:?}",
        node.ingest()
    );
}

#[test]
fn two_nodes_pull_through_the_mirror_and_the_origin_sends_no_blob() {
    let fleet = Fleet::start();
    let counter = Proxy::start(&fleet.mirror.addr, Fault::None);
    fleet.mirror_at(&counter.addr, "\"pull\", \"resolve\"");
    let reference = fleet.reference();
    for node in [fleet.node(), fleet.node()] {
        let pulled = fleet.pull(&node, &reference);
        let layer = pulled["layer_digest"].as_str().unwrap();
        // The mirror served the index, the manifest, the config and the layer.
        let sources = pulled["sources"].as_object().unwrap();
        assert_eq!(sources.len(), 4, "{pulled}");
        assert!(sources.values().all(|h| h == &counter.addr), "{pulled}");
        assert_stored_well(&node, layer);
        // inspect names the host that served each blob; run needs nothing more.
        let inspected: serde_json::Value =
            serde_json::from_str(&node.ok(&["inspect", "--json", &reference])).unwrap();
        assert_eq!(inspected["sources"][layer], counter.addr.as_str());
        assert_eq!(node.ok(&["run", "--pull", "never", &reference]), HELLO);
        let log = fs::read_to_string(node.log_file()).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("blob served") && l.contains(&counter.addr)),
            "the debug log names the host"
        );
    }
    assert_eq!(fleet.origin_blobs(), 0, "the origin sent a blob");
    assert_eq!(fleet.front.asked("GET /v2/edge/hello/manifests/"), 0);
    // Both nodes asked the mirror, saying which registry they meant, as containerd does.
    let gets = counter.seen(|s| s.blob_gets.clone());
    assert_eq!(gets.len(), 4, "{gets:?}");
    let ns = format!("?ns={} ", fleet.front.addr);
    assert!(gets.iter().all(|g| g.contains(&ns)), "{gets:?}");
}

#[test]
fn what_the_mirror_lacks_or_cannot_serve_comes_from_the_origin() {
    let mut fleet = Fleet::start();
    let mirror_addr = fleet.mirror.addr.clone();
    fleet.mirror_at(&mirror_addr, "\"pull\", \"resolve\"");
    // Only the origin has this one: the mirror answers 404.
    let only_origin = fleet.origin.reference("edge/probe:v1");
    WasmOci::new().ok(&[
        "push",
        crate::support::guests().probe.to_str().unwrap(),
        &only_origin,
    ]);
    let node = fleet.node();
    let pulled = fleet.pull(&node, &fleet.front.reference("edge/probe:v1"));
    let sources = pulled["sources"].as_object().unwrap();
    assert!(sources.values().all(|h| h == &fleet.front.addr), "{pulled}");
    assert_eq!(fleet.origin_blobs(), 2, "config and layer from the origin");

    // The mirror stopped: one try, one log line, and the origin serves.
    fleet.mirror.stop();
    let node = fleet.node();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        fleet.hosts.path().to_str().unwrap(),
        &fleet.reference(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_stored_well(&node, pulled["layer_digest"].as_str().unwrap());
    assert_eq!(fleet.origin_blobs(), 4);
    let log = fs::read_to_string(node.log_file()).unwrap();
    let skipped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("mirror {mirror_addr} failed")))
        .collect();
    // The manifest by tag, once: not retried, and the blobs not asked of it (it is down).
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(log.contains(&format!("mirror {mirror_addr} is unreachable")));
    assert!(skipped[0].contains("WARN"), "{}", skipped[0]);
    assert!(!log.contains("retrying"), "a dead mirror was retried");
}

#[test]
fn a_mirror_that_corrupts_blobs_is_skipped_and_nothing_bad_is_stored() {
    let fleet = Fleet::start();
    let corrupting = Proxy::start(&fleet.mirror.addr, Fault::CorruptBlobs);
    fleet.mirror_at(&corrupting.addr, "\"pull\", \"resolve\"");
    let node = fleet.node();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        fleet.hosts.path().to_str().unwrap(),
        &fleet.reference(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = pulled["layer_digest"].as_str().unwrap();
    // The manifest came from the mirror (it verified); both blobs from the origin.
    assert_eq!(
        pulled["sources"][layer],
        fleet.front.addr.as_str(),
        "{pulled}"
    );
    assert_eq!(corrupting.seen(|s| s.blob_gets.len()), 2);
    assert_eq!(fleet.origin_blobs(), 2);
    let log = fs::read_to_string(node.log_file()).unwrap();
    let skipped = log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "mirror {} failed to serve the blob",
                corrupting.addr
            ))
        })
        .count();
    assert_eq!(skipped, 2, "one line per corrupted blob");
    assert_stored_well(&node, layer);
    assert_eq!(
        node.ok(&["run", "--pull", "never", &fleet.reference()]),
        HELLO
    );
}

#[test]
fn a_mirror_answering_503_gets_one_try_per_request_and_the_origin_serves() {
    let fleet = Fleet::start();
    let failing = Proxy::start(&fleet.mirror.addr, Fault::First503(1000));
    fleet.mirror_at(&failing.addr, "\"pull\", \"resolve\"");
    let node = fleet.node();
    let pulled = fleet.pull(&node, &fleet.reference());
    let layer = pulled["layer_digest"].as_str().unwrap();
    assert_eq!(
        pulled["sources"][layer],
        fleet.front.addr.as_str(),
        "{pulled}"
    );
    assert_stored_well(&node, layer);
    // Its /v2/ once, then once for the tag (the index), the wasm manifest and each blob: no
    // backoff spent on it.
    assert_eq!(failing.seen(|s| s.requests), 5);
    let log = fs::read_to_string(node.log_file()).unwrap();
    assert!(!log.contains("retrying"), "a failing mirror was retried");
}

#[test]
fn a_mirror_without_resolve_is_not_asked_for_tags() {
    let fleet = Fleet::start();
    let counter = Proxy::start(&fleet.mirror.addr, Fault::None);
    // Here the origin is named as containerd's `server`, and the directory as `host:port`.
    let dir = fleet.hosts.path().join(&fleet.front.addr);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            fleet.front.addr, counter.addr
        ),
    )
    .unwrap();
    let node = fleet.node();
    let pulled = fleet.pull(&node, &fleet.reference());
    assert_eq!(counter.asked("GET /v2/edge/hello/manifests/v1"), 0);
    assert_eq!(fleet.front.asked("GET /v2/edge/hello/manifests/v1"), 1);
    // Everything by digest came from the mirror.
    assert_eq!(fleet.origin_blobs(), 0);
    assert_eq!(counter.seen(|s| s.blob_gets.len()), 2);
    assert_eq!(
        pulled["sources"][pulled["layer_digest"].as_str().unwrap()],
        counter.addr.as_str()
    );
}

#[test]
fn credentials_go_only_to_the_host_they_are_for() {
    use base64::Engine as _;
    const ORIGIN_PW: &str = "origin-only-Pa55";
    const MIRROR_PW: &str = "mirror-only-Pa55";
    let origin = Registry::start_secure(Secure {
        tls: false,
        user: Some(("origin-user", secret(ORIGIN_PW))),
    });
    let mirror = Registry::start_secure(Secure {
        tls: false,
        user: Some(("mirror-user", secret(MIRROR_PW))),
    });
    let fleet = Fleet::start_with(
        origin,
        Some(("origin-user", ORIGIN_PW)),
        mirror,
        &[&format!("--dest-creds=mirror-user:{MIRROR_PW}")],
    );
    let counter = Proxy::start(&fleet.mirror.addr, Fault::None);
    fleet.mirror_at(&counter.addr, "\"pull\", \"resolve\"");
    let basic = |user: &str, pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    let origin_auth = basic("origin-user", ORIGIN_PW);
    let mirror_auth = basic("mirror-user", MIRROR_PW);
    secret(&origin_auth);
    secret(&mirror_auth);
    let docker = tempfile::tempdir().unwrap();
    let config = |auths: serde_json::Value| {
        fs::write(
            docker.path().join("config.json"),
            serde_json::json!({ "auths": auths }).to_string(),
        )
        .unwrap();
    };
    let b64 = |user: &str, pw: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    };
    let pull = |node: &WasmOci| {
        let out = node
            .command()
            .env("DOCKER_CONFIG", docker.path())
            .args(["pull", "--json", "--hosts-dir"])
            .arg(fleet.hosts.path())
            .arg(fleet.reference())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    // The mirror has its own credentials: it serves, with them, and never sees the origin's.
    config(serde_json::json!({
        &fleet.front.addr: { "auth": b64("origin-user", ORIGIN_PW) },
        &counter.addr: { "auth": b64("mirror-user", MIRROR_PW) },
    }));
    let pulled = pull(&fleet.node());
    assert_eq!(
        pulled["sources"][pulled["layer_digest"].as_str().unwrap()],
        counter.addr.as_str()
    );
    assert_eq!(fleet.origin_blobs(), 0);
    let at_mirror = counter.seen(|s| s.authorizations.clone());
    assert!(at_mirror.contains(&mirror_auth), "{at_mirror:?}");
    assert!(
        !at_mirror.contains(&origin_auth),
        "the mirror saw the origin's password"
    );

    // No credentials for the mirror: it refuses, and the origin's are still not sent there.
    config(serde_json::json!({
        &fleet.front.addr: { "auth": b64("origin-user", ORIGIN_PW) },
    }));
    let pulled = pull(&fleet.node());
    assert_eq!(
        pulled["sources"][pulled["layer_digest"].as_str().unwrap()],
        fleet.front.addr.as_str()
    );
    let at_mirror = counter.seen(|s| s.authorizations.clone());
    assert!(
        !at_mirror.contains(&origin_auth),
        "the mirror saw the origin's password"
    );
    let at_origin = fleet.front.seen(|s| s.authorizations.clone());
    assert!(at_origin.contains(&origin_auth));
    assert!(
        !at_origin.contains(&mirror_auth),
        "the origin saw the mirror's password"
    );
}

#[test]
fn a_tls_mirror_is_trusted_with_the_ca_its_hosts_toml_names() {
    let mirror = Registry::start_secure(Secure {
        tls: true,
        user: None,
    });
    let fleet = Fleet::start_with(Registry::start(), None, mirror, &[]);
    // `ca` relative to the hosts.toml's directory, as containerd reads it.
    let (host, port) = fleet.front.addr.rsplit_once(':').unwrap();
    let dir = fleet.hosts.path().join(format!("{host}_{port}_"));
    fs::create_dir_all(&dir).unwrap();
    fs::copy(fleet.mirror.ca_file(), dir.join("mirror-ca.crt")).unwrap();
    fleet.hosts_toml(&format!(
        "[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"mirror-ca.crt\"\n",
        fleet.mirror.addr
    ));
    let node = fleet.node();
    let pulled = fleet.pull(&node, &fleet.reference());
    assert_eq!(
        pulled["sources"][pulled["layer_digest"].as_str().unwrap()],
        fleet.mirror.addr.as_str(),
        "{pulled}"
    );
    assert_eq!(fleet.origin_blobs(), 0);

    // Without the CA the mirror is not trusted: skipped, and the origin serves.
    fleet.hosts_toml(&format!("[host.\"https://{}\"]\n", fleet.mirror.addr));
    let pulled = fleet.pull(&fleet.node(), &fleet.reference());
    assert_eq!(
        pulled["sources"][pulled["layer_digest"].as_str().unwrap()],
        fleet.front.addr.as_str()
    );
}

#[test]
fn a_broken_hosts_toml_is_named_not_ignored() {
    let fleet = Fleet::start();
    fleet.hosts_toml("[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pul\"]\n");
    let out = fleet.node().run(&[
        "pull",
        "--hosts-dir",
        fleet.hosts.path().to_str().unwrap(),
        &fleet.reference(),
    ]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("hosts.toml") && said.contains("unknown capability"),
        "{said}"
    );
    assert_eq!(fleet.origin_blobs(), 0);
}

#[test]
fn the_shim_pulls_through_the_mirror_of_containerds_hosts_toml() {
    let fleet = Fleet::start();
    let counter = Proxy::start(&fleet.mirror.addr, Fault::None);
    fleet.mirror_at(&counter.addr, "\"pull\", \"resolve\"");
    // The operator's environment of containerd names the directory, as its config_path does.
    let c = Containerd::start_with(
        &[("WASM_OCI_HOSTS_DIR", fleet.hosts.path())],
        ALLOW_LOOPBACK,
    );
    c.import_hello();
    let annotation = format!("io.wasm-oci.reference={}", fleet.reference());
    let out = c.run(
        &["--label", &annotation],
        "docker.io/library/wasmhello:v1",
        "mirrored",
        &[],
    );
    assert_eq!(stdout(&out), HELLO, "{}\n{}", describe(&out), c.log());
    assert_eq!(fleet.origin_blobs(), 0, "the origin sent a blob");
    assert_eq!(counter.seen(|s| s.blob_gets.len()), 2);
    let log = fs::read_to_string(c.shim_log()).unwrap_or_default();
    assert!(log.contains("blob served") && log.contains(&counter.addr));
}
