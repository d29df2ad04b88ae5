//! Where the cache is when nothing names it: a systemd unit's containerd has no `HOME`, and
//! the shim pulls into the node's cache, `/var/lib/wasm-oci`; `wasm-oci` run as root with no
//! `HOME` uses the same. Each runs in a mount namespace of its own whose `/var/lib` is an
//! empty tmpfs, so the directory is the test's alone.

use std::fs;
use std::path::Path;
use std::process::Command;

use sha2::Digest as _;

use crate::support::{
    ALLOW_LOOPBACK, Containerd, Registry, Version, WasmOci, describe, each_containerd, guests,
    stdout,
};

/// The blobs a cache at `root` holds.
fn blobs(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("v1/blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn the_shim_without_home_pulls_into_the_nodes_cache(v: Version) {
    let registry = Registry::start();
    let reference = registry.reference("node/probe:v1");
    WasmOci::new().ok(&["push", guests().probe.to_str().unwrap(), &reference]);
    let layer = hex::encode(sha2::Sha256::digest(fs::read(&guests().probe).unwrap()));
    let c = Containerd::start_as_a_service(v, ALLOW_LOOPBACK);
    assert!(
        c.cache.ends_with("root/var/lib/wasm-oci"),
        "{}",
        c.cache.display()
    );
    c.import_hello();
    let annotation = format!("io.wasm-oci.reference={reference}");
    let out = c.run(
        &["--label", &annotation],
        "docker.io/library/wasmhello:v1",
        "nohome",
        &["probe", "args", "without", "home"],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), c.log());
    assert_eq!(stdout(&out), "probe\nargs\nwithout\nhome\n");
    // The module is in /var/lib/wasm-oci as containerd's namespace sees it, a cache like any.
    assert!(
        c.cache.join("CACHEDIR.TAG").is_file(),
        "{}",
        c.cache.display()
    );
    let held = blobs(&c.cache);
    assert!(
        held.contains(&layer),
        "the module's layer {layer} is not in the node's cache: {held:?}"
    );
}

each_containerd!(the_shim_without_home_pulls_into_the_nodes_cache);

#[test]
fn wasm_oci_as_root_without_home_uses_the_nodes_cache() {
    let registry = Registry::start();
    let reference = registry.push_hello("node/hello:v1");
    let w = WasmOci::new();
    let mut cmd = w.command();
    // As a unit's ExecStart runs it: no HOME, no XDG_CACHE_HOME, no WASM_OCI_CACHE; then what
    // the pull left in /var/lib/wasm-oci, listed from inside the same namespace.
    cmd.env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("WASM_OCI_CACHE");
    let program = cmd.get_program().to_owned();
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"mount -t tmpfs -o mode=0755 tmpfs /var/lib && "$0" pull "$1" && "$0" run "$1" \
               && ls /var/lib/wasm-oci/CACHEDIR.TAG /var/lib/wasm-oci/v1/blobs/sha256"#,
        )
        .arg(program)
        .arg(&reference);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => unshare.env(key, value),
            None => unshare.env_remove(key),
        };
    }
    let out = unshare.output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    // `pull` says what it pulled, then the module ran from the node's cache.
    assert!(text.starts_with("Pulled: "), "{text}");
    assert!(text.contains(crate::support::HELLO), "{text}");
    assert!(
        text.contains("/var/lib/wasm-oci/CACHEDIR.TAG"),
        "{}",
        describe(&out)
    );
    let blobs: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.ends_with("blobs/sha256:"))
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!blobs.is_empty(), "no blob in the node's cache: {text}");
}
