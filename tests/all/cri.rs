//! Kubernetes without a kubelet: a real containerd with its CRI plugin on, driven over CRI v1
//! (`k8s-cri`, tonic) exactly as the kubelet drives it, each test once on Debian's 1.6 (which
//! serves v1 and v1alpha2) and once on containerd 2.x (v1 only, config version 3): a pod sandbox first, containers in it,
//! CRI-format logs, status polls, stops with a grace period. The same pods run with runc as
//! the handler for comparison.
//!
//! Each pod gets a network namespace of its own from a test-only CNI plugin: containerd 1.6's
//! CRI wants an `eth0` with an address in the result, and this kernel has no dummy links, so
//! the plugin brings `lo` up inside the pod's namespace and reports a link-local `eth0`. No
//! traffic is ever sent to that address.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::support::{
    Containerd, Entry, Version, WebSocket, each_containerd, guests, install_test_cni, testdata,
};

/// The namespace the CRI plugin keeps its containers and images in.
const K8S: &str = "k8s.io";
/// The pod sandbox image the tests build and import (busybox sleeping, for runc's pods).
pub(crate) const PAUSE: &str = "registry.test/pause:v1";
pub(crate) const HELLO_IMAGE: &str = "registry.test/wasmhello:v1";
pub(crate) const PROBE_IMAGE: &str = "registry.test/probe:v1";
pub(crate) const BUSYBOX_IMAGE: &str = "registry.test/busybox:v1";

/// containerd with CRI on, a client speaking CRI to it, and the images the tests use.
pub(crate) struct Cri {
    pub(crate) c: Containerd,
    runtime: tokio::runtime::Runtime,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Where pods' log directories go.
    pub(crate) logs: PathBuf,
    /// The cgroup the pods' cgroups go in (one per containerd version, so that the two runs
    /// of a test never share one).
    pub(crate) cgroup_parent: &'static str,
}

impl Cri {
    #[allow(
        dead_code,
        reason = "containerd 1.6 by the name tests of other branches use"
    )]
    pub(crate) fn start() -> Cri {
        Self::start_with(&[], "")
    }

    /// With extra environment for containerd and `shim_toml` as the operator's shim config.
    pub(crate) fn start_with(env: &[(&str, &Path)], shim_toml: &str) -> Cri {
        Self::start_on(Version::V1_6, env, shim_toml)
    }

    /// containerd `version`, with extra environment and `shim_toml` as the operator's shim
    /// config.
    pub(crate) fn start_on(version: Version, env: &[(&str, &Path)], shim_toml: &str) -> Cri {
        Self::start_configured_on(version, env, shim_toml, "")
    }

    /// As [`Cri::start_with`], with `extra` appended to containerd's config (registry hosts).
    pub(crate) fn start_configured(env: &[(&str, &Path)], shim_toml: &str, extra: &str) -> Cri {
        Self::start_configured_on(Version::V1_6, env, shim_toml, extra)
    }

    /// containerd `version` as [`Cri::start_on`], with `extra` appended to its config, in
    /// the config version that containerd reads (2 for 1.6, 3 for 2.x).
    pub(crate) fn start_configured_on(
        version: Version,
        env: &[(&str, &Path)],
        shim_toml: &str,
        extra: &str,
    ) -> Cri {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let (bin, conf) = install_test_cni(&d);
        // The runtime entry as the README documents it.
        let annotations =
            r#"["io.wasm-oci.reference", "io.wasm-oci.pull", "io.wasm-oci.preopens"]"#;
        let config = match version {
            Version::V1_6 => format!(
                r#"{base}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmoci]
      runtime_type = "io.containerd.wasmoci.v1"
      pod_annotations = {annotations}
      container_annotations = {annotations}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
{extra}
"#,
                base = version.base_config(&d),
                bin = bin.display(),
                conf = conf.display(),
            ),
            // Config version 3: the CRI plugin is split into images, runtime and the
            // server; NRI (a socket at a fixed path) is off.
            Version::V2 => format!(
                r#"disabled_plugins = ["io.containerd.nri.v1.nri"]
{base}
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "native"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmoci]
      runtime_type = "io.containerd.wasmoci.v1"
      pod_annotations = {annotations}
      container_annotations = {annotations}
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{bin}"]
    conf_dir = "{conf}"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
{extra}
"#,
                base = version.base_config(&d),
                bin = bin.display(),
                conf = conf.display(),
            ),
        };
        let c = Containerd::start_version_in(version, dir, &config, K8S, env, shim_toml);
        let busybox = Path::new("/bin/busybox");
        c.import_entries(
            PAUSE,
            &[Entry::Dir("bin"), Entry::File("bin/busybox", busybox)],
            &["/bin/busybox", "sleep", "2147483647"],
        );
        c.import_entries(
            BUSYBOX_IMAGE,
            &[Entry::Dir("bin"), Entry::File("bin/busybox", busybox)],
            &["/bin/busybox"],
        );
        c.import(
            HELLO_IMAGE,
            &[("hello.wasm", &testdata("hello.wasm"))],
            &["/hello.wasm"],
        );
        c.import(
            PROBE_IMAGE,
            &[("probe.wasm", &guests().probe)],
            &["/probe.wasm"],
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = c.dir.path().join("containerd.sock");
        let channel = runtime.block_on(async move {
            tonic::transport::Endpoint::try_from("http://[::]")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
                .await
                .unwrap()
        });
        let logs = c.dir.path().join("pods");
        let cri = Cri {
            c,
            rt: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            runtime,
            logs,
            cgroup_parent: match version {
                Version::V1_6 => "wasm-oci-cri",
                Version::V2 => "wasm-oci-cri2",
            },
        };
        // The CRI plugin learns of imported images from containerd's events: wait for them.
        let deadline = Instant::now() + Duration::from_secs(20);
        for image in [PAUSE, BUSYBOX_IMAGE, HELLO_IMAGE, PROBE_IMAGE] {
            loop {
                let status = cri.block(
                    |mut i| async move {
                        i.image_status(cri::ImageStatusRequest {
                            image: Some(cri::ImageSpec {
                                image: image.to_owned(),
                                ..Default::default()
                            }),
                            verbose: false,
                        })
                        .await
                    },
                    cri.images.clone(),
                );
                if status.is_ok_and(|s| s.image.is_some()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "CRI does not see {image}: {}",
                    cri.c.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cri
    }

    /// Runs one CRI call on the test's runtime.
    fn block<C, F, T>(&self, call: impl FnOnce(C) -> F, client: C) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(call(client))
            .map(tonic::Response::into_inner)
    }

    pub(crate) fn rt<F, T>(
        &self,
        call: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.block(call, self.rt.clone())
    }

    /// PullImage as the kubelet asks it, with the pod's pull secret as `auth`; the image's
    /// reference by digest (`imageRef`).
    pub(crate) fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, tonic::Status> {
        let request = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        };
        self.block(
            |mut i| async move { i.pull_image(request).await },
            self.images.clone(),
        )
        .map(|r| r.image_ref)
    }

    /// A pod's config as the kubelet writes it.
    pub(crate) fn pod_config(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> cri::PodSandboxConfig {
        let uid = format!("uid-{name}");
        let log_directory = self.logs.join(&uid);
        fs::create_dir_all(&log_directory).unwrap();
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_owned(),
                uid,
                namespace: "default".to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_directory.display().to_string(),
            annotations: strings(annotations),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/{name}", self.cgroup_parent),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler` (`wasmoci` or `runc`); returns the sandbox id.
    pub(crate) fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> String {
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_owned(),
        };
        match self.rt(|mut rt| async move { rt.run_pod_sandbox(request).await }) {
            Ok(r) => r.pod_sandbox_id,
            Err(e) => panic!("RunPodSandbox: {e}\n{}", self.c.log()),
        }
    }

    /// CreateContainer + StartContainer of `image` with `command` in the pod; returns its id.
    pub(crate) fn start_container(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
        annotations: &[(&str, &str)],
    ) -> String {
        let id = self
            .create_container(pod, pod_config, name, image, command, annotations)
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.c.log()));
        let request = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        if let Err(e) = self.rt(|mut rt| async move { rt.start_container(request).await }) {
            panic!("StartContainer {name}: {e}\n{}", self.c.log());
        }
        id
    }

    /// StartContainer of a created container.
    pub(crate) fn start_created(&self, id: &str) {
        let request = cri::StartContainerRequest {
            container_id: id.to_owned(),
        };
        if let Err(e) = self.rt(|mut rt| async move { rt.start_container(request).await }) {
            panic!("StartContainer {id}: {e}\n{}", self.c.log());
        }
    }

    /// CreateContainer + StartContainer, then polls until the container has exited.
    pub(crate) fn run_to_exit(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> cri::ContainerStatus {
        let id = self.start_container(pod, pod_config, name, image, command, &[]);
        self.wait_exited(&id, Duration::from_secs(20))
    }

    pub(crate) fn create_container(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
        annotations: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        self.create_container_with_env(pod, pod_config, name, image, command, annotations, &[])
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the CRI config's fields, spelled out"
    )]
    pub(crate) fn create_container_with_env(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
        annotations: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        let mut request = cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: name.to_owned(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path: format!("{name}.log"),
                annotations: strings(annotations),
                envs: env
                    .iter()
                    .map(|(k, v)| cri::KeyValue {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                linux: Some(cri::LinuxContainerConfig::default()),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        };
        // A container whose name says so keeps its stdin open, as `kubectl run -i` asks.
        if name.starts_with("stdin") {
            let config = request.config.as_mut().expect("set above");
            config.stdin = true;
        }
        self.rt(|mut rt| async move { rt.create_container(request).await })
            .map(|r| r.container_id)
    }

    /// The network namespace the CRI plugin made for a pod (from its verbose status).
    pub(crate) fn pod_netns(&self, pod: &str) -> String {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: true,
        };
        let info = self
            .rt(|mut rt| async move { rt.pod_sandbox_status(request).await })
            .unwrap()
            .info;
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .unwrap_or_else(|| panic!("no network namespace in {info}"))
            .to_owned()
    }

    pub(crate) fn status(&self, id: &str) -> cri::ContainerStatus {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.rt(|mut rt| async move { rt.container_status(request).await })
            .unwrap_or_else(|e| panic!("ContainerStatus: {e}"))
            .status
            .unwrap()
    }

    /// Polls ContainerStatus until the container has exited, for at most `limit`.
    pub(crate) fn wait_exited(&self, id: &str, limit: Duration) -> cri::ContainerStatus {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status(id);
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} has not exited: {status:?}\n{}",
                self.c.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stop_container(&self, id: &str, grace_seconds: i64) -> Result<(), tonic::Status> {
        let request = cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: grace_seconds,
        };
        self.rt(|mut rt| async move { rt.stop_container(request).await })
            .map(drop)
    }

    pub(crate) fn remove_pod(&self, pod: &str) {
        let id = pod.to_owned();
        self.rt(|mut rt| async move {
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", self.c.log()));
        let id = pod.to_owned();
        self.rt(|mut rt| async move {
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", self.c.log()));
    }

    pub(crate) fn exec_sync(&self, id: &str) -> Result<cri::ExecSyncResponse, tonic::Status> {
        let request = cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: vec!["/probe.wasm".into(), "args".into()],
            timeout: 5,
        };
        self.rt(|mut rt| async move { rt.exec_sync(request).await })
    }

    pub(crate) fn stats(&self, id: &str) -> Result<cri::ContainerStats, tonic::Status> {
        let request = cri::ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        self.rt(|mut rt| async move { rt.container_stats(request).await })
            .map(|r| r.stats.unwrap_or_default())
    }

    /// The container's CRI log file.
    pub(crate) fn log_of(&self, pod_config: &cri::PodSandboxConfig, name: &str) -> String {
        fs::read_to_string(Path::new(&pod_config.log_directory).join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

/// A pod serving HTTP through the CRI, as [`http_pod`] started it: the test proxy imported as
/// `registry.test/http:v1`, a `wasmoci` pod sandbox, and its container `web` listening on a
/// free port of the pod's network.
pub(crate) struct HttpPod {
    /// The pod's sandbox config (its log directory names where `web` logs).
    pub(crate) config: cri::PodSandboxConfig,
    /// The pod sandbox's id.
    pub(crate) pod: String,
    /// The `web` container's id.
    pub(crate) id: String,
    /// The port `web` listens on, on every address of the pod's network.
    pub(crate) port: u16,
}

/// Imports the test proxy into `cri`'s containerd, runs pod `name` with the `wasmoci`
/// handler, and creates and starts its container `web` listening on a free port.
pub(crate) fn http_pod(cri: &Cri, name: &str) -> HttpPod {
    cri.c.import(
        "registry.test/http:v1",
        &[("proxy.wasm", &crate::support::http_guests().proxy)],
        &["/proxy.wasm"],
    );
    let config = cri.pod_config(name, &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let port = crate::support::free_port();
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

fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The message lines of a CRI log (`TIMESTAMP STREAM TAG MESSAGE`), each checked for form.
fn cri_log_lines(log: &str) -> Vec<(String, String)> {
    log.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag, message) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            assert!(time.contains('T') && time.ends_with('Z'), "{line}");
            assert!(tag == "F" || tag == "P", "{line}");
            (stream.to_owned(), message.to_owned())
        })
        .collect()
}

fn a_wasm_pod_runs_as_the_kubelet_runs_it(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    let config = cri.pod_config("hello", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let status = cri.run_to_exit(&pod, &config, "hello", HELLO_IMAGE, &[]);
    assert_eq!(status.exit_code, 0, "{status:?}");
    assert_eq!(status.reason, "Completed", "{status:?}");
    let log = cri.log_of(&config, "hello");
    assert_eq!(
        cri_log_lines(&log),
        vec![("stdout".to_owned(), "Hello from WebAssembly!".to_owned())],
        "{log}"
    );

    // A guest's own exit code, and a reason for it.
    let status = cri.run_to_exit(
        &pod,
        &config,
        "exit7",
        PROBE_IMAGE,
        &["/probe.wasm", "exit", "7"],
    );
    assert_eq!(status.exit_code, 7, "{status:?}");
    assert_eq!(status.reason, "Error", "{status:?}");
    cri.remove_pod(&pod);
}

/// Removes the cgroups `parent/name` of every hierarchy, deepest first (a cgroup is removed
/// with `rmdir` once it holds no process and no child); one that still holds a process stays
/// and is reported by the test that finds it.
fn clear_cgroups(parent: &str, names: &[&str]) {
    fn remove(dir: &Path) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for hierarchy in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for name in names {
            remove(&hierarchy.path().join(parent).join(name));
        }
    }
}

/// The shim process of a CRI container (`ctr -n k8s.io tasks ls` shows it as the task's pid).
fn shim_pid(cri: &Cri, id: &str) -> u32 {
    cri.c.task_pid(id)
}

fn containers_of_a_pod_share_a_shim_and_pods_never_do(v: Version) {
    let registry = crate::support::Registry::start();
    let reference = registry.reference("pods/probe:v1");
    crate::support::WasmOci::new().ok(&["push", guests().probe.to_str().unwrap(), &reference]);
    let cri = Cri::start_on(v, &[], crate::support::ALLOW_LOOPBACK);
    // The cgroups checked below are named by the pods, not by this run: what an earlier run
    // left when it was killed midway is cleared first, so what is found after is this run's.
    clear_cgroups(cri.cgroup_parent, &["pod-a", "pod-b"]);
    // A pod annotated with a reference: the pod annotation reaches its containers' specs.
    let a_config = cri.pod_config("pod-a", &[("io.wasm-oci.reference", &reference)]);
    let a = cri.run_pod(&a_config, "wasmoci");
    let b_config = cri.pod_config("pod-b", &[]);
    let b = cri.run_pod(&b_config, "wasmoci");
    let status = cri.run_to_exit(
        &a,
        &a_config,
        "byref",
        HELLO_IMAGE,
        &["probe", "args", "ok"],
    );
    assert_eq!(status.exit_code, 0, "{status:?}");
    let lines = cri_log_lines(&cri.log_of(&a_config, "byref"));
    let messages: Vec<&str> = lines.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(messages, ["probe", "args", "ok"]);

    let spin = |pod: &str, config: &cri::PodSandboxConfig, name: &str| {
        cri.start_container(
            pod,
            config,
            name,
            PROBE_IMAGE,
            &["/probe.wasm", "spin"],
            &[],
        )
    };
    let a1 = spin(&a, &a_config, "a1");
    let a2 = spin(&a, &a_config, "a2");
    let b1 = spin(&b, &b_config, "b1");
    assert_eq!(
        shim_pid(&cri, &a1),
        shim_pid(&cri, &a2),
        "two containers of one pod, two shims"
    );
    assert_eq!(
        shim_pid(&cri, &a1),
        shim_pid(&cri, &a),
        "the pod's containers join its sandbox's shim"
    );
    assert_ne!(
        shim_pid(&cri, &a1),
        shim_pid(&cri, &b1),
        "two pods in one shim"
    );

    // ExecSync is refused, and says why (not a timeout: the message is the shim's).
    let e = cri.exec_sync(&a1).expect_err("exec into a wasm container");
    assert!(
        e.message().contains("not supported for wasm containers"),
        "{e}"
    );

    // Attach and PortForward are the CRI plugin's own (its streaming server), never the
    // shim's: the kubelet gets a URL on the plugin's streaming server, and what kubectl then
    // speaks to it (WebSocket, `v4.channel.k8s.io`) works as for a runc pod.
    let request = cri::AttachRequest {
        container_id: a1.clone(),
        stdout: true,
        ..Default::default()
    };
    let attach = cri
        .rt(|mut rt| async move { rt.attach(request).await })
        .unwrap_or_else(|e| panic!("Attach: {e}"));
    let request = cri::PortForwardRequest {
        pod_sandbox_id: a.clone(),
        port: vec![8080],
    };
    let forward = cri
        .rt(|mut rt| async move { rt.port_forward(request).await })
        .unwrap_or_else(|e| panic!("PortForward: {e}"));
    for (url, path) in [(&attach.url, "/attach/"), (&forward.url, "/portforward/")] {
        assert!(
            url.strip_prefix("http://127.0.0.1:")
                .is_some_and(|rest| rest.contains(path)),
            "not the streaming server's {path} URL: {url}"
        );
    }
    // `kubectl attach` to a spinning guest: connected, nothing printed; it returns when the
    // container ends (below, with its pod).
    let mut attached = WebSocket::connect(&attach.url, "v4.channel.k8s.io")
        .unwrap_or_else(|e| panic!("attach {}: {e}", attach.url));
    let attached = std::thread::spawn(move || {
        let mut received = Vec::new();
        while let Some(message) = attached.receive() {
            received.push(message);
        }
        received
    });
    // `kubectl port-forward` to a port nothing in the pod listens on: the port is announced on
    // its data and error channels, then the error says the connection was refused inside the
    // pod's network namespace (the plugin's own, not the shim's).
    let mut forwarded =
        WebSocket::connect(&format!("{}?port=8080", forward.url), "v4.channel.k8s.io")
            .unwrap_or_else(|e| panic!("port-forward {}: {e}", forward.url));
    forwarded.send(0, b"GET / HTTP/1.0\r\n\r\n");
    let port = 8080u16.to_le_bytes().to_vec();
    assert_eq!(forwarded.receive(), Some((0, port.clone())));
    assert_eq!(forwarded.receive(), Some((1, port)));
    let (channel, error) = forwarded.receive().expect("port-forward's error");
    let error = String::from_utf8_lossy(&error);
    assert!(
        channel == 1
            && error.contains("error forwarding port 8080 to pod")
            && error.contains("failed to connect to localhost:8080 inside namespace")
            && error.contains("connection refused"),
        "channel {channel}: {error}"
    );

    // Stop and remove leave nothing behind: no shim, no mount, no cgroup.
    let (shim_a, shim_b) = (shim_pid(&cri, &a1), shim_pid(&cri, &b1));
    cri.remove_pod(&a);
    let attached: Vec<(u8, String)> = attached
        .join()
        .unwrap()
        .into_iter()
        .map(|(c, d)| (c, String::from_utf8_lossy(&d).into_owned()))
        .collect();
    assert!(
        attached.iter().all(|(c, d)| *c == 3 || d.is_empty())
            && attached
                .last()
                .is_some_and(|(c, d)| *c == 3 && d.contains(r#""status":"Success""#)),
        "kubectl attach saw {attached:?}"
    );
    cri.remove_pod(&b);
    assert!(
        crate::support::wait_gone(shim_a),
        "pod a's shim outlived it"
    );
    assert!(
        crate::support::wait_gone(shim_b),
        "pod b's shim outlived it"
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let root = cri.c.dir.path().display().to_string();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&root) && l.contains("/state/"))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    for hierarchy in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let pods = hierarchy.path().join(cri.cgroup_parent);
        for pod in ["pod-a", "pod-b"] {
            assert!(
                !pods.join(pod).exists(),
                "cgroup {} left behind",
                pods.join(pod).display()
            );
        }
        // The pods' parent stands for the kubelet's, which it would remove itself.
        let _ = fs::remove_dir(pods);
    }
}

fn stop_with_a_grace_period_and_stats_that_grow(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    let config = cri.pod_config("busy", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let small = cri.start_container(
        &pod,
        &config,
        "small",
        PROBE_IMAGE,
        &["/probe.wasm", "hold", "1"],
        &[],
    );
    let big = cri.start_container(
        &pod,
        &config,
        "big",
        PROBE_IMAGE,
        &["/probe.wasm", "hold", "48"],
        &[],
    );
    let spin = cri.start_container(
        &pod,
        &config,
        "spin",
        PROBE_IMAGE,
        &["/probe.wasm", "spin"],
        &[],
    );
    // Stats as the kubelet polls them: non-zero, and larger for the guest that allocated more.
    let memory = |id: &str| {
        cri.stats(id)
            .unwrap_or_else(|e| panic!("ContainerStats {id}: {e}"))
            .memory
            .and_then(|m| m.working_set_bytes)
            .map_or(0, |v| v.value)
    };
    // A started container's guest is instantiated on a thread of its own: until then it holds
    // nothing, and says so (on a loaded machine `big` can be done before `small` begins).
    crate::support::wait_until_within(
        "small's guest holding memory and big's 48 MiB",
        crate::support::SERVER_PATIENCE,
        || memory(&small) > 0 && memory(&big) >= 48 << 20,
    );
    let (small_bytes, big_bytes) = (memory(&small), memory(&big));
    assert!(small_bytes > 0, "{small_bytes}");
    assert!(
        big_bytes > small_bytes + (32 << 20),
        "{small_bytes} {big_bytes}"
    );
    let cpu = |id: &str| {
        cri.stats(id)
            .unwrap()
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value)
    };
    let before = cpu(&spin);
    crate::support::wait_until("a spinning guest's CPU time grows", || cpu(&spin) > before);
    // containerd's own view agrees.
    let metrics = crate::support::stdout(&cri.c.ctr(&["tasks", "metrics", &big]));
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");

    // StopContainer with a grace period: spinning, asleep, or blocked on stdin, each stops
    // at SIGTERM without waiting out the grace period.
    let stdin = cri.start_container(
        &pod,
        &config,
        "stdin-reader",
        PROBE_IMAGE,
        &["/probe.wasm", "stdin"],
        &[],
    );
    // (A guest that waited out the grace period would end by SIGKILL, 137.)
    for id in [&spin, &big, &stdin] {
        cri.stop_container(id, 30)
            .unwrap_or_else(|e| panic!("StopContainer: {e}"));
        let status = cri.wait_exited(id, Duration::from_secs(1));
        assert_eq!(status.exit_code, 143, "{status:?}");
    }
    // A grace period of 0 is SIGKILL.
    cri.stop_container(&small, 0).unwrap();
    assert_eq!(
        cri.wait_exited(&small, Duration::from_secs(5)).exit_code,
        137
    );
    cri.remove_pod(&pod);
}

fn the_same_pod_runs_with_runc_for_comparison(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    let config = cri.pod_config("runc-hello", &[]);
    let pod = cri.run_pod(&config, "runc");
    let status = cri.run_to_exit(
        &pod,
        &config,
        "hello",
        BUSYBOX_IMAGE,
        &["/bin/busybox", "echo", "Hello from WebAssembly!"],
    );
    assert_eq!(status.exit_code, 0, "{status:?}");
    assert_eq!(
        cri_log_lines(&cri.log_of(&config, "hello")),
        vec![("stdout".to_owned(), "Hello from WebAssembly!".to_owned())]
    );
    cri.remove_pod(&pod);
}

/// Red team: a pod that runs as a user (`runAsUser: 1000`) gets a guest with root's file
/// access, since the shim opens every path for it as root and ignores `process.user`: a
/// volume's file that uid 1000 may not read (a shared PVC, a hostPath, another tenant's
/// files) is read, and files are created as root. runc would run the process as 1000.
fn a_guest_has_the_pods_user_not_roots(v: Version) {
    use std::os::unix::fs::PermissionsExt;
    let cri = Cri::start_on(v, &[], "");
    let volume = tempfile::tempdir().unwrap();
    fs::set_permissions(volume.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = volume.path().join("secret");
    fs::write(&secret, "root's only").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let config = cri.pod_config("asuser", &[]);
    let pod = cri.run_pod(&config, "wasmoci");
    let request = cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "reader".to_owned(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: PROBE_IMAGE.to_owned(),
                ..Default::default()
            }),
            command: vec!["/probe.wasm".into(), "cat".into(), "/data/secret".into()],
            log_path: "reader.log".to_owned(),
            mounts: vec![cri::Mount {
                container_path: "/data".to_owned(),
                host_path: volume.path().display().to_string(),
                readonly: true,
                ..Default::default()
            }],
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    run_as_group: Some(cri::Int64Value { value: 1000 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(config.clone()),
    };
    let id = cri
        .rt(|mut rt| async move { rt.create_container(request).await })
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cri.c.log()))
        .container_id;
    let start = cri::StartContainerRequest {
        container_id: id.clone(),
    };
    cri.rt(|mut rt| async move { rt.start_container(start).await })
        .unwrap();
    let shim = shim_pid(&cri, &pod);
    let status = cri.wait_exited(&id, Duration::from_secs(10));
    let log = cri.log_of(&config, "reader");
    // The guest ran as 1000 and was refused the file: it says so and exits 1, as the same
    // process would under runc. A shim that crashed writes nothing and reports no such exit.
    assert_eq!(status.exit_code, 1, "{status:?}\n{log}");
    assert!(
        cri_log_lines(&log)
            .iter()
            .any(|(_, m)| m == "error: open /data/secret: Permission denied"),
        "{log}"
    );
    assert!(
        !log.contains("root's only"),
        "a guest of a pod running as uid 1000 read a file only root may read: {log}"
    );
    // The shim outlived the guest, with the pod's sandbox in it.
    assert!(crate::support::alive(shim), "the pod's shim died");
    assert_eq!(shim_pid(&cri, &pod), shim);
    cri.remove_pod(&pod);
}

fn an_http_component_serves_in_its_pods_network_only(v: Version) {
    let cri = Cri::start_on(v, &[], "");
    let HttpPod {
        config,
        pod,
        id,
        port,
    } = http_pod(&cri, "web");
    let addr = format!("0.0.0.0:{port}");
    // Reached from inside the pod's network namespace, as another container of the pod would.
    let netns = cri.pod_netns(&pod);
    let url = format!("http://127.0.0.1:{port}/hello");
    let get = || {
        std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["curl", "-s", "-i", "--max-time", "5", &url])
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let out = get();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the pod never answered: {text} {}\n{}",
            crate::support::describe(&out),
            cri.log_of(&config, "web")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        answer.ends_with("hello from wasm: GET /hello\n"),
        "{answer}"
    );
    // ... and not from the host's.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the pod's server is reachable from the host's network"
    );
    let log = cri.log_of(&config, "web");
    assert!(
        log.contains(&format!("Serving HTTP on http://{addr}/")),
        "{log}"
    );
    // A SIGTERM drains and ends it well.
    cri.stop_container(&id, 10).unwrap();
    assert_eq!(cri.wait_exited(&id, Duration::from_secs(15)).exit_code, 0);
    cri.remove_pod(&pod);
}

each_containerd!(
    a_wasm_pod_runs_as_the_kubelet_runs_it,
    containers_of_a_pod_share_a_shim_and_pods_never_do,
    stop_with_a_grace_period_and_stats_that_grow,
    the_same_pod_runs_with_runc_for_comparison,
    a_guest_has_the_pods_user_not_roots,
    an_http_component_serves_in_its_pods_network_only,
);
