#!/usr/bin/env bash
# `make bench-gateway`: the gateway's preview proxy next to direct traffic and nginx, sign-ins and
# wakes (release build). Uses the local control plane if it is running (and leaves it running);
# otherwise brings one up for the run and down afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
cargo build --locked --release --benches
# The reference reverse proxy (Debian's package; services are not started on install).
command -v nginx >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)
if kubectl get --raw /readyz >/dev/null 2>&1; then
  log "using the running cluster"
else
  "$repo/scripts/cluster-up.sh"
  trap '"$repo/scripts/cluster-down.sh"' EXIT
fi
OODA_KUBECONFIG="$kubeconfig" cargo bench --locked --bench gateway_proxy
