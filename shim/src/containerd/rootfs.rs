//! Reading a container's module out of its rootfs, as the image author cannot make it read
//! anything else: the path and every symlink on it are resolved inside the rootfs
//! (`openat2` with `RESOLVE_IN_ROOT`, as if the rootfs were `/`), only a regular file is
//! accepted, and only up to a size cap. The path is first opened `O_PATH`, which opens
//! nothing: a FIFO or a device is refused before it is ever opened (some devices act on an
//! open alone), and only a regular file is then opened for reading.

use std::os::fd::AsFd as _;
use std::path::Path;

use wasm_oci_artifact::file::{self, Within};

use super::error::{RootfsError, RootfsProblem};

/// Reads the module at `path` (`process.args[0]`) inside `rootfs`, at most `max` bytes, with
/// the one reader of files others name ([`wasm_oci_artifact::file`]).
pub(crate) fn read_module(rootfs: &Path, path: &str, max: u64) -> Result<Vec<u8>, RootfsError> {
    let fail = |problem| RootfsError {
        module: path.to_owned(),
        problem,
    };
    let root = file::open_dir(rootfs).map_err(|cause| {
        fail(RootfsProblem::OpenRootfs {
            rootfs: rootfs.to_owned(),
            cause,
        })
    })?;
    // Relative to the rootfs either way: `/x.wasm` and `x.wasm` name the same file.
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return Err(fail(RootfsProblem::NamesRootfs));
    }
    file::read_in(root.as_fd(), Path::new(relative), Within::Root, max)
        .map_err(|e| fail(RootfsProblem::Read(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{FileType, Mode};
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_and_symlinks_resolve_inside_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret.wasm"), b"host's").unwrap();
        let rootfs = host.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("app")).unwrap();
        std::fs::write(rootfs.join("app/m.wasm"), b"\0asm").unwrap();
        symlink("/app/m.wasm", rootfs.join("link.wasm")).unwrap();
        symlink(host.path().join("secret.wasm"), rootfs.join("out.wasm")).unwrap();
        symlink("../../secret.wasm", rootfs.join("app/up.wasm")).unwrap();

        assert_eq!(read_module(&rootfs, "/app/m.wasm", 100).unwrap(), b"\0asm");
        assert_eq!(read_module(&rootfs, "app/m.wasm", 100).unwrap(), b"\0asm");
        // An absolute symlink means the rootfs's own /app/m.wasm.
        assert_eq!(read_module(&rootfs, "/link.wasm", 100).unwrap(), b"\0asm");
        for escape in [
            "/../secret.wasm",
            "/../../../../secret.wasm",
            "/out.wasm",
            "/app/up.wasm",
        ] {
            let e = read_module(&rootfs, escape, 100).unwrap_err().to_string();
            assert!(e.contains("no such file"), "{escape}: {e}");
        }
        let e = read_module(&rootfs, "/app/m.wasm", 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("over the node's limit"), "{e}");
        let e = read_module(&rootfs, "/app", 100).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        assert!(read_module(&rootfs, "/", 100).is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let rootfs = tempfile::tempdir().unwrap();
        let fifo = rootfs.path().join("m.wasm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = read_module(rootfs.path(), "/m.wasm", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a FIFO"), "{e}");
    }
}
