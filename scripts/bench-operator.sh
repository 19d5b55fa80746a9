#!/usr/bin/env bash
# `make bench-operator`: 1,000 and then 3,000 projects, each on a fresh local control plane
# (release build); `OODA_BENCH_PROJECTS="1000"` runs one scale only. The report
# (benches/reports/operator-scale.md) is rendered from every scale's results.
set -euo pipefail
# The controller manager's default rate limit (20 requests/s) would make the bed's floor a
# setting; raised, it is the machine.
export OODA_CONTROLLER_MANAGER_QPS="${OODA_CONTROLLER_MANAGER_QPS:-200}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
cargo build --locked --release --benches
trap '"$repo/scripts/cluster-down.sh"' EXIT
for projects in ${OODA_BENCH_PROJECTS:-1000 3000}; do
  "$repo/scripts/cluster-down.sh"
  OODA_REAL_NODE=0 "$repo/scripts/cluster-up.sh"
  OODA_BENCH_PROJECTS="$projects" OODA_KUBECONFIG="$kubeconfig" cargo bench --locked --bench operator_scale
done
