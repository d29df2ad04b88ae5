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

mod cgroup;
pub mod config;
mod mounts;
mod rootfs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_shim::asynchronous::util::{mount_rootfs, read_spec};
use containerd_shim::asynchronous::{ExitSignal, Shim, run, spawn};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageDyn, MessageField};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::timestamp;
use containerd_shim::{Config, Context, DeleteResponse, Error, Flags, StartOpts, TtrpcResult, api};
use tokio::sync::watch;

use self::cgroup::Cgroup;
use self::config::{GroupBy, ShimConfig};
use crate::runner::{
    EngineOptions, Identity, Loaded, Preopen, RunOptions, Runner, ServeOptions, Wasm, World,
};
use wasm_oci_fetcher::PullPolicy;

/// The runtime name containerd knows this shim by.
pub const RUNTIME: &str = "io.containerd.wasmoci.v1";

const ANNOTATION_REFERENCE: &str = "io.wasm-oci.reference";
const ANNOTATION_PULL: &str = "io.wasm-oci.pull";
const ANNOTATION_PREOPENS: &str = "io.wasm-oci.preopens";
const ANNOTATION_GROUP: &str = "io.wasm-oci.group";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Runs the shim; what `containerd-shim-wasmoci-v1`'s `main` calls.
pub fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the shim's runtime");
    runtime.block_on(run::<Service>(RUNTIME, None));
}

#[derive(Clone)]
struct Service {
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
        let config = ShimConfig::get().map_err(Error::InvalidArgument)?;
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

/// How a container ended: its status and when.
#[derive(Clone, Copy)]
struct Exited {
    code: u32,
    at: i64,
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

/// Where a container's wasm comes from.
enum Module {
    /// Read from the rootfs at create: these bytes are what is hashed and compiled, and they
    /// are let go once compiled.
    Rootfs { name: PathBuf, bytes: Vec<u8> },
    /// A blob of the shared cache, pulled by reference, held until its guest ends.
    Cached {
        cache: wasm_oci_cache::Cache,
        artifact: wasm_oci_fetcher::Resolved,
    },
}

struct Container {
    bundle: String,
    rootfs: PathBuf,
    mounted: bool,
    /// The spec's mounts as bound for the guest.
    guest_mounts: Vec<PathBuf>,
    /// `process.user`, when it is not root.
    identity: Option<Identity>,
    /// The network namespace the spec names (a pod's), if any.
    netns: Option<PathBuf>,
    stdin: String,
    stdout: String,
    stderr: String,
    /// The wasm, until the container starts and hands it to its guest; none for a pod's
    /// sandbox container, which runs no wasm and waits to be killed.
    module: Option<Module>,
    /// A pod's sandbox ("pause") container.
    pause: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    max_memory: Option<usize>,
    /// The container's cgroup, made with its limits.
    cgroup: Option<Arc<Cgroup>>,
    started: bool,
    stop: Arc<AtomicBool>,
    killed: Arc<tokio::sync::Notify>,
    signal: Arc<Mutex<u32>>,
    exit: watch::Sender<Option<Exited>>,
    /// What the guest costs, for stats when this process sits in another container's cgroup.
    usage: Arc<GuestUsage>,
}

/// What one guest costs this process: its linear memory and its thread's CPU time.
#[derive(Default)]
struct GuestUsage {
    /// Bytes of linear memory and table, kept by the runner.
    memory: Arc<AtomicU64>,
    /// The guest thread's id while it runs (0 before and after).
    tid: std::sync::atomic::AtomicI32,
    /// The thread's CPU time when it ended, in nanoseconds.
    cpu_at_exit: AtomicU64,
}

impl GuestUsage {
    /// The guest thread's CPU time so far, in nanoseconds.
    fn cpu(&self) -> u64 {
        match self.tid.load(Ordering::SeqCst) {
            0 => self.cpu_at_exit.load(Ordering::SeqCst),
            tid => thread_cpu(tid),
        }
    }
}

/// A thread's time on a CPU, in nanoseconds (`/proc/self/task/TID/schedstat`'s first field).
fn thread_cpu(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The task service: one shim process may hold several containers of one group.
#[derive(Clone)]
pub struct TaskService {
    exit: Arc<ExitSignal>,
    namespace: String,
    socket: String,
    publisher: Arc<RemotePublisher>,
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// The container whose cgroup this process is in.
    joined: Arc<Mutex<Option<String>>>,
    /// The shared cache and one fetcher for every pull of this process, opened on first use.
    store: Arc<OnceLock<Result<Store, String>>>,
    /// The process's engine, made once (see `create_task_service`).
    runner: Arc<tokio::sync::OnceCell<Arc<Runner>>>,
}

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
        // Every connection a pull for a pod makes is held to the operator's rule; a config
        // that cannot be read allows no registry at all (and no container starts anyway).
        let egress = match ShimConfig::get() {
            Ok(config) => config.egress_policy(),
            Err(e) => {
                wasm_oci_fetcher::egress::Policy::new(Some(&[]), e).expect("an empty allow list")
            }
        };
        let policy = node_policy()?;
        let fetcher = wasm_oci_fetcher::Fetcher::new(
            cache.clone(),
            wasm_oci_fetcher::RegistryOptions {
                max_layer_size,
                ..wasm_oci_fetcher::RegistryOptions::from_env()
            },
        )
        .with_policy(policy)
        .with_egress(Arc::new(egress));
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

fn err(message: impl std::fmt::Display) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::protos::ttrpc::Error::Others(message.to_string())
}

fn ts(seconds: i64) -> Timestamp {
    let mut t = Timestamp::new();
    t.seconds = seconds;
    t
}

/// Microseconds since `began`, for the debug log: what each request cost inside the shim.
fn micros(began: Instant) -> u64 {
    u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TaskService {
    async fn runner(&self) -> TtrpcResult<Arc<Runner>> {
        self.runner
            .get_or_try_init(|| async {
                let runner = tokio::task::spawn_blocking(|| Runner::new(EngineOptions::SHIM))
                    .await
                    .map_err(err)?
                    .map_err(|e| err(format!("setting up the wasmtime engine: {e:#}")))?;
                Ok(Arc::new(runner))
            })
            .await
            .cloned()
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, error = %e, "cannot publish event");
        }
    }

    fn with<T>(
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
    fn join_cgroup(&self, id: &str) {
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
    /// cgroup of a container still here, so the guests stay accounted, else leaves; then
    /// removes the container's cgroup.
    fn leave_cgroup(&self, id: &str, container: &Container) {
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
        cgroup.remove();
    }
}

/// Finds the module and what the guest gets, from the bundle's spec, under the operator's
/// config: the container's cgroup is made with its limits here too.
async fn prepare(
    req: &api::CreateTaskRequest,
    rootfs: &Path,
    store: &OnceLock<Result<Store, String>>,
) -> Result<Container, String> {
    let config = ShimConfig::get()?;
    let spec = read_spec(&req.bundle)
        .await
        .map_err(|e| format!("reading the bundle's config.json: {e}"))?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    let pause = annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("sandbox");
    let process = spec.process().clone().ok_or("the spec has no process")?;
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

    // Host paths are the operator's: a container picks profiles of the shim config by name.
    let mut preopens = vec![Preopen {
        host: rootfs.to_owned(),
        guest: "/".into(),
        read_only: spec
            .root()
            .as_ref()
            .is_some_and(|r| r.readonly().unwrap_or(false)),
    }];
    // The spec's bind mounts of directories, bound again nodev,nosuid for the guest below.
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
            binds.push((
                source.clone(),
                m.destination().display().to_string(),
                options.iter().any(|o| o == "ro"),
            ));
        }
    }
    if let Some(names) = annotations.get(ANNOTATION_PREOPENS) {
        preopens.extend(config.profiles_for(names)?);
    }

    let module = match annotations.get(ANNOTATION_REFERENCE) {
        _ if pause => None,
        Some(reference) => {
            let Store { cache, fetcher } = store
                .get_or_init(Store::open)
                .as_ref()
                .map_err(Clone::clone)?;
            let parsed = wasm_oci_fetcher::parse_reference(reference).map_err(|e| e.to_string())?;
            config.check_registry(parsed.registry())?;
            let policy = match annotations.get(ANNOTATION_PULL) {
                Some(p) => p.parse().map_err(|e| format!("{ANNOTATION_PULL}: {e}"))?,
                None => PullPolicy::Missing,
            };
            let artifact = fetcher
                .resolve(&parsed, policy)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
            Some(Module::Cached {
                cache: cache.clone(),
                artifact,
            })
        }
        None => {
            let first = args
                .first()
                .ok_or("process.args is empty: name the .wasm to run")?;
            check_rootfs_module(config, &annotations, first)?;
            let bytes = rootfs::read_module(rootfs, first, config.max_module_size)?;
            Some(Module::Rootfs {
                name: PathBuf::from(first),
                bytes,
            })
        }
    };

    let resources = cgroup::Resources::of(&spec);
    let cgroup = match spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
        Some(path) => {
            let relative = cgroup::relative_path(&path.to_string_lossy())?;
            Some(Arc::new(Cgroup::create(
                Path::new(cgroup::ROOT),
                &relative,
                resources,
            )?))
        }
        None => None,
    };

    // Last, so that nothing fails after it: each mount's source, bound nodev,nosuid.
    let mut guest_mounts = Vec::new();
    for (i, (source, guest, read_only)) in binds.into_iter().enumerate() {
        let target = mounts::guest_mount_dir(Path::new(&req.bundle), i);
        if let Err(e) = mounts::bind_hardened(&source, &target, read_only) {
            guest_mounts
                .iter()
                .for_each(|t: &PathBuf| mounts::unmount(t));
            if let Some(cgroup) = &cgroup {
                cgroup.remove();
            }
            return Err(e);
        }
        preopens.push(Preopen {
            host: target.clone(),
            guest,
            read_only,
        });
        guest_mounts.push(target);
    }

    let (exit, _) = watch::channel(None);
    Ok(Container {
        bundle: req.bundle.clone(),
        rootfs: rootfs.to_owned(),
        mounted: false,
        guest_mounts,
        identity,
        netns: spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| {
                ns.iter()
                    .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
                    .and_then(|n| n.path().clone())
            }),
        stdin: req.stdin.clone(),
        stdout: req.stdout.clone(),
        stderr: req.stderr.clone(),
        module,
        pause,
        args,
        env,
        preopens,
        max_memory: resources.memory_limit.and_then(|l| usize::try_from(l).ok()),
        cgroup,
        started: false,
        stop: Arc::default(),
        killed: Arc::default(),
        signal: Arc::new(Mutex::new(0)),
        exit,
        usage: Arc::default(),
    })
}

/// Opens the stdin fifo without waiting for a writer (there is none without `ctr run -i`),
/// then makes reads block again; with no writer the guest reads end-of-file.
fn open_read(path: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ok()?;
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty()).ok()?;
    Some(file)
}

fn open_write(path: &str) -> Option<std::fs::File> {
    if path.is_empty() {
        return None;
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => Some(file),
        Err(e) => {
            // The guest still runs; what it writes is lost, and this says why.
            tracing::warn!(path, error = %e, "cannot open the container's output; it is dropped");
            None
        }
    }
}

/// What a started container's thread needs to run its guest.
struct Guest {
    options: RunOptions,
    stdin: Option<String>,
    module: Module,
    /// The container's cgroup, whose memory limit is the guest's too.
    cgroup: Option<Arc<Cgroup>>,
    signal: Arc<Mutex<u32>>,
    usage: Arc<GuestUsage>,
    /// The pod's network namespace, where an HTTP component listens.
    netns: Option<PathBuf>,
    /// The shim's runtime, which serves an HTTP component's connections.
    handle: tokio::runtime::Handle,
}

/// Room left in a container's memory limit for what the shim allocates beside the guest's
/// linear memory while it runs (WASI buffers, the runtime's own).
const SHIM_MARGIN: usize = 4 << 20;

impl Guest {
    /// Runs the guest to its end; returns the container's exit status.
    fn run(mut self, runner: &Runner, store: &OnceLock<Result<Store, String>>) -> u32 {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        self.usage.tid.store(tid, Ordering::SeqCst);
        let code = self.run_guest(runner, store);
        self.usage
            .cpu_at_exit
            .store(thread_cpu(tid), Ordering::SeqCst);
        self.usage.tid.store(0, Ordering::SeqCst);
        code
    }

    fn run_guest(&mut self, runner: &Runner, store: &OnceLock<Result<Store, String>>) -> u32 {
        if let Some(path) = &self.stdin {
            self.options.stdin = open_read(path);
        }
        // A module from the rootfs is compiled once too, keyed by the digest of the bytes read.
        let (name, wasm) = match &self.module {
            Module::Rootfs { name, bytes } => (
                name.clone(),
                Wasm::Bytes {
                    bytes,
                    cache: store
                        .get_or_init(Store::open)
                        .as_ref()
                        .ok()
                        .map(|s| &s.cache),
                },
            ),
            Module::Cached { cache, artifact } => {
                let digest = &artifact.entry.layer_digest;
                (cache.blob_path(digest), Wasm::Cached { cache, digest })
            }
        };
        let stopped = self.options.stop.clone();
        let loaded = runner.load(&name, wasm);
        // Compiled: a module read from the rootfs is not needed any more.
        if let Module::Rootfs { bytes, .. } = &mut self.module {
            *bytes = Vec::new();
        }
        // The container's limit covers everything charged to its cgroup: this process's own
        // allocations there too (the compile just now, above all). The guest gets what is
        // left, so that it is refused memory before the kernel kills the shim.
        if let (Some(limit), Some(used)) = (
            self.options.max_memory,
            self.cgroup.as_ref().and_then(|c| c.memory_usage()),
        ) {
            let used = usize::try_from(used).unwrap_or(usize::MAX);
            self.options.max_memory = Some(limit.saturating_sub(used.saturating_add(SHIM_MARGIN)));
            tracing::debug!(limit, used, guest = ?self.options.max_memory, "guest memory within the cgroup's limit");
        }
        let outcome = loaded.and_then(|loaded| {
            if loaded.world(runner.engine()) == World::Proxy
                && let Loaded::Component(component) = &loaded
            {
                return self.serve(runner, &name, component);
            }
            runner.run(&name, &loaded, &self.options)
        });
        match outcome {
            Ok(outcome) => u32::from(outcome.exit_code()),
            // Stopped by a kill: the status names its signal, as for any container.
            Err(_) if stopped.is_some_and(|s| s.load(Ordering::SeqCst)) => {
                128 + *self.signal.lock().expect("signal lock")
            }
            Err(e) => {
                let code = e.exit_code();
                if let Some(mut f) = self.options.stderr.as_ref() {
                    use std::io::Write;
                    let _ = writeln!(f, "wasm-oci: {:#}", anyhow::Error::from(e));
                }
                u32::from(code)
            }
        }
    }
}

/// Where a pod's HTTP component listens unless its env says `WASM_OCI_HTTP_ADDR`, as
/// runwasi's wasmtime shim takes it.
const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

impl Guest {
    /// Serves a `wasi:http/proxy` component on `WASM_OCI_HTTP_ADDR` in the pod's network
    /// namespace until the container is killed; a SIGTERM lets the requests in flight finish.
    fn serve(
        &self,
        runner: &Runner,
        name: &Path,
        component: &wasmtime::component::Component,
    ) -> crate::Result<crate::Outcome> {
        let setup = |e: String| crate::Error::Engine {
            source: wasmtime::format_err!("{e}"),
        };
        let addr = self
            .options
            .env
            .iter()
            .find(|(k, _)| k == "WASM_OCI_HTTP_ADDR")
            .map_or(DEFAULT_HTTP_ADDR, |(_, v)| v.as_str());
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| setup(format!("WASM_OCI_HTTP_ADDR {addr:?}: {e}")))?;
        let listener = listen_in(self.netns.as_deref(), addr).map_err(setup)?;
        // The operator's limits for pods' HTTP servers (a request's run, idle connections,
        // slow heads and bodies, connections at once); the defaults without a config.
        let http = ShimConfig::get()
            .map(|c| c.http.clone())
            .unwrap_or_default();
        let server = runner.proxy(
            name,
            component,
            ServeOptions {
                env: self.options.env.clone(),
                max_memory: self.options.max_memory,
                drain: Duration::from_secs(10),
                timeout: Some(http.request_timeout),
                idle_timeout: http.idle_timeout,
                header_timeout: http.header_timeout,
                body_timeout: http.body_timeout,
                max_connections: http.max_connections,
                // What the guests print goes to the container's log.
                stdout: self
                    .options
                    .stdout
                    .as_ref()
                    .and_then(|f| f.try_clone().ok())
                    .map(Arc::new),
                stderr: self
                    .options
                    .stderr
                    .as_ref()
                    .and_then(|f| f.try_clone().ok())
                    .map(Arc::new),
                ..ServeOptions::default()
            },
        )?;
        if let Some(mut f) = self.options.stderr.as_ref() {
            use std::io::Write;
            let _ = writeln!(f, "Serving HTTP on http://{addr}/");
        }
        let stop = self.options.stop.clone();
        let stopped = async move {
            while !stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // A SIGKILL (even after a SIGTERM) stops the requests in flight at once.
        let (stop, signal) = (self.options.stop.clone(), self.signal.clone());
        let killed = async move {
            while !(stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
                && *signal.lock().expect("signal lock") == 9)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        self.handle
            .block_on(server.serve_until(listener, stopped, killed))?;
        // A server that drained after its SIGTERM ended well; a SIGKILL is still a kill.
        let code = match *self.signal.lock().expect("signal lock") {
            9 => 137,
            _ => 0,
        };
        Ok(crate::Outcome {
            code,
            memory_denied: None,
        })
    }
}

/// A TCP listener on `addr` in the network namespace at `netns` (the pod's), or this
/// process's own. A thread of its own enters the namespace, binds, and ends: the socket stays
/// in the namespace it was made in, and the process's other threads never leave theirs.
fn listen_in(
    netns: Option<&Path>,
    addr: std::net::SocketAddr,
) -> Result<std::net::TcpListener, String> {
    let Some(netns) = netns.map(Path::to_owned) else {
        return std::net::TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"));
    };
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).map_err(|e| {
            format!(
                "opening the pod's network namespace {}: {e}",
                netns.display()
            )
        })?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| {
            format!(
                "entering the pod's network namespace {}: {e}",
                netns.display()
            )
        })?;
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("binding {addr} in the pod's network namespace: {e}"))
    })
    .join()
    .map_err(|_| "the thread binding the pod's socket panicked".to_owned())?
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let began = Instant::now();
        let rootfs = Path::new(&req.bundle).join("rootfs");
        let unmount = || {
            let _ =
                containerd_shim::mount::umount_recursive(Some(&rootfs.display().to_string()), 0);
        };
        let mut read_only = false;
        for m in &req.rootfs {
            mount_rootfs(m, &rootfs)
                .await
                .map_err(|e| err(format!("mounting the rootfs: {e}")))?;
            read_only |= m.options.iter().any(|o| o == "ro");
        }
        if req.rootfs.is_empty() {
            // Mounted already: bound onto itself, so that it can be made nodev below.
            rustix::mount::mount_bind(&rootfs, &rootfs)
                .map_err(|e| err(format!("binding the rootfs {}: {e}", rootfs.display())))?;
        }
        // Device nodes an image holds are files, not devices, for the guest.
        if let Err(e) = mounts::harden(&rootfs, read_only) {
            unmount();
            return Err(err(e));
        }
        let mut container = match prepare(&req, &rootfs, &self.store).await {
            Ok(container) => container,
            Err(e) => {
                unmount();
                return Err(err(e));
            }
        };
        container.mounted = true;
        {
            let mut containers = self.containers.lock().expect("containers lock");
            // The CRI plugin names a pod's network as the sandbox process's (`/proc/PID/ns/net`);
            // that process is this shim, which stays in the host's network: the pod's is the one
            // the sandbox container's own spec named.
            let ours = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
            if container.netns.as_deref() == Some(ours.as_path()) {
                container.netns = containers
                    .values()
                    .find(|c| c.pause && c.netns.is_some())
                    .and_then(|c| c.netns.clone());
            }
            containers.insert(req.id.clone(), container);
        }
        self.join_cgroup(&req.id);
        let pid = std::process::id();
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        tracing::debug!(id = %req.id, micros = micros(began), "task created");
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let began = Instant::now();
        let pid = std::process::id();
        let runner = self.runner().await?;
        let (guest, signal, exit, killed) = self.with(&req.id, |c| {
            if c.started {
                return Err(err(format!("container {} already started", req.id)));
            }
            c.started = true;
            // The guest takes the wasm (a sandbox container has none, and runs no guest).
            let guest = c.module.take().map(|module| Guest {
                options: RunOptions {
                    args: c.args.clone(),
                    env: c.env.clone(),
                    preopens: c.preopens.clone(),
                    max_memory: c.max_memory,
                    stdout: open_write(&c.stdout),
                    stderr: open_write(&c.stderr),
                    stop: Some(c.stop.clone()),
                    memory_gauge: Some(c.usage.memory.clone()),
                    identity: c.identity.clone(),
                    ..RunOptions::default()
                },
                stdin: (!c.stdin.is_empty()).then(|| c.stdin.clone()),
                module,
                cgroup: c.cgroup.clone(),
                signal: c.signal.clone(),
                usage: c.usage.clone(),
                netns: c.netns.clone(),
                handle: tokio::runtime::Handle::current(),
            });
            Ok((guest, c.signal.clone(), c.exit.clone(), c.killed.clone()))
        })?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u32>();
        if let Some(guest) = guest {
            let store = self.store.clone();
            let id = req.id.clone();
            std::thread::spawn(move || {
                let ran = Instant::now();
                let code = guest.run(&runner, &store);
                tracing::debug!(%id, code, micros = micros(ran), "guest exited");
                let _ = done_tx.send(code);
            });
        } else {
            tokio::spawn(async move {
                killed.notified().await;
                let _ = done_tx.send(128 + *signal.lock().expect("signal lock"));
            });
        }
        let service = self.clone();
        let id = req.id.clone();
        tokio::spawn(async move {
            let code = done_rx.await.unwrap_or(255);
            let at = now();
            exit.send_replace(Some(Exited { code, at }));
            service
                .publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: id.clone(),
                        id,
                        pid,
                        exit_status: code,
                        exited_at: MessageField::some(ts(at)),
                        ..Default::default()
                    }),
                )
                .await;
        });
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        tracing::debug!(id = %req.id, micros = micros(began), "task started");
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut exit = self.with(&req.id, |c| Ok(c.exit.subscribe()))?;
        let exited = loop {
            if let Some(e) = *exit.borrow_and_update() {
                break e;
            }
            if exit.changed().await.is_err() {
                return Err(err("the container went away"));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exited.code,
            exited_at: MessageField::some(ts(exited.at)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.with(&req.id, |c| {
            *c.signal.lock().expect("signal lock") = req.signal;
            c.stop.store(true, Ordering::SeqCst);
            c.killed.notify_one();
            if !c.started {
                c.exit.send_replace(Some(Exited {
                    code: 128 + req.signal,
                    at: now(),
                }));
            }
            Ok(())
        })?;
        Ok(api::Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<DeleteResponse> {
        let began = Instant::now();
        let container = self
            .containers
            .lock()
            .expect("containers lock")
            .remove(&req.id)
            .ok_or_else(|| err(format!("container {} not found", req.id)))?;
        self.leave_cgroup(&req.id, &container);
        container
            .guest_mounts
            .iter()
            .for_each(|t| mounts::unmount(t));
        if container.mounted {
            let target = container.rootfs.display().to_string();
            if let Err(e) = containerd_shim::mount::umount_recursive(Some(&target), 0) {
                tracing::warn!(error = %e, "cannot unmount the rootfs");
            }
        }
        let exited = (*container.exit.borrow()).unwrap_or(Exited { code: 0, at: now() });
        let pid = std::process::id();
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: exited.code,
                exited_at: MessageField::some(ts(exited.at)),
                ..Default::default()
            }),
        )
        .await;
        tracing::debug!(id = %req.id, micros = micros(began), "task deleted");
        Ok(DeleteResponse {
            pid,
            exit_status: exited.code,
            exited_at: MessageField::some(ts(exited.at)),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        self.with(&req.id, |c| {
            let exited = *c.exit.borrow();
            let status = match (c.started, exited) {
                (_, Some(_)) => api::Status::STOPPED,
                (true, None) => api::Status::RUNNING,
                (false, None) => api::Status::CREATED,
            };
            Ok(api::StateResponse {
                id: req.id.clone(),
                bundle: c.bundle.clone(),
                pid: std::process::id(),
                status: EnumOrUnknown::new(status),
                stdin: c.stdin.clone(),
                stdout: c.stdout.clone(),
                stderr: c.stderr.clone(),
                exit_status: exited.map_or(0, |e| e.code),
                exited_at: exited.map_or(MessageField::none(), |e| MessageField::some(ts(e.at))),
                ..Default::default()
            })
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let joined = self.joined.lock().expect("cgroup lock").clone();
        let metrics = self.with(&req.id, |c| {
            let mut metrics = c.cgroup.as_ref().map(|cg| cg.metrics()).unwrap_or_default();
            // In a group, the guests run in the process that sits in one container's cgroup:
            // another container's own cgroup holds none of its guest, so its guest's linear
            // memory and CPU time are added.
            if joined.as_deref() != Some(req.id.as_str()) {
                let memory = c.usage.memory.load(Ordering::Relaxed);
                let stat = metrics.memory.mut_or_insert_default();
                let usage = stat.usage.mut_or_insert_default();
                usage.usage += memory;
                stat.rss += memory;
                stat.total_rss += memory;
                let cpu = metrics.cpu.mut_or_insert_default();
                cpu.usage.mut_or_insert_default().total += c.usage.cpu();
            }
            Ok(metrics)
        })?;
        let any = containerd_shim::util::convert_to_any(Box::new(metrics)).map_err(err)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(err(format!(
            "exec is not supported for wasm containers ({}): a wasm guest has no processes \
             to start beside it",
            req.id
        )))
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        self.with(&req.id, |_| Ok(()))?;
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::api::ProcessInfo {
                pid: std::process::id(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if self.containers.lock().expect("containers lock").is_empty() {
            // Free the socket's name at once: a new shim for a container of the same id
            // would otherwise find it taken and wait a second for this one to go away.
            let path = self.socket.strip_prefix("unix://").unwrap_or(&self.socket);
            let _ = std::fs::remove_file(path);
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
