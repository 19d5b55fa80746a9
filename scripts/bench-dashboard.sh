#!/usr/bin/env bash
# `make bench-dashboard`: the dashboard in Chromium, timed from a phase change in the API server to
# the page showing it, and its assets' weight (release build). Uses the local control plane if it
# is running (and leaves it running); otherwise brings one up for the run and down afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
"$repo/scripts/build-tools.sh" >/dev/null
if kubectl get --raw /readyz >/dev/null 2>&1; then
  log "using the running cluster"
else
  "$repo/scripts/cluster-up.sh"
  trap '"$repo/scripts/cluster-down.sh"' EXIT
fi
OODA_KUBECONFIG="$kubeconfig" OODA_KUBECTL="$k8s_bin/kubectl" cargo bench --locked --bench dashboard
