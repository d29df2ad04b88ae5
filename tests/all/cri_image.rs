//! `image: REF` is the module: what `wasm-oci push` writes is pulled by containerd's
//! CRI plugin as the kubelet asks it (PullImage with the pod's pull secret, nothing on the
//! node), unpacked, and run under the `wasmoci` handler with no annotation and no command.
//! The module that runs is the one containerd pulled: a tag moved afterwards changes nothing.
//! On containerd 1.6 and 2.x.

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;

use crate::cri::Cri;
use crate::support::{
    HELLO, Registry, Secure, Version, WasmOci, describe, each_containerd, output_with_stdin,
    stdout, testdata,
};

pub(crate) const USER: &str = "puller";
pub(crate) const PASSWORD: &str = "pod-secret-9";

/// A core module that prints `message` and a newline on stdout.
pub(crate) fn printer(message: &str) -> Vec<u8> {
    let escaped: String = message.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}\0a")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = message.len() + 1
    ))
    .unwrap()
}

/// A [`printer`] of `message` written in `dir` as `name`.
pub(crate) fn printer_file(dir: &Path, name: &str, message: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, printer(message)).unwrap();
    path
}

/// A [`printer_file`] of each message in `dir`, as `<message with dashes>.wasm`.
pub(crate) fn printers<const N: usize>(dir: &Path, messages: [&str; N]) -> [PathBuf; N] {
    messages
        .map(|message| printer_file(dir, &format!("{}.wasm", message.replace(' ', "-")), message))
}

/// containerd's registry host for `registry`: plain HTTP, as a kubelet's node would name a
/// mirror; no credentials (the pod brings them).
pub(crate) fn registry_hosts(registry: &Registry) -> String {
    format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{addr}\"]\n  endpoint = [\"http://{addr}\"]\n",
        addr = registry.addr
    )
}

/// [`registry_hosts`] for containerd `version`: 2.x's CRI plugin (config version 3) reads
/// registry hosts from `hosts.toml` files only, written here under `dir`, which must outlive
/// containerd.
pub(crate) fn registry_hosts_on(version: Version, registry: &Registry, dir: &Path) -> String {
    match version {
        Version::V1_6 => registry_hosts(registry),
        Version::V2 => {
            let host = dir.join(&registry.addr);
            std::fs::create_dir_all(&host).unwrap();
            std::fs::write(
                host.join("hosts.toml"),
                format!(
                    "server = \"http://{addr}\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    addr = registry.addr
                ),
            )
            .unwrap();
            format!(
                "[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"{}\"\n",
                dir.display()
            )
        }
    }
}

/// `wasm-oci push --json FILE REFERENCE` with `credentials`; what it printed.
pub(crate) fn push_image(
    cli: &WasmOci,
    file: &Path,
    reference: &str,
    credentials: bool,
) -> serde_json::Value {
    let mut cmd = cli.command();
    cmd.args(["push", "--json"]);
    if credentials {
        cmd.args(["--username", USER, "--password-stdin"]);
    }
    cmd.arg(file).arg(reference);
    let out = output_with_stdin(cmd, PASSWORD);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pull_secret(registry: &Registry) -> cri::AuthConfig {
    cri::AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        server_address: format!("http://{}", registry.addr),
        ..Default::default()
    }
}

/// The messages a container's CRI log holds on stdout.
pub(crate) fn stdout_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_once(" stdout F "))
        .map(|(_, m)| m)
        .collect()
}

each_containerd!(
    a_pushed_image_runs_as_the_pods_image_with_the_pods_pull_secret_alone,
    a_tag_moved_after_the_pull_changes_nothing,
);

fn a_pushed_image_runs_as_the_pods_image_with_the_pods_pull_secret_alone(version: Version) {
    let registry = Registry::start_secure(Secure {
        tls: false,
        user: Some((USER, PASSWORD)),
    });
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let (one_wasm, two_wasm) = (dir.path().join("one.wasm"), dir.path().join("two.wasm"));
    std::fs::write(&one_wasm, printer("module one")).unwrap();
    std::fs::write(&two_wasm, printer("module two")).unwrap();
    let one = registry.reference("pods/one:v1");
    let two = registry.reference("pods/two:v1");
    let pushed_one = push_image(&cli, &one_wasm, &one, true);
    push_image(&cli, &two_wasm, &two, true);

    let hosts = tempfile::tempdir().unwrap();
    let cri = Cri::start_configured_on(
        version,
        &[],
        "",
        &registry_hosts_on(version, &registry, hosts.path()),
    );
    // The node has no credentials: without the pod's secret the pull is refused.
    let e = cri.pull_image(&one, None).unwrap_err();
    assert!(
        // 1.6 says 401 Unauthorized; 2.x "authorization failed: no basic auth credentials".
        e.message().contains("401")
            || e.message().to_lowercase().contains("unauthorized")
            || e.message().contains("no basic auth credentials"),
        "{e}"
    );
    cri.pull_image(&one, Some(pull_secret(&registry))).unwrap();
    cri.pull_image(&two, Some(pull_secret(&registry))).unwrap();

    // Two containers of one pod, each its own image, no command, no annotation.
    let config = cri.pod_config("two-modules", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    for (name, image, message) in [("one", &one, "module one"), ("two", &two, "module two")] {
        let status = cri.run_to_exit(&pod, &config, name, image, &[]);
        assert_eq!(status.exit_code, 0, "{status:?}\n{}", cri.c.log());
        let log = cri.log_of(&config, name);
        assert_eq!(stdout_lines(&log), [message], "{log}");
        assert!(
            status
                .image_ref
                .ends_with(pushed_one["digest"].as_str().unwrap())
                == (name == "one"),
            "{status:?}"
        );
    }
    cri.remove_pod(&pod);

    // The node downloaded the module once: the Linux image's layer, never the wasm entry's.
    let content = stdout(&cri.c.ctr(&["content", "ls", "-q"]));
    let wasm_layer = pushed_one["layer_digest"].as_str().unwrap();
    assert!(
        !content.contains(wasm_layer),
        "the wasm entry's layer was downloaded too:\n{content}"
    );
    assert!(
        content.contains(pushed_one["digest"].as_str().unwrap()),
        "{content}"
    );
}

fn a_tag_moved_after_the_pull_changes_nothing(version: Version) {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let [first, second] = printers(dir.path(), ["first push", "second push"]);
    let reference = registry.reference("moving:v1");
    let pushed = push_image(&cli, &first, &reference, false);

    let hosts = tempfile::tempdir().unwrap();
    let cri = Cri::start_configured_on(
        version,
        &[],
        "",
        &registry_hosts_on(version, &registry, hosts.path()),
    );
    cri.pull_image(&reference, None).unwrap();
    let moved = push_image(&cli, &second, &reference, false);
    assert_ne!(moved["digest"], pushed["digest"]);

    let config = cri.pod_config("moving", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let status = cri.run_to_exit(&pod, &config, "moving", &reference, &[]);
    assert_eq!(status.exit_code, 0, "{status:?}\n{}", cri.c.log());
    let log = cri.log_of(&config, "moving");
    assert_eq!(stdout_lines(&log), ["first push"], "{log}");
    // The kubelet's imageID is the index pulled first, whose module ran.
    assert_eq!(
        status.image_ref,
        format!(
            "{}/moving@{}",
            registry.addr,
            pushed["digest"].as_str().unwrap()
        ),
        "{status:?}"
    );
    cri.remove_pod(&pod);
}

#[test]
fn run_inspect_save_and_load_read_what_push_image_writes() {
    let mut registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let pushed = push_image(&cli, &testdata("hello.wasm"), &reference, false);
    let index = crate::support::manifest(&registry, "hello", "v1");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(
        crate::support::index_platforms(&index),
        crate::support::PUSHED_PLATFORMS
    );
    // The first three name the wasm manifest; the last two, the Linux image.
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry["digest"] == pushed["manifest_digest"],
            i < 3,
            "{index:#}"
        );
    }

    assert_eq!(cli.ok(&["run", &reference]), HELLO);
    let inspected = cli.ok(&["inspect", &reference]);
    assert!(
        inspected.contains(pushed["layer_digest"].as_str().unwrap()),
        "{inspected}"
    );

    let layout = tempfile::tempdir().unwrap();
    let saved = layout.path().join("saved");
    cli.ok(&["save", &reference, "-o", saved.to_str().unwrap()]);
    registry.stop();
    let node = WasmOci::new();
    node.ok(&["load", saved.to_str().unwrap()]);
    assert_eq!(node.ok(&["run", "--pull", "never", &reference]), HELLO);
}

/// wkg and wasm-pkg-client read a package with oci-client as it comes: its default platform
/// resolver picks an index entry, and the manifest's first layer is the package. What
/// `push` writes gives them the wasm, not the Linux image beside it.
#[test]
fn oci_client_readers_such_as_wkg_take_the_wasm_from_what_push_image_writes() {
    use oci_client::client::{ClientConfig, ClientProtocol, current_platform_resolver};
    use oci_client::manifest::OciManifest;
    use oci_client::secrets::RegistryAuth;

    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let pushed = push_image(&cli, &testdata("hello.wasm"), &reference, false);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let parsed: oci_client::Reference = reference.parse().unwrap();
    let auth = RegistryAuth::Anonymous;
    let (wasm, layer) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (index, _) = client.pull_manifest(&parsed, &auth).await.unwrap();
            let OciManifest::ImageIndex(index) = index else {
                panic!("push wrote no index: {index:?}")
            };
            // The resolver as oci-client configures it by default, on this (linux) host.
            let chosen = current_platform_resolver(&index.manifests);
            assert_eq!(chosen.as_deref(), pushed["manifest_digest"].as_str());
            // wasm-pkg-client's read: the resolved manifest, its first layer.
            let (manifest, _, _) = client
                .pull_manifest_and_config(&parsed, &auth)
                .await
                .unwrap();
            let layer = manifest.layers[0].clone();
            let mut wasm = Vec::new();
            client.pull_blob(&parsed, &layer, &mut wasm).await.unwrap();
            (wasm, layer)
        });
    assert_eq!(layer.media_type, "application/wasm");
    assert_eq!(wasm, std::fs::read(testdata("hello.wasm")).unwrap());
}
