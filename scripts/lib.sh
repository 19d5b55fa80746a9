# Shared settings of the local control plane scripts. Sourced, not executed.
# shellcheck shell=bash
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "$repo/scripts/versions.env"

cache="${OODA_CACHE:-$HOME/.cache/ooda}"
# Build outputs live outside the clone, so every clone (and CI's fresh one) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
k8s_bin="$cache/controlplane/kubernetes-$KUBERNETES_VERSION"
etcd_bin="$cache/controlplane/etcd-$ETCD_VERSION"
kwok_dir="$cache/controlplane/kwok-$KWOK_VERSION"
moto_dir="$cache/moto-$MOTO_VERSION"       # a Python virtualenv holding the local S3 server

state="$repo/.local/cluster"       # pki, etcd data, pids: removed by cluster-down
logs="$repo/.local/logs"           # component logs: kept after cluster-down for inspection
kubeconfig="$repo/.local/kubeconfig"

# Every listener is on 127.0.0.1; the ports can be moved if something else holds them.
etcd_port="${OODA_ETCD_PORT:-23790}"
etcd_peer_port="${OODA_ETCD_PEER_PORT:-23800}"
apiserver_port="${OODA_APISERVER_PORT:-26443}"
controller_manager_port="${OODA_CONTROLLER_MANAGER_PORT:-20257}"
scheduler_port="${OODA_SCHEDULER_PORT:-20259}"
kwok_port="${OODA_KWOK_PORT:-20250}"
s3_port="${OODA_S3_PORT:-24566}"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok s3)
# The local S3's buckets: one per jurisdiction of examples/operator-config.yaml.
s3_buckets=(ooda-sites-eu ooda-sites-us)

kubectl() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

pid_of() { local f="$state/pids/$1"; [[ -f "$f" ]] && cat "$f"; }
alive() { local pid; pid="$(pid_of "$1")" && [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }
