//! A private Docker Distribution registry per test (TLS and basic auth when asked), and
//! what tests read and write in it directly: manifests, ORAS pushes, certificates.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A Docker Distribution registry (Debian's `docker-registry`) on a loopback port, with its
/// storage in a temporary directory; stopped when dropped.
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub addr: String,
}

/// TLS and basic auth for a [`Registry`].
#[derive(Default)]
pub struct Secure {
    /// Serve TLS with a certificate for 127.0.0.1 signed by a CA made for the test.
    pub tls: bool,
    /// Require this user and password (htpasswd, bcrypt).
    pub user: Option<(&'static str, &'static str)>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_secure(Secure::default())
    }

    /// The CA certificate of a TLS registry.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A plain-HTTP registry with this `auth:` section of its configuration.
    pub fn start_with_auth(auth: &str) -> Registry {
        Self::start_config(Secure::default(), auth.to_owned())
    }

    pub fn start_secure(secure: Secure) -> Registry {
        Self::start_config(secure, String::new())
    }

    fn start_config(secure: Secure, auth: String) -> Registry {
        // The free port may be taken by another test between probe and bind: try again.
        for _ in 0..3 {
            if let Some(registry) = Self::try_start(&secure, auth.clone()) {
                return registry;
            }
        }
        panic!("the registry did not start on three ports in a row");
    }

    fn try_start(secure: &Secure, mut auth: String) -> Option<Registry> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let d = dir.path();
        let mut extra_http = String::new();
        if secure.tls {
            make_certificates(d);
            extra_http = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
        }
        if let Some((user, password)) = secure.user {
            use base64::Engine as _;
            secret(password);
            secret(&base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect(
                    "htpasswd is not installed: run ./scripts/test, which installs apache2-utils",
                );
            assert!(out.status.success(), "{}", describe(&out));
            fs::write(d.join("htpasswd"), out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wasm-oci-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 {auth}\
                 http:\n  addr: {addr}\n{extra_http}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is not installed: run ./scripts/test, which installs it");
        let mut registry = Registry {
            child: Some(child),
            dir,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        // Any HTTP answer means it is up: 200, 401 with auth, 400 "use HTTPS" with TLS.
        loop {
            // Ours must still be running, or the answer would come from someone else.
            let exited = registry
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return None;
            }
            if http(&registry.addr, "GET", "/v2/", &[], b"").is_some() {
                return Some(registry);
            }
            assert!(
                Instant::now() < deadline,
                "registry did not come up: {}",
                fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>/<repo>`
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Pushes testdata/hello.wasm as `repo_and_tag`; its reference.
    pub fn push_hello(&self, repo_and_tag: &str) -> String {
        let reference = self.reference(repo_and_tag);
        WasmOci::new().ok(&["push", testdata("hello.wasm").to_str().unwrap(), &reference]);
        reference
    }

    /// Where the registry keeps a blob's bytes on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The manifest `reference` (`repo:tag`) points to, as JSON.
pub fn manifest(registry: &Registry, repo: &str, tag: &str) -> serde_json::Value {
    manifest_and_digest(registry, repo, tag).1
}

/// The document at `repo:at` (a tag or a digest) and the sha256 digest of its bytes.
fn manifest_and_digest(registry: &Registry, repo: &str, at: &str) -> (String, serde_json::Value) {
    use sha2::Digest;
    let accept =
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
    let r = http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/manifests/{at}"),
        &[("Accept", accept)],
        b"",
    )
    .expect("registry answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let parsed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&r.body)));
    (digest, parsed)
}

/// The wasm manifest `repo:tag` names, and its digest: the document at the tag, or, when that
/// is an index (what `push` writes by default), the manifest of its first `wasm` entry.
pub fn wasm_manifest(registry: &Registry, repo: &str, tag: &str) -> (String, serde_json::Value) {
    let (digest, top) = manifest_and_digest(registry, repo, tag);
    match top["manifests"].as_array() {
        Some(entries) => {
            let entry = entries
                .iter()
                .find(|e| e["platform"]["architecture"] == "wasm")
                .unwrap_or_else(|| panic!("{repo}:{tag} is an index without a wasm entry: {top}"));
            manifest_and_digest(registry, repo, entry["digest"].as_str().unwrap())
        }
        None => (digest, top),
    }
}

/// What `push` writes by default: its index's entries' platforms, in order, as `os/arch[/variant]`
/// (see [`index_platforms`]). The first three name the wasm manifest, the last two the Linux image.
pub const PUSHED_PLATFORMS: [&str; 5] = [
    "wasip1/wasm",
    "linux/amd64/wasm",
    "linux/arm64/wasm",
    "linux/amd64",
    "linux/arm64",
];

/// An index's entries' platforms, in order, as `os/arch[/variant]`.
pub fn index_platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|e| {
            let p = &e["platform"];
            let os_arch = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            match p["variant"].as_str() {
                Some(variant) => format!("{os_arch}/{variant}"),
                None => os_arch,
            }
        })
        .collect()
}

/// Stores a manifest under `tag` and returns its digest.
pub fn put_manifest(
    registry: &Registry,
    repo: &str,
    tag: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    use sha2::Digest;
    let r = http(
        &registry.addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", media_type)],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// Runs python3 with the ORAS SDK; `./scripts/test` installs it.
pub fn oras_python(script: &str, cwd: &Path) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ORAS Python SDK script failed (install it with ./scripts/test): {}",
        describe(&out)
    );
}

/// Runs openssl in `dir`, asserting success.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl: `ca.crt`,
/// `server.crt` and `server.key` (PKCS#8 PEM) in `dir`.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=wasm-oci test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}
