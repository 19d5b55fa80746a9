#!/usr/bin/env bash
# Stops every process cluster-up started and removes the cluster's state (logs are kept).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Reverse start order, so nothing is left writing to a stopped etcd.
for ((i = ${#components[@]} - 1; i >= 0; i--)); do
  name="${components[i]}"
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
