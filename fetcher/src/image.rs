//! The Linux image `wasm-oci push` writes beside the wasm artifact (unless --no-image), so that
//! containerd can run `image: REFERENCE`: containerd (1.6 and 2.x alike) pulls and unpacks an
//! index's `linux/<arch>` entry and runs nothing else (a wasm layer is "no processor for
//! media-type" on 1.6 and "parent snapshot does not exist" on 2.x; an index with only a wasm entry
//! is "no match for platform"). The image is one uncompressed tar layer holding the module at
//! `/NAME.wasm`, and a config whose entrypoint is that path: the wasm-oci shim (and runwasi's)
//! reads `process.args[0]` from the rootfs containerd unpacked, so the module that runs is the one
//! of the digest containerd pulled, with the credentials the pod gave it. Readers of wasm artifacts
//! pick the index's wasm entry and never download this layer.
//!
//! Readers built on oci-client (wkg, wasm-pkg-client) pick an index entry with oci-client's
//! default resolver: the first whose `os`/`architecture` are the host's, variant ignored, then
//! take the manifest's first layer. So the index names the wasm manifest a second time per
//! architecture, before the Linux image, as `linux/<arch>` with the variant
//! [`WASM_READER_VARIANT`]: oci-client's resolver takes that entry (the wasm), while
//! containerd, whose platform matcher compares the variant too (`""`, or `v1`..`vN` on amd64),
//! skips it and takes the Linux image after it, as docker and skopeo do.

use oci_client::manifest::{IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The architectures the index names the image for: it holds no native code, so it is the
/// same image for each (containerd chooses by the index entry's platform).
pub(crate) const ARCHITECTURES: &[&str] = &["amd64", "arm64"];
/// The platform variant of the index entries that name the wasm manifest as `linux/<arch>`
/// for oci-client's resolver; no runtime's platform matcher takes it (see the module's text).
pub(crate) const WASM_READER_VARIANT: &str = "wasm";
/// A tar block.
const BLOCK: usize = 512;

/// The blobs of the Linux image for one module.
pub(crate) struct LinuxImage {
    /// The tar layer.
    pub(crate) layer: Vec<u8>,
    /// One config per architecture.
    pub(crate) configs: Vec<(&'static str, Vec<u8>)>,
}

impl LinuxImage {
    /// The image of `module`, found at `/NAME` in the rootfs: `title` when it is a plain
    /// file name ending in `.wasm`, else `/module.wasm`.
    pub(crate) fn of(title: &str, module: &[u8]) -> LinuxImage {
        let name = entry_name(title);
        let layer = tar_of(&name, module);
        let diff_id = sha256(&layer);
        let configs = ARCHITECTURES
            .iter()
            .map(|&architecture| {
                let config = json!({
                    "architecture": architecture,
                    "os": "linux",
                    "config": {"Entrypoint": [format!("/{name}")]},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                });
                (
                    architecture,
                    serde_json::to_vec(&config).expect("json values serialize"),
                )
            })
            .collect();
        LinuxImage { layer, configs }
    }

    /// The image manifest of each architecture.
    pub(crate) fn manifests(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.configs
            .iter()
            .map(|(architecture, config)| {
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_IMAGE_MEDIA_TYPE,
                    "config": {
                        "mediaType": IMAGE_CONFIG_MEDIA_TYPE,
                        "digest": sha256(config),
                        "size": config.len(),
                    },
                    "layers": [{
                        // Uncompressed: the layer's digest is its diff ID.
                        "mediaType": IMAGE_LAYER_MEDIA_TYPE,
                        "digest": sha256(&self.layer),
                        "size": self.layer.len(),
                    }],
                });
                (
                    *architecture,
                    serde_json::to_vec(&manifest).expect("json values serialize"),
                )
            })
            .collect()
    }
}

/// `title` when it is a plain file name ending in `.wasm` (no path, no space, no control
/// character, short enough for a tar header), else `module.wasm`.
fn entry_name(title: &str) -> String {
    let plain = title.len() <= 99
        && title.ends_with(".wasm")
        && title.len() > ".wasm".len()
        && !title.starts_with('.')
        && title
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        title.to_owned()
    } else {
        "module.wasm".to_owned()
    }
}

/// A ustar archive of one regular file `name` (at most 99 bytes, checked by the caller)
/// holding `data`, owned by root, mode 0644, dated 1970: the same bytes for the same module.
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; BLOCK];
    let field = |header: &mut [u8; BLOCK], at: usize, value: &[u8]| {
        header[at..at + value.len()].copy_from_slice(value);
    };
    field(&mut header, 0, name.as_bytes());
    field(&mut header, 100, b"0000644\0");
    field(&mut header, 108, b"0000000\0");
    field(&mut header, 116, b"0000000\0");
    // 11 octal digits hold 8 GiB, more than any module a registry or runtime takes.
    field(
        &mut header,
        124,
        format!("{:011o}\0", data.len()).as_bytes(),
    );
    field(&mut header, 136, b"00000000000\0");
    field(&mut header, 148, b"        ");
    header[156] = b'0';
    field(&mut header, 257, b"ustar\0");
    field(&mut header, 263, b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());

    let padded = data.len().div_ceil(BLOCK) * BLOCK;
    let mut tar = Vec::with_capacity(BLOCK + padded + 2 * BLOCK);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    tar.resize(BLOCK + padded + 2 * BLOCK, 0);
    tar
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_wasm_file_name_is_kept() {
        assert_eq!(entry_name("hello.wasm"), "hello.wasm");
        for odd in [
            "../x.wasm",
            "a/b.wasm",
            ".wasm",
            ".hidden.wasm",
            "x.wat",
            "a b.wasm",
            "x\n.wasm",
            &format!("{}.wasm", "a".repeat(95)),
        ] {
            assert_eq!(entry_name(odd), "module.wasm", "{odd:?}");
        }
    }

    #[test]
    fn the_layer_is_a_tar_that_tar_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        let layer = tar_of("hello.wasm", &data);
        assert_eq!(layer.len() % BLOCK, 0);
        let archive = dir.path().join("layer.tar");
        std::fs::write(&archive, &layer).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(dir.path().join("hello.wasm")).unwrap(), data);
        // The same module gives the same layer, so a second push uploads nothing new.
        assert_eq!(layer, tar_of("hello.wasm", &data));
    }

    #[test]
    fn each_config_names_the_layer_and_the_entrypoint() {
        let image = LinuxImage::of("dir/x.wasm", b"\0asm\x01\0\0\0");
        let diff_id = sha256(&image.layer);
        for (architecture, config) in &image.configs {
            let config: serde_json::Value = serde_json::from_slice(config).unwrap();
            assert_eq!(config["architecture"], *architecture);
            assert_eq!(config["os"], "linux");
            assert_eq!(config["config"]["Entrypoint"], json!(["/module.wasm"]));
            assert_eq!(config["rootfs"]["diff_ids"], json!([diff_id]));
        }
        for (_, manifest) in image.manifests() {
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            assert_eq!(manifest["layers"][0]["digest"], json!(diff_id));
            assert_eq!(manifest["layers"][0]["mediaType"], IMAGE_LAYER_MEDIA_TYPE);
        }
    }
}
