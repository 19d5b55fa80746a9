#!/usr/bin/env bash
# Stops every process cluster-up started and removes the cluster's state (logs are kept).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ooda's own processes first, then the components in reverse start order, so nothing is left
# writing to a stopped etcd.
ooda_processes=()
for f in "$state"/pids/ooda-*; do [[ -e "$f" ]] && ooda_processes+=("$(basename "$f")"); done
# The real node goes first: it needs the state directory to find what it has to undo.
"$repo/scripts/real-node-down.sh"
stop_order=("${ooda_processes[@]}")
for ((i = ${#components[@]} - 1; i >= 0; i--)); do stop_order+=("${components[i]}"); done
for name in "${stop_order[@]}"; do stop_component "$name"; done
rm -rf "$state" "$kubeconfig"
log "stopped"
