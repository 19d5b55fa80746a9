#!/usr/bin/env bash
# Installs the system packages the build and tests use when they are missing.
# Rust (cargo) and Go are expected on the machine; everything else comes from the scripts.
set -euo pipefail
for tool in cargo go node npm; do
  command -v "$tool" >/dev/null || { echo "install-prerequisites: '$tool' is required (see README.md)" >&2; exit 1; }
done
missing=()
# command (or file):package. The second line is the real node's: its runtime, network and images;
# the third the image's build (buildah), the chart's tests (lua5.4 runs Argo CD's health check)
# and kind's private Docker engine (scripts/e2e-kind.sh starts it itself; nothing starts it as a
# service); the fourth the dashboard's browser tests (Debian's Chromium, driven by playwright-core).
for pair in curl:curl openssl:openssl setsid:util-linux awk:gawk make:make jq:jq python3:python3 git:git \
  runc:runc /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables nft:nftables ip:iproute2 \
  pgrep:procps patch:patch gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev mmdebstrap:mmdebstrap \
  socat:socat buildah:buildah objcopy:binutils lua5.4:lua5.4 dockerd:docker.io \
  chromium:chromium; do
  item="${pair%%:*}"
  if [[ "$item" == /* ]]; then [[ -e "$item" ]]; else command -v "$item" >/dev/null; fi || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "install-prerequisites: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
