//! The network a container's HTTP component listens in: the one its spec asks for, or none.
//!
//! A spec without a network namespace shares the node's (`hostNetwork`, `ctr run --net-host`).
//! One that names a path (a pod's, made by the CRI plugin's CNI) gets that one. One that asks
//! for a namespace without a path (`ctr run`) gets a new namespace of its own with `lo` up, as
//! runc gives it. A spec that names a namespace which turns out to be the node's own (the
//! CRI plugin names a pod's network as its sandbox process's, and a wasm sandbox is a shim in
//! the node's network) is taken to mean its pod's; when the pod's cannot be found, the
//! container does not start, rather than listen where the node's services do.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::Error;

/// Where a container's sockets live.
#[derive(Debug, Clone)]
pub(crate) enum Network {
    /// The node's own network: the spec asks for no namespace.
    Host,
    /// The namespace at a path the spec names (a pod's).
    Path(PathBuf),
    /// A namespace made for this container; it lives as long as this handle.
    Own(Arc<File>),
}

/// What a spec asks for, before a new namespace is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Asked {
    /// No network namespace: the node's.
    Host,
    /// The namespace at this path.
    Path(PathBuf),
    /// A new namespace.
    New,
}

impl Asked {
    /// What `spec`'s `linux.namespaces` says of the network.
    pub(crate) fn of(spec: &Spec) -> Asked {
        let network = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network));
        match network {
            None => Asked::Host,
            Some(n) => match n.path() {
                Some(path) if !path.as_os_str().is_empty() => Asked::Path(path.clone()),
                _ => Asked::New,
            },
        }
    }
}

impl Network {
    /// The network for what the spec asked: a new namespace is made here.
    pub(crate) fn for_spec(asked: Asked) -> Result<Network, Error> {
        Ok(match asked {
            Asked::Host => Network::Host,
            Asked::Path(path) => Network::Path(path),
            Asked::New => Network::Own(Arc::new(new_namespace()?)),
        })
    }

    /// Whether this is a namespace named by path that is in fact this process's own.
    pub(crate) fn is_ours_by_path(&self) -> bool {
        match self {
            Network::Path(path) => same_namespace(path, Path::new("/proc/self/ns/net")),
            _ => false,
        }
    }

    /// The namespace to enter, if any: an open handle.
    fn open(&self) -> Result<Option<Arc<File>>, Error> {
        match self {
            Network::Host => Ok(None),
            Network::Own(file) => Ok(Some(file.clone())),
            Network::Path(path) => File::open(path)
                .map(|f| Some(Arc::new(f)))
                .map_err(|source| Error::NetworkNamespace {
                    action: "open",
                    path: Some(path.clone()),
                    source,
                }),
        }
    }
}

/// Whether two paths name one namespace (one inode of the `nsfs`).
fn same_namespace(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A sandbox id as a path component: the CRI plugin's are hex; nothing that climbs.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The network namespace path of the pod sandbox `sandbox`, from its bundle beside `bundle`
/// (containerd keeps a namespace's bundles in one directory). `None` when it has none.
pub(crate) fn sandbox_network(bundle: &Path, sandbox: &str) -> Option<PathBuf> {
    if !plain_id(sandbox) {
        return None;
    }
    let config = bundle.parent()?.join(sandbox).join("config.json");
    let spec = Spec::load(&config).ok()?;
    match Asked::of(&spec) {
        Asked::Path(path) if !same_namespace(&path, Path::new("/proc/self/ns/net")) => Some(path),
        _ => None,
    }
}

/// Makes a network namespace on a thread of its own, brings its `lo` up, and returns a handle
/// to it; the thread ends, and the process's other threads never leave theirs.
fn new_namespace() -> Result<File, Error> {
    let failed = |action| {
        move |source| Error::NetworkNamespace {
            action,
            path: None,
            source,
        }
    };
    std::thread::spawn(move || {
        #[allow(unsafe_code, reason = "unshare(2) of the network namespace only")]
        // SAFETY: only the network namespace is unshared, never the file table, so no thread
        // ever sees another's descriptors disappear.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .map_err(|e| failed("make")(e.into()))?;
        loopback_up().map_err(failed("bring lo up in"))?;
        File::open("/proc/thread-self/ns/net").map_err(failed("open"))
    })
    .join()
    .unwrap_or_else(|_| Err(failed("make")(std::io::Error::other("its thread panicked"))))
}

/// `ip link set lo up` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // An unbound datagram socket: any socket of the namespace carries the interface ioctls.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut request: libc::ifreq = {
        #[allow(unsafe_code, reason = "a plain C struct, all zeros")]
        // SAFETY: `ifreq` is plain data; all zeros is a valid value.
        unsafe {
            std::mem::zeroed()
        }
    };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    #[allow(
        unsafe_code,
        reason = "SIOCGIFFLAGS and SIOCSIFFLAGS have no safe wrapper"
    )]
    // SAFETY: `request` is a valid `ifreq` naming `lo`, live for both calls, and `fd` is an
    // open socket.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A TCP listener on `addr` in `network`. A thread of its own enters the namespace, binds,
/// and ends: the socket stays in the namespace it was made in, and the process's other threads
/// never leave theirs.
pub(crate) fn listen_in(
    network: &Network,
    addr: std::net::SocketAddr,
) -> Result<std::net::TcpListener, Error> {
    let listen = move |source| Error::Listen {
        addr: addr.to_string(),
        source,
    };
    let Some(ns) = network.open()? else {
        return std::net::TcpListener::bind(addr).map_err(listen);
    };
    let path = match network {
        Network::Path(path) => Some(path.clone()),
        _ => None,
    };
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| Error::NetworkNamespace {
            action: "enter",
            path,
            source: e.into(),
        })?;
        std::net::TcpListener::bind(addr).map_err(listen)
    })
    .join()
    .unwrap_or_else(|_| Err(listen(std::io::Error::other("its thread panicked"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":{namespaces}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_spec_asks_for_the_nodes_network_a_path_or_a_new_one() {
        assert_eq!(Asked::of(&spec(r#"[{"type":"pid"}]"#)), Asked::Host);
        assert_eq!(Asked::of(&spec(r#"[{"type":"network"}]"#)), Asked::New);
        assert_eq!(
            Asked::of(&spec(r#"[{"type":"network","path":""}]"#)),
            Asked::New
        );
        assert_eq!(
            Asked::of(&spec(
                r#"[{"type":"network","path":"/var/run/netns/cni-1"}]"#
            )),
            Asked::Path("/var/run/netns/cni-1".into())
        );
    }

    #[test]
    fn a_sandbox_id_never_names_another_directory() {
        assert!(plain_id("0123abcdef"));
        for hostile in ["", ".", "..", "../x", "a/b", "a\0b"] {
            assert!(!plain_id(hostile), "{hostile:?}");
        }
        assert_eq!(sandbox_network(Path::new("/nonexistent/b"), ".."), None);
    }

    #[test]
    fn this_process_is_in_its_own_namespace() {
        assert!(Network::Path("/proc/self/ns/net".into()).is_ours_by_path());
        assert!(!Network::Host.is_ours_by_path());
    }
}
