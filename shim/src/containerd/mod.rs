//! The containerd shim v2 task service (`io.containerd.wasmoci.v1`): containerd starts
//! `containerd-shim-wasmoci-v1`, which runs each container's wasm in this process's runner.
//!
//! The module comes from the annotation `io.wasm-oci.reference` (pulled into the shared cache,
//! policy `io.wasm-oci.pull`, default `missing`), else from `process.args[0]` in the rootfs,
//! resolved inside it (`rootfs.rs`). The rootfs is preopened as `/`, bind mounts at their
//! destinations (`ro` honoured), and the operator's preopen profiles a container names in
//! `io.wasm-oci.preopens` ([`config`]); a pod never names a host path.
//!
//! Containers of one pod share a shim process (one engine, one fetcher), as runwasi groups
//! them; the operator's config decides otherwise, never a pod. A pod's sandbox ("pause")
//! container has no wasm: it only waits to be killed.
//!
//! The rooms: [`shim`] is the process (start, delete after a death); [`task`] answers each
//! containerd request with a `task_*` function, the `Task` trait being thin wrappers over
//! them, and a task moves only through [`state`]'s `TaskState`; [`spec`] turns a bundle's spec
//! into a [`container`]; [`guest`] runs its wasm on a thread of its own; [`cgroup`],
//! [`netns`], [`mounts`] and [`rootfs`] are what a container gets of the node. The trust
//! decision on a rootfs module and the shared cache stay here, for now.

mod cgroup;
pub mod config;
mod container;
mod guest;
mod mounts;
mod netns;
mod rootfs;
mod service;
mod shim;
mod spec;
mod state;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use containerd_shim::asynchronous::run;

use self::config::ShimConfig;
pub use self::service::TaskService;

/// The runtime name containerd knows this shim by.
pub const RUNTIME: &str = "io.containerd.wasmoci.v1";

const ANNOTATION_REFERENCE: &str = "io.wasm-oci.reference";
const ANNOTATION_PULL: &str = "io.wasm-oci.pull";
const ANNOTATION_PREOPENS: &str = "io.wasm-oci.preopens";
const ANNOTATION_GROUP: &str = "io.wasm-oci.group";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The signal that ends a container at once, with no grace for what it is doing.
const SIGKILL: u32 = 9;

/// Runs the shim; what `containerd-shim-wasmoci-v1`'s `main` calls.
pub fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the shim's runtime");
    runtime.block_on(run::<shim::Service>(RUNTIME, None));
}

/// The shared cache and the fetcher of one shim process.
struct Store {
    cache: wasm_oci_cache::Cache,
    fetcher: wasm_oci_fetcher::Fetcher,
}

impl Store {
    /// The cache of `WASM_OCI_CACHE` (else the default), and registry options from the
    /// environment: containerd's, so `DOCKER_CONFIG` and `SSL_CERT_FILE` set for it apply.
    fn open() -> Result<Store, String> {
        let dir = std::env::var_os("WASM_OCI_CACHE")
            .map(PathBuf::from)
            .or_else(wasm_oci_cache::default_dir)
            .ok_or("no cache directory: set WASM_OCI_CACHE for containerd")?;
        let cache = wasm_oci_cache::Cache::open(&dir).map_err(|e| {
            // The cause is the error's source, printed once.
            let e = anyhow::Error::from(e);
            format!("opening the cache at {}: {e:#}", dir.display())
        })?;
        // A module a pod names is held to the node's limit before any of it is downloaded.
        let max_layer_size = ShimConfig::get().ok().map(|c| c.max_module_size);
        let policy = node_policy()?;
        let fetcher = wasm_oci_fetcher::Fetcher::new(
            cache.clone(),
            wasm_oci_fetcher::RegistryOptions {
                max_layer_size,
                ..wasm_oci_fetcher::RegistryOptions::from_env()
            },
        )
        .with_policy(policy);
        Ok(Store { cache, fetcher })
    }
}

/// The signature policy is the operator's: WASM_OCI_POLICY in containerd's environment, else
/// /etc/wasm-oci/policy.json; never anything a pod names. Read once per shim process; one
/// that cannot be used refuses every pull by reference and every rootfs module it would judge.
fn node_policy() -> Result<Arc<wasm_oci_fetcher::trust::policy::Policy>, String> {
    static POLICY: OnceLock<Result<Arc<wasm_oci_fetcher::trust::policy::Policy>, String>> =
        OnceLock::new();
    POLICY
        .get_or_init(|| {
            wasm_oci_fetcher::trust::policy::Policy::locate(None)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Annotations that name the image a container was made from: the CRI plugin's, then
/// containerd's own (set by clients that copy the image name into the spec).
const IMAGE_NAME_ANNOTATIONS: [&str; 2] =
    ["io.kubernetes.cri.image-name", "io.containerd.image.name"];

/// Whether a module read from the container's rootfs may run: it carries no signature, so
/// under a policy that is not accept-anything for the image's name (or, the name unknown,
/// anywhere) it is refused, unless the operator allows rootfs modules in the shim config.
fn check_rootfs_module(
    config: &ShimConfig,
    annotations: &HashMap<String, String>,
    module: &str,
) -> Result<(), String> {
    if config.rootfs_modules == config::RootfsModules::Allow {
        return Ok(());
    }
    let policy = node_policy()?;
    let image = IMAGE_NAME_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key))
        .and_then(|name| wasm_oci_fetcher::parse_reference(name).ok());
    let refusal = match &image {
        Some(image) => {
            let scope = policy.scope_for(image);
            (scope.rejects() || scope.needs_signatures()).then(|| {
                format!(
                    "{} (for the image {}) needs a signed reference",
                    scope.describe(),
                    wasm_oci_fetcher::text::printable(&image.whole())
                )
            })
        }
        None => (!policy.accepts_anything_everywhere()).then(|| {
            format!(
                "the signature policy {} is not accept-anything and the image's name is not \
                 known (no {} annotation), so it needs a signed reference",
                policy
                    .source()
                    .map_or("(none)".into(), |p| p.display().to_string()),
                IMAGE_NAME_ANNOTATIONS[0]
            )
        }),
    };
    match refusal {
        None => Ok(()),
        Some(why) => Err(format!(
            "the module {} would run from the image's rootfs, which no signature covers, and \
             {why}: annotate {ANNOTATION_REFERENCE} with the module's signed reference, or let \
             the operator allow rootfs modules ([trust] rootfs_modules = \"allow\" in {})",
            wasm_oci_fetcher::text::printable(module),
            config.source_name()
        )),
    }
}
