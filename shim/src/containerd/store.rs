//! The shared cache and fetcher of a shim process, under the operator's signature policy; and
//! the policy's word on a module read from a container's rootfs: it runs under a scope that
//! needs signatures only when it is, byte for byte, the wasm of the image name's signed
//! artifact (an `image:` that `wasm-oci push` wrote and signed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use wasm_oci_fetcher::PullPolicy;

use super::config::{self, ShimConfig};
use super::error::{CreateError, NotSigned, RootfsRefusal, StoreError};

/// The store of a shim process, opened on first use: an error is kept, and told to every
/// container that needs the store.
pub(crate) type SharedStore = OnceLock<Result<Store, Arc<StoreError>>>;

/// The shared cache and the fetcher of one shim process.
pub(crate) struct Store {
    pub(crate) cache: wasm_oci_cache::Cache,
    pub(crate) fetcher: wasm_oci_fetcher::Fetcher,
}

impl Store {
    /// The store `shared` holds, opened now if it is not yet ([`Store::open`]); the error
    /// it was opened with, told to every container that needs it.
    pub(crate) fn of(shared: &SharedStore) -> Result<&Store, Arc<StoreError>> {
        shared
            .get_or_init(|| Store::open().map_err(Arc::new))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The cache of `WASM_OCI_CACHE`, else the node's (`/var/lib/wasm-oci`, whatever HOME
    /// containerd has, if any), and registry options from the environment: containerd's, so
    /// `DOCKER_CONFIG` and `SSL_CERT_FILE` set for it apply.
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

/// What the signature policy says of a module read from the container's rootfs.
#[derive(Debug)]
pub(crate) enum RootfsVerdict {
    /// It runs as read.
    Runs,
    /// It runs only as the wasm of this reference's signed artifact (the image's name, whose
    /// scope needs signatures): an `image:` that `wasm-oci push` wrote.
    IfSignedAs(wasm_oci_fetcher::OciReference),
}

/// Whether a module read from the container's rootfs may run: it carries no signature of its
/// own. Under a policy that is accept-anything for the image's name it runs; under one that
/// needs signatures there, only as the signed artifact of that name (see
/// [`verify_rootfs_module`]); the name unknown, only under a policy that accepts anything
/// anywhere. The operator may allow rootfs modules whatever the policy, in the shim config.
pub(crate) fn check_rootfs_module(
    config: &ShimConfig,
    annotations: &HashMap<String, String>,
    module: &str,
) -> Result<RootfsVerdict, CreateError> {
    if config.rootfs_modules == config::RootfsModules::Allow {
        return Ok(RootfsVerdict::Runs);
    }
    let policy = node_policy().map_err(|e| Arc::new(StoreError::Policy(e)))?;
    let image = IMAGE_NAME_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key))
        .and_then(|name| wasm_oci_fetcher::parse_reference(name).ok());
    let refusal = match &image {
        Some(image) => {
            let gate = wasm_oci_trust::Gate::new(&policy, image);
            if gate.admit().is_ok() && gate.needs_signatures() {
                return Ok(RootfsVerdict::IfSignedAs(image.clone()));
            }
            gate.admit_unsigned().err().map(RootfsRefusal::Policy)
        }
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
        None => Ok(RootfsVerdict::Runs),
        Some(why) => Err(CreateError::RootfsRefused {
            module: wasm_oci_artifact::text::printable(module).to_string(),
            why,
            config: config.source_name(),
        }),
    }
}

/// The signed artifact `image` names whose wasm is `bytes` (a rootfs module), verified
/// under the node's policy as a module named by reference is: what runs is then the signed
/// wasm, byte for byte the module containerd unpacked. The cache's verified entry of the
/// name is taken when its wasm is these bytes; else the registry is asked, and its answer is
/// judged before anything is stored: the bytes enter the cache (as the layer, which is not
/// downloaded again) only when a signed manifest of the name names them, and a name whose
/// manifest names another wasm is refused.
pub(crate) async fn verify_rootfs_module(
    fetcher: &wasm_oci_fetcher::Fetcher,
    image: &wasm_oci_fetcher::OciReference,
    module: &str,
    bytes: &[u8],
) -> Result<wasm_oci_fetcher::Resolved, CreateError> {
    let local = wasm_oci_fetcher::LocalLayer::of(bytes);
    let refused = |why| CreateError::RootfsNotSigned {
        module: wasm_oci_artifact::text::printable(module).to_string(),
        image: wasm_oci_artifact::text::printable(&image.whole()).to_string(),
        why,
    };
    if let Ok(cached) = fetcher.resolve(image, PullPolicy::Never).await
        && cached.entry.layer_digest == *local.digest()
    {
        return Ok(cached);
    }
    fetcher
        .pull_with_layer(image, &local)
        .await
        .map_err(|cause| match cause {
            wasm_oci_fetcher::Error::OtherLayer { layer, local, .. } => refused(NotSigned::Other {
                found: local,
                named: layer,
            }),
            cause => refused(NotSigned::Unverified {
                cause: Box::new(cause),
            }),
        })
}
