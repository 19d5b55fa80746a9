#!/usr/bin/env bash
# `make bench-ai`: the AI relay against the tests' stand-in for Anthropic's API, side by side with
# the stand-in asked directly (release build). Uses the local control plane if it is running (and
# leaves it running); otherwise brings one up for the run and down afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
if kubectl get --raw /readyz >/dev/null 2>&1; then
  log "using the running cluster"
else
  OODA_REAL_NODE=0 "$repo/scripts/cluster-up.sh"
  trap '"$repo/scripts/cluster-down.sh"' EXIT
fi
OODA_KUBECONFIG="$kubeconfig" cargo bench --locked --bench ai_relay
