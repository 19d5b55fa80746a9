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
for name in "${stop_order[@]}"; do
  pid="$(pid_of "$name" || true)"
  [[ -n "$pid" ]] || continue
  # Each component runs in its own session: signal the whole process group.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name ($pid) ignored SIGTERM for 10s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
done
rm -rf "$state" "$kubeconfig"
log "stopped"
