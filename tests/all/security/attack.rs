//! Attacks found by the red-team review of #13 that still work: each test here FAILS on the
//! branch it was written against, and passes once the hole is closed.

use std::fs;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::inotify;

use crate::containerd::{Containerd, Entry, RUNTIME};
use crate::support::describe;

/// The image author ships a character device as its "module". The shim refuses it, but only
/// after it has `open(2)`ed the device as root, in the host's device namespace, with no
/// device cgroup in the way: a runc container could never open it. Opening is all some
/// devices need to act (a watchdog starts its countdown and reboots the node when closed
/// without its magic character; a tape rewinds; a modem hangs up). Here the device is
/// /dev/zero (1:5) and the open is seen through inotify on the rootfs.
#[test]
fn a_device_node_named_as_the_module_is_never_opened() {
    let c = Containerd::start();
    let image = "docker.io/library/devnode:v1";
    c.import_entries(image, &[Entry::CharDevice("m.wasm", 1, 5)], &["/m.wasm"]);
    let out = c.ctr(&[
        "containers",
        "create",
        "--snapshotter",
        "native",
        "--runtime",
        RUNTIME,
        image,
        "dev",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    // Every snapshot holding the device (the container's is a copy of the image's).
    let snapshots = c
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let watch =
        inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    let mut watched = 0;
    for snapshot in fs::read_dir(&snapshots).unwrap().flatten() {
        if snapshot.path().join("m.wasm").exists() {
            inotify::add_watch(&watch, snapshot.path(), inotify::WatchFlags::OPEN).unwrap();
            watched += 1;
        }
    }
    assert!(watched >= 2, "the container's snapshot was not found");
    let out = c.ctr(&["tasks", "start", "dev"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("a character device"),
        "{}",
        describe(&out)
    );
    let mut buf = [MaybeUninit::uninit(); 4096];
    let mut events = inotify::Reader::new(&watch, &mut buf);
    let mut opened = Vec::new();
    while let Ok(event) = events.next() {
        opened.push(format!("{:?}", event.file_name()));
    }
    let _ = c.ctr(&["containers", "rm", "dev"]);
    assert!(
        opened.is_empty(),
        "the shim opened the image's device node as root before refusing it: {opened:?}"
    );
}

/// The pod author names a "registry" on the node's loopback in `io.wasm-oci.reference`.
/// The shim pulls from the host's network namespace, so it reaches services bound to the
/// node's 127.0.0.1, which no container can reach (a pod has its own loopback), and puts
/// their answer (up to 64 KiB of it, escaped) into the error the pod author reads back in
/// the container's status (`kubectl describe pod`). The path is the author's too:
/// `/v2/<repository>/manifests/<tag>`, enough for e.g. etcd's v2 keys API (`/v2/keys/...`).
#[test]
fn a_pod_reference_does_not_reach_the_nodes_loopback() {
    const SECRET: &str = "NODE-LOCAL-ONLY-1c0ffee";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (seen, stop) = (seen.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(line);
                // A node-local admin service: it answers anyone on loopback.
                let body = format!("{{\"node\":\"{SECRET}\"}}");
                let _ = write!(
                    s,
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
    let c = Containerd::start();
    c.import_entries(
        "docker.io/library/ssrf:v1",
        &[Entry::Dir("app")],
        &["/nothing.wasm"],
    );
    let annotation = format!("io.wasm-oci.reference=127.0.0.1:{port}/keys/registry/minions:v1");
    let out = c.run(
        &["--annotation", &annotation],
        "docker.io/library/ssrf:v1",
        "ssrf",
        &[],
    );
    stop.store(true, Ordering::SeqCst);
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests.is_empty() && !describe(&out).contains(SECRET),
        "a pod's annotation made the shim query the node's loopback ({requests:?}) and read \
         the answer back: {}",
        describe(&out)
    );
}

/// The image author ships device nodes in the rootfs (containerd's unpack makes them with
/// mknod, as root). The rootfs is the guest's `/`, read-write, and the shim opens what the
/// guest asks for as root, in the host's device namespace, with no device cgroup: the guest
/// reaches any device of the node. Here it writes into the host's kernel log (/dev/kmsg,
/// 1:11); a block device of the node's disk (e.g. 254:0, /dev/vda) is read and written the
/// same way, which is the whole node. A runc container's device cgroup refuses both.
#[test]
fn a_guest_cannot_open_a_device_node_of_its_image() {
    let c = Containerd::start();
    let image = "docker.io/library/devices:v1";
    c.import_entries(
        image,
        &[
            Entry::File("probe.wasm", &crate::support::guests().probe),
            Entry::CharDevice("kmsg", 1, 11),
        ],
        &["/probe.wasm"],
    );
    let mark = format!("wasm-guest-wrote-the-host-kmsg-{}", std::process::id());
    // A newline ends the kernel's log record, so that it shows at once.
    let line = format!("{mark}\n");
    let out = c.run(
        &[],
        image,
        "kmsg",
        &["/probe.wasm", "write", "/kmsg", &line],
    );
    let dmesg = std::process::Command::new("dmesg").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&dmesg.stdout).contains(&mark),
        "the guest wrote into the host's kernel log through a device node of its image: {}",
        describe(&out)
    );
}

/// A pod names a registry that announces a huge layer and sends it slowly or in part. The
/// shim streams it into the node's shared cache with no cap (the operator's
/// `limits.max_module_size`, here 1 MiB, binds only modules read from a rootfs), outside any
/// pod's ephemeral-storage accounting, and a partial download outlives the failed container
/// (kept a day for a resume): pod after pod, each naming a new digest, fills the node's disk.
#[test]
fn a_pulled_module_is_capped_like_a_rootfs_module() {
    use sha2::Digest as _;
    let hex = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let config = b"{}".to_vec();
    let layer_digest = format!("sha256:{}", hex(b"never sent whole"));
    let claimed: u64 = 1 << 40;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": format!("sha256:{}", hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": claimed}],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", hex(&manifest));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (manifest, manifest_digest, config, layer_digest) = (
                manifest.clone(),
                manifest_digest.clone(),
                config.clone(),
                layer_digest.clone(),
            );
            std::thread::spawn(move || {
                let mut s = stream;
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let reply = |s: &mut std::net::TcpStream, head: &str, body: &[u8]| {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(body);
                };
                if path.contains("/manifests/") {
                    reply(
                        &mut s,
                        &format!(
                            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {manifest_digest}\r\n"
                        ),
                        &manifest,
                    );
                } else if path.ends_with(&layer_digest) {
                    // A terabyte announced; 8 MiB sent, then the connection drops.
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
                    );
                    let chunk = vec![0u8; 1 << 20];
                    for _ in 0..8 {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                } else if path.contains("/blobs/") {
                    reply(&mut s, "", &config);
                } else {
                    reply(&mut s, "", b"");
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shim.toml");
    // The registry is on loopback: the operator lists it, so that the cap is what is tested.
    fs::write(
        &file,
        format!(
            "[limits]\nmax_module_size = \"1MiB\"\n{}",
            crate::containerd::ALLOW_LOOPBACK
        ),
    )
    .unwrap();
    let c = Containerd::start_with_env(&[("WASM_OCI_SHIM_CONFIG", &file)]);
    c.import_entries(
        "docker.io/library/fill:v1",
        &[Entry::Dir("app")],
        &["/x.wasm"],
    );
    let annotation = format!("io.wasm-oci.reference=127.0.0.1:{port}/fill/disk:v1");
    let out = c.run(
        &["--annotation", &annotation],
        "docker.io/library/fill:v1",
        "fill",
        &[],
    );
    let left: u64 = fs::read_dir(c.cache.join("v1/ingest"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        left <= 1 << 20,
        "the shim wrote {left} bytes of a pod-named module into the node's cache (the node's \
         module limit is 1 MiB) and left them there after the container failed: {}",
        describe(&out)
    );
}
