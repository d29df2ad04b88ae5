//! The compiled-code cache of the runner: native code kept in the cache under the wasm's digest
//! and the engine's key, so that the next start skips the compile.
//!
//! Native code is only ever loaded from a file the cache opened once and checked on that
//! descriptor (it and every directory above it writable by this user or root alone, see
//! [`wasm_oci_cache::Cache::open_compiled`]), or from bytes this process compiled just now. A
//! cache that cannot keep code (read-only, full, another user's) costs a compile per start,
//! said in one line; the guest still runs.

use std::path::Path;

use wasmtime::Module;
use wasmtime::component::Component;

use super::error::Result;
use super::{Error, Loaded, Runner, Wasm, first_words};

impl Runner {
    /// Compiles `wasm`, or loads the code compiled for it earlier from the cache; `name` is
    /// what errors call it.
    ///
    /// Compiled code is only ever loaded from the cache's `compiled/` area, which only this
    /// function writes, and only under the digest of the bytes it compiled; and only from a
    /// file nobody else could have written (see the module's doc).
    #[tracing::instrument(skip_all, fields(name = %name.display()))]
    pub fn load(&self, name: &Path, wasm: Wasm<'_>) -> Result<Loaded> {
        let invalid = |source| Error::InvalidWasm {
            path: name.to_owned(),
            source,
        };
        match wasm {
            Wasm::Cached {
                cache,
                digest,
                vouched_for,
            } => {
                if let Some(loaded) = self.precompiled(cache, digest, vouched_for) {
                    return Ok(loaded);
                }
                let bytes = cache
                    .read_blob(digest)
                    .map_err(|e| invalid(wasmtime::Error::new(e)))?;
                let actual = wasm_oci_cache::Digest::of(&bytes);
                if actual != *digest {
                    return Err(Error::Corrupt {
                        path: name.to_owned(),
                        expected: digest.clone(),
                        actual,
                    });
                }
                self.compile(name, &bytes, Some((cache, digest)))
            }
            Wasm::Bytes { bytes, cache: None } => {
                tracing::debug!("compiling without a cache");
                self.compile(name, bytes, None)
            }
            Wasm::Bytes {
                bytes,
                cache: Some(cache),
            } => {
                let digest = wasm_oci_cache::Digest::of(bytes);
                if let Some(loaded) = self.precompiled(cache, &digest, None) {
                    return Ok(loaded);
                }
                self.compile(name, bytes, Some((cache, &digest)))
            }
        }
    }

    /// Whether the cache holds code compiled for `digest` by this engine (not yet checked
    /// or loaded: [`Runner::load`] does that).
    ///
    /// `vouched_for` as [`Wasm::Cached`] has it.
    pub fn is_compiled(
        &self,
        cache: &wasm_oci_cache::Cache,
        digest: &wasm_oci_cache::Digest,
        vouched_for: Option<&str>,
    ) -> bool {
        self.engine_keys(vouched_for).iter().any(|key| {
            ["module", "component"]
                .into_iter()
                .any(|kind| matches!(cache.open_compiled(key, digest, kind), Ok(Some(_))))
        })
    }

    /// The engine keys code for a run is looked up under: this engine's (code it compiled),
    /// then, for a repository, the code the policy vouched for there.
    fn engine_keys(&self, vouched_for: Option<&str>) -> Vec<String> {
        let mut keys = vec![self.engine_key().to_owned()];
        if let Some(repository) = vouched_for {
            keys.push(wasm_oci_cache::vouched_engine_key(
                self.engine_key(),
                repository,
            ));
        }
        keys
    }

    /// The code compiled for `digest` earlier, if any is usable: opened once by the cache,
    /// which checks on that descriptor that nobody but our user could have written it or any
    /// directory above it.
    fn precompiled(
        &self,
        cache: &wasm_oci_cache::Cache,
        digest: &wasm_oci_cache::Digest,
        vouched_for: Option<&str>,
    ) -> Option<Loaded> {
        let keys = self.engine_keys(vouched_for);
        let places = keys
            .iter()
            .flat_map(|key| ["module", "component"].map(|kind| (key.as_str(), kind)));
        for (key, kind) in places {
            let code = match cache.open_compiled(key, digest, kind) {
                Ok(Some(code)) => code,
                Ok(None) => continue,
                Err(e) => {
                    // Said once, when the code compiled afresh cannot be kept either.
                    tracing::debug!(%digest, error = %error_chain(&e), "not loading compiled code");
                    return None;
                }
            };
            let path = code.path().to_owned();
            match self.deserialize_checked(code, kind) {
                Ok(loaded) => {
                    tracing::debug!(%digest, path = %path.display(), "precompiled cache hit");
                    return Some(loaded);
                }
                Err(e) => {
                    // Unreadable or from an incompatible build: compiled afresh. Code adopted
                    // for the repository is not overwritten by that compile (it is kept under
                    // this engine's own key): it goes now, rather than be tried at every start.
                    tracing::debug!(path = %path.display(), error = %e, "ignoring compiled code");
                    if key != self.engine_key() {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        None
    }

    /// Validates and compiles `bytes`; with a cache, keeps the code under `digest`, which the
    /// caller computed from these same bytes. A cache that cannot keep it (read-only, full,
    /// another user's) costs a compile on every start, which one line says; the guest runs.
    fn compile(
        &self,
        name: &Path,
        bytes: &[u8],
        cache: Option<(&wasm_oci_cache::Cache, &wasm_oci_cache::Digest)>,
    ) -> Result<Loaded> {
        let invalid = |source| Error::InvalidWasm {
            path: name.to_owned(),
            source,
        };
        if !bytes.starts_with(b"\0asm") {
            return Err(Error::NotWasm {
                path: name.to_owned(),
                start: first_words(bytes),
            });
        }
        let is_component = wasmparser::Parser::is_component(bytes);
        let Some((cache, digest)) = cache else {
            return if is_component {
                Component::new(&self.engine, bytes).map(Loaded::Component)
            } else {
                Module::new(&self.engine, bytes).map(Loaded::Module)
            }
            .map_err(invalid);
        };
        let (kind, code) = if is_component {
            ("component", self.engine.precompile_component(bytes))
        } else {
            ("module", self.engine.precompile_module(bytes))
        };
        let code = code.map_err(invalid)?;
        match cache.store_compiled(self.engine_key(), digest, kind, &code) {
            Ok(path) => {
                tracing::debug!(%digest, path = %path.display(), bytes = code.len(), "compiled and cached");
            }
            Err(e) => tracing::warn!(
                "the compiled code of {} was not kept, so it is compiled again on every start: {}",
                name.display(),
                error_chain(&e)
            ),
        }
        self.deserialize_own(&code, kind)
            .map_err(|source| Error::Engine { source })
    }

    /// Loads compiled code that the cache found and checked ([`Cache::open_compiled`]).
    ///
    /// [`Cache::open_compiled`]: wasm_oci_cache::Cache::open_compiled
    #[allow(unsafe_code, reason = "loading native code that this program compiled")]
    fn deserialize_checked(
        &self,
        code: wasm_oci_cache::CompiledCode,
        kind: &str,
    ) -> wasmtime::Result<Loaded> {
        let file = code.into_file();
        match kind {
            // SAFETY: the cache opened this file once and checked on that descriptor that
            // it and every directory above it can be written by this process's user (or
            // root) alone: only `compile` writes there, with bytes from `Engine::precompile_*`
            // of an engine with the same compatibility key, read-only, atomically. wasmtime
            // checks the header and engine compatibility as well.
            "module" => {
                unsafe { Module::deserialize_open_file(&self.engine, file) }.map(Loaded::Module)
            }
            _ => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut bytes)?;
                // SAFETY: as for a module, read from the same checked descriptor.
                unsafe { Component::deserialize(&self.engine, &bytes) }.map(Loaded::Component)
            }
        }
    }

    /// Loads code that `compile` produced just now, from memory.
    #[allow(unsafe_code, reason = "loading native code that this program compiled")]
    fn deserialize_own(&self, code: &[u8], kind: &str) -> wasmtime::Result<Loaded> {
        // SAFETY: `code` comes from `Engine::precompile_*` of this very engine, in this process.
        match kind {
            "module" => unsafe { Module::deserialize(&self.engine, code) }.map(Loaded::Module),
            _ => unsafe { Component::deserialize(&self.engine, code) }.map(Loaded::Component),
        }
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::EngineOptions;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, chown};
    use wasm_oci_cache::{Cache, Digest};

    /// A module whose one export, a function, is named `name` (four letters).
    fn module(name: &str) -> Vec<u8> {
        assert_eq!(name.len(), 4);
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type: () -> ()
        wasm.extend([0x03, 0x02, 0x01, 0x00]); // one function of that type
        wasm.extend([0x07, 0x08, 0x01, 0x04]); // one export, a name of 4 bytes
        wasm.extend(name.as_bytes());
        wasm.extend([0x00, 0x00]); // function 0
        wasm.extend([0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // its body: end
        wasm
    }

    fn exports(loaded: &Loaded) -> Vec<String> {
        match loaded {
            Loaded::Module(m) => m.exports().map(|e| e.name().to_owned()).collect(),
            Loaded::Component(_) => panic!("a module was loaded as a component"),
        }
    }

    /// Runs `f` on a thread of its own as the user `uid` (a thread's credentials are its
    /// own on Linux), as another user of this machine would.
    fn as_user<T: Send>(uid: u32, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let id = rustix::process::Gid::from_raw(uid);
                rustix::thread::set_thread_res_gid(id, id, id).unwrap();
                let id = rustix::process::Uid::from_raw(uid);
                rustix::thread::set_thread_res_uid(id, id, id).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    const NOBODY: u32 = 65534;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn compiled_code_is_kept_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let runner = Runner::new(EngineOptions::default()).unwrap();
        let good = module("good");
        let wasm = Wasm::Bytes {
            bytes: &good,
            cache: Some(&cache),
        };
        assert_eq!(
            exports(&runner.load(Path::new("good.wasm"), wasm).unwrap()),
            ["good"]
        );
        let path = cache.compiled_path(runner.engine_key(), &Digest::of(&good), "module");
        let kept = fs::read(&path).unwrap();
        assert_eq!(
            exports(&runner.load(Path::new("good.wasm"), wasm).unwrap()),
            ["good"]
        );
        assert_eq!(fs::read(&path).unwrap(), kept);
    }

    /// Another user who can write the cache's directory plants code they compiled (with this
    /// very program) under the digest of a module root runs: root runs the module's own code,
    /// and keeps nothing there.
    #[test]
    fn code_planted_by_another_user_in_a_directory_they_can_write_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let runner = Runner::new(EngineOptions::default()).unwrap();
        let good = module("good");
        let planted = runner.engine().precompile_module(&module("evil")).unwrap();
        let path = cache.compiled_path(runner.engine_key(), &Digest::of(&good), "module");
        let compiled = path.parent().unwrap().parent().unwrap();
        fs::create_dir_all(compiled).unwrap();
        // A cache directory anyone can write (a shared one), or one another user owns.
        fs::set_permissions(compiled, fs::Permissions::from_mode(0o777)).unwrap();
        if is_root() {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            as_user(NOBODY, || {
                fs::create_dir(path.parent().unwrap()).unwrap();
                fs::write(&path, &planted).unwrap();
            });
            assert_eq!(
                std::os::unix::fs::MetadataExt::uid(&fs::metadata(&path).unwrap()),
                NOBODY
            );
        } else {
            fs::create_dir(path.parent().unwrap()).unwrap();
            fs::write(&path, &planted).unwrap();
        }
        let wasm = Wasm::Bytes {
            bytes: &good,
            cache: Some(&cache),
        };
        for _ in 0..2 {
            let loaded = runner.load(Path::new("good.wasm"), wasm).unwrap();
            assert_eq!(exports(&loaded), ["good"]);
        }
        assert_eq!(fs::read(&path).unwrap(), planted, "nothing was kept there");
    }

    /// The same, raced: the other user owns `compiled/` and swaps, as fast as it can, the
    /// directory of root's own code (found good when looked at) with one of theirs. The code
    /// is opened once and what was opened is checked, so no interleaving runs theirs.
    #[test]
    fn code_swapped_in_while_it_is_opened_never_runs() {
        if !is_root() {
            eprintln!("skipped: only root can act as another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let runner = Runner::new(EngineOptions::default()).unwrap();
        let good = module("good");
        let wasm = Wasm::Bytes {
            bytes: &good,
            cache: Some(&cache),
        };
        // Root's own code, kept by a first run.
        runner.load(Path::new("good.wasm"), wasm).unwrap();
        let path = cache.compiled_path(runner.engine_key(), &Digest::of(&good), "module");
        let key_dir = path.parent().unwrap().to_owned();
        let compiled = key_dir.parent().unwrap().to_owned();
        chown(&compiled, Some(NOBODY), Some(NOBODY)).unwrap();
        for d in [dir.path().join("v1"), dir.path().to_owned()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let planted = runner.engine().precompile_module(&module("evil")).unwrap();
        let theirs = compiled.join("theirs");
        let aside = compiled.join("aside");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let swaps = std::sync::atomic::AtomicU64::new(0);
        let loads = std::thread::scope(|s| {
            s.spawn(|| {
                as_user(NOBODY, || {
                    fs::create_dir(&theirs).unwrap();
                    fs::write(theirs.join(path.file_name().unwrap()), &planted).unwrap();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        fs::rename(&key_dir, &aside).unwrap();
                        fs::rename(&theirs, &key_dir).unwrap();
                        fs::rename(&key_dir, &theirs).unwrap();
                        fs::rename(&aside, &key_dir).unwrap();
                        swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            });
            // Until the attacker has swapped many times while loads went on.
            let mut loads = 0;
            while loads < 200 || swaps.load(std::sync::atomic::Ordering::Relaxed) < 1000 {
                let loaded = runner.load(Path::new("good.wasm"), wasm).unwrap();
                assert_eq!(exports(&loaded), ["good"], "load {loads}");
                loads += 1;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            loads
        });
        assert!(loads >= 200);
    }
}
