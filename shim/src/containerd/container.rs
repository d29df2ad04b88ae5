//! A container as the shim holds it between `create` and `delete`: where its wasm comes from,
//! what its guest gets, its cgroup and network, its state, and what its guest costs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::cgroup::Cgroup;
use super::mounts;
use super::netns::Network;
use super::state::TaskState;
use crate::runner::{Identity, Preopen};

/// Where a container's wasm comes from.
pub(crate) enum Module {
    /// Read from the rootfs at create: these bytes are what is hashed and compiled, and they
    /// are let go once compiled.
    Rootfs { name: PathBuf, bytes: Vec<u8> },
    /// A blob of the shared cache, pulled by reference, held until its guest ends.
    Cached {
        cache: wasm_oci_cache::Cache,
        artifact: wasm_oci_fetcher::Resolved,
    },
}

/// A container this shim holds, from `create` to `delete`.
pub(crate) struct Container {
    pub(crate) bundle: String,
    pub(crate) rootfs: PathBuf,
    pub(crate) mounted: bool,
    /// The spec's mounts as bound for the guest.
    pub(crate) guest_mounts: Vec<PathBuf>,
    /// `process.user`, when it is not root.
    pub(crate) identity: Option<Identity>,
    /// The network the spec asks for.
    pub(crate) network: Network,
    /// The pod sandbox the CRI plugin put the container in (`io.kubernetes.cri.sandbox-id`).
    pub(crate) sandbox: Option<String>,
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The wasm, until the container starts and hands it to its guest; none for a pod's
    /// sandbox container, which runs no wasm and waits to be killed.
    pub(crate) module: Option<Module>,
    /// A pod's sandbox ("pause") container.
    pub(crate) pause: bool,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) preopens: Vec<Preopen>,
    pub(crate) max_memory: Option<usize>,
    /// The container's cgroup, made with its limits.
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    /// Created, running or stopped: see [`TaskState`] for the ways between.
    pub(crate) state: watch::Sender<TaskState>,
    /// Set by any kill: a guest running a command stops.
    pub(crate) stop: Arc<AtomicBool>,
    /// Set by a SIGKILL: every guest of the container ends at once, with no grace.
    pub(crate) abort: Arc<AtomicBool>,
    pub(crate) killed: Arc<tokio::sync::Notify>,
    pub(crate) signal: Arc<Mutex<u32>>,
    /// What the guest costs, for stats when this process sits in another container's cgroup.
    pub(crate) usage: Arc<GuestUsage>,
}

/// What one guest costs this process: its linear memory and its thread's CPU time.
#[derive(Default)]
pub(crate) struct GuestUsage {
    /// Bytes of linear memory and table, kept by the runner.
    pub(crate) memory: Arc<AtomicU64>,
    /// The guest thread's id while it runs (0 before and after).
    pub(crate) tid: std::sync::atomic::AtomicI32,
    /// The thread's CPU time when it ended, in nanoseconds.
    pub(crate) cpu_at_exit: AtomicU64,
    /// Whether the guest's threads are in its container's CPU cgroup, whose figures then
    /// count them (else the cgroup counts the process it shares with other guests).
    pub(crate) cpu_in_cgroup: AtomicBool,
}

impl GuestUsage {
    /// The guest thread's CPU time so far, in nanoseconds.
    pub(crate) fn cpu(&self) -> u64 {
        match self.tid.load(Ordering::SeqCst) {
            0 => self.cpu_at_exit.load(Ordering::SeqCst),
            tid => thread_cpu(tid),
        }
    }
}

/// A thread's time on a CPU, in nanoseconds (`/proc/self/task/TID/schedstat`'s first field).
pub(crate) fn thread_cpu(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Undoes what `create` set up, its mounts and cgroup: at `delete`, or for a container that
/// will not run.
pub(crate) fn discard(container: &Container) {
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
    if let Some(cgroup) = &container.cgroup {
        cgroup.remove();
    }
}
