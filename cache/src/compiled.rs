//! Precompiled native code, kept apart from blobs and keyed by the wasm digest and an opaque
//! engine key (the runner derives it from the engine's compatibility hash).
//!
//! Only the runner of this program writes here, so only bytes it compiled itself are ever
//! loaded back as native code.

use std::fs;
use std::path::PathBuf;

use crate::{Cache, Digest, Error, Result, write_atomic_from};

impl Cache {
    /// Where the code compiled for `digest` by the engine `engine_key` lives; `kind` tells a
    /// module from a component (`"module"`, `"component"`). The file may not exist.
    pub fn compiled_path(&self, engine_key: &str, digest: &Digest, kind: &str) -> PathBuf {
        debug_assert!(
            engine_key.bytes().all(|b| b.is_ascii_alphanumeric()) && !engine_key.is_empty(),
            "engine keys are plain names"
        );
        self.root
            .join("compiled")
            .join(engine_key)
            .join(format!("{}.{kind}", digest.hex()))
    }

    /// Stores compiled code atomically at a path from [`Cache::compiled_path`]: concurrent
    /// first runs each write a whole file, and the last rename wins.
    pub fn store_compiled(&self, path: &std::path::Path, code: &[u8]) -> Result<()> {
        if let Some(dir) = path.parent() {
            // Writable by us alone whatever the umask: the runner loads code only from files
            // and directories no one else could write.
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| Error::Io {
                    action: "creating",
                    path: dir.to_owned(),
                    source,
                })?;
        }
        // Read-only like blobs: nothing should edit native code in place.
        write_atomic_from(path, &mut &code[..], 0o444)
    }
}
