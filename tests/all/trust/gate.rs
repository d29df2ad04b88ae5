//! The one trust gate, from the outside: a scope holds for every spelling of a registry's
//! address, a cached verdict is checked against the cached signatures rather than believed,
//! and signing a digest again with the same key adds nothing.

use std::fs;

use super::format::{self, RingKey};
use super::{Forgery, HELLO, cached, ok_with_password, peer, refused, signed_policy};
use crate::support::{describe, stderr};

/// A `reject` scope written for `127.0.0.1:PORT` holds for every other spelling of that
/// address: IPv4-mapped IPv6 (`[::ffff:127.0.0.1]`, `[::ffff:7f00:1]`, written out in full)
/// and the short IPv4 forms connect to the same socket, so they are the same registry.
#[test]
fn a_reject_scope_holds_for_every_spelling_of_its_address() {
    let f = Forgery::new("matchRepository");
    let port = f.registry.addr.rsplit_once(':').unwrap().1.to_owned();
    let policy = f.dir.path().join("reject-loopback.json");
    let json = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {&f.registry.addr: [{"type": "reject"}]}},
    });
    fs::write(&policy, json.to_string()).unwrap();
    for host in [
        "127.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:FFFF:7F00:0001]",
        "127.1",
        "2130706433",
    ] {
        let reference = format!("{host}:{port}/hello:v1");
        let e = refused(&f.cli, &reference, &policy);
        assert!(e.contains("rejects every image"), "{reference}: {e}");
        assert!(
            e.contains(&format!("scope docker \"127.0.0.1:{port}\"")),
            "{reference}: {e}"
        );
        assert!(f.cli.blobs().is_empty(), "{reference}: {:?}", f.cli.blobs());
    }
}

/// A cached reference's record says which keys verified it; under a policy naming another
/// key, that record is not believed: the cached signatures are verified again, and a record
/// edited to name the policy's key gains nothing.
#[test]
fn a_cached_verdict_is_checked_against_the_cached_signatures() {
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

    // The record claims a key that never signed anything here.
    let other = RingKey::generate();
    let other_pub = f.dir.path().join("other.pub");
    fs::write(&other_pub, &other.public_pem).unwrap();
    let fingerprint = super::out_fingerprint(&f.cli, &other_pub);
    let fingerprint = fingerprint.strip_prefix("sha256:").unwrap();
    let refs = f.cli.cache.path().join("v1/refs");
    let mut edited = 0;
    for file in fs::read_dir(&refs).unwrap() {
        let path = file.unwrap().path();
        let mut entry: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        if entry["reference"] != f.reference() {
            continue;
        }
        let valid = entry["signatures"]["valid"].as_array_mut().unwrap();
        assert!(!valid.is_empty(), "{entry}");
        for verdict in valid {
            verdict["key_fingerprint"] = fingerprint.into();
        }
        fs::remove_file(&path).unwrap();
        fs::write(&path, serde_json::to_vec_pretty(&entry).unwrap()).unwrap();
        edited += 1;
    }
    assert_eq!(edited, 1);
    let stricter = signed_policy(
        f.dir.path(),
        &f.registry.addr,
        &other_pub,
        "matchRepository",
    );
    let out = f.cli.run(&[
        "run",
        "--pull",
        "never",
        "--policy",
        stricter.to_str().unwrap(),
        &f.reference(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("not made by the key"),
        "{}",
        describe(&out)
    );
    // The policy whose key did sign still accepts it, offline.
    assert!(cached(&f.cli, &f.reference()));
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

/// `sign` twice with one key leaves one signature (the payload and the key are the same,
/// so the second would be a copy); another key's signature is appended beside it.
#[test]
fn signing_again_with_the_same_key_adds_no_copy() {
    let registry = crate::support::Registry::start();
    let cli = crate::support::WasmOci::new();
    let keys = tempfile::tempdir().unwrap();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", &super::hello(), &reference]);
    let mut public_keys = Vec::new();
    for (i, name) in ["first.key", "second.key"].iter().enumerate() {
        let (private, public) = peer::generate_key(super::PASSWORD);
        let key = keys.path().join(name);
        fs::write(&key, &private).unwrap();
        public_keys.push(public);
        for _ in 0..2 {
            let out = ok_with_password(
                &cli,
                &["sign", &reference, "--key", key.to_str().unwrap(), "--json"],
            );
            let signed: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(signed["signatures"], i + 1, "{out}");
        }
        let digest = crate::support::digest_of(&registry.addr, "hello", "v1");
        let manifest = format::signature_manifest(&registry.addr, "hello", &digest);
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            i + 1,
            "{manifest}"
        );
    }
    for public in &public_keys {
        assert_eq!(peer::verified_signatures(&reference, public), 1);
    }
}
