//! Trust end to end against a real registry: keys in cosign's format, `sign`, `verify` and
//! a containers-policy.json policy on `run`, `pull` and `prefetch`, online and offline. The
//! peers are the sigstore crate (peer.rs) and a signer written here from cosign's published
//! format (format.rs), for what an attacker would forge.

mod attacks;
mod format;
mod gate;
mod peer;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{
    HELLO, Registry, WasmOci, describe, digest_of, hello_wasm as hello, policy_requiring, sig_tag,
    stderr,
};
use format::RingKey;

const PASSWORD: &str = "correct horse battery staple";

/// A policy file in `dir` whose `scope` needs a signature by the key at `key` with
/// `identity`, and accepts anything else.
fn signed_policy(dir: &Path, scope: &str, key: &Path, identity: &str) -> PathBuf {
    let path = dir.join(format!(
        "policy-{}-{identity}.json",
        key.file_stem().unwrap().to_string_lossy()
    ));
    policy_requiring(&path, scope, key, Some(identity))
}

fn with_password(cli: &WasmOci, args: &[&str]) -> Output {
    cli.command()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(args)
        .output()
        .unwrap()
}

fn ok_with_password(cli: &WasmOci, args: &[&str]) -> String {
    let out = with_password(cli, args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Whether the cache records `reference` as usable: `run --pull never` finds it.
fn cached(cli: &WasmOci, reference: &str) -> bool {
    cli.run(&["run", "--pull", "never", reference])
        .status
        .success()
}

/// Runs `reference` under `policy` and returns the refusal it must end with.
fn refused(cli: &WasmOci, reference: &str, policy: &Path) -> String {
    let out = cli.run(&["run", "--policy", policy.to_str().unwrap(), reference]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        out.stdout.is_empty(),
        "a refused module never runs: {}",
        describe(&out)
    );
    // Refused, so not recorded: nothing in the cache answers for the reference.
    assert!(
        !cached(cli, reference),
        "{reference} is usable after a refusal"
    );
    stderr(&out)
}

#[test]
fn the_peer_signs_with_our_key_and_we_verify_and_enforce_it() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let prefix = keys.path().join("release");
    let out = ok_with_password(&cli, &["key", "generate", prefix.to_str().unwrap()]);
    assert!(out.starts_with("sha256:"), "{out}");
    let key_pem = fs::read_to_string(keys.path().join("release.key")).unwrap();
    assert!(key_pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let mode = fs::metadata(keys.path().join("release.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let public = keys.path().join("release.pub");
    // The password may come from stdin instead, as with cosign; the key opens with it only.
    let mut cmd = cli.command();
    cmd.args(["key", "generate", "--password-stdin"])
        .arg(keys.path().join("stdin"));
    let out = crate::support::output_with_stdin(cmd, "from stdin\n");
    assert!(out.status.success(), "{}", describe(&out));
    let stdin_key = fs::read_to_string(keys.path().join("stdin.key")).unwrap();
    assert!(
        sigstore::crypto::signing_key::SigStoreKeyPair::from_encrypted_pem(
            stdin_key.as_bytes(),
            b"from stdin"
        )
        .is_ok()
    );
    // An existing key is not replaced unless asked.
    let out = with_password(&cli, &["key", "generate", prefix.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("--force"),
        "{}",
        describe(&out)
    );

    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello(), &reference]);
    // Before signing: nothing to verify.
    let out = cli.run(&["verify", &reference, "--key", public.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("no signature"), "{}", describe(&out));

    // sigstore opens the key file we wrote, signs and pushes as cosign does.
    peer::sign(&reference, &key_pem, PASSWORD);

    let out = cli.ok(&[
        "verify",
        &reference,
        "--key",
        public.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["valid"].as_array().unwrap().len(), 1, "{report}");
    let digest = digest_of(&registry.addr, "hello", "v1");
    assert_eq!(report["digest"], digest.as_str());

    let policy = signed_policy(
        keys.path(),
        &registry.reference("hello"),
        &public,
        "matchRepository",
    );
    let policy = policy.to_str().unwrap();
    assert_eq!(cli.ok(&["run", "--policy", policy, &reference]), HELLO);
    // The verdict is kept with the reference: key fingerprint and the digest signed.
    let entry = ref_entry(&cli, &reference);
    let valid = &entry["signatures"]["valid"][0];
    assert_eq!(
        format!("sha256:{}", valid["key_fingerprint"].as_str().unwrap()),
        out_fingerprint(&cli, &public)
    );
    assert_eq!(entry["signatures"]["signed_digest"], digest.as_str());
    assert!(valid["verified_at"].as_u64().unwrap() > 0);
}

/// The fingerprint `verify --json` reports for `public`.
fn out_fingerprint(_cli: &WasmOci, public: &Path) -> String {
    use sha2::Digest as _;
    let pem = fs::read_to_string(public).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

/// The cache's index entry of `reference`.
fn ref_entry(cli: &WasmOci, reference: &str) -> serde_json::Value {
    let dir = cli.cache.path().join("v1/refs");
    fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&fs::read(e.unwrap().path()).unwrap())
                .unwrap()
        })
        .find(|e| e["reference"] == reference)
        .unwrap_or_else(|| panic!("{reference} is not in {}", dir.display()))
}

#[test]
fn we_sign_with_the_peers_key_and_the_peer_verifies_it() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = peer::generate_key(PASSWORD);
    let key = keys.path().join("peer.key");
    fs::write(&key, &private).unwrap();
    let key = key.to_str().unwrap();

    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &hello(), &reference]);
    assert_eq!(peer::verified_signatures(&reference, &public), 0);
    let out = ok_with_password(&cli, &["sign", &reference, "--key", key, "--json"]);
    let signed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(signed["signatures"], 1);
    assert_eq!(peer::verified_signatures(&reference, &public), 1);

    // A second key's signature is appended, never replacing the first (the same key again
    // would only add a copy: see gate::signing_again_with_the_same_key_adds_no_copy).
    let (second_private, second_public) = peer::generate_key(PASSWORD);
    let second = keys.path().join("second.key");
    fs::write(&second, &second_private).unwrap();
    ok_with_password(
        &cli,
        &["sign", &reference, "--key", second.to_str().unwrap()],
    );
    let digest = digest_of(&registry.addr, "hello", "v1");
    let manifest = format::signature_manifest(&registry.addr, "hello", &digest);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    assert_eq!(peer::verified_signatures(&reference, &public), 1);
    assert_eq!(peer::verified_signatures(&reference, &second_public), 1);

    // push --sign-key signs as it pushes.
    let other = registry.reference("other:v2");
    ok_with_password(&cli, &["push", &hello(), &other, "--sign-key", key]);
    assert_eq!(peer::verified_signatures(&other, &public), 1);

    // A wrong password signs nothing and says what to do.
    let out = cli
        .command()
        .env("COSIGN_PASSWORD", "wrong")
        .args(["sign", &reference, "--key", key])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("COSIGN_PASSWORD"),
        "{}",
        describe(&out)
    );
    assert_eq!(peer::verified_signatures(&reference, &public), 1);
    assert_eq!(
        format::signature_manifest(&registry.addr, "hello", &digest)["layers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A registry with `hello:v1` and `other:v1` (different content) pushed, a ring key the
/// policy trusts, and the policy (matchRepository on the whole registry).
struct Forgery {
    registry: Registry,
    cli: WasmOci,
    key: RingKey,
    dir: tempfile::TempDir,
    policy: PathBuf,
    digest: String,
}

impl Forgery {
    fn new(identity: &str) -> Forgery {
        let registry = Registry::start();
        let cli = WasmOci::new();
        cli.ok(&["push", &hello(), &registry.reference("hello:v1")]);
        let dir = tempfile::tempdir().unwrap();
        let key = RingKey::generate();
        let public = dir.path().join("trusted.pub");
        fs::write(&public, &key.public_pem).unwrap();
        let policy = signed_policy(dir.path(), &registry.addr, &public, identity);
        let digest = digest_of(&registry.addr, "hello", "v1");
        Forgery {
            registry,
            cli,
            key,
            dir,
            policy,
            digest,
        }
    }

    fn reference(&self) -> String {
        self.registry.reference("hello:v1")
    }

    fn identity(&self) -> String {
        self.registry.reference("hello")
    }
}

#[test]
fn a_signature_from_the_format_peer_is_accepted_and_the_plain_pkcs8_key_signs() {
    let f = Forgery::new("matchRepository");
    let payload = format::payload(&f.identity(), &f.digest);
    let signature = f.key.sign(&payload);
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    let policy = f.policy.to_str().unwrap();
    assert_eq!(
        f.cli.ok(&["run", "--policy", policy, &f.reference()]),
        HELLO
    );

    // pull says what verified it.
    let out = f
        .cli
        .ok(&["pull", "--policy", policy, "--json", &f.reference()]);
    let pulled: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        pulled["verified"][0]["identity"],
        f.identity().as_str(),
        "{pulled}"
    );

    // Our sign reads the plain PKCS#8 key ring made, and appends to the peer's signature.
    let key = f.dir.path().join("ring.key");
    fs::write(&key, &f.key.private_pem).unwrap();
    f.cli
        .ok(&["sign", &f.reference(), "--key", key.to_str().unwrap()]);
    let manifest = format::signature_manifest(&f.registry.addr, "hello", &f.digest);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    let public = f.dir.path().join("trusted.pub");
    let out = f.cli.ok(&[
        "verify",
        &f.reference(),
        "--key",
        public.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["valid"].as_array().unwrap().len(), 2, "{report}");
}

#[test]
fn an_unsigned_module_is_refused_naming_the_scope() {
    let f = Forgery::new("matchRepository");
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(e.contains(&f.reference()), "{e}");
    assert!(
        e.contains(&format!("scope docker \"{}\"", f.registry.addr)),
        "{e}"
    );
    assert!(e.contains(f.policy.to_str().unwrap()), "{e}");
    assert!(e.contains("no signature"), "{e}");
    // pull enforces it too, and so does prefetch.
    let policy = f.policy.to_str().unwrap();
    let out = f.cli.run(&["pull", "--policy", policy, &f.reference()]);
    assert!(
        !out.status.success() && stderr(&out).contains("no signature"),
        "{}",
        describe(&out)
    );
    let out = f.cli.run(&["prefetch", "--policy", policy, &f.reference()]);
    assert!(
        !out.status.success() && stderr(&out).contains("no signature"),
        "{}",
        describe(&out)
    );
    // WASM_OCI_POLICY names the policy when --policy does not.
    let out = f
        .cli
        .command()
        .env("WASM_OCI_POLICY", &f.policy)
        .args(["run", &f.reference()])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("no signature"), "{}", describe(&out));
    assert!(!cached(&f.cli, &f.reference()));
    // Without a policy, as before.
    assert_eq!(f.cli.ok(&["run", &f.reference()]), HELLO);
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let f = Forgery::new("matchRepository");
    let payload = format::payload(&f.identity(), &f.digest);
    let signature = RingKey::generate().sign(&payload);
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(e.contains("not made by the key of the policy"), "{e}");
    let public = f.dir.path().join("trusted.pub");
    let out = f
        .cli
        .run(&["verify", &f.reference(), "--key", public.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not made by the key"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_signature_copied_from_another_digest_is_refused() {
    let f = Forgery::new("matchRepository");
    // A genuine signature of other content in the same repository...
    f.cli.ok(&[
        "push",
        &crate::support::guests().probe.display().to_string(),
        &f.registry.reference("hello:v0"),
    ]);
    let other = digest_of(&f.registry.addr, "hello", "v0");
    let payload = format::payload(&f.identity(), &other);
    let signature = f.key.sign(&payload);
    // ...copied under the .sig tag of hello:v1's digest.
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(
        e.contains(&format!("it signs {other}, not {}", f.digest)),
        "{e}"
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let f = Forgery::new("matchRepository");
    let honest = format::payload(&f.identity(), &f.digest);
    let signature = f.key.sign(&honest);
    // The same claims with a byte more: not what was signed.
    let mut tampered = honest.clone();
    tampered.insert(tampered.len() - 1, b' ');
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(tampered, signature)],
    );
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(e.contains("or its payload was changed"), "{e}");
}

#[test]
fn a_signature_for_another_repository_is_refused_under_match_repository() {
    let f = Forgery::new("matchRepository");
    let payload = format::payload(&f.registry.reference("elsewhere"), &f.digest);
    let signature = f.key.sign(&payload);
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(
        e.contains(&format!("signed for {}", f.registry.reference("elsewhere"))),
        "{e}"
    );
    assert!(e.contains("matchRepository"), "{e}");
}

#[test]
fn a_reject_scope_refuses_before_anything_is_downloaded() {
    let f = Forgery::new("matchRepository");
    let policy = f.dir.path().join("reject.json");
    let json = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {f.registry.reference("hello"): [{"type": "reject"}]}},
    });
    fs::write(&policy, json.to_string()).unwrap();
    let e = refused(&f.cli, &f.reference(), &policy);
    assert!(e.contains("rejects every image"), "{e}");
    assert!(
        e.contains(&format!(
            "scope docker \"{}\"",
            f.registry.reference("hello")
        )),
        "{e}"
    );
    assert!(f.cli.blobs().is_empty(), "{:?}", f.cli.blobs());
    // A malformed policy refuses everything, naming the file.
    fs::write(&policy, r#"{"default":[{"type":"trustMe"}]}"#).unwrap();
    let out = f
        .cli
        .run(&["run", "--policy", policy.to_str().unwrap(), &f.reference()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(policy.to_str().unwrap()),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("trustMe"), "{}", describe(&out));
}

#[test]
fn oversized_and_garbage_signature_manifests_are_refused() {
    let f = Forgery::new("matchRepository");
    let payload = format::payload(&f.identity(), &f.digest);
    let signature = f.key.sign(&payload);
    let descriptor = serde_json::json!({
        "mediaType": format::SIMPLESIGNING,
        "size": payload.len(),
        "digest": format::upload_blob(&f.registry.addr, "hello", &payload),
        "annotations": {format::ANNOTATION: signature},
    });
    // Hundreds of layers: refused before any is fetched.
    format::put_signature_manifest(
        &f.registry.addr,
        "hello",
        &f.digest,
        vec![descriptor.clone(); 500],
    );
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(e.contains("lists 500 layers"), "{e}");
    // A layer that claims to be huge.
    let mut huge = descriptor.clone();
    huge["size"] = serde_json::json!(1u64 << 40);
    format::put_signature_manifest(&f.registry.addr, "hello", &f.digest, vec![huge]);
    let e = refused(&f.cli, &f.reference(), &f.policy);
    assert!(e.contains("payloads over"), "{e}");
    // A registry that answers the .sig tag with garbage.
    let front = format::garbage_sigs(&f.registry.addr, b"\x00\xffnot a manifest");
    let through = format!("{}/hello:v1", front.addr);
    let policy = signed_policy(
        f.dir.path(),
        &front.addr,
        &f.dir.path().join("trusted.pub"),
        "matchRepository",
    );
    let e = refused(&f.cli, &through, &policy);
    assert!(e.contains("signatures cannot be read"), "{e}");
    // The genuine signature alone is accepted.
    format::put_signature_manifest(&f.registry.addr, "hello", &f.digest, vec![descriptor]);
    assert_eq!(
        f.cli.ok(&[
            "run",
            "--policy",
            f.policy.to_str().unwrap(),
            &f.reference()
        ]),
        HELLO
    );
}

#[test]
fn a_verified_reference_stays_verified_offline_and_a_new_policy_is_checked_again() {
    let mut f = Forgery::new("matchRepository");
    let payload = format::payload(&f.identity(), &f.digest);
    let signature = f.key.sign(&payload);
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    let policy = f.policy.to_str().unwrap().to_owned();
    assert_eq!(
        f.cli.ok(&["run", "--policy", &policy, &f.reference()]),
        HELLO
    );

    f.registry.stop();
    // No network: the recorded verdict answers.
    assert_eq!(
        f.cli.ok(&[
            "run",
            "--pull",
            "never",
            "--policy",
            &policy,
            &f.reference()
        ]),
        HELLO
    );
    // A policy naming another key: the cached signatures are checked again, and refused.
    let other = f.dir.path().join("other.pub");
    fs::write(&other, RingKey::generate().public_pem).unwrap();
    let stricter = signed_policy(f.dir.path(), &f.registry.addr, &other, "matchRepository");
    let out = f.cli.run(&[
        "run",
        "--pull",
        "never",
        "--policy",
        stricter.to_str().unwrap(),
        &f.reference(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("not made by the key"),
        "{}",
        describe(&out)
    );
    // A policy whose identity rule changed is checked against the cached signatures, offline.
    let exact = signed_policy(
        f.dir.path(),
        &f.registry.addr,
        &f.dir.path().join("trusted.pub"),
        "matchExact",
    );
    let out = f.cli.run(&[
        "run",
        "--pull",
        "never",
        "--policy",
        exact.to_str().unwrap(),
        &f.reference(),
    ]);
    assert!(stderr(&out).contains("matchExact"), "{}", describe(&out));
    // And the first policy still accepts it.
    assert_eq!(
        f.cli.ok(&[
            "run",
            "--pull",
            "never",
            "--policy",
            &policy,
            &f.reference()
        ]),
        HELLO
    );
}

#[test]
fn a_reference_cached_without_a_policy_needs_its_signatures_under_one() {
    let mut f = Forgery::new("matchRepository");
    // Pulled before the node had a policy: no signatures kept.
    f.cli.ok(&["pull", &f.reference()]);
    f.registry.stop();
    let out = f.cli.run(&[
        "run",
        "--pull",
        "never",
        "--policy",
        f.policy.to_str().unwrap(),
        &f.reference(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("holds no signatures"),
        "{}",
        describe(&out)
    );
}

#[test]
fn prefetch_keeps_signatures_for_a_node_that_verifies_offline() {
    let mut f = Forgery::new("matchRepository");
    let payload = format::payload(&f.identity(), &f.digest);
    let signature = f.key.sign(&payload);
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    // Prefetched with no policy at all...
    f.cli.ok(&["prefetch", "--no-compile", &f.reference()]);
    f.registry.stop();
    // ...and verified later, offline, when the policy arrives.
    assert_eq!(
        f.cli.ok(&[
            "run",
            "--pull",
            "never",
            "--policy",
            f.policy.to_str().unwrap(),
            &f.reference()
        ]),
        HELLO
    );
}

#[test]
fn the_shim_refuses_a_pod_signed_with_the_wrong_key_and_runs_a_signed_one() {
    use crate::support::{ALLOW_LOOPBACK, Containerd, stdout};
    let registry = Registry::start();
    let cli = WasmOci::new();
    let probe = crate::support::guests().probe.display().to_string();
    let good = registry.reference("tools/probe:v1");
    let bad = registry.reference("tools/probe:v2");
    cli.ok(&["push", &probe, &good]);
    cli.ok(&["push", &hello(), &bad]);
    let trusted = RingKey::generate();
    let sign = |tag: &str, key: &RingKey| {
        let digest = digest_of(&registry.addr, "tools/probe", tag);
        let payload = format::payload(&registry.reference("tools/probe"), &digest);
        let signature = key.sign(&payload);
        format::put_signatures(
            &registry.addr,
            "tools/probe",
            &digest,
            &[(payload, signature)],
        );
    };
    sign("v1", &trusted);
    sign("v2", &RingKey::generate());
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("trusted.pub");
    fs::write(&public, &trusted.public_pem).unwrap();
    let policy = signed_policy(dir.path(), &registry.addr, &public, "matchRepository");

    // The operator names the policy in containerd's environment; a pod cannot.
    let c = Containerd::start_with(&[("WASM_OCI_POLICY", &policy)], ALLOW_LOOPBACK);
    c.import_hello();
    let label = |r: &str| format!("io.wasm-oci.reference={r}");
    let out = c.run(
        &["--label", &label(&bad)],
        "docker.io/library/wasmhello:v1",
        "wrong-key",
        &["probe"],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let shown = stderr(&out);
    // containerd shows the shim's error (quoted as ctr quotes it): the reference, the
    // scope and its policy file, and why.
    assert!(
        shown.contains(&format!("{bad} is refused by scope docker"))
            && shown.contains(policy.to_str().unwrap()),
        "{shown}\n{}",
        c.log()
    );
    assert!(
        shown.contains("not made by the key of the policy"),
        "{shown}"
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(stdout(&c.ctr(&["tasks", "ls", "-q"])), "");

    let out = c.run(
        &["--label", &label(&good)],
        "docker.io/library/wasmhello:v1",
        "signed",
        &["probe", "args", "signed"],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), c.log());
    assert_eq!(stdout(&out), "probe\nargs\nsigned\n");
}

#[test]
fn a_node_with_a_policy_loads_an_air_gapped_layout_only_with_valid_signatures() {
    let mut f = Forgery::new("matchRepository");
    let payload = format::payload(&f.identity(), &f.digest);
    let signature = f.key.sign(&payload);
    format::put_signatures(
        &f.registry.addr,
        "hello",
        &f.digest,
        &[(payload, signature)],
    );
    // Unsigned content beside it, in another repository.
    let unsigned = f.registry.reference("unsigned:v1");
    f.cli.ok(&["push", &hello(), &unsigned]);
    let policy = f.policy.to_str().unwrap().to_owned();
    f.cli.ok(&["pull", "--policy", &policy, &f.reference()]);
    let layouts = tempfile::tempdir().unwrap();
    let signed_dir = layouts.path().join("signed");
    f.cli
        .ok(&["save", &f.reference(), "-o", signed_dir.to_str().unwrap()]);
    let unsigned_dir = layouts.path().join("unsigned");
    f.cli
        .ok(&["save", &unsigned, "-o", unsigned_dir.to_str().unwrap()]);
    f.registry.stop();

    // The signatures are in the layout as the .sig tag, beside the artifact.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(signed_dir.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(names, ["v1", sig_tag(&f.digest).as_str()]);

    // An air-gapped node with the policy: the signed layout loads and runs offline.
    let node = WasmOci::new();
    let out = node.run(&["load", "--policy", &policy, signed_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        node.ok(&[
            "run",
            "--pull",
            "never",
            "--policy",
            &policy,
            &f.reference()
        ]),
        HELLO
    );
    // The unsigned one is refused whole: nothing of it is usable.
    let out = node.run(&["load", "--policy", &policy, unsigned_dir.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("no signature"), "{}", describe(&out));
    assert!(!cached(&node, &unsigned));

    // A layout whose payload was changed after signing is refused too.
    let tampered = layouts.path().join("tampered");
    fs::create_dir(&tampered).unwrap();
    for entry in ["oci-layout", "index.json"] {
        fs::copy(signed_dir.join(entry), tampered.join(entry)).unwrap();
    }
    let blobs = tampered.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for blob in fs::read_dir(signed_dir.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        fs::copy(blob.path(), blobs.join(blob.file_name())).unwrap();
    }
    let sig = sig_tag(&f.digest);
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == sig.as_str())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let sig_manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blobs.join(manifest.strip_prefix("sha256:").unwrap())).unwrap(),
    )
    .unwrap();
    let payload_file = blobs.join(
        sig_manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap(),
    );
    let mut forged = fs::read(&payload_file).unwrap();
    forged.insert(forged.len() - 1, b' ');
    fs::write(&payload_file, forged).unwrap();
    let other = WasmOci::new();
    let out = other.run(&["load", "--policy", &policy, tampered.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!cached(&other, &f.reference()));
}
