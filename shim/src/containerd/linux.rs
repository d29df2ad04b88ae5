//! Mixed pods: a pod under the `wasmoci` runtime may hold ordinary Linux containers (a
//! sidecar such as busybox). The shim decides per container, at `start`, from its spec: a
//! container that names no wasm (no `io.wasm-oci.reference`, a `process.args[0]` not ending
//! in `.wasm`, not a pod's sandbox) is handed to containerd's own runc shim,
//! `containerd-shim-runc-v2`: its `start` is run in the bundle with this shim's arguments and
//! stdin, and the address it prints is the one containerd is given, so containerd speaks to
//! runc's shim for that container from then on (create, exec, logs, stats, kill, delete), as
//! it would under the `runc` runtime. A `delete` after that shim died is forwarded to it too
//! (a marker file in the bundle says which containers are runc's).
//!
//! The bundle's spec is adapted first, because the CRI plugin names the pod's namespaces as
//! its sandbox process's (`/proc/PID/ns/...`) and a wasm pod's sandbox process is this shim,
//! which lives in the node's namespaces: the network becomes the pod's own (the one its
//! sandbox's spec names; a container whose pod network cannot be found is refused rather
//! than put in the node's), and every other namespace that is the node's (IPC, UTS, and PID
//! when the pod shares its process namespace) becomes a new one.
//! Its grouping annotations are dropped: runc's shim would otherwise compute this pod's
//! socket, which is this shim's, and answer with it.
//!
//! Why this way: runc's shim already does everything a Linux container needs, and containerd
//! talks to it exactly as under the `runc` runtime; re-implementing runc's task service (its
//! process reaping, exec, TTYs, OOM events, checkpoint) inside this shim would be a second,
//! weaker runc.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::annotations::{ANNOTATION_REFERENCE, CRI_CONTAINER_TYPE, CRI_SANDBOX_ID};

/// containerd's runc shim, found on containerd's `PATH`.
pub(crate) const RUNC_SHIM: &str = "containerd-shim-runc-v2";
/// In a bundle handed to runc's shim.
const MARKER: &str = "wasm-oci-runc";
/// The annotation runc's shim groups containers by, beside the CRI sandbox id.
const RUNC_GROUP: &str = "io.containerd.runc.v2.group";

/// Why a Linux container could not be handed to runc's shim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandOverError {
    /// The pod's network namespace is not to be found: the container would be in the node's.
    #[error(
        "the spec puts this Linux container in the node's network (its pod's sandbox is a \
         shim in the node's network) and the pod's own network cannot be found: it is not \
         started"
    )]
    NoPodNetwork,
    /// The bundle could not be read or rewritten.
    #[error("{action} {}: {cause}", path.display())]
    Bundle {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// runc's shim could not be run, or failed.
    #[error("{RUNC_SHIM} (containerd's runc shim, for a Linux container): {problem}")]
    RuncShim {
        /// What went wrong.
        problem: String,
    },
}

/// Whether the spec (`config.json`, as JSON) is an ordinary Linux container's.
pub(crate) fn is_linux(spec: &Value) -> bool {
    let annotation = |key: &str| spec["annotations"][key].as_str();
    if annotation(CRI_CONTAINER_TYPE) == Some("sandbox")
        || annotation(ANNOTATION_REFERENCE).is_some()
    {
        return false;
    }
    match spec["process"]["args"][0].as_str() {
        Some(first) => !first.ends_with(".wasm"),
        None => false,
    }
}

/// Whether the bundle in `dir` was handed to runc's shim.
pub(crate) fn is_handed_over(dir: &Path) -> bool {
    dir.join(MARKER).exists()
}

/// Adapts `spec` for runc in the pod whose sandbox's bundle is beside `bundle`: the node's
/// network (as this shim's) becomes the pod's, every other namespace of the node's a new one.
fn adapt(
    spec: &mut Value,
    bundle: &Path,
    node_ns: &dyn Fn(&str, &Path) -> bool,
) -> Result<(), HandOverError> {
    let sandbox = spec["annotations"][CRI_SANDBOX_ID]
        .as_str()
        .map(str::to_owned);
    if let Some(annotations) = spec["annotations"].as_object_mut() {
        annotations.remove(CRI_SANDBOX_ID);
        annotations.remove(RUNC_GROUP);
    }
    let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() else {
        return Ok(());
    };
    for namespace in namespaces.iter_mut() {
        let (Some(kind), Some(path)) = (namespace["type"].as_str(), namespace["path"].as_str())
        else {
            continue;
        };
        let (kind, path) = (kind.to_owned(), Path::new(path).to_owned());
        let Some(object) = namespace.as_object_mut() else {
            continue;
        };
        // Every kind the CRI plugin may name as the sandbox's: with `shareProcessNamespace`
        // the PID namespace too, and the node's would let the container see and signal
        // every process of the node (`hostPID`, which no unprivileged pod may have).
        let Some(proc_name) = proc_ns_name(&kind) else {
            continue;
        };
        if !node_ns(proc_name, &path) {
            continue;
        }
        if kind == "network" {
            let pod = sandbox
                .as_deref()
                .and_then(|id| super::netns::sandbox_network(bundle, id))
                .ok_or(HandOverError::NoPodNetwork)?;
            object.insert("path".into(), Value::String(pod.display().to_string()));
        } else {
            object.remove("path");
        }
    }
    Ok(())
}

/// The name under `/proc/PID/ns/` of a namespace the OCI spec calls `kind`; `None` for a
/// kind this shim does not know (left as runc would read it).
fn proc_ns_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "network" => "net",
        "mount" => "mnt",
        "ipc" => "ipc",
        "uts" => "uts",
        "pid" => "pid",
        "user" => "user",
        "cgroup" => "cgroup",
        "time" => "time",
        _ => return None,
    })
}

/// Whether `path` is the namespace `kind` this process is in (the node's: the shim's start
/// runs in containerd's namespaces).
fn is_nodes(kind: &str, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (
        std::fs::metadata(path),
        std::fs::metadata(Path::new("/proc/self/ns").join(kind)),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `start` for a Linux container, in its bundle (the current directory): adapts its spec,
/// marks the bundle, runs runc's shim's `start` with this process's arguments and stdin, and
/// returns its answer (an address, or containerd 2.3's bootstrap result) as it printed it.
pub(crate) fn start(spec: Value, input: &[u8]) -> Result<Vec<u8>, HandOverError> {
    let bundle = std::env::current_dir().map_err(|cause| HandOverError::Bundle {
        action: "finding",
        path: ".".into(),
        cause,
    })?;
    let mut spec = spec;
    adapt(&mut spec, &bundle, &is_nodes)?;
    let json = serde_json::to_vec_pretty(&spec).expect("json values serialize");
    write_replacing(&bundle.join("config.json"), &json)?;
    let marker = bundle.join(MARKER);
    std::fs::write(&marker, b"").map_err(|cause| HandOverError::Bundle {
        action: "marking",
        path: marker,
        cause,
    })?;
    let out = forward(Some(input))?;
    if out.is_empty() {
        return Err(HandOverError::RuncShim {
            problem: "it printed no address".into(),
        });
    }
    tracing::info!("a Linux container, handed to runc's shim");
    Ok(out)
}

/// `delete` of a container handed to runc's shim: its answer, as bytes.
pub(crate) fn delete() -> Result<Vec<u8>, HandOverError> {
    forward(None)
}

/// Runs runc's shim with this process's arguments and environment, and `input` on its stdin
/// (what containerd wrote on ours, already read) or else ours; its stdout.
fn forward(input: Option<&[u8]>) -> Result<Vec<u8>, HandOverError> {
    let fail = |e: std::io::Error| HandOverError::RuncShim {
        problem: e.to_string(),
    };
    let mut child = Command::new(RUNC_SHIM)
        .args(std::env::args_os().skip(1))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(fail)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).map_err(fail)?;
    }
    let out = child.wait_with_output().map_err(fail)?;
    if !out.status.success() {
        return Err(HandOverError::RuncShim {
            problem: format!("it ended with {}", out.status),
        });
    }
    Ok(out.stdout)
}

/// Replaces `path` with `bytes` atomically.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), HandOverError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |cause: std::io::Error| HandOverError::Bundle {
        action: "rewriting",
        path: path.to_owned(),
        cause,
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_container_that_names_no_wasm_is_runcs() {
        let spec = |annotations: Value, args: Value| json!({"annotations": annotations, "process": {"args": args}});
        assert!(is_linux(&spec(json!({}), json!(["/bin/sh", "-c", "x"]))));
        assert!(!is_linux(&spec(json!({}), json!(["/hello.wasm"]))));
        assert!(!is_linux(&spec(
            json!({CRI_CONTAINER_TYPE: "sandbox"}),
            json!(["/pause"])
        )));
        assert!(!is_linux(&spec(
            json!({ANNOTATION_REFERENCE: "r/m:v1"}),
            json!(["x"])
        )));
        assert!(!is_linux(&spec(json!({}), json!([]))));
    }

    #[test]
    fn the_nodes_namespaces_become_the_pods_or_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("c1");
        let sandbox = dir.path().join("pod1");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(
            sandbox.join("config.json"),
            serde_json::to_vec(&json!({"ociVersion": "1.0.2",
                "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]}}))
            .unwrap(),
        )
        .unwrap();
        let mut spec = json!({
            "annotations": {CRI_SANDBOX_ID: "pod1", RUNC_GROUP: "g", "other": "kept"},
            "linux": {"namespaces": [
                {"type": "network", "path": "/proc/42/ns/net"},
                {"type": "ipc", "path": "/proc/42/ns/ipc"},
                {"type": "uts", "path": "/proc/42/ns/uts"},
                {"type": "pid", "path": "/proc/42/ns/pid"},
                {"type": "mount"}
            ]}
        });
        let node = |_: &str, path: &Path| path.starts_with("/proc/42");
        adapt(&mut spec, &bundle, &node).unwrap();
        assert_eq!(
            spec["linux"]["namespaces"],
            json!([
                {"type": "network", "path": "/var/run/netns/cni-1"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "pid"},
                {"type": "mount"}
            ])
        );
        assert_eq!(spec["annotations"], json!({"other": "kept"}));

        // No pod network to be found: refused, never the node's.
        let mut spec = json!({"annotations": {CRI_SANDBOX_ID: "gone"},
            "linux": {"namespaces": [{"type": "network", "path": "/proc/42/ns/net"}]}});
        let e = adapt(&mut spec, &bundle, &node).unwrap_err();
        assert!(matches!(e, HandOverError::NoPodNetwork), "{e}");
        assert!(e.to_string().contains("node's network"), "{e}");
    }
}
