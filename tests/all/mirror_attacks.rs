//! Attacks on registry mirrors (#17), each a hole a red team found in review: a mirror's
//! redirect, trickle, oversize or empty answer, and a silent mirror. (The load racing a prune
//! found with them is in cache_attacks.rs.)

use std::fs;
use std::time::Duration;

use crate::support::{Registry, Reply, Request, Server, WasmOci, describe, testdata};

const REPO: &str = "edge/hello:v1";

/// A registry's "no such manifest".
fn not_found() -> Reply {
    Reply::new(404)
        .header("Content-Type", "application/json")
        .body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#)
}

/// A redirect of the same path to `addr`.
fn redirect_to(addr: &str, path: &str) -> Reply {
    Reply::new(307).header("Location", &format!("http://{addr}{path}"))
}

/// `/v2/` and anything else a mirror is asked that the test does not script: open, empty.
fn empty_json() -> Reply {
    Reply::new(200)
        .header("Content-Type", "application/json")
        .body("{}")
}

/// A 200 with a manifest's media type and `body`.
fn manifest_body(body: impl Into<Vec<u8>>) -> Reply {
    Reply::new(200)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
}

/// An origin holding hello.wasm as `edge/hello:v1`.
fn origin_with_hello() -> Registry {
    let origin = Registry::start();
    let pusher = WasmOci::new();
    let out = pusher.run(&[
        "push",
        testdata("hello.wasm").to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    origin
}

/// `DIR/<host>_<port>_/hosts.toml` for `registry` (`host:port`).
fn hosts_toml(dir: &std::path::Path, registry: &str, text: &str) {
    let (host, port) = registry.rsplit_once(':').unwrap();
    let d = dir.join(format!("{host}_{port}_"));
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("hosts.toml"), text).unwrap();
}

/// The operator gives a mirror a secret header in hosts.toml (`[host."..".header]`, as an
/// API key some mirrors want). The fetcher attaches it only to URLs of the mirror's own origin
/// (`Registry::send` checks `owns`), but reqwest follows the mirror's redirect with every
/// header of the original request except `Authorization`/`Cookie`: a mirror (or the origin,
/// redirecting blobs to a CDN) sends the key to any host it names.
#[test]
fn a_hosts_toml_header_does_not_follow_a_redirect_to_another_host() {
    const KEY: &str = "mirror-api-key-9f3b1c";
    let origin = origin_with_hello();
    let elsewhere = Server::start(|_| not_found());
    let target = elsewhere.addr.clone();
    let mirror = Server::start(move |r: &Request| redirect_to(&target, &r.path));
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"http://{}\".header]\n    x-mirror-key = \"{KEY}\"\n",
            mirror.addr, mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    // The mirror fails; the origin serves.
    assert!(out.status.success(), "{}", describe(&out));
    let at_mirror = mirror.header_lines();
    assert!(
        at_mirror.iter().any(|l| l.contains(KEY)),
        "the mirror was sent its header: {at_mirror:?}"
    );
    assert!(
        !elsewhere.requests().is_empty(),
        "the mirror's redirect was followed"
    );
    let leaked: Vec<_> = elsewhere
        .header_lines()
        .into_iter()
        .filter(|l| l.contains(KEY))
        .collect();
    assert!(
        leaked.is_empty(),
        "the mirror's hosts.toml header reached {} , a host the mirror redirected to: {leaked:?}",
        elsewhere.addr
    );
}

/// A mirror that answers, but trickles a blob (a chunk of one byte every two seconds) is
/// never "failing": reqwest's read timeout (60 s) restarts with every byte, the mirror gets no
/// deadline of its own, and is not marked down. Every node pulling through it waits for it,
/// here until the blob's declared size is exceeded (minutes); a larger layer, for ever. A
/// mirror is less trusted than the origin, and "a failing mirror is skipped for the next
/// host": the pull must reach the origin, having hung up on the mirror before the blob ended.
/// The trickle stops at the blob's size, so that a pull that waits for it ends too (after
/// some six minutes) and fails the test on what the mirror saw rather than on a clock.
#[test]
fn a_mirror_trickling_a_blob_does_not_stall_the_pull() {
    let origin = origin_with_hello();
    let blob_size = fs::metadata(testdata("hello.wasm")).unwrap().len();
    let mirror = Server::start(move |r: &Request| {
        if r.path.contains("/blobs/") {
            Reply::new(200)
                .header("Content-Type", "application/octet-stream")
                .trickle(Duration::from_secs(2), blob_size)
        } else {
            empty_json()
        }
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(
        mirror.asked_for("/blobs/") > 0,
        "the mirror was asked for a blob"
    );
    let trickled = mirror.streamed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        trickled < blob_size,
        "the pull of a {blob_size}-byte module waited for all {trickled} bytes the trickling \
         mirror sent, instead of giving it up for the origin"
    );
    assert!(
        out.status.success(),
        "the origin serves once the mirror is given up: {}",
        describe(&out)
    );
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        pulled["sources"].to_string().contains(&origin.addr),
        "{pulled}"
    );
}

/// A pull-only mirror asked for a manifest by digest answers with more than the 4 MiB a
/// manifest may be. `Registry::manifest` verifies the digest only when the body is within the
/// limit, so the oversize answer comes back as the mirror's success; `pull` then refuses it
/// with `check_document_size` — an error of the whole pull, not of the mirror. One bad
/// answer from a less-trusted mirror fails every pull by digest instead of the next host
/// (the origin, which has it) being asked.
#[test]
fn a_mirror_answering_an_oversize_manifest_is_skipped_for_the_origin() {
    let origin = origin_with_hello();
    // The manifest's digest, as the origin has it.
    let first = WasmOci::new();
    let out = first.run(&["pull", "--json", &origin.reference(REPO)]);
    assert!(out.status.success(), "{}", describe(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest_digest = pulled["digest"].as_str().unwrap().to_owned();

    let mirror = Server::start(|r: &Request| {
        if r.path.contains("/manifests/") {
            manifest_body(" ".repeat((4 << 20) + 1))
        } else if r.path.contains("/blobs/") {
            not_found()
        } else {
            empty_json()
        }
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            mirror.addr
        ),
    );
    let by_digest = format!("{}/edge/hello@{manifest_digest}", origin.addr);
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &by_digest,
    ]);
    assert!(
        mirror.asked_for("/manifests/") > 0,
        "the mirror was asked for the manifest"
    );
    assert!(
        out.status.success(),
        "a mirror's oversize manifest failed the pull instead of the origin being asked: {}",
        describe(&out)
    );
}

/// A resolve-capable mirror answering a tag with a 200 that is not a manifest is one bad
/// answer of a less-trusted host: the next host (the origin) is asked, and the pull succeeds.
#[test]
fn a_mirror_answering_a_tag_with_no_manifest_is_skipped_for_the_origin() {
    let origin = origin_with_hello();
    let mirror = Server::start(|r: &Request| {
        if r.path.contains("/manifests/") {
            manifest_body("<html>mirror maintenance</html>")
        } else if r.path.contains("/blobs/") {
            not_found()
        } else {
            empty_json()
        }
    });
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(
        mirror.asked_for("/manifests/v1") > 0,
        "the mirror was asked for the tag"
    );
    assert!(
        out.status.success(),
        "a mirror's unparseable manifest failed the pull: {}",
        describe(&out)
    );
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        pulled["sources"].to_string().contains(&origin.addr),
        "{pulled}"
    );
}

/// A mirror that accepts connections and never says a word times out once (its own read
/// timeout, shorter than the origin's), and is then passed over for the rest of the pull: it
/// is not asked again for the config or the layer, each of which would cost another timeout.
#[test]
fn a_silent_mirror_is_asked_once_and_the_origin_serves() {
    let origin = origin_with_hello();
    let mirror = Server::start(|_| Reply::silent());
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(
        hosts.path(),
        &origin.addr,
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"2s\"\n",
            mirror.addr
        ),
    );
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &origin.reference(REPO),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        mirror.requests().len(),
        1,
        "the silent mirror was asked again after it timed out: {:?}",
        mirror.requests()
    );
}
