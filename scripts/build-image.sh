#!/usr/bin/env bash
# `make image`: ooda's container image, built with no Docker daemon and no registry.
#
# 1. `cargo build --release`, optimised across every crate (below), then a root filesystem is
#    staged outside the repository: the
#    stripped binary, the shared libraries it links (from this machine, which built it), CA
#    certificates, and /etc/passwd naming the fixed non-root user 65532.
# 2. buildah builds the repository's Dockerfile (FROM scratch, COPY rootfs/) on that context, with
#    storage of its own under the cache and timestamps fixed to the commit's, and writes an OCI
#    archive: $OODA_CACHE/image/ooda-<version>.oci.tar (and a docker-archive beside it, which
#    `docker load` and `kind load image-archive` read).
# 3. If the bed's real node is running, its containerd imports the archive (it also does so at
#    every start), so the chart's pods run it with no registry.
#
# --context-only stops after step 1 and prints the context: `docker build` it with the Dockerfile.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"

work="$cache/image"
context="$work/context"
mkdir -p "$work"

# What ships is optimised across every crate (fat LTO, one codegen unit): the preview proxy serves
# 9% more small answers and an idle operator holds 3.4 MiB less (mapped code), per
# benches/reports/gateway-proxy-changes.md. Its links are slow (minutes), so it has a target
# directory of its own and the tests' and benchmarks' release builds keep their fast ones.
#
# A fresh clone's files are all newer than the last build, so cargo would link again (over 10
# minutes) the very binary it built from the same sources: the binary is kept by a hash of what it
# is built from (the committed sources, lock file and toolchain) and reused when they match. A
# checkout with changes to those paths always builds.
binaries="$work/binaries"
sources=(Cargo.toml Cargo.lock src)
source_key=""
if git -C "$repo" rev-parse --verify --quiet HEAD >/dev/null && [[ -z "$(git -C "$repo" status --porcelain -- "${sources[@]}")" ]]; then
  source_key="$({ git -C "$repo" rev-parse "${sources[@]/#/HEAD:}"; rustc -vV; echo lto=fat codegen-units=1; } | sha256sum | cut -c1-16)"
fi
binary="$binaries/ooda-$source_key"
if [[ -n "$source_key" && -x "$binary" ]]; then
  log "reusing ooda $ooda_version built from these sources before ($source_key)"
else
  log "building ooda $ooda_version (release, whole-program optimised)"
  image_target="$cache/target-image"
  CARGO_TARGET_DIR="$image_target" CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    cargo build --locked --release --bin ooda --manifest-path "$repo/Cargo.toml"
  binary="$image_target/release/ooda"
  if [[ -n "$source_key" ]]; then
    mkdir -p "$binaries"
    cp "$binary" "$binaries/ooda-$source_key.tmp" && mv "$binaries/ooda-$source_key.tmp" "$binaries/ooda-$source_key"
    # The three most recent are enough to go back and forth between branches.
    ls -t "$binaries"/ooda-* | tail -n +4 | xargs -r rm -f
  fi
fi

rm -rf "$context" && mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc/ssl/certs"
rootfs="$context/rootfs"
objcopy --strip-all "$binary" "$rootfs/usr/local/bin/ooda"
# The C runtime the binary links, at the paths it was linked against (ld.so and what ldd names).
while read -r library; do
  mkdir -p "$rootfs$(dirname "$library")"
  cp -L "$library" "$rootfs$library"
done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nooda:x:65532:65532:ooda:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nooda:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
# Same bytes, same image: every file gets the commit's time.
epoch="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)"
find "$rootfs" -exec touch -h -d "@$epoch" {} +
if [[ "${1:-}" == --context-only ]]; then
  echo "$context"
  exit 0
fi

revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
git -C "$repo" diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
source_url="$(sed -n 's/^repository = "\(.*\)"/\1/p' "$repo/Cargo.toml")"
# buildah's own storage, configuration and policy: nothing of the machine's is read or written.
cat >"$work/policy.json" <<'JSON'
{ "default": [{ "type": "reject" }], "transports": { "docker-archive": { "": [{ "type": "insecureAcceptAnything" }] } } }
JSON
: >"$work/registries.conf"
buildah() {
  CONTAINERS_REGISTRIES_CONF="$work/registries.conf" command buildah --root "$work/storage" \
    --runroot "$work/run" --storage-driver vfs "$@"
}
log "building $ooda_image from $repo/Dockerfile with buildah"
buildah rmi --force "$ooda_image" >/dev/null 2>&1 || true
buildah bud --quiet --signature-policy "$work/policy.json" --format oci --timestamp "$epoch" \
  --build-arg "VERSION=$ooda_version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url" \
  --tag "$ooda_image" --file "$repo/Dockerfile" "$context" >/dev/null
rm -f "$ooda_image_archive.tmp"
buildah push --quiet --signature-policy "$work/policy.json" "$ooda_image" "oci-archive:$ooda_image_archive.tmp:$ooda_image"
mv "$ooda_image_archive.tmp" "$ooda_image_archive"
rm -f "$ooda_image_docker_archive.tmp"
buildah push --quiet --signature-policy "$work/policy.json" "$ooda_image" "docker-archive:$ooda_image_docker_archive.tmp:$ooda_image"
mv "$ooda_image_docker_archive.tmp" "$ooda_image_docker_archive"
buildah rmi --force "$ooda_image" >/dev/null
log "wrote $ooda_image_archive ($(du -h "$ooda_image_archive" | cut -f1))"

if [[ -S "$containerd_socket" ]] && ctr version >/dev/null 2>&1; then
  ctr images import --local "$ooda_image_archive" >/dev/null
  log "loaded $ooda_image into the real node"
fi
