//! What a container's guest reaches through the file system is mounted `nodev` and `nosuid`:
//! an image may hold device nodes (containerd's unpack makes them, as root), and a pod's
//! volume may be a host path holding some; the shim opens files for the guest as root, with no
//! device cgroup, so a device node reached through a preopen would be the node's device.
//! runc's device cgroup refuses those; here the mount does.

use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use super::error::MountError;

/// Remounts the mount at `target` (the container's rootfs, just mounted) `nodev,nosuid`,
/// read-only when `read_only`.
pub(crate) fn harden(target: &Path, read_only: bool) -> Result<(), MountError> {
    let mut flags = MountFlags::BIND | MountFlags::NODEV | MountFlags::NOSUID;
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    rustix::mount::mount_remount(target, flags, "").map_err(|cause| MountError::Remount {
        target: target.to_owned(),
        cause,
    })
}

/// Binds `source` (a directory the spec mounts into the container) at `target` and makes
/// that `nodev,nosuid` (and read-only when `read_only`); the guest is given `target`.
pub(crate) fn bind_hardened(
    source: &Path,
    target: &Path,
    read_only: bool,
) -> Result<(), MountError> {
    std::fs::create_dir_all(target).map_err(|cause| MountError::CreateDir {
        target: target.to_owned(),
        cause,
    })?;
    rustix::mount::mount_bind(source, target).map_err(|cause| MountError::Bind {
        dir: source.to_owned(),
        cause,
    })?;
    harden(target, read_only).inspect_err(|_| unmount(target))
}

/// Detaches the mount at `target`; best effort, for clean-up.
pub(crate) fn unmount(target: &Path) {
    if let Err(e) = rustix::mount::unmount(target, UnmountFlags::DETACH) {
        tracing::warn!(target = %target.display(), error = %e, "cannot unmount");
    }
    let _ = std::fs::remove_dir(target);
}

/// Where the `index`th mount of a container's spec is bound for its guest.
pub(crate) fn guest_mount_dir(bundle: &Path, index: usize) -> PathBuf {
    bundle.join("wasm-oci-mounts").join(index.to_string())
}

/// Unmounts every guest mount left in `bundle` by a shim that died, and their directory.
pub(crate) fn remove_leftovers(bundle: &Path) {
    let dir = bundle.join("wasm-oci-mounts");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        unmount(&entry.path());
    }
    let _ = std::fs::remove_dir(&dir);
}
