#!/usr/bin/env python3
"""Writes a docker-archive image (what `ctr images import` loads) from one root filesystem tarball.

    oci-archive.py OUT.tar REFERENCE ROOTFS.tar '<config JSON>'

The config JSON holds the image's run settings (Entrypoint, Cmd, User, Env, WorkingDir, Labels).
Every timestamp comes from SOURCE_DATE_EPOCH, so the same inputs give the same bytes.
"""
import hashlib, io, json, os, sys, tarfile

out, reference, rootfs, run_config = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

with open(rootfs, "rb") as f:
    layer = f.read()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
created = __import__("datetime").datetime.fromtimestamp(epoch, __import__("datetime").timezone.utc)
config = json.dumps({
    "architecture": "amd64",
    "os": "linux",
    "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "config": run_config,
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "created_by": "ooda scripts/build-images.sh"}],
}, sort_keys=True, separators=(",", ":")).encode()
config_name = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps([{"Config": config_name, "RepoTags": [reference], "Layers": ["layer.tar"]}]).encode()

with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for name, data in ((config_name, config), ("layer.tar", layer), ("manifest.json", manifest)):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), epoch, 0o644
        tar.addfile(info, io.BytesIO(data))
