//! The shim's process side: `start` finds or spawns the shim of a container's group (under
//! either start protocol, `bootstrap`), and through containerd's `Shim` trait, `delete`
//! cleans up after a shim that died, and the task service is made here.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::util::read_spec;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::timestamp;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};

use sha2::{Digest as _, Sha256};

use super::annotations::{ANNOTATION_GROUP, CRI_SANDBOX_ID};
use super::bootstrap::{BootstrapError, LOG_LEVEL_DEBUG, MAX_INPUT, StartRequest};
use super::config::{GroupBy, ShimConfig};
use super::error::ConfigError;
use super::service::TaskService;
use super::{cgroup, linux, mounts};

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

    async fn start_shim(&mut self, _opts: StartOpts) -> Result<String, Error> {
        // `main` answers `start` itself (`start` below): the protocol's `run` would read
        // stdin as runc's options, which containerd 2.3 no longer sends.
        Err(Error::Unimplemented(
            "start is answered before the shim protocol runs".into(),
        ))
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        if linux::is_handed_over(Path::new(".")) {
            use containerd_shim::protos::protobuf::Message as _;
            let answer = linux::delete().map_err(|e| Error::Other(e.to_string()))?;
            return DeleteResponse::parse_from_bytes(&answer).map_err(Into::into);
        }
        // The shim died (containerd asks this in the container's bundle): its cgroup would
        // stay behind, with no process to remove it.
        if let Ok(spec) = read_spec(".").await
            && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
            && let Ok(relative) = cgroup::relative_path(&path.to_string_lossy())
        {
            cgroup::remove_leftover(Path::new(cgroup::ROOT), &relative);
        }
        // Its guests' binds would keep the bundle busy: containerd could not remove it.
        mounts::remove_leftovers(Path::new("."));
        // Its socket, when nobody listens on it any more (a group's shim that died is gone
        // for every container of the group).
        if let Ok(address) = std::fs::read_to_string("address") {
            let path = address.trim().trim_start_matches("unix://");
            if !path.is_empty() && !path.starts_with('@') && UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
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

/// The environment variable that carries containerd's TTRPC address to a shim (what the
/// protocol's `run` reads in the serving process).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// Why `start` failed: containerd shows it (the start's output) in its own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StartError {
    #[error(transparent)]
    Request(#[from] BootstrapError),
    #[error("reading containerd's request on stdin: {0}")]
    Stdin(std::io::Error),
    #[error("containerd wrote more than {MAX_INPUT} bytes on stdin")]
    TooLarge,
    #[error("containerd named no TTRPC address (TTRPC_ADDRESS)")]
    NoTtrpcAddress,
    #[error("the socket directory {0:?} is not an absolute path")]
    SocketDir(String),
    #[error("{0}")]
    Config(Arc<ConfigError>),
    #[error("starting the shim: {0}")]
    Spawn(std::io::Error),
    #[error("placing the shim in cgroup {cgroup}: {cause}")]
    Cgroup { cgroup: String, cause: Error },
    #[error("adjusting the shim's OOM score: {0}")]
    OomScore(Error),
    #[error("waiting for the shim to serve: {0}")]
    Wait(std::io::Error),
    #[error("the shim ended before it served ({0}); its log says why")]
    Exited(ExitStatus),
    #[error("the shim serves nothing at {0}")]
    NotServing(String),
    #[error(transparent)]
    Linux(#[from] linux::HandOverError),
}

/// Who starts, and where the shim is to serve: from the bootstrap parameters, else from the
/// command line and the environment.
struct Target {
    id: String,
    namespace: String,
    grpc_address: String,
    ttrpc_address: String,
    debug: bool,
    socket_dir: PathBuf,
}

impl Target {
    fn of(request: &StartRequest, flags: &Flags) -> Result<Target, StartError> {
        let target = match request {
            StartRequest::Bootstrap(p) => Target {
                id: p.instance_id.clone(),
                namespace: p.namespace.clone(),
                grpc_address: p.containerd_grpc_address.clone(),
                ttrpc_address: p.containerd_ttrpc_address.clone(),
                debug: p.log_level <= LOG_LEVEL_DEBUG,
                socket_dir: p
                    .socket_dir
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map_or_else(default_socket_dir, PathBuf::from),
            },
            StartRequest::Legacy(_) => Target {
                id: flags.id.clone(),
                namespace: flags.namespace.clone(),
                grpc_address: flags.address.clone(),
                ttrpc_address: std::env::var(TTRPC_ADDRESS)
                    .map_err(|_| StartError::NoTtrpcAddress)?,
                debug: flags.debug,
                socket_dir: default_socket_dir(),
            },
        };
        if !target.socket_dir.is_absolute() {
            return Err(StartError::SocketDir(
                target.socket_dir.display().to_string(),
            ));
        }
        Ok(target)
    }
}

/// Where shims' sockets go unless containerd says otherwise.
fn default_socket_dir() -> PathBuf {
    Path::new(containerd_shim::SOCKET_ROOT).join("s")
}

/// The socket of a group's shim: a hash of containerd's address, the namespace and the group
/// in `dir`, as containerd's own shims name theirs (the name is short enough for a socket).
fn socket_address(dir: &Path, grpc_address: &str, namespace: &str, group: &str) -> String {
    let key = Path::new(grpc_address).join(namespace).join(group);
    let hash = Sha256::digest(key.as_os_str().as_bytes());
    format!("unix://{}/{}", dir.display(), hex::encode(hash))
}

/// `start`, run in the new container's bundle: reads containerd's request from `stdin`,
/// finds the shim of the container's group or spawns it, and returns what to answer on
/// stdout. A shim spawned here is killed again if it cannot be made to serve.
pub(crate) fn start(flags: &Flags, stdin: impl Read) -> Result<Vec<u8>, StartError> {
    let mut input = Vec::new();
    stdin
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(StartError::Stdin)?;
    if input.len() as u64 > MAX_INPUT {
        return Err(StartError::TooLarge);
    }
    // A Linux container of a mixed pod is runc's (see `linux`): runc's shim reads the same
    // request and its answer is containerd's.
    if let Ok(bytes) = std::fs::read("config.json")
        && let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && linux::is_linux(&spec)
    {
        return Ok(linux::start(spec, &input)?);
    }
    let request = StartRequest::decode(&input, &flags.id, &flags.namespace)?;
    let shim_cgroup = request.shim_cgroup()?;
    let target = Target::of(&request, flags)?;
    let config = ShimConfig::get().map_err(StartError::Config)?;
    let annotations = oci_spec::runtime::Spec::load("config.json")
        .ok()
        .and_then(|spec| spec.annotations().clone())
        .unwrap_or_default();
    let group = group_of(config.group_by, &annotations).unwrap_or_else(|| target.id.clone());
    let address = socket_address(
        &target.socket_dir,
        &target.grpc_address,
        &target.namespace,
        &group,
    );
    let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(&address));
    if UnixStream::connect(&path).is_ok() {
        // The group's shim is up and takes this container too: no process to start.
        let _ = std::fs::write("address", &address);
        return Ok(request.answer(&address));
    }
    let mut command = Command::new(std::env::current_exe().map_err(StartError::Spawn)?);
    command
        .args(["-namespace", &target.namespace, "-id", &target.id])
        .args(["-address", &target.grpc_address, "-socket", &address])
        .args(target.debug.then_some("-debug"))
        .env(TTRPC_ADDRESS, &target.ttrpc_address)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut shim = Spawned {
        child: Some(command.spawn().map_err(StartError::Spawn)?),
        socket: path,
    };
    let pid = shim.pid();
    if let Some(cgroup) = shim_cgroup {
        containerd_shim::cgroup::add_task_to_cgroup(&cgroup, pid)
            .map_err(|cause| StartError::Cgroup { cgroup, cause })?;
    }
    containerd_shim::cgroup::adjust_oom_score(pid).map_err(StartError::OomScore)?;
    shim.wait_serving(&address)?;
    // The shim removes the socket this names when it ends.
    let _ = std::fs::write("address", &address);
    shim.keep();
    Ok(request.answer(&address))
}

/// A shim process `start` spawned: killed, waited for, and its socket removed when dropped,
/// unless it serves and is kept.
struct Spawned {
    child: Option<Child>,
    socket: PathBuf,
}

impl Spawned {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until the shim serves: it closes its stdout once its socket listens, or ends.
    fn wait_serving(&mut self, address: &str) -> Result<(), StartError> {
        let child = self.child.as_mut().expect("not kept yet");
        if let Some(mut out) = child.stdout.take() {
            std::io::copy(&mut out, &mut std::io::sink()).map_err(StartError::Wait)?;
        }
        let serving = || UnixStream::connect(&self.socket).is_ok();
        match child.try_wait().map_err(StartError::Wait)? {
            // Another start of the group won the race to the socket: this one left it be.
            Some(status) if status.success() && serving() => Ok(()),
            Some(status) => Err(StartError::Exited(status)),
            None if serving() => Ok(()),
            None => Err(StartError::NotServing(address.to_owned())),
        }
    }

    /// The shim serves: it outlives `start`.
    fn keep(mut self) {
        self.child = None;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        // Its socket, unless another shim of the group serves it.
        if UnixStream::connect(&self.socket).is_err() {
            let _ = std::fs::remove_file(&self.socket);
        }
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
    fn a_groups_socket_is_where_containerds_shims_put_theirs() {
        let address = "/run/containerd/containerd.sock";
        assert_eq!(
            socket_address(&default_socket_dir(), address, "k8s.io", "pod1"),
            containerd_shim::socket_address(address, "k8s.io", "pod1")
        );
        // containerd 2.3's socket_dir moves it, under the same name.
        let moved = socket_address(Path::new("/run/c2/s"), address, "k8s.io", "pod1");
        let default = containerd_shim::socket_address(address, "k8s.io", "pod1");
        assert_eq!(
            moved.rsplit('/').next(),
            default.rsplit('/').next(),
            "{moved} {default}"
        );
        assert!(moved.starts_with("unix:///run/c2/s/"), "{moved}");
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
