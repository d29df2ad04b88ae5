#!/usr/bin/env python3
"""Writes OCI image layouts holding N distinct small wasm artifacts, for `wasm-oci load`.

    many_layouts.py N OUT [PER_LAYOUT]

Each artifact is testdata/hello.wasm with a custom section that makes it unique, under its
own reference (`bench.local/fleet/mNNNNNN:v1`). An index.json is capped at 4 MiB by `load`,
so the artifacts are spread over several layouts of PER_LAYOUT (default 10,000) each:
OUT/0, OUT/1, ... The config blob is shared; layers and manifests are distinct.
"""
import hashlib
import json
import os
import pathlib
import sys

n = int(sys.argv[1])
out = pathlib.Path(sys.argv[2])
per = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
hello = (pathlib.Path(__file__).resolve().parent.parent / "testdata/hello.wasm").read_bytes()
config = json.dumps({"architecture": "wasm", "os": "wasip1"}).encode()
config_digest = "sha256:" + hashlib.sha256(config).hexdigest()


def put(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    path = blobs / digest
    if not path.exists():
        path.write_bytes(data)
    return "sha256:" + digest


for start in range(0, n, per):
    layout = out / str(start // per)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    put(blobs, config)
    manifests = []
    for i in range(start, min(start + per, n)):
        payload = b"\x05fleet" + i.to_bytes(8, "little")
        section = b"\x00" + bytes([len(payload)]) + payload
        layer = hello + section
        layer_digest = put(blobs, layer)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wasm.config.v0+json",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/wasm", "digest": layer_digest,
                        "size": len(layer)}],
        }, separators=(",", ":")).encode()
        manifests.append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put(blobs, manifest),
            "size": len(manifest),
            "annotations": {
                "io.containerd.image.name": f"bench.local/fleet/m{i:06}:v1",
                "org.opencontainers.image.ref.name": "v1",
            },
        })
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": manifests}
    (layout / "index.json").write_text(json.dumps(index, separators=(",", ":")))
    print(layout)
