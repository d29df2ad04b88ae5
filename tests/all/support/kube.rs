//! A real Kubernetes node per test: etcd and kube-apiserver v1.20.2 on loopback (free ports,
//! private directories, a bearer token, `AlwaysAllow`), and a kubelet joined to them that drives
//! a containerd 1.6 of its own ([`Containerd`], CRI plugin on) over CRI v1alpha2, the only CRI
//! version kubelet 1.20 speaks. runc is containerd's default runtime; the RuntimeClass `wasmoci`
//! names the shim's handler. There is no scheduler and no controller manager: pods name their
//! node, and nothing else acts on them than the kubelet.
//!
//! The binaries are built from Debian's `src:kubernetes` by `scripts/kube-build` (etcd is
//! Debian's), which `scripts/test` runs and names in `WASM_OCI_KUBE`; a test that starts a node
//! without them fails and says so.
//!
//! Everything a node starts is stopped and cleaned when it is dropped: the kubelet first, then
//! containerd and its shims, the API server and etcd; then what they leave on the machine's
//! shared paths for the pods of this node only (mounts under its directories, the pods' network
//! namespaces, shim sockets, its cgroup tree, the kubelet's pod log directories).

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::{
    ALLOW_LOOPBACK, Containerd, Entry, base_config, describe, free_port, install_test_cni,
};

/// The Kubernetes version `scripts/kube-build` builds and the tests are written against.
pub const KUBE_VERSION: &str = "v1.20.2";
/// The node's name: it resolves to loopback, where the kubelet listens and the API server
/// reaches it (for logs and port-forward).
pub const KUBE_NODE: &str = "localhost";
/// The pod sandbox image (busybox sleeping) containerd runs for runc pods.
pub const KUBE_PAUSE_IMAGE: &str = "registry.test/pause:v1";
/// busybox, for the runc pods beside the wasm ones.
pub const KUBE_BUSYBOX_IMAGE: &str = "registry.test/busybox:v1";
/// What a wasm pod names as its image today, its module coming from `io.wasm-oci.reference`.
pub const KUBE_PLACEHOLDER_IMAGE: &str = "registry.test/placeholder:v1";
const TOKEN: &str = "wasm-oci-kube-test-token";
/// The namespace the CRI plugin keeps its containers and images in.
const K8S_NS: &str = "k8s.io";
/// How long a node's parts get to come up or a pod to reach a state before the wait fails: a
/// hang detector (the API server alone takes tens of seconds on a loaded two-core machine), not
/// a measure.
pub const KUBE_PATIENCE: Duration = Duration::from_secs(180);

/// The path of Kubernetes binary `name` (`kubelet`, `kube-apiserver`, `kubectl`, `etcd`) from
/// `WASM_OCI_KUBE`; fails, naming the script that builds them, when they are not there.
pub fn kube_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("WASM_OCI_KUBE").unwrap_or_else(|| {
        panic!(
            "WASM_OCI_KUBE is not set: it names the bin/ directory of kubelet, kube-apiserver, \
             kubectl and etcd {KUBE_VERSION}, which ./scripts/kube-build builds (once, cached) \
             and prints; ./scripts/test runs it and sets the variable. Run \
             `export WASM_OCI_KUBE=$(./scripts/kube-build)/bin`"
        )
    });
    let path = Path::new(&dir).join(name);
    assert!(
        path.is_file(),
        "{} is missing: ./scripts/kube-build builds it (WASM_OCI_KUBE={})",
        path.display(),
        Path::new(&dir).display()
    );
    path
}

/// Polls `done` until it holds, for at most [`KUBE_PATIENCE`]; panics naming `what` and
/// showing `context()` otherwise.
pub fn kube_wait(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + KUBE_PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {KUBE_PATIENCE:?} for this: {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pod that runs a wasm module under the RuntimeClass `wasmoci`. The one place a test says
/// how a pod names its module: today a placeholder image with the module's reference in the
/// `io.wasm-oci.reference` annotation and the arguments as `command:` (argv[0] first); when
/// `image:` is the module, only [`WasmPod::json`] changes.
pub struct WasmPod<'a> {
    pub name: &'a str,
    /// The module's reference, as `wasm-oci push` wrote it.
    pub module: &'a str,
    /// The guest's arguments after argv[0].
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// `Always`, `OnFailure` or `Never`.
    pub restart: &'a str,
    /// Labels, for the benchmarks' selectors.
    pub labels: &'a [(&'a str, &'a str)],
}

impl WasmPod<'_> {
    /// The pod as JSON, which `kubectl create -f -` reads.
    pub fn json(&self) -> String {
        let argv0 = self
            .module
            .rsplit('/')
            .next()
            .and_then(|s| s.split([':', '@']).next())
            .unwrap_or("module");
        let mut command = vec![argv0];
        command.extend_from_slice(self.args);
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "labels": pairs(self.labels),
                "annotations": {"io.wasm-oci.reference": self.module},
            },
            "spec": {
                "nodeName": KUBE_NODE,
                "runtimeClassName": "wasmoci",
                "restartPolicy": self.restart,
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": self.name,
                    "image": KUBE_PLACEHOLDER_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "env": self.env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
                }],
            },
        })
        .to_string()
    }
}

/// A wasm pod whose one container's `image:` is `image` (what `wasm-oci push` wrote):
/// no command, no annotation; pulled as `policy` says (`Always`, `IfNotPresent`, `Never`),
/// with the pull secret named `secret`.
pub fn image_pod_json(
    name: &str,
    image: &str,
    policy: &str,
    secret: Option<&str>,
    labels: &[(&str, &str)],
) -> String {
    let mut spec = serde_json::json!({
        "nodeName": KUBE_NODE,
        "runtimeClassName": "wasmoci",
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": name, "image": image, "imagePullPolicy": policy}],
    });
    if let Some(secret) = secret {
        spec["imagePullSecrets"] = serde_json::json!([{ "name": secret }]);
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": pairs(labels)},
        "spec": spec,
    })
    .to_string()
}

/// A busybox pod under runc (containerd's default runtime), running `command`.
pub fn runc_pod_json(
    name: &str,
    command: &[&str],
    restart: &str,
    labels: &[(&str, &str)],
) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": pairs(labels)},
        "spec": {
            "nodeName": KUBE_NODE,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": name,
                "image": KUBE_BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": command,
            }],
        },
    })
    .to_string()
}

fn pairs(pairs: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect()
}

/// A pod's sandbox as containerd has it.
#[derive(Debug, Clone)]
pub struct KubeSandbox {
    pub id: String,
    /// The process `ctr tasks ls` shows for it: for a wasm pod, the pod's shim.
    pub pid: u32,
    /// The pod's network namespace (a file under `/var/run/netns`).
    pub netns: PathBuf,
    /// The socket the pod's wasm shim listens on (the `containerd-shim` crate's address for
    /// the sandbox's id).
    pub shim_socket: PathBuf,
}

/// etcd, kube-apiserver, a kubelet and its containerd: see the module's doc.
pub struct Kube {
    kubelet: Option<Child>,
    containerd: Option<Containerd>,
    apiserver: Option<Child>,
    etcd: Option<Child>,
    dir: tempfile::TempDir,
    /// The kubelet's `cgroupRoot` (`/wasm-oci-kube-...`), made in every hierarchy.
    pub cgroup_root: String,
    pub kubeconfig: PathBuf,
    kubelet_healthz: u16,
    /// Pods created through [`Kube::create`]: their log directories are removed on drop.
    uids: Mutex<Vec<String>>,
}

impl Kube {
    /// A node whose shim may pull from the tests' registries on loopback.
    pub fn start() -> Kube {
        Self::start_with(ALLOW_LOOPBACK)
    }

    /// A node with `shim_toml` as the operator's shim config.
    pub fn start_with(shim_toml: &str) -> Kube {
        Self::start_configured(shim_toml, "", &[])
    }

    /// [`Kube::start_with`], with `containerd_toml` added to containerd's config (1.6's
    /// version 2: a registry mirror, say), and `env` in containerd's environment, which its
    /// shims inherit (the node's signature policy, say).
    pub fn start_configured(shim_toml: &str, containerd_toml: &str, env: &[(&str, &Path)]) -> Kube {
        let bins = ["etcd", "kube-apiserver", "kubelet", "kubectl"].map(kube_bin);
        let [etcd_bin, apiserver_bin, kubelet_bin, _] = &bins;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let cgroup_root = format!(
            "/wasm-oci-kube-{}",
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches('.')
        );
        let mut kube = Kube {
            kubelet: None,
            containerd: None,
            apiserver: None,
            etcd: None,
            kubeconfig: d.join("kubeconfig"),
            dir,
            cgroup_root,
            kubelet_healthz: 0,
            uids: Mutex::new(Vec::new()),
        };

        // etcd
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        kube.etcd = Some(spawn_logged(
            Command::new(etcd_bin)
                .arg("--data-dir")
                .arg(d.join("etcd"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("default={peer_url}")]),
            &d.join("etcd.log"),
        ));
        kube.wait_up("etcd answers /health", "etcd", |_| {
            curl(&[&format!("{client_url}/health")]).contains("true")
        });

        // kube-apiserver: a token, AlwaysAllow, service-account keys it insists on.
        let a = d.join("apiserver");
        fs::create_dir_all(a.join("certs")).unwrap();
        fs::write(
            a.join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .unwrap();
        let key = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(a.join("sa.key"))
            .arg("2048")
            .output()
            .expect("openssl is not installed: run ./scripts/test, which installs it");
        assert!(key.status.success(), "{}", describe(&key));
        let port = free_port();
        kube.apiserver = Some(spawn_logged(
            Command::new(apiserver_bin)
                .args(["--etcd-servers", &client_url])
                .args([
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                ])
                .args(["--secure-port", &port.to_string(), "--insecure-port", "0"])
                .arg("--cert-dir")
                .arg(a.join("certs"))
                .arg("--token-auth-file")
                .arg(a.join("tokens.csv"))
                .args(["--authorization-mode", "AlwaysAllow"])
                .arg("--service-account-key-file")
                .arg(a.join("sa.key"))
                .arg("--service-account-signing-key-file")
                .arg(a.join("sa.key"))
                .args(["--service-account-issuer", "https://kubernetes.default.svc"])
                .args(["--service-cluster-ip-range", "10.96.0.0/24"])
                // No controller manager makes service accounts' tokens: pods go without.
                .args(["--disable-admission-plugins", "ServiceAccount"])
                .args(["--kubelet-preferred-address-types", "Hostname"])
                .args([
                    "--enable-priority-and-fairness=false",
                    "--allow-privileged=true",
                ]),
            &d.join("apiserver.log"),
        ));
        let server = format!("https://127.0.0.1:{port}");
        let bearer = format!("Authorization: Bearer {TOKEN}");
        kube.wait_up("the API server is ready (/readyz)", "apiserver", |_| {
            curl(&["-k", "-H", &bearer, &format!("{server}/readyz")]) == "ok"
        });
        fs::write(
            &kube.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    \
                 server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  \
                 user:\n    token: {TOKEN}\ncontexts:\n- name: test\n  context: {{cluster: test, \
                 user: admin}}\ncurrent-context: test\n"
            ),
        )
        .unwrap();
        kube.wait_up("namespace default exists", "apiserver", |kube| {
            kube.kubectl(&["get", "namespace", "default"])
                .status
                .success()
        });
        kube.apply(
            r#"{"apiVersion":"node.k8s.io/v1","kind":"RuntimeClass","metadata":{"name":"wasmoci"},"handler":"wasmoci"}"#,
        );

        // containerd 1.6 with CRI: runc the default, the shim as handler `wasmoci`.
        let containerd = start_cri_containerd(shim_toml, containerd_toml, env);
        let socket = containerd.dir.path().join("containerd.sock");
        kube.containerd = Some(containerd);

        // The kubelet, its pods' cgroups under a root of this node's own.
        for hierarchy in cgroup_hierarchies() {
            fs::create_dir_all(hierarchy.join(kube.cgroup_root.trim_start_matches('/'))).unwrap();
        }
        let k = d.join("kubelet");
        fs::create_dir_all(&k).unwrap();
        let (kport, healthz) = (free_port(), free_port());
        kube.kubelet_healthz = healthz;
        fs::write(
            k.join("config.yaml"),
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failSwapOn: false
address: 127.0.0.1
port: {kport}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
makeIPTablesUtilChains: false
volumePluginDir: {k}/volume-plugins
resolvConf: /etc/resolv.conf
serializeImagePulls: false
featureGates:
  # The device manager serves a socket at a fixed path (/var/lib/kubelet/device-plugins),
  # whatever the root directory: not for a node of a test's own, beside others.
  DevicePlugins: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
"#,
                cgroup_root = kube.cgroup_root,
                k = k.display(),
            ),
        )
        .unwrap();
        kube.kubelet = Some(spawn_logged(
            Command::new(kubelet_bin)
                .arg("--config")
                .arg(k.join("config.yaml"))
                .arg("--kubeconfig")
                .arg(&kube.kubeconfig)
                .arg("--root-dir")
                .arg(k.join("root"))
                .arg("--cert-dir")
                .arg(k.join("pki"))
                .args(["--hostname-override", KUBE_NODE])
                .args(["--container-runtime", "remote"])
                .arg(format!(
                    "--container-runtime-endpoint=unix://{}",
                    socket.display()
                ))
                .args(["-v", "2"]),
            &d.join("kubelet.log"),
        ));
        kube.wait_up("the kubelet answers /healthz", "kubelet", |_| {
            curl(&[&format!("http://127.0.0.1:{healthz}/healthz")]) == "ok"
        });
        kube.wait_up("the node is Ready", "kubelet", |kube| {
            kube.jsonpath(
                &["node", KUBE_NODE],
                r#"{.status.conditions[?(@.type=="Ready")].status}"#,
            ) == "True"
        });
        kube
    }

    /// Waits until `done`, failing at once with `part`'s log when a process of the node has
    /// exited.
    fn wait_up(&mut self, what: &str, part: &str, done: impl Fn(&Kube) -> bool) {
        let deadline = Instant::now() + KUBE_PATIENCE;
        while !done(self) {
            let mut exited = None;
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("apiserver", &mut self.apiserver),
                ("kubelet", &mut self.kubelet),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    exited = Some((name, status));
                }
            }
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) before this: {what}\n{}",
                    self.log(name)
                );
            }
            assert!(
                Instant::now() < deadline,
                "waited {KUBE_PATIENCE:?} for this: {what}\n{}",
                self.log(part)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last 60 lines of a part's log: `etcd`, `apiserver`, `kubelet`.
    pub fn log(&self, part: &str) -> String {
        let text =
            fs::read_to_string(self.dir.path().join(format!("{part}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {part}'s log (last lines)\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// The node's containerd.
    pub fn containerd(&self) -> &Containerd {
        self.containerd.as_ref().expect("running")
    }

    /// `kubectl` with this node's kubeconfig.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kube_bin("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args).output().unwrap()
    }

    /// `kubectl` that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            describe(&out),
            self.log("kubelet")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of a JSON or YAML object.
    pub fn apply(&self, object: &str) {
        let out = super::output_with_stdin(self.kubectl_command(&["apply", "-f", "-"]), object);
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{object}",
            describe(&out)
        );
    }

    /// `kubectl create -f -` of a pod; returns its uid.
    pub fn create(&self, pod: &str) -> String {
        let out = super::output_with_stdin(
            self.kubectl_command(&["create", "-f", "-", "-o", "jsonpath={.metadata.uid}"]),
            pod,
        );
        assert!(
            out.status.success(),
            "kubectl create: {}\n{pod}",
            describe(&out)
        );
        let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.uids.lock().unwrap().push(uid.clone());
        uid
    }

    /// One `kubectl create -f -` of a list of pods, so that the API server has them all at
    /// once; returns their uids (kubectl prints each created object on its own).
    #[allow(dead_code, reason = "benches/kube.rs creates its pods at once with it")]
    pub fn create_all(&self, pods: &[String]) -> Vec<String> {
        let list = format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
            pods.join(",")
        );
        let out = super::output_with_stdin(
            self.kubectl_command(&[
                "create",
                "-f",
                "-",
                "-o",
                r#"jsonpath={.metadata.uid}{"\n"}"#,
            ]),
            &list,
        );
        assert!(out.status.success(), "kubectl create: {}", describe(&out));
        let uids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        self.uids.lock().unwrap().extend(uids.iter().cloned());
        uids
    }

    /// `kubectl get KIND NAME -o jsonpath=PATH`, empty when it fails.
    pub fn jsonpath(&self, object: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(object);
        let path = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &path]);
        let out = self.kubectl(&args);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub fn phase(&self, pod: &str) -> String {
        self.jsonpath(&["pod", pod], "{.status.phase}")
    }

    /// Waits until pod `pod`'s phase is `phase`.
    pub fn wait_phase(&self, pod: &str, phase: &str) {
        kube_wait(
            &format!("pod {pod} is {phase}"),
            || self.phase(pod) == phase,
            || self.describe_pod(pod),
        );
    }

    /// What `kubectl describe` and the kubelet say about a pod.
    pub fn describe_pod(&self, pod: &str) -> String {
        let out = self.kubectl(&["describe", "pod", pod]);
        format!(
            "{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log("kubelet")
        )
    }

    /// `kubectl get pods -w`: one line `NAME PHASE` per change of any pod matching `selector`,
    /// as the API server sends them (the benchmarks wait on these, not on polls).
    #[allow(dead_code, reason = "benches/kube.rs follows its pods with it")]
    pub fn watch_pods(&self, selector: &str) -> PodWatch {
        let mut child = self
            .kubectl_command(&[
                "get",
                "pods",
                "-l",
                selector,
                "--watch",
                "-o",
                r#"jsonpath={.metadata.name} {.status.phase}{"\n"}"#,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        PodWatch { child, lines }
    }

    /// The id of the sandbox containerd holds for the pod whose uid is `uid`.
    pub fn sandbox_id(&self, uid: &str) -> String {
        let c = self.containerd();
        let filter = format!(
            "labels.\"io.kubernetes.pod.uid\"=={uid},labels.\"io.cri-containerd.kind\"==sandbox"
        );
        let ids = super::stdout(&c.ctr(&["containers", "ls", "-q", &filter]));
        ids.lines()
            .next()
            .unwrap_or_else(|| panic!("no sandbox for pod {uid}: {}", c.log()))
            .to_owned()
    }

    /// The sandbox containerd runs for the pod whose uid is `uid` (its task must be there).
    pub fn sandbox(&self, uid: &str) -> KubeSandbox {
        let c = self.containerd();
        let id = self.sandbox_id(uid);
        let info = c.ctr(&["containers", "info", &id]);
        assert!(info.status.success(), "{}", describe(&info));
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        let netns = info["Spec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .unwrap_or_else(|| panic!("sandbox {id} has no network namespace: {info}"))
            .into();
        KubeSandbox {
            pid: c.task_pid(&id),
            shim_socket: shim_socket(&c.dir.path().join("containerd.sock"), &id),
            netns,
            id,
        }
    }

    /// The ids of every container (sandbox included) containerd holds for pod `uid`.
    pub fn containers_of(&self, uid: &str) -> Vec<String> {
        let filter = format!("labels.\"io.kubernetes.pod.uid\"=={uid}");
        super::stdout(&self.containerd().ctr(&["containers", "ls", "-q", &filter]))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The cgroup directories (one per hierarchy) the kubelet made for pod `uid`.
    pub fn pod_cgroups(&self, uid: &str) -> Vec<PathBuf> {
        let name = format!("pod{uid}");
        let mut found = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            let root = hierarchy.join(self.cgroup_root.trim_start_matches('/'));
            find_dirs(&root, &name, &mut found);
        }
        found
    }
}

/// `kubectl get pods --watch`, line by line; the kubectl is killed when dropped.
#[allow(dead_code, reason = "benches/kube.rs follows its pods with it")]
pub struct PodWatch {
    child: Child,
    lines: BufReader<ChildStdout>,
}

#[allow(dead_code, reason = "benches/kube.rs follows its pods with it")]
impl PodWatch {
    /// The next `(name, phase)` the API server reports; `None` when the watch ended.
    pub fn next_change(&mut self) -> Option<(String, String)> {
        let mut line = String::new();
        if self.lines.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut parts = line.split_whitespace();
        Some((
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        ))
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        // What this node's pods hold on the machine's shared paths, read while containerd runs.
        let mut netns = Vec::new();
        let mut sockets = Vec::new();
        let mut uids = self.uids.lock().unwrap().clone();
        if let Some(c) = &self.containerd {
            let socket = c.dir.path().join("containerd.sock");
            for id in super::stdout(&c.ctr(&["containers", "ls", "-q"])).lines() {
                sockets.push(shim_socket(&socket, id));
                if let Ok(info) = serde_json::from_slice::<serde_json::Value>(
                    &c.ctr(&["containers", "info", id]).stdout,
                ) {
                    netns.extend(
                        info["Spec"]["linux"]["namespaces"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|n| n["type"] == "network")
                            .filter_map(|n| n["path"].as_str())
                            .filter(|p| p.contains("/netns/cni-"))
                            .map(PathBuf::from),
                    );
                    if let Some(uid) = info["Labels"]["io.kubernetes.pod.uid"].as_str() {
                        uids.push(uid.to_owned());
                    }
                }
            }
        }
        // The kubelet first, so that nothing restarts what is being stopped.
        stop(self.kubelet.take());
        let containerd_dir = self
            .containerd
            .as_ref()
            .map(|c| c.dir.path().display().to_string());
        // containerd's own drop kills its tasks and wasm shims and unmounts under its root.
        drop(self.containerd.take());
        if let Some(dir) = containerd_dir {
            let _ = Command::new("pkill")
                .args([
                    "-9",
                    "-f",
                    &format!("containerd-shim-runc-v2 -namespace {K8S_NS} .*{dir}"),
                ])
                .status();
        }
        stop(self.apiserver.take());
        stop(self.etcd.take());
        unmount_under(self.dir.path());
        for ns in netns {
            let _ = Command::new("umount")
                .arg(&ns)
                .stderr(Stdio::null())
                .status();
            let _ = fs::remove_file(&ns);
        }
        for socket in sockets {
            let _ = fs::remove_file(socket);
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup(&hierarchy.join(self.cgroup_root.trim_start_matches('/')));
        }
        // The kubelet writes pod logs under /var/log/pods (a fixed path in 1.20) and links
        // them from /var/log/containers.
        if let Ok(entries) = fs::read_dir("/var/log/pods") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if uids.iter().any(|u| name.ends_with(&format!("_{u}"))) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        if let Ok(entries) = fs::read_dir("/var/log/containers") {
            for entry in entries.flatten() {
                let link = fs::read_link(entry.path()).unwrap_or_default();
                let link = link.to_string_lossy();
                if uids.iter().any(|u| link.contains(&format!("_{u}/"))) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// containerd 1.6 with its CRI plugin: runc the default runtime, the shim as handler
/// `wasmoci`, the test CNI plugin, and the images the kube tests use, imported and seen by CRI.
fn start_cri_containerd(shim_toml: &str, extra: &str, env: &[(&str, &Path)]) -> Containerd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (bin, conf) = install_test_cni(&d);
    let annotations = r#"["io.wasm-oci.reference", "io.wasm-oci.pull", "io.wasm-oci.preopens"]"#;
    let config = format!(
        r#"{base}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{KUBE_PAUSE_IMAGE}"
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
{extra}"#,
        base = base_config(&d),
        bin = bin.display(),
        conf = conf.display(),
    );
    let c = Containerd::start_in(dir, &config, K8S_NS, env, shim_toml);
    let busybox = Path::new("/bin/busybox");
    c.import_entries(
        KUBE_PAUSE_IMAGE,
        &[Entry::Dir("bin"), Entry::File("bin/busybox", busybox)],
        &["/bin/busybox", "sleep", "2147483647"],
    );
    c.import_entries(
        KUBE_BUSYBOX_IMAGE,
        &[Entry::Dir("bin"), Entry::File("bin/busybox", busybox)],
        &["/bin/busybox"],
    );
    // A rootfs with nothing to run: the module comes from the pod's annotation.
    c.import_entries(
        KUBE_PLACEHOLDER_IMAGE,
        &[Entry::Dir("tmp")],
        &["/no-module-here"],
    );
    wait_cri_images(
        &c,
        &[KUBE_PAUSE_IMAGE, KUBE_BUSYBOX_IMAGE, KUBE_PLACEHOLDER_IMAGE],
    );
    c
}

/// Waits until containerd's CRI plugin (which learns of imported images from containerd's
/// events) reports `images` through ImageStatus.
fn wait_cri_images(c: &Containerd, images: &[&str]) {
    use k8s_cri::v1 as cri;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = c.dir.path().join("containerd.sock");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::try_from("http://[::]")
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
            .unwrap();
        let mut client = cri::image_service_client::ImageServiceClient::new(channel);
        let deadline = Instant::now() + KUBE_PATIENCE;
        for image in images {
            loop {
                let status = client
                    .image_status(cri::ImageStatusRequest {
                        image: Some(cri::ImageSpec {
                            image: image.to_string(),
                            ..Default::default()
                        }),
                        verbose: false,
                    })
                    .await;
                if status.is_ok_and(|s| s.into_inner().image.is_some()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "CRI does not see {image}: {}",
                    c.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
}

/// The socket a wasm shim listens on for container `id` of containerd at `address` (the
/// `containerd-shim` crate's `socket_address`).
fn shim_socket(address: &Path, id: &str) -> PathBuf {
    let key = address.join(K8S_NS).join(id);
    let hash = sha2::Sha256::digest(key.display().to_string().as_bytes());
    PathBuf::from(format!("/run/containerd/s/{}", hex::encode(hash)))
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop(child: Option<Child>) {
    let Some(mut child) = child else { return };
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn curl(args: &[&str]) -> String {
    Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Every mount under `dir`, deepest first, lazily unmounted.
fn unmount_under(dir: &Path) {
    let root = dir.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut ours: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&root))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}

/// The mounted cgroup hierarchies: `/sys/fs/cgroup/*` under cgroup v1, `/sys/fs/cgroup`
/// itself under v2.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn find_dirs(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if entry.file_name() == name {
                found.push(entry.path());
            }
            find_dirs(&entry.path(), name, found);
        }
    }
}

/// Removes a cgroup and its children, deepest first.
fn remove_cgroup(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
