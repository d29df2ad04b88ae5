//! What `push --sign-key` writes is signed where the kubelet pulls it (the index's
//! digest), and `run` and `verify` hold it to the policy as any signed reference; so does the
//! shim, for the module containerd unpacked from it.

use super::*;
use crate::cri::Cri;
use crate::cri_image::{
    printer_file, printers, push_image, registry_hosts, registry_hosts_on, stdout_lines,
};
use crate::support::{ALLOW_LOOPBACK, Version, each_containerd};

/// A new key pair in `dir`: the private key's file (under [`PASSWORD`]), the public key's
/// file and the public key.
fn release_key(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (private, public) = peer::generate_key(PASSWORD);
    let key = dir.join("release.key");
    fs::write(&key, &private).unwrap();
    let public_file = dir.join("release.pub");
    fs::write(&public_file, &public).unwrap();
    (key, public_file, public)
}

#[test]
fn push_image_signs_the_index_and_a_policy_holds_runs_to_it() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (key, public_file, public) = release_key(keys.path());
    let (_, other_public) = peer::generate_key(PASSWORD);
    let other_file = keys.path().join("other.pub");
    fs::write(&other_file, &other_public).unwrap();

    let reference = registry.reference("apps/hello:v1");
    let out = ok_with_password(
        &cli,
        &[
            "push",
            "--json",
            &hello(),
            &reference,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The tag names the index, and the index's digest is what was signed.
    assert_eq!(
        digest_of(&registry.addr, "apps/hello", "v1"),
        pushed["digest"].as_str().unwrap()
    );
    assert_eq!(peer::verified_signatures(&reference, &public), 1);
    // And its wasm manifest, as `cosign sign --recursive` signs an index's entries: the
    // digest pull and inspect report verifies too (sigstore-rs, as a peer, checks both).
    let manifest = format!(
        "{}@{}",
        registry.reference("apps/hello"),
        pushed["manifest_digest"].as_str().unwrap()
    );
    assert_eq!(peer::verified_signatures(&manifest, &public), 1);

    let policy = signed_policy(keys.path(), &registry.addr, &public_file, "matchRepository");
    for named in [&reference, &manifest] {
        let out = cli.run(&["run", "--policy", policy.to_str().unwrap(), named]);
        assert!(out.status.success(), "{named}: {}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
    }

    let fresh = WasmOci::new();
    let wrong = signed_policy(keys.path(), &registry.addr, &other_file, "matchRepository");
    let shown = refused(&fresh, &reference, &wrong);
    assert!(shown.contains("refused"), "{shown}");
}

/// `sign REF` of the index push wrote signs the index, as cosign does: REF runs under the
/// policy, REF@<wasm manifest> does not; `sign --recursive` signs each entry too (the wasm
/// manifest and the two Linux images), and then it does. sigstore-rs checks each, as a peer.
#[test]
fn sign_recursive_signs_the_index_and_each_of_its_entries() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (key, public_file, public) = release_key(keys.path());
    let reference = registry.reference("apps/hello:v1");
    let pushed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["push", "--json", &hello(), &reference])).unwrap();
    let at = |digest: &str| format!("{}@{digest}", registry.reference("apps/hello"));
    let manifest = at(pushed["manifest_digest"].as_str().unwrap());
    let policy = signed_policy(keys.path(), &registry.addr, &public_file, "matchRepository");

    ok_with_password(&cli, &["sign", &reference, "--key", key.to_str().unwrap()]);
    assert_eq!(peer::verified_signatures(&reference, &public), 1);
    let out = cli.run(&["run", "--policy", policy.to_str().unwrap(), &reference]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
    let shown = refused(&WasmOci::new(), &manifest, &policy);
    assert!(shown.contains("refused"), "{shown}");

    let signed: Vec<serde_json::Value> = serde_json::from_str(&ok_with_password(
        &cli,
        &[
            "sign",
            "--recursive",
            "--json",
            &reference,
            "--key",
            key.to_str().unwrap(),
        ],
    ))
    .unwrap();
    // The index, then its distinct entries: the wasm manifest (named three times) and the
    // Linux image for amd64 and for arm64.
    let digests: Vec<&str> = signed
        .iter()
        .map(|s| s["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 4, "{signed:?}");
    assert_eq!(digests[0], pushed["digest"].as_str().unwrap());
    assert_eq!(digests[1], pushed["manifest_digest"].as_str().unwrap());
    for digest in &digests[1..] {
        assert_eq!(
            peer::verified_signatures(&at(digest), &public),
            1,
            "{digest}"
        );
    }
    let out = WasmOci::new().run(&["run", "--policy", policy.to_str().unwrap(), &manifest]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
}

each_containerd!(under_the_nodes_policy_an_image_runs_only_as_its_signed_wasm);

/// `image:` the module under the node's signature policy: the shim judges the module in the
/// rootfs by the signed artifact of the image's name (the CRI plugin's `io.kubernetes.cri.
/// image-name`), pulled and verified as a module named by reference, and runs it only when
/// it is that signed wasm, byte for byte. An unsigned image never runs; a tag moved after the
/// node's pull changes nothing once the node has verified it, and, before that, is refused
/// with what to do (pull again); an image held by digest is judged by its digest.
fn under_the_nodes_policy_an_image_runs_only_as_its_signed_wasm(version: Version) {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (key, public_file, _) = release_key(keys.path());
    let modules = tempfile::tempdir().unwrap();
    let module = |name: &str| printer_file(modules.path(), &format!("{name}.wasm"), name);
    let push_signed = |file: &Path, reference: &str| -> serde_json::Value {
        let out = ok_with_password(
            &cli,
            &[
                "push",
                "--json",
                file.to_str().unwrap(),
                reference,
                "--sign-key",
                key.to_str().unwrap(),
            ],
        );
        serde_json::from_str(&out).unwrap()
    };
    let signed = registry.reference("apps/signed:v1");
    let pushed = push_signed(&module("signed"), &signed);
    let unsigned = registry.reference("apps/unsigned:v1");
    let unsigned_layer = push_image(&cli, &module("unsigned"), &unsigned, false)["layer_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let moving = registry.reference("apps/moving:v1");
    push_signed(&module("first"), &moving);

    // The node's policy: the registry's images need the release key's signature.
    let policy = signed_policy(keys.path(), &registry.addr, &public_file, "matchRepository");
    let hosts = tempfile::tempdir().unwrap();
    let cri = Cri::start_configured_on(
        version,
        &[("WASM_OCI_POLICY", &policy)],
        ALLOW_LOOPBACK,
        &registry_hosts_on(version, &registry, hosts.path()),
    );
    for image in [&signed, &unsigned, &moving] {
        cri.pull_image(image, None).unwrap();
    }
    let config = cri.pod_config("policy", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let start = |name: &str, image: &str| -> Result<String, tonic::Status> {
        let id = cri
            .create_container(&pod, &config, name, image, &[], &[])
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"));
        let request = k8s_cri::v1::StartContainerRequest {
            container_id: id.clone(),
        };
        cri.rt(|mut rt| async move { rt.start_container(request).await })
            .map(|_| id)
    };
    let ran = |name: &str, image: &str| {
        let id = start(name, image)
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", cri.c.log()));
        let status = cri.wait_exited(&id, std::time::Duration::from_secs(20));
        assert_eq!(status.exit_code, 0, "{status:?}\n{}", cri.c.log());
        cri.log_of(&config, name)
    };

    // Signed: it runs. The shim verified it without the wasm entry's layer, which the
    // registry no longer has: the node downloads the module once (containerd's Linux layer).
    fs::remove_file(registry.blob_file(pushed["layer_digest"].as_str().unwrap())).unwrap();
    let log = ran("signed", &signed);
    assert_eq!(stdout_lines(&log), ["signed"], "{log}");
    // Unsigned: it never runs, and containerd says why.
    let e = start("unsigned", &unsigned).unwrap_err();
    assert!(
        e.message()
            .contains("does not run: the signature policy needs a signature for")
            && e.message().contains("apps/unsigned:v1"),
        "{e}"
    );
    assert!(
        stdout_lines(&cri.log_of(&config, "unsigned")).is_empty(),
        "an unsigned image ran"
    );
    // Nor do its bytes enter the node's cache: a pod cannot fill the node's disk with
    // modules no signature names, refused one after another.
    let in_cache = |digest: &str| {
        cri.c
            .cache
            .join("v1/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    };
    assert!(
        in_cache(pushed["layer_digest"].as_str().unwrap()),
        "the signed module is not where the cache keeps blobs"
    );
    assert!(
        !in_cache(&unsigned_layer),
        "a refused module's bytes were kept"
    );

    // The tag moves to another signed module before the node ran what it pulled: which
    // signed artifact the node's image was is not known by the tag, so it is refused...
    push_signed(&module("second"), &moving);
    let e = start("moved", &moving).unwrap_err();
    assert!(
        e.message().contains("the tag moved") && e.message().contains("imagePullPolicy: Always"),
        "{e}"
    );
    assert!(stdout_lines(&cri.log_of(&config, "moved")).is_empty());
    // ...and pulled again, as imagePullPolicy: Always does, the module now signed runs.
    cri.pull_image(&moving, None).unwrap();
    let log = ran("pulled-again", &moving);
    assert_eq!(stdout_lines(&log), ["second"], "{log}");
    // An image the node holds by digest only (the pod named it so) is judged by that digest:
    // the artifact signed then runs, whatever its tag names now.
    let pinned = registry.reference("apps/pinned:v1");
    let pinned_first = push_signed(&module("pinned-first"), &pinned);
    push_signed(&module("pinned-second"), &pinned);
    let by_digest = format!(
        "{}/apps/pinned@{}",
        registry.addr,
        pinned_first["digest"].as_str().unwrap()
    );
    cri.pull_image(&by_digest, None).unwrap();
    let log = ran("by-digest", &by_digest);
    assert_eq!(stdout_lines(&log), ["pinned-first"], "{log}");

    // Once verified, a tag moved afterwards changes nothing: the signed image moves on
    // (signed), and the node's image still runs as the artifact it verified.
    push_signed(&module("signed-later"), &signed);
    let log = ran("signed-again", &signed);
    assert_eq!(stdout_lines(&log), ["signed"], "{log}");
    cri.remove_pod(&pod);
}

/// The same policy through the real kubelet, which asks containerd for the container by the
/// image's ID: the name the shim judges the module by is still the image's, so a signed
/// `image:` runs and an unsigned one fails to start, saying why.
#[test]
fn through_the_kubelet_a_signed_image_runs_and_an_unsigned_one_never() {
    use crate::support::{Kube, image_pod_json, kube_wait};
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (key, public_file, _) = release_key(keys.path());
    let modules = tempfile::tempdir().unwrap();
    let [signed_file, unsigned_file] = printers(modules.path(), ["signed", "unsigned"]);
    let signed = registry.reference("apps/signed:v1");
    ok_with_password(
        &cli,
        &[
            "push",
            signed_file.to_str().unwrap(),
            &signed,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    let unsigned = registry.reference("apps/unsigned:v1");
    push_image(&cli, &unsigned_file, &unsigned, false);
    let policy = signed_policy(keys.path(), &registry.addr, &public_file, "matchRepository");

    let kube = Kube::start_configured(
        ALLOW_LOOPBACK,
        &registry_hosts(&registry),
        &[("WASM_OCI_POLICY", &policy)],
    );
    kube.create(&image_pod_json(
        "signed",
        &signed,
        "IfNotPresent",
        None,
        &[],
    ));
    kube.create(&image_pod_json(
        "unsigned",
        &unsigned,
        "IfNotPresent",
        None,
        &[],
    ));
    kube.wait_phase("signed", "Succeeded");
    assert_eq!(kube.kubectl_ok(&["logs", "signed"]), "signed\n");
    let message = "{.status.containerStatuses[0].state.terminated.message}";
    kube_wait(
        "the unsigned pod's container fails to start, saying why",
        || {
            kube.jsonpath(&["pod", "unsigned"], message)
                .contains("the signature policy needs a signature for")
        },
        || kube.describe_pod("unsigned"),
    );
    assert_eq!(kube.phase("unsigned"), "Failed");
    assert_eq!(kube.kubectl_ok(&["logs", "unsigned"]), "");
}
