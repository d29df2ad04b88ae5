//! Picking the wasm out of a manifest: the platform entry of an index, the wasm layer of an
//! image. The one choice that a registry's pull, an OCI layout's load and the fuzzer all make.

use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest,
};

use crate::Error;
use crate::media::{WASM_LAYER_MEDIA_TYPES, WASM_OSES};
use crate::text::printable;

/// Chooses the index entry for a wasm platform (wasip1 before wasip2, as [`WASM_OSES`] lists
/// them). `reference` names the index in the error.
pub fn select_platform<'a>(
    index: &'a OciImageIndex,
    reference: &str,
) -> Result<&'a ImageIndexEntry, Error> {
    let wasm_entry = |os: &str| {
        index.manifests.iter().find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| p.architecture.to_string() == "wasm" && p.os.to_string() == os)
        })
    };
    WASM_OSES
        .iter()
        .find_map(|os| wasm_entry(os))
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: reference.to_owned(),
            platforms: index
                .manifests
                .iter()
                .map(|e| match &e.platform {
                    // The registry's text, printed escaped.
                    Some(p) => printable(&format!("{}/{}", p.os, p.architecture)),
                    None => "unspecified".to_owned(),
                })
                .collect(),
        })
}

/// Finds the one wasm layer of an image manifest. `reference` names it in the error.
pub fn wasm_layer<'a>(
    manifest: &'a OciImageManifest,
    reference: &str,
) -> Result<&'a OciDescriptor, Error> {
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|l| WASM_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()));
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => Ok(layer),
        (None, _) => Err(Error::NoWasmLayer {
            reference: reference.to_owned(),
            config_media_type: printable(&manifest.config.media_type),
            layer_media_types: manifest
                .layers
                .iter()
                .map(|l| printable(&l.media_type))
                .collect(),
        }),
        (Some(_), Some(_)) => Err(Error::AmbiguousWasmLayers {
            reference: reference.to_owned(),
            count: 2 + wasm.count(),
        }),
    }
}

/// What a manifest document leads to: the wasm layer of an image manifest, or the entry an
/// index chooses.
#[derive(Debug, Clone)]
pub enum Choice {
    /// An image manifest and its one wasm layer.
    Image {
        /// The manifest.
        manifest: Box<OciImageManifest>,
        /// Its wasm layer.
        layer: OciDescriptor,
    },
    /// An index's entry for a wasm platform: the manifest to fetch next.
    Index(ImageIndexEntry),
}

/// Parses a manifest or an index and chooses what to follow: the wasm layer of a manifest
/// (exactly one), or the index's entry for a wasm platform. `reference` names it in errors.
pub fn choose(bytes: &[u8], reference: &str) -> Result<Choice, Error> {
    let manifest: OciManifest =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
            reference: reference.to_owned(),
            // The registry's text may be quoted in it.
            reason: printable(&e.to_string()),
        })?;
    Ok(match manifest {
        OciManifest::Image(m) => {
            let layer = wasm_layer(&m, reference)?.clone();
            Choice::Image {
                manifest: Box::new(m),
                layer,
            }
        }
        OciManifest::ImageIndex(index) => {
            Choice::Index(select_platform(&index, reference)?.clone())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &[&str]) -> OciImageManifest {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.unknown.config.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
            "layers": layers.iter().map(|t| serde_json::json!({
                "mediaType": t,
                "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                "size": 2,
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn every_known_wasm_layer_type_is_found() {
        for t in WASM_LAYER_MEDIA_TYPES {
            let m = manifest(&["application/vnd.oci.image.layer.v1.tar", t]);
            assert_eq!(wasm_layer(&m, "r").unwrap().media_type, *t);
        }
    }

    #[test]
    fn a_container_image_is_not_a_wasm_artifact() {
        let m = manifest(&["application/vnd.oci.image.layer.v1.tar+gzip"]);
        let err = wasm_layer(&m, "localhost:5000/busybox:1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("localhost:5000/busybox:1 has no wasm layer"),
            "{err}"
        );
        assert!(
            err.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
            "{err}"
        );
    }

    #[test]
    fn two_wasm_layers_are_ambiguous() {
        let m = manifest(&["application/wasm", "application/wasm"]);
        assert!(matches!(
            wasm_layer(&m, "r"),
            Err(Error::AmbiguousWasmLayers { count: 2, .. })
        ));
    }

    fn index(platforms: &[(&str, &str)]) -> OciImageIndex {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": platforms.iter().enumerate().map(|(i, (os, arch))| serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{i:064}"),
                "size": 1,
                "platform": {"os": os, "architecture": arch},
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn the_wasm_entry_of_an_index_is_chosen() {
        let idx = index(&[("linux", "amd64"), ("wasip2", "wasm")]);
        assert_eq!(
            select_platform(&idx, "r").unwrap().digest,
            format!("sha256:{:064}", 1)
        );
        let idx = index(&[("wasip2", "wasm"), ("wasip1", "wasm")]);
        assert_eq!(
            select_platform(&idx, "r").unwrap().digest,
            format!("sha256:{:064}", 1)
        );
    }

    #[test]
    fn choose_follows_an_index_and_keeps_the_layer_whole() {
        let idx = serde_json::to_vec(&index(&[("linux", "amd64"), ("wasip1", "wasm")])).unwrap();
        match choose(&idx, "r").unwrap() {
            Choice::Index(entry) => assert_eq!(entry.digest, format!("sha256:{:064}", 1)),
            other => panic!("{other:?}"),
        }
        let mut m = serde_json::to_value(manifest(&["application/wasm"])).unwrap();
        m["layers"][0]["annotations"] =
            serde_json::json!({"org.opencontainers.image.title": "hello.wasm"});
        match choose(&serde_json::to_vec(&m).unwrap(), "r").unwrap() {
            Choice::Image { layer, .. } => assert_eq!(
                layer.annotations.unwrap()["org.opencontainers.image.title"],
                "hello.wasm"
            ),
            other => panic!("{other:?}"),
        }
        let err = choose(b"{\"schemaVersion\": \"\x1b[31m\"}", "r").unwrap_err();
        assert!(!err.to_string().contains('\x1b'), "{err}");
    }

    #[test]
    fn an_index_without_wasm_lists_its_platforms() {
        let idx = index(&[("linux", "amd64"), ("linux", "arm64")]);
        let err = select_platform(&idx, "localhost:5000/x:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
    }
}
