//! The task service's state: the containers this shim holds, the cgroup it sits in, its
//! engine and its cache; and the small helpers every request uses.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, TtrpcResult};

use super::container::Container;
use super::netns::{self, Network};
use super::store::SharedStore;
use crate::runner::{EngineOptions, Runner};

/// The task service: one shim process may hold several containers of one group.
#[derive(Clone)]
pub struct TaskService {
    pub(crate) exit: Arc<ExitSignal>,
    pub(crate) namespace: String,
    /// This shim's own ttrpc socket (`unix:///run/containerd/s/...`).
    pub(crate) socket: String,
    pub(crate) publisher: Arc<RemotePublisher>,
    pub(crate) containers: Arc<Mutex<HashMap<String, Container>>>,
    /// The container whose cgroup this process is in.
    pub(crate) joined: Arc<Mutex<Option<String>>>,
    /// The shared cache and one fetcher for every pull of this process, opened on first use.
    pub(super) store: Arc<SharedStore>,
    /// The process's engine, made once (see `create_task_service`).
    pub(crate) runner: Arc<tokio::sync::OnceCell<Arc<Runner>>>,
}

/// The network of a container whose spec names the node's own namespace: the CRI plugin names
/// a pod's network as its sandbox process's (`/proc/PID/ns/net`), and a wasm sandbox's process
/// is a shim, which stays in the node's network. The pod's is the one its sandbox container's
/// own spec named: that container's here, or its bundle's beside this one (a sandbox in
/// another shim). `None` when neither says.
pub(crate) fn pod_network(
    containers: &HashMap<String, Container>,
    bundle: &str,
    sandbox: Option<&str>,
) -> Option<Network> {
    let here = sandbox
        .and_then(|id| containers.get(id))
        .into_iter()
        .chain(containers.values())
        .find(|c| c.pause && matches!(c.network, Network::Path(_)) && !c.network.is_ours_by_path());
    if let Some(c) = here {
        return Some(c.network.clone());
    }
    netns::sandbox_network(Path::new(bundle), sandbox?).map(Network::Path)
}

pub(crate) fn err(message: impl std::fmt::Display) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::protos::ttrpc::Error::Others(message.to_string())
}

pub(crate) fn ts(seconds: i64) -> Timestamp {
    let mut t = Timestamp::new();
    t.seconds = seconds;
    t
}

/// Microseconds since `began`, for the debug log: what each request cost inside the shim.
pub(crate) fn micros(began: Instant) -> u64 {
    u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TaskService {
    pub(crate) async fn runner(&self) -> TtrpcResult<Arc<Runner>> {
        self.runner
            .get_or_try_init(|| async {
                let runner = tokio::task::spawn_blocking(|| Runner::new(EngineOptions::SHIM))
                    .await
                    .map_err(err)?
                    .map_err(|e| err(format!("setting up the wasmtime engine: {e:#}")))?;
                // Started here, on a thread of the task service: never in a guest's cgroup,
                // so that the ticks which stop a killed guest are never throttled with it.
                runner.start_ticker();
                Ok(Arc::new(runner))
            })
            .await
            .cloned()
    }

    pub(crate) async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, error = %e, "cannot publish event");
        }
    }

    pub(crate) fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> TtrpcResult<T>,
    ) -> TtrpcResult<T> {
        let mut containers = self.containers.lock().expect("containers lock");
        let c = containers
            .get_mut(id)
            .ok_or_else(|| err(format!("container {id} not found")))?;
        f(c)
    }

    /// Puts this process in `id`'s cgroup, unless it is in one of its containers' already.
    pub(crate) fn join_cgroup(&self, id: &str) {
        let mut joined = self.joined.lock().expect("cgroup lock");
        if joined.is_some() {
            return;
        }
        let containers = self.containers.lock().expect("containers lock");
        if let Some(cgroup) = containers.get(id).and_then(|c| c.cgroup.as_ref()) {
            cgroup.join();
            *joined = Some(id.to_owned());
        }
    }

    /// Before `container` (`id`) is removed: when this process is in its cgroup, joins the
    /// cgroup of a container still here, so the guests stay accounted, else leaves (the
    /// cgroup itself is removed with the container's other leftovers, by `discard`).
    pub(crate) fn leave_cgroup(&self, id: &str, container: &Container) {
        let Some(cgroup) = &container.cgroup else {
            return;
        };
        let mut joined = self.joined.lock().expect("cgroup lock");
        if joined.as_deref() == Some(id) {
            let containers = self.containers.lock().expect("containers lock");
            match containers
                .iter()
                .find_map(|(id, c)| Some((id, c.cgroup.as_ref()?)))
            {
                Some((next, other)) => {
                    other.join();
                    *joined = Some(next.clone());
                }
                None => {
                    cgroup.leave();
                    *joined = None;
                }
            }
        }
    }
}
