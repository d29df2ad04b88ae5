//! The shim's process side (containerd's `Shim` trait): `start` finds or spawns the shim of
//! a container's group, `delete` cleans up after a shim that died, and the task service is
//! made here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::util::read_spec;
use containerd_shim::asynchronous::{ExitSignal, Shim, spawn};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::timestamp;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};

use super::annotations::{ANNOTATION_GROUP, CRI_SANDBOX_ID};
use super::cgroup;
use super::config::{GroupBy, ShimConfig};
use super::service::TaskService;

/// The shim process, as containerd's `Shim` trait drives it.
#[derive(Clone)]
pub(crate) struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// This shim's own ttrpc socket (`unix:///run/containerd/s/...`).
    socket: String,
}

#[async_trait]
impl Shim for Service {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            socket: args.socket.clone(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let config = ShimConfig::get().map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // containerd runs `start` in the new container's bundle.
        let annotations = read_spec(".")
            .await
            .ok()
            .and_then(|spec| spec.annotations().clone())
            .unwrap_or_default();
        let group = group_of(config.group_by, &annotations).unwrap_or_else(|| opts.id.clone());
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &group);
        let path = address.strip_prefix("unix://").unwrap_or(&address);
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            // The group's shim is up and takes this container too: no process to start.
            let _ = std::fs::write("address", &address);
            return Ok(address);
        }
        spawn(opts, &group, Vec::new()).await
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // The shim died (containerd asks this in the container's bundle): its cgroup would
        // stay behind, with no process to remove it.
        if let Ok(spec) = read_spec(".").await
            && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
            && let Ok(relative) = cgroup::relative_path(&path.to_string_lossy())
        {
            cgroup::remove_leftover(Path::new(cgroup::ROOT), &relative);
        }
        let mut response = DeleteResponse::new();
        response.exit_status = 137;
        response.exited_at = MessageField::some(timestamp()?);
        Ok(response)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let service = TaskService {
            exit: self.exit.clone(),
            namespace: self.namespace.clone(),
            socket: self.socket.clone(),
            publisher: Arc::new(publisher),
            containers: Arc::default(),
            joined: Arc::default(),
            store: Arc::default(),
            runner: Arc::default(),
        };
        // Build the engine while containerd prepares the first Create, not before the socket
        // is up: a new group's shim start is on the critical path of its first container.
        let early = service.clone();
        tokio::spawn(async move {
            if let Err(e) = early.runner().await {
                tracing::error!(error = %e, "cannot set up the wasmtime engine");
            }
        });
        service
    }
}

/// The shim group a container belongs to, by the operator's rule: `None` when it is alone.
fn group_of(by: GroupBy, annotations: &HashMap<String, String>) -> Option<String> {
    let pod = || annotations.get(CRI_SANDBOX_ID);
    match by {
        GroupBy::Container => None,
        GroupBy::Pod => pod(),
        GroupBy::Annotation => annotations.get(ANNOTATION_GROUP).or_else(pod),
    }
    .filter(|g| !g.is_empty())
    .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_operator_decides_which_containers_share_a_shim() {
        let pod = annotations(&[(CRI_SANDBOX_ID, "pod1")]);
        let grouped = annotations(&[(CRI_SANDBOX_ID, "pod1"), (ANNOTATION_GROUP, "g")]);
        let alone = annotations(&[(ANNOTATION_GROUP, "g")]);
        assert_eq!(group_of(GroupBy::Pod, &pod), Some("pod1".into()));
        // A pod's annotation never groups it with another pod, unless the operator says so.
        assert_eq!(group_of(GroupBy::Pod, &grouped), Some("pod1".into()));
        assert_eq!(group_of(GroupBy::Pod, &alone), None);
        assert_eq!(group_of(GroupBy::Annotation, &grouped), Some("g".into()));
        assert_eq!(group_of(GroupBy::Annotation, &pod), Some("pod1".into()));
        assert_eq!(group_of(GroupBy::Container, &grouped), None);
        assert_eq!(
            group_of(GroupBy::Pod, &annotations(&[(CRI_SANDBOX_ID, "")])),
            None
        );
    }
}
