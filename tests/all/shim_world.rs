//! The shim holds a pod's module to the WASI world this host provides before it downloads
//! it: a component whose config lists an import nobody provides is refused from its config,
//! as `wasm-oci run` refuses it, and its layer is never asked for.

use crate::support::{
    ALLOW_LOOPBACK, Containerd, Fault, Proxy, Registry, WasmOci, describe, http_guests,
};

#[test]
fn the_shim_refuses_missing_imports_before_downloading_the_layer() {
    let registry = Registry::start();
    let reference = registry.reference("services/unsatisfiable:v1");
    WasmOci::new().ok(&[
        "push",
        http_guests().unsatisfiable.to_str().unwrap(),
        &reference,
    ]);
    let layer =
        crate::support::wasm_manifest(&registry, "services/unsatisfiable", "v1").1["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    // The shim reaches the registry only through a proxy that counts what it is asked.
    let proxy = Proxy::start(&registry.addr, Fault::None);
    let through = proxy.reference("services/unsatisfiable:v1");
    let c = Containerd::start_with(&[], ALLOW_LOOPBACK);
    c.import_hello();
    let annotation = format!("io.wasm-oci.reference={through}");
    let out = c.run(
        &["--label", &annotation],
        "docker.io/library/wasmhello:v1",
        "unsatisfiable",
        &[],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains(
            "its config says it imports example:missing/api, which wasm-oci does not provide"
        ),
        "{}\n{}",
        describe(&out),
        c.log()
    );
    let (layer_gets, blob_gets) = proxy.seen(|s| {
        (
            s.blob_gets.iter().filter(|l| l.contains(&layer)).count(),
            s.blob_gets.len(),
        )
    });
    // The config was asked for through the proxy (so the count means something) ...
    assert!(blob_gets >= 1, "the shim did not pull through the proxy");
    // ... and the layer never was.
    assert_eq!(
        layer_gets, 0,
        "the layer was downloaded for a component that cannot run"
    );
}
