//! Trust files that someone names (a policy, a key), read with the one reader of files
//! others name.

use wasm_oci_artifact::file::ReadError;

/// A key file larger than this is refused: a PEM key is a few hundred bytes.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads a trust file the operator or user names (a policy, a key) with the one reader of
/// files others name ([`wasm_oci_artifact::file`]): only a regular file (a FIFO or a device
/// is refused unopened), and only up to `max` bytes. Symlinks are followed: keys mounted
/// from a Kubernetes secret are reached through them.
pub fn read_trust_file(path: &std::path::Path, max: u64) -> Result<Vec<u8>, ReadError> {
    wasm_oci_artifact::file::read(path, max)
}
