//! containerd's `hosts.toml` as the fetcher reads it, against real registries: hosts are asked
//! in the order the file lists them, however their keys are quoted.

use std::fs;

use crate::proxy::{Fault, Proxy};
use crate::support::{Registry, WasmOci, describe, testdata};

#[test]
fn mirrors_with_single_quoted_keys_are_asked_in_file_order() {
    let origin = Registry::start();
    let reference = origin.reference("edge/hello:v1");
    WasmOci::new().ok(&["push", testdata("hello.wasm").to_str().unwrap(), &reference]);
    // Two mirrors holding what the origin holds: counting proxies in front of it.
    let one = Proxy::start(&origin.addr, Fault::None);
    let two = Proxy::start(&origin.addr, Fault::None);
    // The file lists them against the alphabetical order of their keys, which a TOML table
    // sorts them in, with literal (single-quoted) keys, as containerd's examples write them.
    let url = |p: &Proxy| format!("http://{}", p.addr);
    let (first, second) = if url(&one) > url(&two) {
        (&one, &two)
    } else {
        (&two, &one)
    };
    let hosts = tempfile::tempdir().unwrap();
    let (host, port) = origin.addr.rsplit_once(':').unwrap();
    let dir = hosts.path().join(format!("{host}_{port}_"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("hosts.toml"),
        format!(
            "[host.'{}']\n  capabilities = ['pull', 'resolve']\n\n\
             [host.'{}']\n  capabilities = ['pull', 'resolve']\n",
            url(first),
            url(second)
        ),
    )
    .unwrap();
    let node = WasmOci::new();
    let out = node.run(&[
        "pull",
        "--json",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        &reference,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The first host of the file served the index, the manifest, the config and the layer.
    let sources = pulled["sources"].as_object().unwrap();
    assert_eq!(sources.len(), 4, "{pulled}");
    assert!(
        sources.values().all(|h| h == first.addr.as_str()),
        "{pulled}"
    );
    assert_eq!(
        second.seen(|s| s.requests),
        0,
        "the second mirror was asked"
    );
}
