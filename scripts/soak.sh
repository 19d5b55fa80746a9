#!/usr/bin/env bash
# `make soak`: OODA_SOAK_MINUTES (30) of mixed load through one operator and one gateway on the
# local control plane (tests/cluster/soak.rs, release build), sampling every process every 10 s;
# writes benches/reports/soak.md and soak-samples.csv. Not part of `make test`. Brings the bed up
# if it is not running, and leaves a bed it found running as it was.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
cargo build --locked --release --test cluster
if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  trap '"$repo/scripts/cluster-down.sh"' EXIT
fi
"$repo/scripts/cluster-up.sh"
OODA_KUBECONFIG="$kubeconfig" OODA_KUBECTL="$k8s_bin/kubectl" \
  cargo test --locked --release --test cluster -- --ignored --exact soak::soak --nocapture
