//! Attacks on precompiled code: each offers a node native code for `hello:v1` that must not
//! be loaded (code of a module that prints something else, where it could), and each checks
//! that the node compiled locally (its log, the compiled file in its cache) and that the
//! guest still ran as itself.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::precompiled::{
    ADOPTED, COMPILED_LOCALLY, COMPILED_TYPE, Fleet, assert_hello, compiled_files, log,
};
use crate::support::{Reply, Request, Server, WasmOci, put_manifest};

/// A module that prints this instead of hello.
const EVIL: &str = "Evil from a forged referrer!\n";

fn evil_wasm(dir: &Path) -> PathBuf {
    let message = EVIL.strip_suffix('\n').expect("a line");
    crate::cri_image::printer_file(dir, "evil.wasm", message)
}

/// Evil's own precompiled referrers (`hello:evil`, signed by the fleet's key as a release
/// would be): what `compile --push` printed.
fn evil_release(fleet: &Fleet) -> Vec<serde_json::Value> {
    let evil = fleet.registry.reference("hello:evil");
    let wasm = evil_wasm(fleet.dir.path());
    fleet.ok(&["push", wasm.to_str().unwrap(), &evil]);
    fleet.ok(&["sign", &evil, "--key", fleet.key.to_str().unwrap()]);
    let released = fleet.compile_push(&evil, &[]);
    // It is evil: run, it says so.
    let out = WasmOci::new().run(&["run", &evil]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), EVIL);
    released
}

/// Attaches `code` to `hello:v1` as precompiled code annotated for `engine` on `target` and
/// hello's wasm, signed with `key` when one is given: the referrer's digest.
fn forge(fleet: &Fleet, code: &[u8], engine: &str, target: &str, key: Option<&Path>) -> String {
    let file = fleet.dir.path().join("forged.cwasm");
    fs::write(&file, code).unwrap();
    let annotation = |k: &str, v: &str| format!("dev.wasm-oci.compiled.{k}={v}");
    // Attached where `compile --push` attaches code: to the wasm manifest the tag's index
    // names, which is where a node looks for it.
    let module = fleet.hello_manifest();
    let out = fleet.ok(&[
        "attach",
        "--json",
        &module,
        file.to_str().unwrap(),
        "--artifact-type",
        COMPILED_TYPE,
        "-a",
        &annotation("wasmtime", "48.0.8"),
        "-a",
        &annotation("target", target),
        "-a",
        &annotation("engine", engine),
        "-a",
        &annotation("kind", "module"),
        "-a",
        &annotation("wasm", &fleet.hello_layer()),
    ]);
    let digest = serde_json::from_str::<serde_json::Value>(&out).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    if let Some(key) = key {
        let at = format!("{}@{digest}", fleet.registry.reference("hello"));
        fleet.ok(&["sign", &at, "--key", key.to_str().unwrap()]);
    }
    digest
}

/// The node compiled hello itself: it ran hello, logged `reason` for a refused referrer and a
/// local compile, and holds no code equal to `evil`.
fn compiled_locally(node: &WasmOci, out: &std::process::Output, reason: &str, evil: &[u8]) {
    assert_hello(out);
    let log = log(node);
    assert!(log.contains(reason), "expected {reason:?} in:\n{log}");
    assert!(log.contains(COMPILED_LOCALLY), "{log}");
    let files = compiled_files(node);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_ne!(files[0].1, evil, "the forged code is in the cache");
}

#[test]
fn an_unsigned_referrer_is_not_loaded() {
    let fleet = Fleet::new();
    let evil = evil_release(&fleet);
    let code = fleet.code_of(evil[0]["digest"].as_str().unwrap());
    let engine = evil[0]["engine"].as_str().unwrap();
    let target = evil[0]["target"].as_str().unwrap();
    forge(&fleet, &code, engine, target, None);
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    compiled_locally(&node, &out, "it has no signature", &code);
    assert!(!log(&node).contains(ADOPTED));
}

#[test]
fn a_referrer_signed_by_a_key_the_policy_does_not_name_is_not_loaded() {
    let fleet = Fleet::new();
    let evil = evil_release(&fleet);
    let code = fleet.code_of(evil[0]["digest"].as_str().unwrap());
    let other = Fleet::generate_key(&fleet.builder, fleet.dir.path(), "other");
    forge(
        &fleet,
        &code,
        evil[0]["engine"].as_str().unwrap(),
        evil[0]["target"].as_str().unwrap(),
        Some(&other),
    );
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    compiled_locally(&node, &out, "not made by the key", &code);
}

/// Evil's own referrer, validly signed by the fleet's key, listed for hello with annotations
/// that claim hello's wasm: its manifest's subject gives it away.
#[test]
fn a_validly_signed_referrer_of_another_module_is_not_loaded() {
    let fleet = Fleet::new();
    let evil = evil_release(&fleet);
    let code = fleet.code_of(evil[0]["digest"].as_str().unwrap());
    let subject = fleet.hello_manifest_digest();
    let artifact = crate::support::manifest(
        &fleet.registry,
        "hello",
        evil[0]["digest"].as_str().unwrap(),
    );
    let mut annotations = artifact["annotations"].clone();
    annotations["dev.wasm-oci.compiled.wasm"] = fleet.hello_layer().into();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": evil[0]["digest"],
            "size": serde_json::to_vec(&artifact).unwrap().len(),
            "artifactType": COMPILED_TYPE,
            "annotations": annotations,
        }],
    });
    put_manifest(
        &fleet.registry,
        "hello",
        &subject.replacen(':', "-", 1),
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    compiled_locally(&node, &out, "its subject is", &code);
}

#[test]
fn code_swapped_after_signing_is_not_loaded() {
    let fleet = Fleet::new();
    let evil = evil_release(&fleet);
    let code = fleet.code_of(evil[0]["digest"].as_str().unwrap());
    let honest = fleet.compile_push(&fleet.hello, &[]);
    for referrer in &honest {
        let artifact = crate::support::manifest(
            &fleet.registry,
            "hello",
            referrer["digest"].as_str().unwrap(),
        );
        let blob = fleet
            .registry
            .blob_file(artifact["layers"][0]["digest"].as_str().unwrap());
        fs::write(&blob, &code).unwrap();
    }
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    compiled_locally(&node, &out, "cannot be fetched whole", &code);
}

/// A node whose engine differs (`--fuel`) finds no code for it; and code compiled with other
/// settings under annotations that claim this engine is refused by wasmtime when loaded,
/// and compiled afresh.
#[test]
fn a_referrer_for_another_engine_configuration_is_not_loaded() {
    let fleet = Fleet::new();
    let honest = fleet.compile_push(&fleet.hello, &[]);
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &["--fuel", "100000000"]);
    let code = fleet.code_of(honest[0]["digest"].as_str().unwrap());
    compiled_locally(
        &node,
        &out,
        "no precompiled referrer for this host and engine",
        &code,
    );
    assert!(log(&node).contains("and this one loads"), "{}", log(&node));

    // Signed by the fleet's key, annotated for `run`'s engine, compiled with fuel.
    let wasm = fs::read(evil_wasm(fleet.dir.path())).unwrap();
    let mut config = wasmtime::Config::new();
    config
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
        .consume_fuel(true);
    let fuel_code = wasmtime::Engine::new(&config)
        .unwrap()
        .precompile_module(&wasm)
        .unwrap();
    let fleet = Fleet::new();
    let honest = fleet.compile_push(&fleet.hello, &[]);
    // Only the forged one is on offer.
    let subject = fleet.hello_manifest_digest().replacen(':', "-", 1);
    put_manifest(
        &fleet.registry,
        "hello",
        &subject,
        "application/vnd.oci.image.index.v1+json",
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    );
    forge(
        &fleet,
        &fuel_code,
        honest[0]["engine"].as_str().unwrap(),
        honest[0]["target"].as_str().unwrap(),
        Some(&fleet.key),
    );
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    // Adopted (signed), then refused by wasmtime's own check, then compiled.
    compiled_locally(&node, &out, "ignoring compiled code", &fuel_code);
    assert!(log(&node).contains(ADOPTED));
}

/// A truncated download (the registry serves half) never reaches the cache; truncated code
/// the fleet's key signed is refused by wasmtime when loaded, and compiled afresh.
#[test]
fn truncated_compiled_code_is_not_loaded() {
    let fleet = Fleet::new();
    let honest = fleet.compile_push(&fleet.hello, &[]);
    let code = fleet.code_of(honest[0]["digest"].as_str().unwrap());
    let half = code[..code.len() / 2].to_vec();
    for referrer in &honest {
        let artifact = crate::support::manifest(
            &fleet.registry,
            "hello",
            referrer["digest"].as_str().unwrap(),
        );
        let blob = fleet
            .registry
            .blob_file(artifact["layers"][0]["digest"].as_str().unwrap());
        fs::write(&blob, &half).unwrap();
    }
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    compiled_locally(&node, &out, "cannot be fetched whole", &half);

    let fleet = Fleet::new();
    let honest = fleet.compile_push(&fleet.hello, &[]);
    let code = fleet.code_of(honest[0]["digest"].as_str().unwrap());
    let half = code[..code.len() / 2].to_vec();
    let subject = fleet.hello_manifest_digest().replacen(':', "-", 1);
    put_manifest(
        &fleet.registry,
        "hello",
        &subject,
        "application/vnd.oci.image.index.v1+json",
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    );
    forge(
        &fleet,
        &half,
        honest[0]["engine"].as_str().unwrap(),
        honest[0]["target"].as_str().unwrap(),
        Some(&fleet.key),
    );
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    compiled_locally(&node, &out, "ignoring compiled code", &half);
}

/// One HTTP/1.0 exchange with `addr`: status, headers and body.
fn exchange(addr: &str, request: &Request) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.0\r\nHost: {addr}\r\n",
        request.method, request.path
    );
    for (k, v) in &request.headers {
        if ["accept", "range", "authorization"].contains(&k.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| {
            ["content-type", "docker-content-digest", "content-range"]
                .contains(&k.to_ascii_lowercase().as_str())
        })
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// A registry in front of the fleet's that answers every request as it does, but the
/// listing of hello's referrers, which `lists` answers, given how many came before.
fn hostile_lister(
    fleet: &Fleet,
    lists: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> (Server, Arc<AtomicUsize>) {
    let subject = fleet.hello_manifest_digest().replacen(':', "-", 1);
    let listing = format!("/v2/hello/manifests/{subject}");
    let upstream = fleet.registry.addr.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let server = Server::start(move |request: &Request| {
        if request.method == "GET" && request.path == listing {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            return Reply::new(200)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .body(lists(n));
        }
        let (status, headers, body) = exchange(&upstream, request);
        let mut reply = Reply::new(status).body(body);
        for (k, v) in headers {
            reply = reply.header(&k, &v);
        }
        reply
    });
    (server, count)
}

/// The fleet's policy for `hello` as a node reads it through `server`: the same key, for
/// signatures that name the fleet's registry.
fn policy_through(fleet: &Fleet, server: &Server) -> PathBuf {
    let path = fleet.dir.path().join("through.json");
    fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {format!("{}/hello", server.addr): [{
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

fn index_of(manifests: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap()
}

/// Each listing names another forgery (unsigned, another key's, another module's): the node
/// reads the list once, checks what it names by digest, and compiles.
#[test]
fn a_registry_that_lists_other_referrers_on_each_request_gets_nothing_loaded() {
    let fleet = Fleet::new();
    let evil = evil_release(&fleet);
    let code = fleet.code_of(evil[0]["digest"].as_str().unwrap());
    let engine = evil[0]["engine"].as_str().unwrap().to_owned();
    let target = evil[0]["target"].as_str().unwrap().to_owned();
    let unsigned = forge(&fleet, &code, &engine, &target, None);
    let other = Fleet::generate_key(&fleet.builder, fleet.dir.path(), "other");
    let theirs = forge(&fleet, &code, &engine, &target, Some(&other));
    let annotations = serde_json::json!({
        "dev.wasm-oci.compiled.wasmtime": "48.0.8",
        "dev.wasm-oci.compiled.target": target,
        "dev.wasm-oci.compiled.engine": engine,
        "dev.wasm-oci.compiled.kind": "module",
        "dev.wasm-oci.compiled.wasm": fleet.hello_layer(),
    });
    let entries: Vec<serde_json::Value> = [
        unsigned,
        theirs,
        evil[0]["digest"].as_str().unwrap().to_owned(),
    ]
    .into_iter()
    .map(|digest| {
        let artifact = crate::support::manifest(&fleet.registry, "hello", &digest);
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": serde_json::to_vec(&artifact).unwrap().len(),
            "artifactType": COMPILED_TYPE,
            "annotations": annotations,
        })
    })
    .collect();
    let (server, count) = hostile_lister(&fleet, move |n| {
        index_of(vec![entries[n % entries.len()].clone()])
    });
    let policy = policy_through(&fleet, &server);
    for _ in 0..3 {
        let node = WasmOci::new();
        let before = count.load(Ordering::SeqCst);
        let out = node.run(&[
            "run",
            "--policy",
            policy.to_str().unwrap(),
            &format!("{}/hello:v1", server.addr),
        ]);
        compiled_locally(&node, &out, "precompiled referrer refused", &code);
        assert_eq!(
            count.load(Ordering::SeqCst),
            before + 1,
            "the list is read once"
        );
    }
}

/// A list longer than any fleet's is refused unread; a long list of plausible entries costs
/// a few requests, not one per entry.
#[test]
fn a_huge_referrer_list_gets_nothing_loaded_and_costs_little() {
    let fleet = Fleet::new();
    let honest = fleet.compile_push(&fleet.hello, &[]);
    let engine = honest[0]["engine"].as_str().unwrap().to_owned();
    let target = honest[0]["target"].as_str().unwrap().to_owned();
    let layer = fleet.hello_layer();
    let (server, _) = hostile_lister(&fleet, move |n| {
        let many = if n == 0 { 20_000 } else { 5_000 };
        index_of(
            (0..many)
                .map(|i| {
                    let mut entry = serde_json::json!({
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": format!("sha256:{:064x}", i),
                        "size": 500,
                    });
                    if n > 0 {
                        entry["artifactType"] = COMPILED_TYPE.into();
                        entry["annotations"] = serde_json::json!({
                            "dev.wasm-oci.compiled.target": target,
                            "dev.wasm-oci.compiled.engine": engine,
                            "dev.wasm-oci.compiled.kind": "module",
                            "dev.wasm-oci.compiled.wasm": layer,
                        });
                    }
                    entry
                })
                .collect(),
        )
    });
    let policy = policy_through(&fleet, &server);
    let reference = format!("{}/hello:v1", server.addr);
    let node = WasmOci::new();
    let out = node.run(&["run", "--policy", policy.to_str().unwrap(), &reference]);
    // Not the honest code either: nothing was loaded from the registry.
    compiled_locally(&node, &out, "over 10000 referrers", b"");
    assert!(!log(&node).contains(ADOPTED));

    let node = WasmOci::new();
    let before = server.requests().len();
    let out = node.run(&["run", "--policy", policy.to_str().unwrap(), &reference]);
    compiled_locally(&node, &out, "no precompiled referrer verified", b"");
    let asked = server.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/manifests/sha256:0000"))
        .count();
    assert!((1..=8).contains(&asked), "{asked} candidates fetched");
}
