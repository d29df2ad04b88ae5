#!/usr/bin/env python3
"""N distinct small wasm artifacts, as OCI image layouts for `wasm-oci load` or pushed to a
registry, for the benchmarks of a large cache.

    many_layouts.py layouts N OUT [PER_LAYOUT]   # OUT/0, OUT/1, ... (PER_LAYOUT each)
    many_layouts.py push REGISTRY N              # REGISTRY/fleet/mNNNNNN:v1, over plain HTTP

Each artifact is testdata/hello.wasm with a custom section that makes it unique, under its
own reference (`bench.local/fleet/mNNNNNN:v1` in layouts). An index.json is capped at 4 MiB
by `load`, so the artifacts are spread over several layouts of PER_LAYOUT (default 10,000).
The config blob is shared; layers and manifests are distinct.
"""
import hashlib
import http.client
import json
import pathlib
import sys

HELLO = (pathlib.Path(__file__).resolve().parent.parent / "testdata/hello.wasm").read_bytes()
CONFIG = json.dumps({"architecture": "wasm", "os": "wasip1"}).encode()
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def artifact(i):
    """The layer and manifest of artifact `i`."""
    payload = b"\x05fleet" + i.to_bytes(8, "little")
    layer = HELLO + b"\x00" + bytes([len(payload)]) + payload
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": digest(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": "application/wasm", "digest": digest(layer),
                    "size": len(layer)}],
    }, separators=(",", ":")).encode()
    return layer, manifest


def layouts(n, out, per):
    for start in range(0, n, per):
        layout = out / str(start // per)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        manifests = []
        for data in [CONFIG]:
            (blobs / digest(data)[7:]).write_bytes(data)
        for i in range(start, min(start + per, n)):
            layer, manifest = artifact(i)
            for data in (layer, manifest):
                (blobs / digest(data)[7:]).write_bytes(data)
            manifests.append({
                "mediaType": MANIFEST_TYPE,
                "digest": digest(manifest),
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


def push(registry, n):
    conn = http.client.HTTPConnection(registry)

    def request(method, path, body=b"", headers=None):
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status}")
        return response

    def blob(repo, data):
        location = request("POST", f"/v2/{repo}/blobs/uploads/").getheader("Location")
        sep = "&" if "?" in location else "?"
        path = location.split(registry, 1)[-1]
        request("PUT", f"{path}{sep}digest={digest(data)}", data,
                {"Content-Type": "application/octet-stream"})

    for i in range(n):
        repo = f"fleet/m{i:06}"
        layer, manifest = artifact(i)
        blob(repo, CONFIG)
        blob(repo, layer)
        request("PUT", f"/v2/{repo}/manifests/v1", manifest, {"Content-Type": MANIFEST_TYPE})
        print(f"{registry}/{repo}:v1")


if __name__ == "__main__":
    if sys.argv[1] == "layouts":
        layouts(int(sys.argv[2]), pathlib.Path(sys.argv[3]),
                int(sys.argv[4]) if len(sys.argv) > 4 else 10_000)
    elif sys.argv[1] == "push":
        push(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
