//! Attacks on push by a hostile registry (a scripted server, `support::Server`): upload
//! locations on another host or in plain HTTP get no credentials and no bytes.

use crate::support::{
    Reply, Server, WasmOci, credentials, describe, stderr, testdata, tls, with_password,
};

#[test]
fn an_upload_location_on_another_host_gets_no_credentials() {
    let basic = format!("Basic {}", credentials());
    let elsewhere = Server::start(|request| match request.method.as_str() {
        "PUT" => Reply::new(201),
        _ => Reply::new(404),
    });
    let upload = elsewhere.url("/upload/1?state=abc");
    let expected = basic.clone();
    let registry = Server::start(move |request| {
        if request.header("authorization") != Some(expected.as_str()) {
            return Reply::new(401).header("WWW-Authenticate", "Basic realm=\"hostile\"");
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/v2/") => Reply::new(200),
            ("HEAD", _) => Reply::new(404),
            ("POST", p) if p.ends_with("/blobs/uploads/") => {
                Reply::new(202).header("Location", &upload)
            }
            ("PUT", p) if p.contains("/manifests/") => Reply::new(201),
            _ => Reply::new(404),
        }
    });
    let hello = testdata("hello.wasm");
    let out = with_password(
        &WasmOci::new(),
        &[
            "push",
            hello.to_str().unwrap(),
            &format!("{}/hello:v1", registry.addr),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let uploads = elsewhere.requests();
    assert_eq!(
        uploads.len(),
        5,
        "the wasm layer and config, the Linux image's layer and two configs: {uploads:?}"
    );
    for upload in uploads {
        assert_eq!(upload.method, "PUT");
        assert!(
            upload.header("authorization").is_none(),
            "the registry's credentials went to another host: {}",
            upload.path
        );
    }
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.header("authorization") == Some(basic.as_str())),
        "the registry itself got the credentials"
    );
}

#[test]
fn an_https_registry_cannot_send_an_upload_to_plain_http() {
    let certs = tempfile::tempdir().unwrap();
    let (config, ca) = tls(certs.path());
    let plain = Server::start(|_| Reply::new(201));
    let upload = plain.url("/upload/1");
    let registry = Server::start_tls(config, move |request| {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/v2/") => Reply::new(200),
            ("HEAD", _) => Reply::new(404),
            ("POST", p) if p.ends_with("/blobs/uploads/") => {
                Reply::new(202).header("Location", &upload)
            }
            _ => Reply::new(201),
        }
    });
    let hello = testdata("hello.wasm");
    let out = WasmOci::new().run(&[
        "push",
        "--ca-file",
        &ca,
        hello.to_str().unwrap(),
        &format!("{}/hello:v1", registry.addr),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("not sent there in clear"),
        "{}",
        describe(&out)
    );
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
}
