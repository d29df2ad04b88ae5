//! How a verb finds the module it runs, compiles or inspects: a local file (binary or text)
//! or a reference in the cache, pulled as the pull policy and the signature policy allow.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use wasm_oci_cache::{Cache, RefEntry};
use wasm_oci_fetcher::parse_reference;
use wasm_oci_trust::Policy;

use super::naming::Naming;
use crate::GlobalOptions;

/// When to ask the registry about a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum PullPolicy {
    /// Pull only when the reference is not in the cache
    Missing,
    /// Always resolve the reference in the registry (blobs already cached are not downloaded again)
    Always,
    /// Never touch the network; fail when the reference is not cached
    Never,
}

impl From<PullPolicy> for wasm_oci_fetcher::PullPolicy {
    fn from(policy: PullPolicy) -> Self {
        match policy {
            PullPolicy::Missing => Self::Missing,
            PullPolicy::Always => Self::Always,
            PullPolicy::Never => Self::Never,
        }
    }
}

/// Where the signature policy comes from, for the verbs that pull and run.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyOption {
    /// Signature policy in containers-policy.json(5) format: which references must carry a
    /// valid cosign signature (sigstoreSigned), are refused (reject) or accepted as they are
    /// (insecureAcceptAnything). Default: $WASM_OCI_POLICY, else /etc/wasm-oci/policy.json;
    /// without a file everything is accepted
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

impl PolicyOption {
    /// The policy to enforce; a file that was named and cannot be used is an error.
    pub fn load(&self) -> anyhow::Result<Policy> {
        Ok(Policy::locate(self.policy.as_deref())?)
    }
}

/// A module to run or compile.
pub(super) struct Resolved {
    /// What errors call it: the file, or the blob's path.
    pub(super) path: PathBuf,
    pub(super) source: Source,
    /// Where the compiled code of bytes read (a local file, a layout's blob) is kept, by
    /// their digest, as the shim keeps a rootfs module's: a second start skips the compile.
    pub(super) compiled: Option<Cache>,
}

pub(super) enum Source {
    /// A local file or a layout's blob, read once (and, for a layout, verified).
    Bytes(Vec<u8>),
    /// A reference's artifact in the cache, held while this lives.
    Cached {
        cache: Cache,
        /// Boxed: a cache entry is large beside a buffer's three words.
        artifact: Box<wasm_oci_fetcher::Resolved>,
        /// The repository whose precompiled code, which the policy vouched for, it may load.
        vouched_for: Option<String>,
    },
}

impl Resolved {
    /// Finds `module` locally or in the cache, pulling it as `policy` allows, under the
    /// signature policy `trust`.
    pub(super) fn new(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
    ) -> anyhow::Result<Self> {
        Self::find(global, module, policy, trust, false)
    }

    /// [`Resolved::new`] for a module about to run: a pull that finds in the config an import
    /// this host does not provide stops before downloading the layer.
    pub(super) fn to_run(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
    ) -> anyhow::Result<Self> {
        let mut resolved = Self::find(global, module, policy, trust, true)?;
        if let Source::Bytes(_) = resolved.source {
            resolved.compiled = compiled_cache(global);
        }
        Ok(resolved)
    }

    fn find(
        global: &GlobalOptions,
        module: &str,
        policy: PullPolicy,
        trust: &Policy,
        check_imports: bool,
    ) -> anyhow::Result<Self> {
        if let Some(spec) = module.strip_prefix("oci:") {
            // `oci:DIR[:TAG]`, as skopeo names layouts; verified, run in place, not cached,
            // and held to the signature policy as `load` holds the same layout: a layout is
            // data from elsewhere, and running it in place must not skip that check.
            let (dir, tag) = match spec.rsplit_once(':') {
                Some((dir, tag)) if Path::new(dir).is_dir() => (dir, Some(tag)),
                _ => (spec, None),
            };
            let (path, digest) =
                wasm_oci_fetcher::layout::resolve_trusted(Path::new(dir), tag, trust)?;
            // What runs is what was hashed here, whatever the file holds by then.
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading {} of {module}", path.display()))?;
            let actual = wasm_oci_cache::Digest::of(&bytes);
            if actual != digest {
                bail!(
                    "{} in {module} hashes to {actual}, not {digest}: the layout changed while it \
                     was read",
                    path.display()
                );
            }
            return Ok(Self {
                path,
                source: Source::Bytes(bytes),
                compiled: None,
            });
        }
        if looks_like_file(module) {
            let path = PathBuf::from(module);
            if !path.is_file() {
                bail!("{} does not exist or is not a file", path.display());
            }
            let bytes = std::fs::read(&path).with_context(|| format!("reading {module}"))?;
            let bytes = from_text(&path, bytes)?;
            return Ok(Self {
                path,
                source: Source::Bytes(bytes),
                compiled: None,
            });
        }
        let reference = parse_reference(module)?;
        let policy = policy.into();
        // The warm path: no runtime, no client, nothing created on disk.
        let cached = match Cache::open_existing(global.cache_dir()?) {
            Some(cache) => wasm_oci_fetcher::resolve_cached(&cache, &reference, policy, trust)?
                .map(|artifact| (cache, artifact)),
            None if policy == wasm_oci_fetcher::PullPolicy::Never => {
                return Err(wasm_oci_fetcher::Error::NotCached {
                    reference: reference.whole(),
                }
                .into());
            }
            None => None,
        };
        let (cache, artifact) = match cached {
            Some(hit) => hit,
            None => {
                let mut fetcher =
                    global.fetcher(reference.registry(), std::sync::Arc::new(trust.clone()))?;
                if check_imports {
                    fetcher = fetcher.with_config_check(std::sync::Arc::new(|config: &[u8]| {
                        imports_provided(config).map_err(Into::into)
                    }));
                }
                let artifact = crate::block_on(fetcher.resolve(&reference, policy))?
                    .naming(&[module], || format!("pulling {module}"))?;
                (fetcher.cache().clone(), artifact)
            }
        };
        Ok(Self {
            path: cache.blob_path(&artifact.entry.layer_digest),
            source: Source::Cached {
                cache,
                vouched_for: wasm_oci_fetcher::vouched_for(&artifact.entry),
                artifact: Box::new(artifact),
            },
            compiled: None,
        })
    }

    /// Its size when it is large and `runner` has no compiled code of it in the cache yet:
    /// what [`crate::progress::while_compiling`] announces off a terminal.
    pub(super) fn to_compile(&self, runner: &wasm_oci_shim::Runner) -> Option<u64> {
        match &self.source {
            Source::Bytes(bytes) => {
                let size = bytes.len() as u64;
                // The digest is taken only of a large module: a small one is not announced.
                let large = size > crate::progress::LARGE_MODULE;
                large.then_some(size).filter(|_| {
                    self.compiled.as_ref().is_none_or(|cache| {
                        !runner.is_compiled(cache, &wasm_oci_cache::Digest::of(bytes), None)
                    })
                })
            }
            Source::Cached {
                cache, artifact, ..
            } => uncompiled(cache, runner, &artifact.entry),
        }
    }

    /// The cache and the reference's entry, for a cached reference.
    pub(super) fn cached(&self) -> Option<(&Cache, &RefEntry)> {
        match &self.source {
            Source::Cached {
                cache, artifact, ..
            } => Some((cache, &artifact.entry)),
            Source::Bytes(_) => None,
        }
    }

    /// Whether it says it is a wasi:http/proxy component before it is compiled: from the bytes
    /// read, or from the `component` section of a cached reference's config (a guess the
    /// runner confirms; it only picks the engine).
    pub(super) fn is_proxy(&self) -> bool {
        let proxy = wasm_oci_artifact::world::is_proxy;
        match &self.source {
            Source::Bytes(bytes) => wasm_oci_fetcher::interface(bytes)
                .and_then(|i| i.world)
                .is_some_and(|w| proxy(&w)),
            Source::Cached {
                cache, artifact, ..
            } => artifact
                .entry
                .config_digest
                .as_ref()
                .and_then(|d| cache.read_blob(d).ok())
                .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
                .is_some_and(|c| c["component"]["target"].as_str().is_some_and(proxy)),
        }
    }

    /// The wasm for the runner: the bytes read, or the cached blob; the compiled code of
    /// either is kept in the cache (for bytes, when it is to run).
    pub(super) fn wasm(&self) -> wasm_oci_shim::Wasm<'_> {
        match &self.source {
            Source::Bytes(bytes) => wasm_oci_shim::Wasm::Bytes {
                bytes,
                cache: self.compiled.as_ref(),
            },
            Source::Cached {
                cache,
                artifact,
                vouched_for,
            } => wasm_oci_shim::Wasm::Cached {
                cache,
                digest: &artifact.entry.layer_digest,
                vouched_for: vouched_for.as_deref(),
            },
        }
    }
}

/// A module in the text format (what `wat::Detect` reads as text: a `(` after whitespace
/// and comments) made binary, as wasmtime runs it; anything else as it is.
pub(super) fn from_text(path: &Path, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if wat::Detect::from_bytes(&bytes) != wat::Detect::WasmText {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(std::borrow::Cow::into_owned)
        .map_err(|mut e| {
            // wat's message is a snippet over several lines: one line, as every error here,
            // `FILE:LINE:COL: what`, as compilers say it.
            e.set_path(path);
            let text = e.to_string();
            let mut lines = text.lines();
            let message = lines.next().unwrap_or_default();
            match lines.next().and_then(|l| l.trim().strip_prefix("--> ")) {
                Some(at) => anyhow::anyhow!("{at}: {message}"),
                None => anyhow::anyhow!("{}: {message}", path.display()),
            }
        })
}

/// The cache that keeps the compiled code of local files, when there is one to be had: a
/// cache that cannot be opened only costs a compile per start.
pub(super) fn compiled_cache(global: &GlobalOptions) -> Option<Cache> {
    let dir = global.cache_dir().ok()?;
    Cache::open(&dir)
        .inspect_err(|e| tracing::debug!(error = %e, "compiled code of local files is not kept"))
        .ok()
}

/// Refuses a config whose `component` section lists an import this host does not provide:
/// the rule of [`wasm_oci_artifact::world`], which the shim applies too.
pub(super) fn imports_provided(
    config: &[u8],
) -> Result<(), wasm_oci_artifact::world::MissingImports> {
    wasm_oci_artifact::world::check_config_imports(config)
}

/// A path rather than a reference: it exists, starts like a path, or names a `.wasm` file
/// (a reference with a registry or tag always has `/` or `:` before such a suffix).
pub(super) fn looks_like_file(arg: &str) -> bool {
    arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || Path::new(arg).is_file()
        || ((arg.ends_with(".wasm") || arg.ends_with(".wat")) && !arg.contains(':'))
}

/// `entry`'s wasm size when `runner` has no compiled code of it in `cache` yet.
pub(super) fn uncompiled(
    cache: &Cache,
    runner: &wasm_oci_shim::Runner,
    entry: &RefEntry,
) -> Option<u64> {
    let vouched_for = wasm_oci_fetcher::vouched_for(entry);
    (!runner.is_compiled(cache, &entry.layer_digest, vouched_for.as_deref())).then_some(entry.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_references_are_told_apart() {
        for file in [
            "./hello.wasm",
            "/tmp/x.wasm",
            "../a",
            "hello.wasm",
            "dir/hello.wasm",
            "hello.wat",
        ] {
            assert!(looks_like_file(file), "{file}");
        }
        for reference in [
            "localhost:5000/hello:v1",
            "hello",
            "ghcr.io/a/b@sha256:00",
            "x:hello.wasm",
        ] {
            assert!(!looks_like_file(reference), "{reference}");
        }
    }

    #[test]
    fn text_modules_are_made_binary_and_binary_ones_kept() {
        let wat = b"(module (func (export \"_start\")))".to_vec();
        let wasm = from_text(Path::new("a.wat"), wat).unwrap();
        assert!(wasm.starts_with(b"\0asm"));
        assert_eq!(from_text(Path::new("a.wat"), wasm.clone()).unwrap(), wasm);
        // Not text, not wasm: left for the runner to say what it starts with.
        assert_eq!(
            from_text(Path::new("a.wasm"), b"ELF...".to_vec()).unwrap(),
            b"ELF..."
        );
        let e = from_text(Path::new("bad.wat"), b"(module (func (oops)))".to_vec()).unwrap_err();
        assert!(format!("{e:#}").contains("bad.wat"), "{e:#}");
    }
}
