//! Compiling never kills a pod: the shim sits in its pod's cgroup, and a compile's peak (near
//! 270 MB for an 18 MB component) may be far above the pod's memory limit. So a module whose
//! code is not in the cache yet is compiled by a helper process, this same program started
//! with [`COMPILE_ARG`], placed in the cgroups the shim was started in (containerd's, where
//! the node's other work is charged) before it reads a byte. It compiles into the shared
//! cache, under the digest of the bytes it compiled, and exits; the shim then loads that
//! code, as it loads any code it compiled earlier (only this program's code is ever loaded).
//!
//! When the helper cannot be used (no cache, no cgroup to leave, it failed), the shim
//! compiles in process as before, and the helper's error is in the log.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use wasm_oci_cache::{Cache, Digest};

use crate::runner::{EngineOptions, Runner, Wasm};

/// The argument that makes `containerd-shim-wasmoci-v1` the compile helper:
/// `--compile-into-cache CACHE_DIR [DIGEST]` (the wasm on stdin when no digest is given).
pub const COMPILE_ARG: &str = "--compile-into-cache";

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The `cgroup.procs` files of the cgroups this process was started in, read once at start.
static HOME: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Notes the cgroups this process is in now (containerd's, before a pod's is joined).
pub(crate) fn remember_home() {
    HOME.get_or_init(|| {
        std::fs::read_to_string("/proc/self/cgroup")
            .map(|text| home_procs(&text, Path::new(CGROUP_ROOT)))
            .unwrap_or_default()
    });
}

/// The `cgroup.procs` files, under `root`, of the cgroups `/proc/self/cgroup` lists:
/// the unified hierarchy's (`0::/path`) when it is mounted at `root`, else each v1
/// hierarchy's that counts processes (named ones and `cpu`/`cpuacct` aside).
fn home_procs(text: &str, root: &Path) -> Vec<PathBuf> {
    let unified = root.join("cgroup.controllers").exists();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let relative = path.trim_start_matches('/');
            if relative.split('/').any(|c| c == "..") {
                return None;
            }
            let dir = match (unified, controllers) {
                (true, "") => root.join(relative),
                (false, "") | (true, _) => return None,
                (false, c) if c.starts_with("name=") || c == "cpu" || c == "cpuacct" => {
                    return None;
                }
                (false, c) => root.join(c).join(relative),
            };
            Some(dir.join("cgroup.procs"))
        })
        .collect()
}

/// Compiles `wasm` into its cache in a helper process outside this process's cgroup, unless
/// its code is there already. Best effort: on any failure the caller's own load compiles.
pub(crate) fn ahead(runner: &Runner, wasm: &Wasm<'_>) {
    let (cache, digest, bytes) = match *wasm {
        Wasm::Cached { cache, digest } => (cache, digest.clone(), None),
        Wasm::Bytes {
            bytes,
            cache: Some(cache),
        } => (cache, Digest::of(bytes), Some(bytes)),
        Wasm::Bytes { cache: None, .. } => return,
    };
    if runner.is_compiled(cache, &digest) {
        return;
    }
    let home = HOME.get().map(Vec::as_slice).unwrap_or_default();
    if home.is_empty() {
        tracing::debug!("no cgroup of the shim's start is known: compiling in process");
        return;
    }
    match helper(home, cache.base(), &digest, bytes) {
        Ok(()) => tracing::debug!(%digest, "compiled by the helper, outside the pod's cgroup"),
        Err(e) => {
            tracing::warn!(%digest, error = %e, "the compile helper failed: compiling in process")
        }
    }
}

/// Runs the helper for `digest` and waits for it.
fn helper(
    home: &[PathBuf],
    cache: &Path,
    digest: &Digest,
    bytes: Option<&[u8]>,
) -> std::io::Result<()> {
    let mut command = Command::new("/proc/self/exe");
    command.arg(COMPILE_ARG).arg(cache);
    if bytes.is_none() {
        command.arg(digest.to_string());
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .env("RUST_BACKTRACE", "0")
        .spawn()?;
    // The helper reads nothing until its stdin ends: it is moved before it compiles.
    let pid = child.id().to_string();
    let mut moved = false;
    for procs in home {
        match std::fs::write(procs, &pid) {
            Ok(()) => moved = true,
            Err(e) => {
                tracing::debug!(procs = %procs.display(), error = %e, "cannot move the compile helper")
            }
        }
    }
    let mut stdin = child.stdin.take().expect("piped");
    let written = if moved {
        bytes.map_or(Ok(()), |b| stdin.write_all(b))
    } else {
        Err(std::io::Error::other(
            "the helper could not leave the pod's cgroup",
        ))
    };
    drop(stdin);
    if written.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    written?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("it ended with {status}")))
    }
}

/// The helper's `main`: compiles the wasm (stdin, or the cache's blob `DIGEST`) into the
/// cache at `CACHE_DIR`; its exit code.
pub(crate) fn helper_main(args: &[String]) -> i32 {
    use anyhow::Context as _;
    let run = || -> anyhow::Result<()> {
        let (dir, digest) = match args {
            [dir] => (dir, None),
            [dir, digest] => (dir, Some(digest.parse::<Digest>()?)),
            _ => anyhow::bail!("usage: {COMPILE_ARG} CACHE_DIR [DIGEST]"),
        };
        // Waits for the shim to have moved this process out of the pod's cgroup.
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the wasm")?;
        let cache = Cache::open(dir).with_context(|| format!("opening the cache at {dir}"))?;
        let runner = Runner::new(EngineOptions::SHIM)?;
        let name = PathBuf::from("wasm");
        let wasm = match &digest {
            Some(digest) => Wasm::Cached {
                cache: &cache,
                digest,
            },
            None => Wasm::Bytes {
                bytes: &bytes,
                cache: Some(&cache),
            },
        };
        runner.load(&name, wasm)?;
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-wasmoci-v1 {COMPILE_ARG}: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_cgroups_are_the_ones_that_count_processes() {
        let v1 = tempfile::tempdir().unwrap();
        let text =
            "9:name=systemd:/\n8:pids:/a\n4:memory:/process_api/x\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        assert_eq!(
            home_procs(text, v1.path()),
            [
                v1.path().join("pids/a/cgroup.procs"),
                v1.path().join("memory/process_api/x/cgroup.procs"),
            ]
        );
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "memory").unwrap();
        assert_eq!(
            home_procs("0::/system.slice/containerd.service\n", v2.path()),
            [v2.path()
                .join("system.slice/containerd.service/cgroup.procs")]
        );
        assert!(home_procs("4:memory:/../../x\n", v1.path()).is_empty());
    }
}
