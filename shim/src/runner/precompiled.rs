//! Code compiled for a fleet (`wasm-oci compile --push`): the wasm compiled by an engine of
//! the same settings as a [`Runner`]'s, for this host or, with cranelift's cross compilation,
//! for another target; and the engine keys under which code from elsewhere could load here.
//!
//! Nothing here loads code: the registry's precompiled code is verified by the fetcher (its
//! signature under the policy, its digest, its subject) before it reaches the compiled-code
//! cache, and is then loaded as the cache's own code is (`compiled.rs`).

use wasmtime::Engine;

use super::error::{Error, Result};
use super::{EngineOptions, Runner, compatibility_key, engine_config};

/// The wasmtime version this program compiles and runs with; a unit test holds it to
/// Cargo.lock. The engine key (its compatibility hash) covers it as well.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The host's target triple as cranelift names it (`x86_64-unknown-linux-gnu`).
pub fn host_target() -> String {
    target_lexicon::Triple::host().to_string()
}

/// Native code compiled for one target by one engine configuration.
#[derive(Debug, Clone)]
pub struct Precompiled {
    /// What `Engine::precompile_module` or `precompile_component` wrote.
    pub code: Vec<u8>,
    /// `module` or `component`.
    pub kind: &'static str,
    /// The target triple it runs on.
    pub target: String,
    /// The compiling engine's key ([`Runner::engine_key`] of an engine on that target).
    pub engine: String,
}

/// An engine of `options`' settings that compiles for `target` (cranelift's baseline of that
/// architecture, none of this host's CPU features inferred), or for this host, features
/// inferred, without one. Never pooling: the allocator decides nothing the code depends on
/// (the engine keys are equal, a unit test checks), and a cross engine runs nothing.
fn engine_for(options: EngineOptions, target: Option<&str>) -> Result<Engine> {
    let mut config = engine_config(EngineOptions {
        pooling: false,
        ..options
    });
    if let Some(target) = target {
        config
            .target(target)
            .map_err(|source| Error::Engine { source })?;
    }
    Engine::new(&config).map_err(|source| Error::Engine { source })
}

impl Runner {
    /// This host's target triple.
    pub fn target(&self) -> String {
        host_target()
    }

    /// The engine keys of code this runner can load: its own (code compiled on a host with
    /// the same CPU features), and that of its settings compiled for this target's baseline
    /// (`compile --target` of this host's triple), which every CPU of the architecture runs;
    /// wasmtime checks the features code needs against the host's when it loads it.
    pub fn loadable_engines(&self) -> Result<Vec<String>> {
        let portable = compatibility_key(&engine_for(self.options, Some(&self.target()))?);
        let mut keys = vec![self.engine_key.clone()];
        if portable != self.engine_key {
            keys.push(portable);
        }
        Ok(keys)
    }

    /// Compiles `wasm` with this runner's settings, for `target` (another architecture, or
    /// this one's baseline) or, without one, for this host as it would compile it itself.
    pub fn precompile(&self, wasm: &[u8], target: Option<&str>) -> Result<Precompiled> {
        let engine = match target {
            Some(_) => engine_for(self.options, target)?,
            None => self.engine.clone(),
        };
        let component = wasmparser::Parser::is_component(wasm);
        let code = match component {
            true => engine.precompile_component(wasm),
            false => engine.precompile_module(wasm),
        }
        .map_err(|source| Error::Engine { source })?;
        Ok(Precompiled {
            code,
            kind: if component { "component" } else { "module" },
            target: target.map_or_else(host_target, str::to_owned),
            engine: compatibility_key(&engine),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn the_version_named_is_the_one_built_with() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let at = lock
            .find("\nname = \"wasmtime\"\n")
            .expect("wasmtime is locked");
        let version = lock[at..]
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .unwrap()
            .trim_end_matches('"');
        assert_eq!(version, WASMTIME_VERSION);
    }

    /// The pooling allocator changes nothing the compiled code depends on: the engine keys
    /// of pooling and on-demand engines of the same settings are one.
    #[test]
    fn pooling_does_not_change_the_engine_key() {
        for options in [EngineOptions::default(), EngineOptions::SHIM] {
            let runner = Runner::new(options).unwrap();
            let plain = engine_for(options, None).unwrap();
            assert_eq!(
                runner.engine_key(),
                compatibility_key(&plain),
                "{options:?}"
            );
        }
    }

    /// Code compiled for another architecture says so and has another key; code compiled for
    /// this host's baseline loads here under a key this runner accepts.
    #[test]
    fn cross_and_baseline_code() {
        let runner = Runner::new(EngineOptions::default()).unwrap();
        let own = runner.precompile(HELLO, None).unwrap();
        assert_eq!(own.engine, runner.engine_key());
        assert_eq!(own.kind, "module");
        let other = if runner.target().starts_with("x86_64") {
            "aarch64-unknown-linux-gnu"
        } else {
            "x86_64-unknown-linux-gnu"
        };
        let cross = runner.precompile(HELLO, Some(other)).unwrap();
        assert_eq!(cross.target, other);
        assert!(!runner.loadable_engines().unwrap().contains(&cross.engine));
        let baseline = runner.precompile(HELLO, Some(&runner.target())).unwrap();
        assert!(
            runner
                .loadable_engines()
                .unwrap()
                .contains(&baseline.engine)
        );
        #[allow(unsafe_code, reason = "code this test compiled just now")]
        // SAFETY: compiled by this process, just now.
        let loaded = unsafe { wasmtime::Module::deserialize(runner.engine(), &baseline.code) };
        loaded.unwrap();
        // Another engine's settings are another key.
        let shim = Runner::new(EngineOptions::SHIM).unwrap();
        assert!(!shim.loadable_engines().unwrap().contains(&own.engine));
    }
}
