//! Interrupted downloads resume with range requests; nothing half-written is ever used.

use std::fs;
use std::process::Stdio;

use crate::support::{Fault, HELLO, Proxy, Registry, WasmOci, describe, padded_hello, wait_until};

struct Setup {
    _registry: Registry,
    proxy: Proxy,
    module: Vec<u8>,
    reference: String,
    _dir: tempfile::TempDir,
}

fn setup(fault: Fault) -> Setup {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let module = padded_hello(4 << 20);
    let file = dir.path().join("big.wasm");
    fs::write(&file, &module).unwrap();
    WasmOci::new().ok(&[
        "push",
        file.to_str().unwrap(),
        &registry.reference("big:v1"),
    ]);
    let proxy = Proxy::start(&registry.addr, fault);
    let reference = proxy.reference("big:v1");
    Setup {
        _registry: registry,
        proxy,
        module,
        reference,
        _dir: dir,
    }
}

fn pulled_bytes(cli: &WasmOci, reference: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("m.wasm");
    cli.ok(&["pull", reference, "--out", file.to_str().unwrap()]);
    fs::read(file).unwrap()
}

#[test]
fn a_cut_download_resumes_with_a_range_request() {
    let s = setup(Fault::CutFirstBlob);
    let cli = WasmOci::new();
    assert_eq!(pulled_bytes(&cli, &s.reference), s.module);
    let size = s.module.len() as u64;
    let (bytes, ranges) = s.proxy.seen(|seen| (seen.blob_bytes, seen.ranges.clone()));
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(
        ranges[0].starts_with("bytes=") && !ranges[0].starts_with("bytes=0-"),
        "{ranges:?}"
    );
    assert!(
        bytes < size * 3 / 2,
        "fetched {bytes} bytes for a {size}-byte blob"
    );
    assert!(cli.ingest().is_empty(), "{:?}", cli.ingest());
    assert_eq!(cli.ok(&["run", &s.reference]), HELLO);
}

#[test]
fn a_registry_that_ignores_range_is_handled_by_starting_over() {
    let s = setup(Fault::CutFirstBlob);
    s.proxy.ignore_range(true);
    let cli = WasmOci::new();
    assert_eq!(pulled_bytes(&cli, &s.reference), s.module);
    let size = s.module.len() as u64;
    let bytes = s.proxy.seen(|seen| seen.blob_bytes);
    // Half, then the whole blob again.
    assert!(
        bytes >= size && bytes < size * 2,
        "fetched {bytes} for {size}"
    );
    assert!(cli.ingest().is_empty());
}

#[test]
fn a_download_killed_midway_resumes_in_the_next_process() {
    let s = setup(Fault::StallFirstBlob);
    let cli = WasmOci::new();
    let mut child = cli
        .command()
        .args(["pull", &s.reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the download started", || {
        s.proxy.seen(|seen| seen.half_sent)
    });
    // Once the client has written some of what it received, kill it without warning.
    cli.wait_for_partial();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let partial = cli.ingest();
    assert_eq!(partial.len(), 1, "{partial:?}");
    let kept = fs::metadata(&partial[0]).unwrap().len();
    assert!(kept > 0, "nothing was kept to resume from");
    assert!(cli.blobs().iter().all(|b| {
        fs::metadata(cli.cache.path().join("v1/blobs/sha256").join(b))
            .unwrap()
            .len()
            < 1 << 20
    }));

    s.proxy.set_fault(Fault::None);
    s.proxy.reset_counts();
    assert_eq!(pulled_bytes(&cli, &s.reference), s.module);
    let (bytes, ranges) = s.proxy.seen(|seen| (seen.blob_bytes, seen.ranges.clone()));
    assert_eq!(
        ranges,
        vec![format!("bytes={kept}-{}", s.module.len() as u64 - 1)]
    );
    // The rest of the layer, and the small config blob the killed pull had not reached.
    let rest = s.module.len() as u64 - kept;
    assert!(
        bytes >= rest && bytes < rest + 1024,
        "{bytes} bytes for the last {rest}"
    );
    assert!(cli.ingest().is_empty());
    let out = cli.run(&["run", &s.reference]);
    assert!(out.status.success(), "{}", describe(&out));
}
