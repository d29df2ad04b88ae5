//! A second red team's attacks (issue 23), each a test that fails if the attack succeeds:
//! registry names spelled another way (a trailing dot, capitals, a port with leading zeros)
//! must be the same registry to every rule that names it.

use std::fs;

use crate::support::{Registry, WasmOci, describe, hello, stderr};

/// A `reject` scope written for `localhost:PORT` holds for `LocalHost:PORT` and for the
/// port with leading zeros (the same socket), and `localhost.:PORT` (the fully qualified
/// spelling, which resolves to the same socket) is no reference at all: the module never runs.
#[test]
fn a_reject_scope_holds_for_capitals_and_leading_zeros_and_a_trailing_dot_is_refused() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let port = registry.addr.rsplit_once(':').unwrap().1.to_owned();
    cli.ok(&["push", &hello(), &format!("localhost:{port}/hello:v1")]);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("reject-localhost.json");
    let json = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {format!("localhost:{port}"): [{"type": "reject"}]}},
    });
    fs::write(&policy, json.to_string()).unwrap();
    for host in ["localhost.", "LOCALHOST.", "LocalHost"] {
        for p in [port.clone(), format!("00{port}")] {
            let reference = format!("{host}:{p}/hello:v1");
            let out = cli
                .command()
                .env("WASM_OCI_PLAIN_HTTP", "1")
                .args(["run", "--policy", policy.to_str().unwrap(), &reference])
                .output()
                .unwrap();
            assert!(out.stdout.is_empty(), "{reference} ran: {}", describe(&out));
            let e = stderr(&out);
            assert!(!out.status.success(), "{reference}: {}", describe(&out));
            // A trailing dot is no reference's registry (an empty label); every other
            // spelling is the scope's registry.
            if host.ends_with('.') {
                assert!(e.contains("invalid reference"), "{reference}: {e}");
            } else {
                assert!(e.contains("rejects every image"), "{reference}: {e}");
            }
        }
    }
}
