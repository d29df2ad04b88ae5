//! Compile once for the fleet: `compile --push --sign-key` attaches the code as a signed OCI
//! referrer of the module, and a node on a compiled-code miss (`run`, `prefetch`) loads it
//! instead of compiling, only when a key its policy names signed it. The attacks on it are
//! in precompiled_attacks.rs; [`Fleet`] is the fixture both use.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{HELLO, Registry, WasmOci, describe, manifest, wasm_manifest};

pub const PASSWORD: &str = "fleet password";
pub const COMPILED_TYPE: &str = "application/vnd.wasm-oci.compiled.v1";
/// What the runner logs when it compiles (rather than loads) code.
pub const COMPILED_LOCALLY: &str = "compiled and cached";
/// What the fetcher logs when it adopted a referrer's code.
pub const ADOPTED: &str = "precompiled code verified and adopted";

/// A registry holding `hello:v1`, signed by the fleet's key, and a policy that requires that
/// key for the `hello` repository (matchRepository).
pub struct Fleet {
    pub registry: Registry,
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub hello: String,
    pub policy: PathBuf,
    /// Runs `wasm-oci` with a cache of its own and the key's password.
    pub builder: WasmOci,
}

impl Fleet {
    pub fn new() -> Fleet {
        let registry = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        let builder = WasmOci::new();
        let key = Self::generate_key(&builder, dir.path(), "fleet");
        let hello = registry.push_hello("hello:v1");
        let policy = dir.path().join("policy.json");
        let repository = registry.reference("hello");
        fs::write(
            &policy,
            serde_json::to_vec(&serde_json::json!({
                "default": [{"type": "insecureAcceptAnything"}],
                "transports": {"docker": {repository: [{
                    "type": "sigstoreSigned",
                    "keyPath": dir.path().join("fleet.pub"),
                    "signedIdentity": {"type": "matchRepository"},
                }]}},
            }))
            .unwrap(),
        )
        .unwrap();
        let fleet = Fleet {
            registry,
            dir,
            key,
            hello,
            policy,
            builder,
        };
        fleet.ok(&["sign", &fleet.hello, "--key", fleet.key.to_str().unwrap()]);
        fleet
    }

    /// A new key pair `name.key`, `name.pub` in `dir`; the private key's path.
    pub fn generate_key(cli: &WasmOci, dir: &Path, name: &str) -> PathBuf {
        let out = cli
            .command()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(["key", "generate"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        dir.join(format!("{name}.key"))
    }

    /// The builder runs `args` with the key's password; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self
            .builder
            .command()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `compile --push --sign-key` of `reference` with `extra` arguments: what was attached.
    pub fn compile_push(&self, reference: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec![
            "compile",
            "--json",
            "--push",
            "--sign-key",
            self.key.to_str().unwrap(),
            reference,
        ];
        args.extend(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// `run` of `reference` under the fleet's policy on `node`.
    pub fn run(&self, node: &WasmOci, reference: &str, extra: &[&str]) -> Output {
        let mut args = vec!["run", "--policy", self.policy.to_str().unwrap()];
        args.extend(extra);
        args.push(reference);
        node.run(&args)
    }

    /// The code a referrer carries, as the registry holds it.
    pub fn code_of(&self, referrer: &str) -> Vec<u8> {
        let artifact = manifest(&self.registry, "hello", referrer);
        let digest = artifact["layers"][0]["digest"].as_str().unwrap();
        fs::read(self.registry.blob_file(digest)).unwrap()
    }

    /// The digest of the wasm manifest `hello:v1`'s index names: what code is attached to.
    pub fn hello_manifest_digest(&self) -> String {
        wasm_manifest(&self.registry, "hello", "v1").0
    }

    /// `hello@DIGEST` of the wasm manifest `hello:v1`'s index names.
    pub fn hello_manifest(&self) -> String {
        format!(
            "{}@{}",
            self.registry.reference("hello"),
            self.hello_manifest_digest()
        )
    }

    /// The layer digest of `hello:v1`.
    pub fn hello_layer(&self) -> String {
        wasm_manifest(&self.registry, "hello", "v1").1["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Runs `reference` and checks it printed hello: the guest ran.
pub fn assert_hello(out: &Output) {
    assert!(out.status.success(), "{}", describe(out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(out)
    );
}

/// Every compiled file in `node`'s cache, by name.
pub fn compiled_files(node: &WasmOci) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let root = node.cache.path().join("v1/compiled");
    let Ok(keys) = fs::read_dir(&root) else {
        return found;
    };
    for key in keys.flatten() {
        for file in fs::read_dir(key.path()).unwrap().flatten() {
            found.push((file.path(), fs::read(file.path()).unwrap()));
        }
    }
    found
}

/// The node's log.
pub fn log(node: &WasmOci) -> String {
    fs::read_to_string(node.log_file()).unwrap_or_default()
}

#[test]
fn code_pushed_and_signed_is_loaded_instead_of_compiled() {
    let fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    // One per engine: `run`'s and the shim's.
    assert_eq!(attached.len(), 2, "{attached:?}");
    // The code's subject is the wasm manifest of the index push wrote at the tag.
    let (subject_digest, subject) = wasm_manifest(&fleet.registry, "hello", "v1");
    for a in &attached {
        let artifact = manifest(&fleet.registry, "hello", a["digest"].as_str().unwrap());
        assert_eq!(artifact["artifactType"], COMPILED_TYPE);
        assert_eq!(
            artifact["subject"]["digest"],
            subject_digest.as_str(),
            "{artifact}"
        );
        let notes = &artifact["annotations"];
        assert_eq!(notes["dev.wasm-oci.compiled.wasmtime"], "48.0.8");
        assert_eq!(notes["dev.wasm-oci.compiled.target"], a["target"]);
        assert_eq!(notes["dev.wasm-oci.compiled.engine"], a["engine"]);
        assert_eq!(
            notes["dev.wasm-oci.compiled.wasm"],
            subject["layers"][0]["digest"]
        );
        assert_eq!(notes["dev.wasm-oci.compiled.kind"], "module");
        // Signed as `sign` signs: a cosign signature of the artifact's digest.
        let out = fleet.ok(&[
            "verify",
            &format!(
                "{}@{}",
                fleet.registry.reference("hello"),
                a["digest"].as_str().unwrap()
            ),
            "--key",
            fleet.dir.path().join("fleet.pub").to_str().unwrap(),
        ]);
        assert!(!out.is_empty());
    }
    // discover says what each is and that this host loads it: the referrers of the wasm
    // manifest, named by digest (the tag names the index, whose own referrers are others).
    let pinned = format!("{}@{subject_digest}", fleet.registry.reference("hello"));
    let listed = fleet.ok(&["discover", &pinned]);
    assert_eq!(
        listed.matches("loadable here by run").count(),
        1,
        "{listed}"
    );
    assert_eq!(
        listed.matches("loadable here by shim").count(),
        1,
        "{listed}"
    );
    // So does inspect, asked to.
    let inspected = fleet.ok(&["inspect", "--precompiled", &fleet.hello]);
    assert_eq!(
        inspected.matches("Precompiled: sha256:").count(),
        2,
        "{inspected}"
    );
    assert_eq!(
        inspected.matches("loadable here by").count(),
        2,
        "{inspected}"
    );

    // A node with an empty cache loads the run engine's code, byte for byte.
    let node = WasmOci::new();
    let out = fleet.run(&node, &fleet.hello, &[]);
    assert_hello(&out);
    let log = log(&node);
    assert!(log.contains(ADOPTED), "{log}");
    assert!(!log.contains(COMPILED_LOCALLY), "{log}");
    let run_code = fleet.code_of(attached[0]["digest"].as_str().unwrap());
    let files = compiled_files(&node);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, run_code);
    // Counted in the cache like every compiled file.
    let listed: serde_json::Value =
        serde_json::from_str(&node.ok(&["cache", "ls", "--json"])).unwrap();
    assert_eq!(listed[0]["compiled"], run_code.len(), "{listed}");
    // The next start is a plain compiled-code hit.
    assert_hello(&fleet.run(&node, &fleet.hello, &["--pull", "never"]));
}

#[test]
fn code_for_another_architecture_is_attached_and_left_alone_here() {
    let fleet = Fleet::new();
    let host = if cfg!(target_arch = "x86_64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    };
    let other = if cfg!(target_arch = "x86_64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    let attached = fleet.compile_push(&fleet.hello, &["--target", other, "--target", host]);
    assert_eq!(attached.len(), 4, "{attached:?}");
    let targets: Vec<&str> = attached
        .iter()
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, [other, other, host, host]);
    // The other architecture's code is an ELF file for it.
    let code = fleet.code_of(attached[0]["digest"].as_str().unwrap());
    assert_eq!(&code[..4], b"\x7fELF");
    let machine = u16::from_le_bytes([code[18], code[19]]);
    assert_eq!(
        machine,
        if other.starts_with("aarch64") {
            183
        } else {
            62
        }
    );

    let (subject, _) = wasm_manifest(&fleet.registry, "hello", "v1");
    let pinned = format!("{}@{subject}", fleet.registry.reference("hello"));
    let found: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["discover", "--json", &pinned])).unwrap();
    let referrers = found["referrers"].as_array().unwrap();
    assert_eq!(referrers.len(), 4);
    for r in referrers {
        let compiled = &r["compiled"];
        let usable = compiled["usable_by"].as_array().unwrap();
        if compiled["target"] == other {
            assert!(usable.is_empty(), "{r}");
            assert!(
                compiled["why_not"].as_str().unwrap().contains("target"),
                "{r}"
            );
        } else {
            // This host's baseline: every CPU of the architecture loads it.
            assert_eq!(usable.len(), 1, "{r}");
        }
    }

    // The node loads this architecture's baseline code, never the other's.
    let node = WasmOci::new();
    assert_hello(&fleet.run(&node, &fleet.hello, &[]));
    let log = log(&node);
    assert!(log.contains(ADOPTED), "{log}");
    let files = compiled_files(&node);
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0].1,
        fleet.code_of(attached[2]["digest"].as_str().unwrap())
    );
}

#[test]
fn prefetch_adopts_the_code_of_both_engines() {
    let fleet = Fleet::new();
    let attached = fleet.compile_push(&fleet.hello, &[]);
    let node = WasmOci::new();
    node.ok(&[
        "prefetch",
        "--policy",
        fleet.policy.to_str().unwrap(),
        &fleet.hello,
    ]);
    let log = log(&node);
    assert_eq!(log.matches(ADOPTED).count(), 2, "{log}");
    assert!(!log.contains(COMPILED_LOCALLY), "{log}");
    let mut files: Vec<Vec<u8>> = compiled_files(&node).into_iter().map(|(_, b)| b).collect();
    let mut pushed: Vec<Vec<u8>> = attached
        .iter()
        .map(|a| fleet.code_of(a["digest"].as_str().unwrap()))
        .collect();
    files.sort();
    pushed.sort();
    assert_eq!(files, pushed);
    // Offline, the node starts without compiling.
    assert_hello(&fleet.run(&node, &fleet.hello, &["--pull", "never"]));
    assert!(!self::log(&node).contains(COMPILED_LOCALLY));
}

/// With no policy, or one whose scope for the module accepts anything, nobody vouches for
/// code: the node compiles, says why at debug level, and never asks for referrers.
#[test]
fn without_a_key_in_the_policy_the_node_compiles() {
    let fleet = Fleet::new();
    fleet.compile_push(&fleet.hello, &[]);
    let accept = fleet.dir.path().join("accept.json");
    fs::write(
        &accept,
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let hello = fleet.hello.clone();
    let with_policy = ["run", "--policy", accept.to_str().unwrap(), hello.as_str()];
    let without = ["run", hello.as_str()];
    for args in [&with_policy[..], &without[..]] {
        let node = WasmOci::new();
        assert_hello(&node.run(args));
        let log = log(&node);
        assert!(log.contains("not looking for precompiled code"), "{log}");
        assert!(log.contains("names no key"), "{log}");
        assert!(log.contains(COMPILED_LOCALLY), "{log}");
        assert!(!log.contains("referrers"), "{log}");
        assert!(!log.contains(ADOPTED), "{log}");
    }
}
