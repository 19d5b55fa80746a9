#!/usr/bin/env bash
# `make bench-sites`: publishing a 50 MB site through the gateway and serving its files, next to
# reading them from S3 directly (release build), on two S3 servers side by side: the bed's moto and
# s3s-fs (built from crates.io by scripts/build-s3s-fs.sh; the benchmark starts it on 127.0.0.1 and
# a free port, its objects in a temporary directory, and stops it at the end). Uses the local
# control plane and its moto if they are running (and leaves them running); otherwise brings them
# up for the run and down afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
"$repo/scripts/build-s3s-fs.sh"
cargo build --locked --release --benches
if kubectl get --raw /readyz >/dev/null 2>&1; then
  log "using the running cluster"
else
  "$repo/scripts/cluster-up.sh"
  trap '"$repo/scripts/cluster-down.sh"' EXIT
fi
if ! curl -fsS --max-time 2 "http://127.0.0.1:$s3_port/moto-api/" >/dev/null; then
  log "the local S3 does not answer on 127.0.0.1:$s3_port; start it with:"
  log "  setsid $moto_dir/bin/moto_server -H 127.0.0.1 -p $s3_port &"
  log "  and create its buckets: for b in ${s3_buckets[*]}; do curl -X PUT http://127.0.0.1:$s3_port/\$b; done"
  exit 1
fi
# The bed's moto may not be on the example configuration's port (OODA_S3_PORT moves it): the
# benchmark writes each server's configuration with its endpoint.
OODA_KUBECONFIG="$kubeconfig" OODA_S3_PORT="$s3_port" OODA_S3S_FS="$s3s_fs_dir/bin/s3s-fs" \
  cargo bench --locked --bench sites
