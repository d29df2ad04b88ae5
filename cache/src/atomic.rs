//! Replacing a file so that readers see the old one or the new one, never a mix: the one way
//! this workspace replaces a file.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_from(path, &mut &bytes[..], 0o644)
}

/// Writes what `content` reads to `path`, with permission bits `mode`, so that readers see the
/// old file or the new one, never a mix: a temporary file beside it (private until renamed),
/// synced, then renamed into place. The one way this workspace replaces a file.
pub fn write_atomic_from(path: &Path, content: &mut dyn io::Read, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io_err = |action, source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    };
    // NamedTempFile creates it 0600: nobody reads it before it is whole.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err("creating", e))?;
    io::copy(content, tmp.as_file_mut()).map_err(|e| io_err("writing", e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("setting permissions of", e))?;
    tmp.as_file().sync_all().map_err(|e| io_err("syncing", e))?;
    tmp.persist(path)
        .map_err(|e| io_err("renaming into place", e.error))?;
    Ok(())
}
