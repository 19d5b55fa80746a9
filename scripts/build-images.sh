#!/usr/bin/env bash
# Builds the bed's container images without a registry or a container engine, into
# $OODA_CACHE/images/<key>/, keyed by the hash of their build inputs:
#   pause.tar   ooda.local/pause:v1         the pod sandbox's process: a static C program
#   devenv.tar  ooda.local/devenv:bookworm  a Debian environment (shell, git, Python 3) whose
#                                           entrypoint starts the project's dev server; it is also
#                                           the project loader's image (sh + git) and the
#                                           local-path provisioner's helper image
# Each is a docker-archive tarball that `ctr images import` loads. SOURCE_DATE_EPOCH fixes every
# timestamp, so the same Debian packages give the same image bytes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/images.sh"
log() { printf '[build-images] %s\n' "$*" >&2; }

[[ -f "$images_dir/.complete" ]] && { printf '%s\n' "$images_dir"; exit 0; }
export SOURCE_DATE_EPOCH=1767225600 # 2026-01-01
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "building $pause_image"
mkdir -p "$work/pause"
gcc -static -Os -s -o "$work/pause/pause" "$here/realnode/pause.c"
tar_of "$work/pause.layer.tar" "$work/pause"
mkdir -p "$work/out"
"$here/realnode/oci-archive.py" "$work/out/pause.tar" "$pause_image" "$work/pause.layer.tar" \
  '{"Entrypoint":["/pause"],"User":"65535:65535"}'

log "building $devenv_image from Debian bookworm (mmdebstrap)"
# The environment's user is 1000, as the operator runs every project container; /workspace is
# its working directory (the workspace volume is mounted there). The volume's own directory may
# belong to root (hostPath and local-path volumes take no fsGroup): git trusts it all the same.
mmdebstrap --quiet --variant=minbase --include=ca-certificates,git,python3 \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --home-dir /home/dev --shell /bin/bash dev' \
  --customize-hook="install -m 0755 '$here/realnode/ooda-start' \"\$1/usr/local/bin/ooda-start\"" \
  --customize-hook='install -d -m 0755 -o 1000 -g 1000 "$1/workspace"' \
  --customize-hook='printf "[safe]\n\tdirectory = /workspace\n" >"$1/etc/gitconfig"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  bookworm "$work/devenv.layer.tar"
"$here/realnode/oci-archive.py" "$work/out/devenv.tar" "$devenv_image" "$work/devenv.layer.tar" \
  '{"Entrypoint":["/usr/local/bin/ooda-start"],"User":"1000:1000","WorkingDir":"/workspace","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","HOME=/home/dev","LANG=C.UTF-8"],"Labels":{"org.opencontainers.image.title":"ooda development environment","org.opencontainers.image.base.name":"debian:bookworm"}}'

rm -rf "$images_dir" && mkdir -p "$(dirname "$images_dir")" && mv "$work/out" "$images_dir" && touch "$images_dir/.complete"
log "images ready in $images_dir ($(du -sh "$images_dir" | cut -f1))"
printf '%s\n' "$images_dir"
