//! A pod serving HTTP through the CRI: the test proxy (`http_guests().proxy`) imported as
//! `registry.test/http:v1`, a `wasmoci` pod sandbox, and one container `web` of it listening
//! on a free port of the pod's network, started.

use k8s_cri::v1 as cri;

use super::{free_port, http_guests};
use crate::cri::Cri;

/// What [`http_pod`] started.
pub struct HttpPod {
    /// The pod's sandbox config (its log directory names where `web` logs).
    pub config: cri::PodSandboxConfig,
    /// The pod sandbox's id.
    pub pod: String,
    /// The `web` container's id.
    pub id: String,
    /// The port `web` listens on, on every address of the pod's network.
    pub port: u16,
}

/// Imports the test proxy into `cri`'s containerd, runs pod `name` with the `wasmoci`
/// handler, and creates and starts its container `web` listening on a free port.
pub fn http_pod(cri: &Cri, name: &str) -> HttpPod {
    cri.c.import(
        "registry.test/http:v1",
        &[("proxy.wasm", &http_guests().proxy)],
        &["/proxy.wasm"],
    );
    let config = cri.pod_config(name, &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let port = free_port();
    let id = cri
        .create_container_with_env(
            &pod,
            &config,
            "web",
            "registry.test/http:v1",
            &[],
            &[],
            &[("WASM_OCI_HTTP_ADDR", &format!("0.0.0.0:{port}"))],
        )
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cri.c.log()));
    cri.start_created(&id);
    HttpPod {
        config,
        pod,
        id,
        port,
    }
}
