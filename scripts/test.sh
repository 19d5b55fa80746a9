#!/usr/bin/env bash
# `make test`: unit and integration tests against a real local control plane, brought up for the
# run and down afterwards (set OODA_KEEP_CLUSTER=1 to leave it running for inspection).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"

# Benchmarks are built (so they keep compiling) but not run: `cargo test --all-targets` would run
# the ten-minute scale benchmark as a test. `make bench-operator` runs it.
cargo build --locked --lib --bins --tests --benches
# The bed's parts, built once and cached by version (a fresh machine spends most of its run here).
"$repo/scripts/build-control-plane.sh"
"$repo/scripts/build-real-node.sh"
"$repo/scripts/build-images.sh" >/dev/null
# helm, kubeconform and its schemas (the chart's tests), and ooda's own image (the e2e suite's).
"$repo/scripts/build-tools.sh"
"$repo/scripts/build-image.sh"
# Every parser that reads outside bytes, under libFuzzer for a few seconds each (`make fuzz` runs longer).
"$repo/scripts/fuzz.sh" --dev "${OODA_FUZZ_SECONDS:-10}"
# First, on a host no bed is changing: taking a bed down leaves the host as it was.
if kubectl get --raw /readyz >/dev/null 2>&1; then
  log "a bed is already running: the teardown test needs a quiet host and runs when make test brings the bed up itself"
else
  "$repo/scripts/test-bed-teardown.sh"
fi
"$repo/scripts/cluster-up.sh"
if [[ "${OODA_KEEP_CLUSTER:-0}" != 1 ]]; then trap '"$repo/scripts/cluster-down.sh"' EXIT; fi

export OODA_KUBECONFIG="$kubeconfig" OODA_KUBECTL="$k8s_bin/kubectl"
started=$SECONDS
status=0
# Integration tests mostly wait on the control plane: run them well beyond one per core.
cargo test --locked --lib --bins --tests -- --test-threads 16 || status=$?
log "cargo test finished in $((SECONDS - started))s with status $status"
# Then, alone, the tests that restart parts of the bed every other test uses (tests/cluster/faults.rs;
# the other ignored test is the soak, `make soak`).
started=$SECONDS
faults_status=0
cargo test --locked --test cluster -- --ignored --test-threads 1 faults:: || faults_status=$?
log "the fault tests finished in $((SECONDS - started))s with status $faults_status"
((status != 0)) || status=$faults_status
if ((status != 0)); then
  log "component logs are in $logs"
fi

# The installed release, on a bed of its own as a new cluster would be: nothing the tests above
# left (their CRDs, roles, organisations) stands in for what the chart must bring.
if [[ "${OODA_KEEP_CLUSTER:-0}" != 1 ]]; then trap - EXIT; fi
"$repo/scripts/cluster-down.sh"
started=$SECONDS
e2e_status=0
"$repo/scripts/e2e.sh" || e2e_status=$?
log "make e2e finished in $((SECONDS - started))s with status $e2e_status"
((status != 0)) || status=$e2e_status
# The same suite on kind, of a private Docker engine, offline.
started=$SECONDS
kind_status=0
"$repo/scripts/e2e-kind.sh" || kind_status=$?
log "make e2e-kind finished in $((SECONDS - started))s with status $kind_status"
((status != 0)) || status=$kind_status
exit "$status"
