#!/usr/bin/env bash
# scripts/bed-restart.sh NAME [SECONDS]: stops one component of the running bed (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok), keeps it down for SECONDS (0
# unless given), then starts it again exactly as cluster-up.sh did and waits until it is healthy.
# The fault tests' way to take a part of the control plane away and bring it back.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
name="${1:?usage: bed-restart.sh NAME [SECONDS]}"
down="${2:-0}"
if [[ ! -f "$state/commands/$name" ]]; then
  echo "bed-restart: no component $name in the bed at $bed_dir" >&2
  exit 1
fi
mapfile -d '' command <"$state/commands/$name"
stop_component "$name"
log "$name stopped; down for ${down}s"
sleep "$down"
setsid "${command[@]}" >>"$logs/$name.log" 2>&1 </dev/null &
echo $! >"$state/pids/$name"
case "$name" in
  etcd) wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" ;;
  kube-apiserver) wait_for kube-apiserver 60 https_ok "$server/readyz" ;;
  *) wait_for "$name" 5 alive "$name" ;;
esac
log "$name restarted"
