//! Reading an OCI layout never panics, whatever index.json and the blobs it names hold.
//! The input is split at the first NUL: index.json before, one blob after (stored under its
//! own digest, so that an index naming it is followed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (index, blob) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(dir.path().join("index.json"), index).unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let digest = wasm_oci_cache_digest(blob);
    std::fs::write(blobs.join(digest), blob).unwrap();
    let _ = wasm_oci_fetcher::layout::artifacts(dir.path());
    // The path `run oci:DIR:v1` takes, under a policy that lets every entry through to the
    // blob reads (a stricter one stops earlier).
    let policy = wasm_oci_trust::policy::Policy::accept_anything();
    let _ = wasm_oci_fetcher::layout::resolve_trusted(dir.path(), Some("v1"), &policy);
});

fn wasm_oci_cache_digest(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let hash = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    hash.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
