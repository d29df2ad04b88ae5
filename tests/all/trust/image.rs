//! What `push --image --sign-key` writes is signed where the kubelet pulls it (the index's
//! digest), and `run` and `verify` hold it to the policy as any signed reference.

use super::*;

#[test]
fn push_image_signs_the_index_and_a_policy_holds_runs_to_it() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = peer::generate_key(PASSWORD);
    let key = keys.path().join("release.key");
    fs::write(&key, &private).unwrap();
    let public_file = keys.path().join("release.pub");
    fs::write(&public_file, &public).unwrap();
    let (_, other_public) = peer::generate_key(PASSWORD);
    let other_file = keys.path().join("other.pub");
    fs::write(&other_file, &other_public).unwrap();

    let reference = registry.reference("apps/hello:v1");
    let out = ok_with_password(
        &cli,
        &[
            "push",
            "--image",
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

    let policy = signed_policy(keys.path(), &registry.addr, &public_file, "matchRepository");
    let out = cli.run(&["run", "--policy", policy.to_str().unwrap(), &reference]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);

    let fresh = WasmOci::new();
    let wrong = signed_policy(keys.path(), &registry.addr, &other_file, "matchRepository");
    let shown = refused(&fresh, &reference, &wrong);
    assert!(shown.contains("refused"), "{shown}");
}
