//! A bundle's spec as runner options: [`Plan::of`] reads what the spec and the operator's
//! config say (arguments, environment, user, preopens, mounts, limits, network, where the wasm
//! comes from) without touching the node; [`prepare`] then does what the plan asks (reads the
//! module or pulls it, makes the cgroup and the network, binds the mounts) into a
//! [`Container`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::api;
use containerd_shim::asynchronous::util::read_spec;
use oci_spec::runtime::Spec;
use tokio::sync::watch;
use wasm_oci_fetcher::PullPolicy;

use super::annotations::{
    ANNOTATION_PREOPENS, ANNOTATION_PULL, ANNOTATION_REFERENCE, CRI_CONTAINER_TYPE, CRI_SANDBOX_ID,
};
use super::cgroup::{self, Cgroup};
use super::config::ShimConfig;
use super::container::{Container, Module};
use super::error::CreateError;
use super::netns::{self, Network};
use super::state::TaskState;
use super::store::{RootfsVerdict, SharedStore, Store, check_rootfs_module, verify_rootfs_module};
use super::{mounts, rootfs};
use crate::runner::{Identity, Preopen};

/// Where the guest's wasm is to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// None: a pod's sandbox runs no wasm.
    Sandbox,
    /// Pulled into the shared cache by reference, under a pull policy.
    Reference {
        /// The reference, parsed; its registry is one the operator allows.
        reference: String,
        /// `io.wasm-oci.pull`, `missing` by default.
        policy: PullPolicy,
    },
    /// `process.args[0]`, read from inside the rootfs.
    Rootfs(String),
}

/// A bind mount of a directory, to be bound again `nodev,nosuid` for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
    /// The directory on the node.
    pub(crate) source: PathBuf,
    /// Where the guest sees it.
    pub(crate) guest: String,
    /// Whether the guest may only read.
    pub(crate) read_only: bool,
}

/// What a spec asks for, under the operator's config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Whether this is a pod's sandbox ("pause") container.
    pub(crate) pause: bool,
    /// The pod sandbox the CRI plugin put it in.
    pub(crate) sandbox: Option<String>,
    /// `process.user`, when it is not root.
    pub(crate) identity: Option<Identity>,
    /// `process.args`.
    pub(crate) args: Vec<String>,
    /// `process.env`, split at the first `=`.
    pub(crate) env: Vec<(String, String)>,
    /// Whether the rootfs is read-only for the guest (`root.readonly`).
    pub(crate) root_read_only: bool,
    /// The operator's preopen profiles the container names (`io.wasm-oci.preopens`).
    pub(crate) profiles: Vec<Preopen>,
    /// The spec's bind mounts of directories.
    pub(crate) binds: Vec<Bind>,
    /// Where the wasm comes from.
    pub(crate) source: Source,
    /// `linux.resources`.
    pub(crate) resources: cgroup::Resources,
    /// `linux.cgroupsPath`, relative to each hierarchy's root.
    pub(crate) cgroup: Option<PathBuf>,
    /// What `linux.namespaces` says of the network.
    pub(crate) network: netns::Asked,
    /// The annotations, for the trust decision on a rootfs module.
    pub(crate) annotations: HashMap<String, String>,
}

impl Plan {
    /// Reads `spec` under `config`; refuses what the operator does not allow (a profile it
    /// has not defined, a registry it does not allow, a cgroup path out of the root).
    pub(crate) fn of(spec: &Spec, config: &ShimConfig) -> Result<Plan, CreateError> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        let pause = annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("sandbox");
        let process = spec.process().clone().ok_or(CreateError::NoProcess)?;
        // The guest's file access is done as the spec's user, as runc would run its process.
        let user = process.user();
        let identity = (user.uid() != 0
            || user.gid() != 0
            || user
                .additional_gids()
                .as_ref()
                .is_some_and(|g| !g.is_empty()))
        .then(|| Identity {
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
        });
        let args = process.args().clone().unwrap_or_default();
        let env = process
            .env()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();

        // The spec's bind mounts of directories, bound again nodev,nosuid for the guest.
        let mut binds = Vec::new();
        for m in spec.mounts().clone().unwrap_or_default() {
            let options = m.options().clone().unwrap_or_default();
            let is_bind = m.typ().as_deref() == Some("bind")
                || options.iter().any(|o| o == "bind" || o == "rbind");
            if let (true, Some(source)) = (is_bind, m.source()) {
                // WASI preopens directories only; a file the kubelet mounts (/etc/hosts,
                // /etc/hostname, /etc/resolv.conf, /dev/termination-log) is left out.
                if !source.is_dir() {
                    tracing::debug!(source = %source.display(), destination = %m.destination().display(), "a mount of a file is not visible to the guest");
                    continue;
                }
                binds.push(Bind {
                    source: source.clone(),
                    guest: m.destination().display().to_string(),
                    read_only: options.iter().any(|o| o == "ro"),
                });
            }
        }
        // Host paths are the operator's: a container picks profiles of the shim config by name.
        let profiles = match annotations.get(ANNOTATION_PREOPENS) {
            Some(names) => config.profiles_for(names)?,
            None => Vec::new(),
        };

        let source = match annotations.get(ANNOTATION_REFERENCE) {
            _ if pause => Source::Sandbox,
            Some(reference) => {
                let parsed = wasm_oci_fetcher::parse_reference(reference)
                    .map_err(|e| CreateError::Reference(Box::new(e)))?;
                config.check_registry(parsed.registry())?;
                let policy = match annotations.get(ANNOTATION_PULL) {
                    Some(p) => p.parse().map_err(CreateError::PullPolicy)?,
                    None => PullPolicy::Missing,
                };
                Source::Reference {
                    reference: reference.clone(),
                    policy,
                }
            }
            None => Source::Rootfs(args.first().ok_or(CreateError::NoArgs)?.clone()),
        };

        let cgroup = match spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
            Some(path) => Some(cgroup::relative_path(&path.to_string_lossy())?),
            None => None,
        };
        Ok(Plan {
            pause,
            sandbox: annotations.get(CRI_SANDBOX_ID).cloned(),
            identity,
            args,
            env,
            root_read_only: spec
                .root()
                .as_ref()
                .is_some_and(|r| r.readonly().unwrap_or(false)),
            profiles,
            binds,
            source,
            resources: cgroup::Resources::of(spec),
            cgroup,
            network: netns::Asked::of(spec),
            annotations,
        })
    }
}

/// Finds the module and what the guest gets, from the bundle's spec, under the operator's
/// config: the container's cgroup is made with its limits here too, and its network.
pub(crate) async fn prepare(
    req: &api::CreateTaskRequest,
    rootfs: &Path,
    store: &SharedStore,
) -> Result<Container, CreateError> {
    let config = ShimConfig::get()?;
    let spec = read_spec(&req.bundle)
        .await
        .map_err(|cause| CreateError::ReadSpec {
            cause: Box::new(cause),
        })?;
    let plan = Plan::of(&spec, config)?;

    let mut preopens = vec![Preopen {
        host: rootfs.to_owned(),
        guest: "/".into(),
        read_only: plan.root_read_only,
    }];
    preopens.extend(plan.profiles.iter().cloned());

    let module = match &plan.source {
        Source::Sandbox => None,
        Source::Reference { reference, policy } => {
            let Store { cache, fetcher } = Store::of(store)?;
            let parsed = wasm_oci_fetcher::parse_reference(reference)
                .map_err(|e| CreateError::Reference(Box::new(e)))?;
            let artifact =
                fetcher
                    .resolve(&parsed, *policy)
                    .await
                    .map_err(|cause| CreateError::Pull {
                        cause: Box::new(cause),
                    })?;
            Some(Module::Cached {
                cache: cache.clone(),
                artifact,
            })
        }
        Source::Rootfs(first) => {
            let verdict = check_rootfs_module(config, &plan.annotations, first)?;
            let bytes = rootfs::read_module(rootfs, first, config.max_module_size)?;
            match verdict {
                RootfsVerdict::Runs => Some(Module::Rootfs {
                    name: PathBuf::from(first),
                    bytes,
                }),
                // The signed artifact whose wasm these bytes are: it runs from the cache.
                RootfsVerdict::IfSignedAs(image) => {
                    let Store { cache, fetcher } = Store::of(store)?;
                    let artifact = verify_rootfs_module(fetcher, &image, first, &bytes).await?;
                    Some(Module::Cached {
                        cache: cache.clone(),
                        artifact,
                    })
                }
            }
        }
    };

    let cgroup = match &plan.cgroup {
        Some(relative) => Some(Arc::new(Cgroup::create(
            Path::new(cgroup::ROOT),
            relative,
            plan.resources,
        )?)),
        None => None,
    };
    let discard_cgroup = || {
        if let Some(cgroup) = &cgroup {
            cgroup.remove();
        }
    };

    // The network the spec asks for; a new namespace is made now, and freed with the handle.
    let network = match Network::for_spec(plan.network.clone()) {
        Ok(network) => network,
        Err(e) => {
            discard_cgroup();
            return Err(CreateError::Network { cause: Box::new(e) });
        }
    };

    // Last, so that nothing fails after it: each mount's source, bound nodev,nosuid.
    let mut guest_mounts = Vec::new();
    for (i, bind) in plan.binds.iter().enumerate() {
        let target = mounts::guest_mount_dir(Path::new(&req.bundle), i);
        if let Err(e) = mounts::bind_hardened(&bind.source, &target, bind.read_only) {
            guest_mounts
                .iter()
                .for_each(|t: &PathBuf| mounts::unmount(t));
            discard_cgroup();
            return Err(e.into());
        }
        preopens.push(Preopen {
            host: target.clone(),
            guest: bind.guest.clone(),
            read_only: bind.read_only,
        });
        guest_mounts.push(target);
    }

    let (state, _) = watch::channel(TaskState::Created);
    Ok(Container {
        bundle: req.bundle.clone(),
        rootfs: rootfs.to_owned(),
        mounted: false,
        guest_mounts,
        identity: plan.identity,
        network,
        sandbox: plan.sandbox,
        stdin: req.stdin.clone(),
        stdout: req.stdout.clone(),
        stderr: req.stderr.clone(),
        module,
        pause: plan.pause,
        args: plan.args,
        env: plan.env,
        preopens,
        max_memory: plan
            .resources
            .memory_limit
            .and_then(|l| usize::try_from(l).ok()),
        cgroup,
        state,
        stop: Arc::default(),
        abort: Arc::default(),
        killed: Arc::default(),
        signal: Arc::new(Mutex::new(0)),
        usage: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut base = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["/app.wasm", "x"],
                        "env": ["A=1", "B=two=2", "NOEQUALS"]},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "network"}], "cgroupsPath": "/ns/c1",
                      "resources": {"memory": {"limit": 67108864}}}
        });
        merge(&mut base, json);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }

    #[test]
    fn a_spec_becomes_the_guests_arguments_environment_limits_and_network() {
        let plan = Plan::of(&spec(serde_json::json!({})), &ShimConfig::default()).unwrap();
        assert_eq!(plan.args, ["/app.wasm", "x"]);
        assert_eq!(
            plan.env,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two=2".to_owned())
            ]
        );
        assert_eq!(plan.identity, None, "root is the shim's own user");
        assert_eq!(plan.source, Source::Rootfs("/app.wasm".into()));
        assert_eq!(plan.cgroup, Some(PathBuf::from("ns/c1")));
        assert_eq!(plan.resources.memory_limit, Some(64 << 20));
        assert_eq!(plan.network, netns::Asked::New);
        assert!(!plan.pause && !plan.root_read_only);
    }

    #[test]
    fn the_specs_user_is_the_guests() {
        let plan = Plan::of(
            &spec(serde_json::json!({"process": {"user":
                {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10]}}})),
            &ShimConfig::default(),
        )
        .unwrap();
        assert_eq!(
            plan.identity,
            Some(Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10]
            })
        );
        // Root with supplementary groups is not root as the shim is.
        let plan = Plan::of(
            &spec(serde_json::json!({"process": {"user":
                {"uid": 0, "gid": 0, "additionalGids": [5]}}})),
            &ShimConfig::default(),
        )
        .unwrap();
        assert!(plan.identity.is_some());
    }

    #[test]
    fn only_bind_mounts_of_directories_reach_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let plan = Plan::of(
            &spec(serde_json::json!({"mounts": [
                {"destination": "/data", "type": "bind", "source": dir.path(), "options": ["rbind", "ro"]},
                {"destination": "/rw", "source": dir.path(), "options": ["bind"]},
                {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["rbind"]},
                {"destination": "/proc", "type": "proc", "source": "proc"}
            ]})),
            &ShimConfig::default(),
        )
        .unwrap();
        assert_eq!(
            plan.binds,
            [
                Bind {
                    source: dir.path().to_owned(),
                    guest: "/data".into(),
                    read_only: true
                },
                Bind {
                    source: dir.path().to_owned(),
                    guest: "/rw".into(),
                    read_only: false
                }
            ]
        );
    }

    #[test]
    fn a_pods_annotations_are_input_never_host_paths_or_node_addresses() {
        let annotated = |pairs: serde_json::Value| {
            Plan::of(
                &spec(serde_json::json!({ "annotations": pairs })),
                &ShimConfig::default(),
            )
        };
        let e = annotated(serde_json::json!({"io.wasm-oci.preopens": "/::/"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a preopen profile"), "{e}");
        let e = annotated(serde_json::json!({"io.wasm-oci.reference": "127.0.0.1:5000/m:v1"}))
            .unwrap_err()
            .to_string();
        assert!(!e.is_empty());
        let e = annotated(serde_json::json!({
            "io.wasm-oci.reference": "registry.example/m:v1", "io.wasm-oci.pull": "sometimes"
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains(ANNOTATION_PULL), "{e}");
        let plan = annotated(serde_json::json!({
            "io.wasm-oci.reference": "registry.example/m:v1", "io.wasm-oci.pull": "always"
        }))
        .unwrap();
        assert_eq!(
            plan.source,
            Source::Reference {
                reference: "registry.example/m:v1".into(),
                policy: PullPolicy::Always
            }
        );
        let e = Plan::of(
            &spec(serde_json::json!({"linux": {"cgroupsPath": "/../../x"}})),
            &ShimConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn a_sandbox_runs_no_wasm_and_keeps_its_pods_network_path() {
        let plan = Plan::of(
            &spec(serde_json::json!({
                "annotations": {"io.kubernetes.cri.container-type": "sandbox",
                                "io.kubernetes.cri.sandbox-id": "pod1"},
                "process": {"args": []},
                "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]}
            })),
            &ShimConfig::default(),
        )
        .unwrap();
        assert!(plan.pause);
        assert_eq!(plan.source, Source::Sandbox);
        assert_eq!(plan.sandbox.as_deref(), Some("pod1"));
        assert_eq!(
            plan.network,
            netns::Asked::Path("/var/run/netns/cni-1".into())
        );
        let e = Plan::of(
            &spec(serde_json::json!({"process": {"args": []}})),
            &ShimConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("process.args is empty"), "{e}");
    }
}
