//! A cache on a full disk: a pull that runs out of room drops what it had downloaded, says
//! which cache is full and what frees room, so that the next pull has the room; `cache prune
//! --partials` drops partial downloads at once. On a real (small) tmpfs and a real registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{HELLO, Registry, WasmOci, describe, padded_hello, stderr, testdata};

/// A tmpfs of `size` mounted at a directory of its own; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs (the tests run as root): {}",
            describe(&out)
        );
        Tmpfs { path, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_pull_that_fills_the_disk_drops_its_partial_and_the_next_pull_has_room() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    fs::write(&big, padded_hello(8 << 20)).unwrap();
    let pusher = WasmOci::new();
    let big_ref = registry.reference("big:v1");
    let hello_ref = registry.reference("hello:v1");
    pusher.ok(&["push", big.to_str().unwrap(), &big_ref]);
    pusher.ok(&["push", testdata("hello.wasm").to_str().unwrap(), &hello_ref]);

    // Declared first, dropped (unmounted) last.
    let disk = Tmpfs::mount("4m");
    let node = WasmOci::with_cache(tempfile::tempdir_in(disk.path()).unwrap());
    let out = node.run(&["pull", &big_ref]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&format!(
            "no space left for the cache {}",
            node.cache.path().display()
        )),
        "{err}"
    );
    assert!(err.contains("wasm-oci cache prune"), "{err}");
    assert_eq!(node.ingest(), Vec::<PathBuf>::new(), "{err}");

    // The room is there again for what fits.
    node.ok(&["pull", &hello_ref]);
    assert_eq!(node.ok(&["run", "--pull", "never", &hello_ref]), HELLO);
}

#[test]
fn prune_partials_drops_every_partial_download_nobody_is_writing() {
    let node = WasmOci::new();
    node.ok(&["cache", "ls"]);
    // What a pull killed midway leaves: recent, so kept a day for resuming.
    let ingest = node.cache.path().join("v1/ingest");
    let partial = ingest.join(format!("{}.partial", "ab".repeat(32)));
    fs::write(&partial, vec![7u8; 100_000]).unwrap();
    node.ok(&["cache", "prune", "--older-than", "1s"]);
    let out = node.run(&["cache", "verify"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(node.ingest(), vec![partial.clone()]);

    let out = node.run(&["cache", "prune", "--partials", "--dry-run"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("would reclaim 1 partial download (no writer holding it)"),
        "{}",
        describe(&out)
    );
    assert_eq!(node.ingest(), vec![partial.clone()]);
    // One a live pull holds is kept.
    let held = fs::File::open(&partial).unwrap();
    held.lock().unwrap();
    let out = node.run(&["cache", "prune", "--partials", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reclaimed_partials"], 0, "{}", describe(&out));
    drop(held);
    let out = node.run(&["cache", "prune", "--partials"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("reclaimed 1 partial download (no writer holding it)"),
        "{}",
        describe(&out)
    );
    assert_eq!(node.ingest(), Vec::<PathBuf>::new());
}
