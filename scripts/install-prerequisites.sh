#!/usr/bin/env bash
# Installs the system packages the build and tests use when they are missing.
# Rust (cargo) and Go are expected on the machine; everything else comes from the scripts.
set -euo pipefail
for tool in cargo go; do
  command -v "$tool" >/dev/null || { echo "install-prerequisites: '$tool' is required (see README.md)" >&2; exit 1; }
done
missing=()
for pair in curl:curl openssl:openssl setsid:util-linux awk:gawk make:make jq:jq python3:python3; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "install-prerequisites: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
