//! Attacks on credentials by a hostile registry (a scripted server, `support::Server`): token
//! realms in plain HTTP, redirects to other hosts, endless token answers, and credentials named
//! for one registry: each checks which headers reached which server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{
    Artifact, HELLO, Reply, Server, WasmOci, credentials, describe, exit_within, honest, sha256,
    stderr, tls, with_password,
};

#[test]
fn credentials_never_go_to_a_plain_http_realm_of_an_https_registry() {
    credentials();
    let certs = tempfile::tempdir().unwrap();
    let (config, ca) = tls(certs.path());
    let realm = Server::start(|_| {
        Reply::new(200)
            .header("Content-Type", "application/json")
            .body(r#"{"token":"anonymous-token"}"#)
    });
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"hostile\"",
        realm.url("/token")
    );
    let registry = Server::start_tls(config, move |request| {
        match request.header("authorization") {
            Some("Bearer anonymous-token") if request.path != "/v2/" => Reply::new(404),
            _ => Reply::new(401).header("WWW-Authenticate", &challenge),
        }
    });
    let reference = format!("{}/private/hello:v1", registry.addr);

    // --username: pull and login refuse to send them, and say why.
    for args in [
        vec!["pull", "--ca-file", &ca, &reference],
        vec!["login", "--ca-file", &ca, &registry.addr],
    ] {
        let out = with_password(&WasmOci::new(), &args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            stderr(&out).contains("plain-HTTP token service"),
            "{}",
            describe(&out)
        );
    }

    // An identity token in docker's config is not exchanged there either.
    let docker = tempfile::tempdir().unwrap();
    let identity = crate::support::secret("identity-t0ken-never-in-clear");
    std::fs::write(
        docker.path().join("config.json"),
        serde_json::json!({"auths": {&registry.addr: {"identitytoken": identity}}}).to_string(),
    )
    .unwrap();
    let out = WasmOci::new()
        .command()
        .args(["pull", "--ca-file", &ca, &reference])
        .env("DOCKER_CONFIG", docker.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("plain-HTTP token service"),
        "{}",
        describe(&out)
    );

    // Anonymous, the token service is asked (and the repository is not found with its token).
    let out = WasmOci::new().run(&["pull", "--ca-file", &ca, &reference]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("was not found"), "{}", describe(&out));
    let asked = realm.requests();
    assert!(!asked.is_empty());
    for request in asked {
        assert!(
            request.header("authorization").is_none(),
            "credentials reached the plain-HTTP token service: {}",
            request.path
        );
        assert_eq!(request.method, "GET", "{}", request.path);
    }
}

/// A guard more than a fix: reqwest already drops `Authorization` when a redirect leaves the
/// origin, and this keeps it so under the fetcher's own redirect policy.
#[test]
fn a_redirect_to_another_host_carries_no_credentials() {
    let basic = format!("Basic {}", credentials());
    let artifact = Artifact::hello();
    let layer = sha256(&artifact.wasm);
    let wasm = artifact.wasm.clone();
    let storage = Server::start(move |_| Reply::new(200).body(wasm.clone()));
    let elsewhere = storage.url("/signed/layer");
    let expected = basic.clone();
    let serve = honest(artifact);
    let registry = Server::start(move |request| {
        if request.header("authorization") != Some(expected.as_str()) {
            Reply::new(401).header("WWW-Authenticate", "Basic realm=\"hostile\"")
        } else if request.path.ends_with(&layer) {
            Reply::new(307).header("Location", &elsewhere)
        } else {
            serve(request)
        }
    });
    let out = with_password(
        &WasmOci::new(),
        &["run", &format!("{}/hello:v1", registry.addr)],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
    let fetched = storage.requests();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(
        fetched[0].header("authorization").is_none(),
        "the registry's credentials followed the redirect to another host"
    );
    assert!(fetched[0].header("referer").is_none(), "{:?}", fetched[0]);
}

#[test]
fn an_endless_token_answer_is_cut_off() {
    for status in [200, 401] {
        let realm = Server::start(move |_| Reply::new(status).endless());
        let challenge = format!(
            "Bearer realm=\"{}\",service=\"hostile\"",
            realm.url("/token")
        );
        let registry =
            Server::start(move |_| Reply::new(401).header("WWW-Authenticate", &challenge));
        let cli = WasmOci::new();
        let mut child = cli
            .command()
            .args(["pull", &format!("{}/hello:v1", registry.addr)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // At 6.4 MB/s, twenty seconds of buffering would be 128 MB; a cap is reached at once.
        let status = exit_within(&mut child, Duration::from_secs(20));
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "an endless token answer held the pull: {}",
            describe(&out)
        );
        assert!(!realm.requests().is_empty());
        // Cut off, not buffered: what went out is the cap (1 MiB for a token, 64 KiB for an
        // error) plus what the kernel's socket buffers took, far from 20 s worth (128 MB).
        let streamed = realm.streamed.load(Ordering::SeqCst);
        assert!(
            streamed < 16 << 20,
            "{streamed} bytes of an endless answer were read"
        );
    }
}

#[test]
fn username_credentials_go_to_the_named_registry_only() {
    let basic = format!("Basic {}", credentials());
    let expected = basic.clone();
    let named = Server::start(move |request| {
        if request.header("authorization") != Some(expected.as_str()) {
            return Reply::new(401).header("WWW-Authenticate", "Basic realm=\"named\"");
        }
        honest(Artifact::hello())(request)
    });
    let other =
        Server::start(|_| Reply::new(401).header("WWW-Authenticate", "Basic realm=\"other\""));

    // One registry named: its credentials go there.
    let out = with_password(
        &WasmOci::new(),
        &["pull", &format!("{}/hello:v1", named.addr)],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // A batch over two registries cannot say which one the password is for: refused, and
    // neither gets it.
    let before = named.requests().len();
    let out = with_password(
        &WasmOci::new(),
        &[
            "prefetch",
            "--no-compile",
            &format!("{}/hello:v1", named.addr),
            &format!("{}/hello:v1", other.addr),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--username gives credentials for one registry"),
        "{}",
        describe(&out)
    );
    assert_eq!(named.requests().len(), before);
    let asked = other.requests();
    assert!(
        asked
            .iter()
            .all(|r| r.header("authorization") != Some(basic.as_str())),
        "the other registry got the password: {asked:?}"
    );
    assert!(asked.is_empty(), "{asked:?}");
}
