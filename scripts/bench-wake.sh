#!/usr/bin/env bash
# `make bench-wake`: waking hibernated projects on the real node, under runc and gVisor, and where
# the time goes (release build). Uses the local control plane if it is running (and leaves it
# running); otherwise brings one up for the run and down afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
cargo build --locked --release --benches
if kubectl get --raw /readyz >/dev/null 2>&1 && kubectl get node real-0 >/dev/null 2>&1; then
  log "using the running cluster"
else
  "$repo/scripts/cluster-up.sh"
  trap '"$repo/scripts/cluster-down.sh"' EXIT
fi
OODA_KUBECONFIG="$kubeconfig" cargo bench --locked --bench wake_real
