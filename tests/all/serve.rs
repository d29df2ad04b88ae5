//! Services: wasi:http/proxy components served from a reference (`serve`, and `run` of a proxy),
//! outbound HTTP and wasi:sockets behind their allow-lists, and what a component is before it
//! runs. The guests are C, built here with clang and wasi-libc against bindings that
//! `wit-bindgen c` makes from the WIT wasmtime-wasi-http ships, and componentized with
//! wit-component and the preview 1 adapters.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::support::{
    Client, Registry, Reply, Response, Served, Server, WasmOci, describe, exit_within, http_guests,
    push_proxy, stderr,
};
use crate::support::{SERVER_PATIENCE, wait_until_within};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn serve_answers_get_and_post_from_a_reference_on_one_connection() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", &p.reference]);
    let mut client = served.connect();
    let r = client.send("GET", "/hello?name=oci", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello from wasm: GET /hello?name=oci\n");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers["x-served-by"], "wasm-oci-test");
    // The same connection, kept alive, for a POST with a body and a header of the client's.
    let r = client.send("POST", "/echo", &[("x-echo", "yes")], b"ping \x00 pong");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body, b"ping \x00 pong");
    assert_eq!(r.headers["x-echoed-header"], "yes");
    let r = client.send("GET", "/nowhere", &[], b"");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.text(), "not found\n");
    let r = client.send("GET", "/hello", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn run_serves_a_proxy_and_serve_refuses_a_command() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["run", &p.reference]);
    assert_eq!(served.get("/hello").status, 200);
    drop(served);

    let command = p.registry.reference("services/hello-command:v1");
    cli.ok(&[
        "push",
        path(&crate::support::guests().hello_component),
        &command,
    ]);
    let out = cli.run(&["serve", "--addr", "127.0.0.1:0", &command]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("is a wasi:cli/command component, not a wasi:http/proxy component"),
        "{}",
        describe(&out)
    );
}

#[test]
fn fifty_concurrent_clients_each_get_their_answer() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", &p.reference]);
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let served = &served;
                s.spawn(move || {
                    let mut client = served.connect();
                    let body = format!("client {i}");
                    let first = client.send("POST", "/echo", &[], body.as_bytes());
                    let second = client.send("GET", &format!("/hello?client={i}"), &[], b"");
                    assert_eq!(first.text(), body);
                    second
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            format!("hello from wasm: GET /hello?client={i}\n")
        );
    }
}

#[test]
fn a_trapping_request_is_a_500_and_the_next_one_succeeds() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", &p.reference]);
    let mut client = served.connect();
    let r = client.send("GET", "/trap", &[], b"");
    assert_eq!(r.status, 500, "{r:?}");
    let r = client.send("GET", "/hello", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(served.get("/hello").status, 200);
    let log = fs::read_to_string(cli.log_file()).unwrap();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("unreachable"), "{}", failed[0]);
}

#[test]
fn a_request_over_its_timeout_is_a_504_and_the_server_goes_on() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", "--timeout", "300ms", &p.reference]);
    // One spins in wasm (stopped by its epoch deadline), one waits in a host call.
    let r = served.get("/spin");
    assert_eq!(r.status, 504, "{r:?}");
    let r = served.get("/sleep?ms=60000");
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(served.get("/hello").status, 200);
}

#[test]
fn max_memory_is_per_instance() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", "--max-memory", "8MiB", &p.reference]);
    let r = served.get("/alloc?mb=16");
    assert_eq!(r.status, 500, "{r:?}");
    // Each request has the whole budget: four of 4 MiB, one after another, all fit.
    let mut client = served.connect();
    for _ in 0..4 {
        let r = client.send("GET", "/alloc?mb=4", &[], b"");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "allocated 4 MiB\n");
    }
    let log = fs::read_to_string(cli.log_file()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("request asked for memory over its limit")
                && l.contains("limit=8388608")),
        "{log}"
    );
}

#[test]
fn the_request_body_cap_is_a_413() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let served = Served::start(&cli, &["serve", "--max-body", "1KiB", &p.reference]);
    let r = served.request("POST", "/echo", &[], &[b'x'; 2048]);
    assert_eq!(r.status, 413, "{r:?}");
    let r = served.request("POST", "/echo", &[], &[b'x'; 1024]);
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let mut served = Served::start(&cli, &["serve", &p.reference]);
    let addr = served.addr.clone();
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                Client::connect(&addr).send("GET", "/sleep?ms=1500", &[], b"")
            })
        })
        .collect();
    // An idle keep-alive connection is closed at shutdown, not waited for.
    let mut idle = served.connect();
    assert_eq!(idle.send("GET", "/hello", &[], b"").status, 200);
    // The guests say so on their stderr, which is the server's.
    wait_until_within("three guests sleeping at once", SERVER_PATIENCE, || {
        served.stderr().matches("guest sleeping").count() >= 3
    });
    served.terminate();
    for t in in_flight {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "slept 1500 ms\n");
    }
    let status = exit_within(&mut served.child, Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", served.stderr());
    assert!(
        served.stderr().contains("Shutting down"),
        "{}",
        served.stderr()
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still accepting after SIGTERM"
    );
    assert!(idle.try_send("GET", "/hello", &[], b"").is_err());
}

/// An HTTP/1.1 server on loopback that answers every request with `body`; the request lines
/// it received.
fn upstream(body: &'static str) -> Server {
    Server::start(move |_| Reply::new(200).header("X-Upstream", "yes").body(body))
}

fn hits(up: &Server) -> Vec<String> {
    up.requests()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.version))
        .collect::<Vec<_>>()
}

#[test]
fn outbound_http_is_denied_unless_the_host_is_allowed() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let up = upstream("from upstream\n");
    let fetch = format!("/fetch?to={}", up.addr);

    let denied = Served::start(&cli, &["serve", &p.reference]);
    let r = denied.get(&fetch);
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.text(), "outbound request failed: HTTP-request-denied\n");
    // Another port of an allowed host is another host.
    let other = Served::start(
        &cli,
        &["serve", "--allow-http", "127.0.0.1:1", &p.reference],
    );
    let r = other.get(&fetch);
    assert_eq!(r.text(), "outbound request failed: HTTP-request-denied\n");
    assert!(
        hits(&up).is_empty(),
        "a denied request reached the upstream"
    );

    let allowed = Served::start(&cli, &["serve", "--allow-http", &up.addr, &p.reference]);
    let r = allowed.get(&fetch);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "upstream said: from upstream\n");
    assert_eq!(hits(&up), ["GET /from-wasm HTTP/1.1"]);
}

#[test]
fn tcp_connect_is_checked_against_allow_connect() {
    let cli = WasmOci::new();
    let registry = Registry::start();
    let reference = registry.reference("services/tcp-client:v1");
    cli.ok(&["push", path(&http_guests().tcp_client), &reference]);
    // A server on 127.0.0.2 that reads what the guest sends.
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        got
    });
    let allowed = format!("127.0.0.2:{port}");
    let denied = format!("127.0.0.3:{port}");

    let out = cli.run(&[
        "run",
        "--allow-connect",
        &allowed,
        &reference,
        "--",
        &allowed,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("connected to {allowed}\n")
    );
    assert_eq!(received.join().unwrap(), "hello over wasi:sockets\n");

    // Another address, the same port: denied; so is everything without a rule.
    for args in [
        vec![
            "run",
            "--allow-connect",
            &allowed,
            &reference,
            "--",
            &denied,
        ],
        vec!["run", &reference, "--", &allowed],
    ] {
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "cannot connect to {}: access-denied\n",
                args.last().unwrap()
            )
        );
    }
    // A network rule: 127.0.0.0/30 holds .2 but not .4.
    let out = cli.run(&[
        "run",
        "--allow-connect",
        "127.0.0.0/30",
        &reference,
        "--",
        "127.0.0.4:9",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cannot connect to 127.0.0.4:9: access-denied\n"
    );
}

#[test]
fn push_describes_the_component_and_inspect_shows_its_world() {
    let cli = WasmOci::new();
    let p = push_proxy(&cli);
    let manifest = crate::support::wasm_manifest(&p.registry, "services/hello-http", "v1").1;
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(p.registry.blob_file(config_digest)).unwrap()).unwrap();
    assert_eq!(config["os"], "wasip2");
    let component = &config["component"];
    assert_eq!(component["target"], "wasi:http/proxy@0.2.12");
    assert_eq!(
        component["exports"],
        serde_json::json!(["wasi:http/incoming-handler@0.2.12"])
    );
    let imports: Vec<&str> = component["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(imports.contains(&"wasi:http/types@0.2.12"), "{imports:?}");
    assert!(
        imports.contains(&"wasi:http/outgoing-handler@0.2.12"),
        "{imports:?}"
    );

    let human = cli.ok(&["inspect", &p.reference]);
    assert!(
        human.contains("World:     wasi:http/proxy@0.2.12\n"),
        "{human}"
    );
    assert!(
        human.contains("  wasi:http/incoming-handler@0.2.12 (instance)\n"),
        "{human}"
    );
    assert!(
        human.contains("  wasi:http/types@0.2.12 (import)\n"),
        "{human}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["inspect", "--json", &p.reference])).unwrap();
    assert_eq!(json["world"], "wasi:http/proxy@0.2.12");
    assert_eq!(
        json["config"]["component"]["target"],
        "wasi:http/proxy@0.2.12"
    );

    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["inspect", "--json", path(&http_guests().tcp_client)]))
            .unwrap();
    assert_eq!(json["world"], "wasi:cli/command@0.2.12");
}

#[test]
fn a_component_with_an_import_no_host_provides_is_refused_by_name() {
    let cli = WasmOci::new();
    let registry = Registry::start();
    let reference = registry.reference("services/unsatisfiable:v1");
    cli.ok(&["push", path(&http_guests().unsatisfiable), &reference]);
    // Pulled through a proxy that counts what is asked: the config says what the component
    // imports, so the layer is never downloaded.
    let proxy = crate::support::Proxy::start(&registry.addr, crate::support::Fault::None);
    let through = proxy.reference("services/unsatisfiable:v1");
    for verb in ["run", "serve"] {
        let out = WasmOci::new().run(&[verb, &through]);
        assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
        assert!(
            stderr(&out).contains(
                "its config says it imports example:missing/api, which wasm-oci does not provide"
            ),
            "{}",
            describe(&out)
        );
    }
    let layer =
        crate::support::wasm_manifest(&registry, "services/unsatisfiable", "v1").1["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    let asked = proxy.seen(|s| s.blob_gets.iter().filter(|l| l.contains(&layer)).count());
    assert_eq!(
        asked, 0,
        "the layer was fetched for a component that cannot run"
    );
    // A file has no config: the compiled component says the same.
    for verb in ["run", "serve"] {
        let out = cli.run(&[verb, path(&http_guests().unsatisfiable)]);
        assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
        assert!(
            stderr(&out)
                .contains("it imports example:missing/api, which wasm-oci does not provide"),
            "{}",
            describe(&out)
        );
    }
}

/// Not a test: benches/serve builds its guest here, the way the tests do, and takes a copy.
#[test]
#[ignore = "run by benches/serve"]
fn proxy_for_benches() {
    let out = std::env::var_os("WASM_OCI_PROXY_OUT").expect("WASM_OCI_PROXY_OUT names a file");
    fs::copy(&http_guests().proxy, out).unwrap();
}
