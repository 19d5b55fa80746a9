#!/usr/bin/env bash
# `make bench-operator`: 1,000 projects on a fresh local control plane (release build).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
cargo build --locked --release --benches
"$repo/scripts/cluster-down.sh"
"$repo/scripts/cluster-up.sh"
trap '"$repo/scripts/cluster-down.sh"' EXIT
OODA_KUBECONFIG="$kubeconfig" cargo bench --locked --bench operator_scale
