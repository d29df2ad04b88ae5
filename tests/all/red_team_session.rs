//! Red-team attacks on this session's changes: the compile helper's limits (a helper that
//! ends without saying why must not have its module compiled again in the shim, outside
//! every limit) and precompiled code (code a key signed for one repository must never run
//! for a module of another repository that shares its wasm).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compile_limits::{helpers_of, runs};
use crate::cri_memory::big_module;
use crate::precompiled::{ADOPTED, COMPILED_TYPE, Fleet, assert_hello, log};
use crate::support::{
    Containerd, HELLO, Version, WasmOci, describe, manifest, wait_until, wait_until_within,
    wasm_manifest,
};

/// What the forged code prints instead of hello.
const EVIL: &str = "Evil code signed for another repository!\n";

/// A module that prints [`EVIL`].
fn evil_wasm(dir: &Path) -> PathBuf {
    let message = EVIL.strip_suffix('\n').expect("a line");
    crate::cri_image::printer_file(dir, "evil.wasm", message)
}

/// A tenant of a node whose policy trusts two tenants, each for its own repository (the
/// fleet's key for `hello`, the tenant's for `tenant`), pushes hello's very wasm as
/// `tenant:v1` (anyone can: it is public) and attaches to it, signed with its own key, native
/// code compiled from another module (one that prints [`EVIL`]), annotated as compiled from
/// that wasm for this node's `run` engine. The tenant's reference and the node's policy.
fn a_tenant_forges_code_for_hellos_wasm(fleet: &Fleet) -> (String, PathBuf) {
    forged_for(
        fleet,
        "tenant",
        "v1",
        &[("hello", "fleet.pub"), ("tenant", "tenant.pub")],
    )
}

/// As [`a_tenant_forges_code_for_hellos_wasm`], with the signer's module at `repo:tag` and the
/// node's policy made of `scopes` (a scope, the key file it trusts there).
fn forged_for(fleet: &Fleet, repo: &str, tag: &str, scopes: &[(&str, &str)]) -> (String, PathBuf) {
    let tenant_key = Fleet::generate_key(&fleet.builder, fleet.dir.path(), "tenant");
    let tenant = fleet.registry.push_hello(&format!("{repo}:{tag}"));
    fleet.ok(&["sign", &tenant, "--key", tenant_key.to_str().unwrap()]);
    let hello_layer = fleet.hello_layer();
    assert_eq!(
        wasm_manifest(&fleet.registry, repo, tag).1["layers"][0]["digest"],
        hello_layer.as_str(),
        "the tenant's module is hello's wasm"
    );

    // The tenant compiles its evil module (signed by itself) to get native code of this
    // node's `run` engine, then attaches that code to tenant:v1 as compiled from hello's wasm.
    let evil = fleet.registry.reference(&format!("{repo}:evil"));
    let wasm = evil_wasm(fleet.dir.path());
    fleet.ok(&["push", wasm.to_str().unwrap(), &evil]);
    let released: Vec<serde_json::Value> = serde_json::from_str(&fleet.ok(&[
        "compile",
        "--json",
        "--push",
        "--sign-key",
        tenant_key.to_str().unwrap(),
        &evil,
    ]))
    .unwrap();
    let run_engine = &released[0];
    let artifact = manifest(
        &fleet.registry,
        repo,
        run_engine["digest"].as_str().unwrap(),
    );
    let code = fs::read(
        fleet
            .registry
            .blob_file(artifact["layers"][0]["digest"].as_str().unwrap()),
    )
    .unwrap();
    let file = fleet.dir.path().join("forged.cwasm");
    fs::write(&file, &code).unwrap();
    let annotation = |k: &str, v: &str| format!("dev.wasm-oci.compiled.{k}={v}");
    // Attached as `compile --push` attaches: to the wasm manifest of tenant:v1's index.
    let tenant_manifest = format!(
        "{}@{}",
        fleet.registry.reference(repo),
        wasm_manifest(&fleet.registry, repo, tag).0
    );
    let attached = fleet.ok(&[
        "attach",
        "--json",
        &tenant_manifest,
        file.to_str().unwrap(),
        "--artifact-type",
        COMPILED_TYPE,
        "-a",
        &annotation("wasmtime", "48.0.8"),
        "-a",
        &annotation("target", run_engine["target"].as_str().unwrap()),
        "-a",
        &annotation("engine", run_engine["engine"].as_str().unwrap()),
        "-a",
        &annotation("kind", "module"),
        "-a",
        &annotation("wasm", &hello_layer),
    ]);
    let digest = serde_json::from_str::<serde_json::Value>(&attached).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = format!("{}@{digest}", fleet.registry.reference(repo));
    fleet.ok(&["sign", &at, "--key", tenant_key.to_str().unwrap()]);

    // The node's policy: each tenant's key for its own repository only.
    let policy = fleet.dir.path().join("tenants.json");
    let scope = |repo: &str, key: &str| {
        (
            fleet.registry.reference(repo),
            serde_json::json!([{
                "type": "sigstoreSigned",
                "keyPath": fleet.dir.path().join(key),
                "signedIdentity": {"type": "matchRepository"},
            }]),
        )
    };
    let scopes: serde_json::Map<String, serde_json::Value> =
        scopes.iter().map(|(repo, key)| scope(repo, key)).collect();
    fs::write(
        &policy,
        serde_json::to_vec(&serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": scopes},
        }))
        .unwrap(),
    )
    .unwrap();
    (tenant, policy)
}

/// `tenant:v1` ran the tenant's code (its business: its policy names the tenant's key);
/// then `hello:v1`, whose policy names the fleet's key alone, must run as hello.
fn hello_runs_as_hello_after(node: &WasmOci, fleet: &Fleet, tenant: &std::process::Output) {
    assert!(tenant.status.success(), "{}", describe(tenant));
    assert!(log(node).contains(ADOPTED), "{}", log(node));
    assert_eq!(
        String::from_utf8_lossy(&tenant.stdout),
        EVIL,
        "{}",
        describe(tenant)
    );
    let out = fleet.run(node, &fleet.hello, &[]);
    assert_ne!(
        String::from_utf8_lossy(&out.stdout),
        EVIL,
        "hello:v1 ran native code only the tenant's key vouched for"
    );
    assert_hello(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
}

/// Code a tenant's key signed for its own repository, adopted from the registry, must never
/// run for `hello:v1`, whose policy names another key, though both modules are one wasm.
///
/// The hole was: adopted code was kept in the compiled-code cache under the wasm's digest
/// alone (engine key, wasm digest, kind), whichever repository's policy vouched for it, and
/// the runner (and the shim) loaded it for every module with that wasm. Through a registry as
/// through a layout's kept referrers (next test): both end in `verify_precompiled`'s
/// `store_compiled`. Now adopted code is kept under the engine key and the repository
/// (`wasm_oci_cache::vouched_engine_key`), which only a run of that repository looks up.
#[test]
fn code_signed_for_one_repository_never_runs_for_another_with_the_same_wasm() {
    let mut fleet = Fleet::new();
    let (tenant, policy) = a_tenant_forges_code_for_hellos_wasm(&fleet);
    fleet.policy = policy;
    let node = WasmOci::new();
    let out = fleet.run(&node, &tenant, &[]);
    hello_runs_as_hello_after(&node, &fleet, &out);
}

/// The same through a layout: the tenant hands the operator a layout of `tenant:v1` with its
/// signed precompiled referrer; `load` keeps it (it verifies for `tenant`), the tenant's pod
/// runs offline on it (`adopt_kept`), and then `hello:v1` runs the tenant's code.
#[test]
fn code_a_layout_brought_for_one_repository_never_runs_for_another_with_the_same_wasm() {
    let mut fleet = Fleet::new();
    let (tenant, policy) = a_tenant_forges_code_for_hellos_wasm(&fleet);
    fleet.policy = policy;
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("tenant");
    let policy = fleet.policy.to_str().unwrap();
    let out = WasmOci::new().run(&[
        "save",
        "--policy",
        policy,
        &tenant,
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let node = WasmOci::new();
    let out = node.run(&["load", "--policy", policy, dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = fleet.run(&node, &tenant, &["--pull", "never"]);
    assert!(
        log(&node).contains("from=cache"),
        "the tenant's code was not adopted from the layout: {}",
        log(&node)
    );
    hello_runs_as_hello_after(&node, &fleet, &out);
}

/// A compile helper that ends without compiling and without saying why (here `kill -9` from
/// outside, as the node's OOM killer does; a panic is the same) must fail its container, as
/// a helper stopped by a limit does: compiled again in the shim, the module would escape the
/// operator's `[compile]` limits (no timeout, no memory cap beyond the pod's). The shim's
/// reaper takes the helper's exit status, so the shim cannot see the signal: how the helper
/// ended has to be read from what it said.
fn a_compile_helper_killed_from_outside_is_not_compiled_again_in_the_shim(v: Version) {
    let c = Containerd::start_on(v, &[], "");
    let file = c.dir.path().join("big.wasm");
    fs::write(&file, big_module(48, 12000)).unwrap();
    let image = "docker.io/library/big-compile:v1";
    c.import(image, &[("big.wasm", &file)], &["/big.wasm"]);
    std::thread::scope(|s| {
        let run = s.spawn(|| c.run(&[], image, "outside-kill", &[]));
        let mut helpers = Vec::new();
        wait_until("the compile helper runs", || {
            helpers = helpers_of(&c);
            !helpers.is_empty()
        });
        for pid in &helpers {
            let out = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe(&out));
        }
        wait_until_within("the killed helper is gone", Duration::from_secs(60), || {
            helpers.iter().all(|p| !runs(*p))
        });
        let out = run.join().unwrap();
        let text = describe(&out);
        let shim_log = fs::read_to_string(c.shim_log()).unwrap_or_default();
        assert!(
            !shim_log.contains("compiling in process"),
            "the shim compiled in process what its helper was killed compiling:\n{shim_log}"
        );
        assert!(
            !text.contains("big module ran"),
            "the module ran after its compile helper was killed: {text}"
        );
        assert_eq!(out.status.code(), Some(125), "{text}");
        assert!(text.contains("compile helper"), "{text}");
    });
}

#[test]
fn a_compile_helper_killed_from_outside_is_not_compiled_again_in_the_shim_1_6() {
    a_compile_helper_killed_from_outside_is_not_compiled_again_in_the_shim(Version::V1_6);
}

/// A policy can vouch more finely than a repository: here the fleet's key for `hello` and a
/// canary signer's key for `hello:canary` alone. The canary signer pushes hello's wasm as
/// `hello:canary` with code of its own; `hello:canary` runs it (its business); `hello:v1`,
/// for which only the fleet's key vouches, must not. Adopted code is kept for the whole
/// reference it was adopted for, not for its repository.
#[test]
fn code_signed_for_one_tag_never_runs_for_another_tag_of_the_repository() {
    let mut fleet = Fleet::new();
    let (canary, policy) = forged_for(
        &fleet,
        "hello",
        "canary",
        &[("hello", "fleet.pub"), ("hello:canary", "tenant.pub")],
    );
    fleet.policy = policy;
    let node = WasmOci::new();
    let out = fleet.run(&node, &canary, &[]);
    hello_runs_as_hello_after(&node, &fleet, &out);
}
