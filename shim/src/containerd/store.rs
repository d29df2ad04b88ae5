//! The shared cache and fetcher of a shim process, under the operator's signature policy; and
//! the policy's word on a module read from a container's rootfs, which no signature covers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::config::{self, ShimConfig};
use super::error::{CreateError, RootfsRefusal, StoreError};

/// The store of a shim process, opened on first use: an error is kept, and told to every
/// container that needs the store.
pub(crate) type SharedStore = OnceLock<Result<Store, Arc<StoreError>>>;

/// The shared cache and the fetcher of one shim process.
pub(crate) struct Store {
    pub(crate) cache: wasm_oci_cache::Cache,
    pub(crate) fetcher: wasm_oci_fetcher::Fetcher,
}

impl Store {
    /// The cache of `WASM_OCI_CACHE`, else the node's (`/var/lib/wasm-oci`, whatever HOME
    /// containerd has, if any), and registry options from the environment: containerd's, so
    /// `DOCKER_CONFIG` and `SSL_CERT_FILE` set for it apply.
    pub(crate) fn open_shared() -> Result<Store, Arc<StoreError>> {
        Self::open().map_err(Arc::new)
    }

    /// What [`Store::open_shared`] opens.
    fn open() -> Result<Store, StoreError> {
        let dir = std::env::var_os("WASM_OCI_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(wasm_oci_cache::SYSTEM_DIR));
        let cache = wasm_oci_cache::Cache::open(&dir).map_err(|cause| StoreError::Cache {
            dir: dir.clone(),
            cause,
        })?;
        // A module a pod names is held to the node's limit before any of it is downloaded.
        let max_layer_size = ShimConfig::get().ok().map(|c| c.max_module_size);
        // Every connection a pull for a pod makes is held to the operator's rule; a config
        // that cannot be read allows no registry at all (and no container starts anyway).
        let egress = match ShimConfig::get() {
            Ok(config) => config.egress_policy(),
            Err(e) => wasm_oci_fetcher::egress::Policy::new(Some(&[]), e.to_string())
                .expect("an empty allow list"),
        };
        let policy = node_policy()?;
        let fetcher = wasm_oci_fetcher::Fetcher::new(
            cache.clone(),
            wasm_oci_fetcher::RegistryOptions {
                max_layer_size,
                ..wasm_oci_fetcher::RegistryOptions::from_env()
            },
            policy,
        )
        .with_egress(Arc::new(egress))
        // A component whose config lists an import this host does not provide is refused
        // before its layer is downloaded, as `wasm-oci run` refuses it: one rule, the
        // artifact crate's.
        .with_config_check(Arc::new(|config: &[u8]| {
            wasm_oci_artifact::world::check_config_imports(config).map_err(Into::into)
        }));
        Ok(Store { cache, fetcher })
    }
}

/// The signature policy is the operator's: WASM_OCI_POLICY in containerd's environment, else
/// /etc/wasm-oci/policy.json; never anything a pod names. Read once per shim process; one
/// that cannot be used refuses every pull by reference and every rootfs module it would judge.
fn node_policy() -> Result<Arc<wasm_oci_trust::Policy>, Arc<wasm_oci_trust::PolicyError>> {
    type Shared = Result<Arc<wasm_oci_trust::Policy>, Arc<wasm_oci_trust::PolicyError>>;
    static POLICY: OnceLock<Shared> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            wasm_oci_trust::Policy::locate(None)
                .map(Arc::new)
                .map_err(Arc::new)
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
pub(crate) fn check_rootfs_module(
    config: &ShimConfig,
    annotations: &HashMap<String, String>,
    module: &str,
) -> Result<(), CreateError> {
    if config.rootfs_modules == config::RootfsModules::Allow {
        return Ok(());
    }
    let policy = node_policy().map_err(|e| Arc::new(StoreError::Policy(e)))?;
    let image = IMAGE_NAME_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key))
        .and_then(|name| wasm_oci_fetcher::parse_reference(name).ok());
    let refusal = match &image {
        Some(image) => wasm_oci_trust::Gate::new(&policy, image)
            .admit_unsigned()
            .err()
            .map(RootfsRefusal::Policy),
        None => wasm_oci_trust::admit_unnamed(&policy)
            .err()
            .map(|_| RootfsRefusal::Unnamed {
                policy: policy
                    .source()
                    .map_or("(none)".into(), |p| p.display().to_string()),
                annotation: IMAGE_NAME_ANNOTATIONS[0],
            }),
    };
    match refusal {
        None => Ok(()),
        Some(why) => Err(CreateError::RootfsRefused {
            module: wasm_oci_artifact::text::printable(module).to_string(),
            why,
            config: config.source_name(),
        }),
    }
}
