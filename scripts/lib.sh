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
helm_dir="$cache/tools/helm-$HELM_VERSION"     # scripts/build-tools.sh
kubeconform_dir="$cache/tools/kubeconform-$KUBECONFORM_VERSION"
kstatus_dir="$cache/tools/kstatus-$CLI_UTILS_VERSION-$(sha256sum "$repo/scripts/kstatus/main.go" | cut -c1-12)"
kubeconform_schemas="$cache/tools/kubeconform-schemas-$KUBERNETES_VERSION-$(sha256sum "$repo/scripts/kubeconform-schemas.py" | cut -c1-12)"
kind_cache="$cache/kind"                    # scripts/build-kind-node.sh
kind_dir="$kind_cache/kind-$KIND_VERSION"   # scripts/build-tools.sh
moto_dir="$cache/moto-$MOTO_VERSION"           # a Python virtualenv holding the local S3 server
# bin/s3s-fs: the sites benchmark's second S3 server (scripts/build-s3s-fs.sh), patched: its hash is in the key.
s3s_fs_dir="$cache/tools/s3s-fs-$S3S_FS_VERSION-$(sha256sum "$repo/scripts/s3s-fs-nodelay.patch" | cut -c1-12)"
anthropic_dir="$cache/tools/anthropic-$ANTHROPIC_SDK_VERSION"  # a Python virtualenv: Anthropic's SDK
schemathesis_dir="$cache/tools/schemathesis-$SCHEMATHESIS_VERSION"  # a Python virtualenv: schemathesis
# ooda's own image (scripts/build-image.sh): an OCI archive that the real node loads at start.
ooda_version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
ooda_image="ooda.local/ooda:$ooda_version"
ooda_image_archive="$cache/image/ooda-$ooda_version.oci.tar"
ooda_image_docker_archive="$cache/image/ooda-$ooda_version.docker.tar"   # the same, for `docker load`, `kind load`

# The bed's files; OODA_BED_DIR moves them, so a second bed (on other ports) can run beside.
bed_dir="$(realpath -m "${OODA_BED_DIR:-$repo/.local}")"
state="$bed_dir/cluster"       # pki, etcd data, pids: removed by cluster-down
logs="$bed_dir/logs"           # component logs: kept after cluster-down for inspection
kubeconfig="$bed_dir/kubeconfig"

# Every listener is on 127.0.0.1; the ports can be moved if something else holds them.
etcd_port="${OODA_ETCD_PORT:-23790}"
etcd_peer_port="${OODA_ETCD_PEER_PORT:-23800}"
apiserver_port="${OODA_APISERVER_PORT:-26443}"
controller_manager_port="${OODA_CONTROLLER_MANAGER_PORT:-20257}"
scheduler_port="${OODA_SCHEDULER_PORT:-20259}"
kwok_port="${OODA_KWOK_PORT:-20250}"
s3_port="${OODA_S3_PORT:-24566}"
# kube-controller-manager's client-side rate limit (its own default: 20 requests/s, bursts of 30).
# The test suite deletes dozens of namespaces at once, each a list and a delete per resource
# type, and at 20 the namespace controller fell a minute behind (a CI failure). At a thousand
# projects it paces the bed too: its volume binder waits its turn for half a minute, so
# `make bench-operator` raises it further, and the bed's floor is the machine, not a setting.
controller_manager_qps="${OODA_CONTROLLER_MANAGER_QPS:-100}"
server="https://127.0.0.1:$apiserver_port"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok s3)
# The real node's processes (scripts/real-node-up.sh), stopped before the control plane's.
real_node_components=(containerd kubelet kube-network-policies local-path-provisioner apiserver-relay s3-relay)
# The local S3's buckets: one per jurisdiction of examples/operator-config.yaml.
s3_buckets=(ooda-sites-eu ooda-sites-us)

# --- the real node `real-0` (scripts/real-node-up.sh) ---
realnode_bin="$cache/realnode"
realnode_state="$state/realnode"
containerd_bin="$realnode_bin/containerd-$CONTAINERD_VERSION"
containerd_socket="$realnode_state/containerd/containerd.sock"
# ctr on the real node's containerd, in the namespace the kubelet uses.
ctr() { "$containerd_bin/ctr" --address "$containerd_socket" --namespace k8s.io "$@"; }
# gVisor is built from a patched copy of the module: the patches' hash is part of the key.
gvisor_bin="$realnode_bin/gvisor-$GVISOR_VERSION-$(cat "$repo"/scripts/realnode/gvisor-*.patch | sha256sum | cut -c1-12)"
# Everything the node puts on the host's network is numbered by OODA_REAL_NODE_NET (0–63), so two
# beds on one machine never share a bridge, an address or a queue. Pod networks are all inside
# 198.18.0.0/16, which the bed's operator configuration denies to projects' egress.
net_index="${OODA_REAL_NODE_NET:-0}"
pod_cidr="198.18.$net_index.0/24"        # pods, on the bridge; NetworkPolicy applies
pod_gateway="198.18.$net_index.1"        # the host's address on the bridge
outside_cidr="198.19.$net_index.0/24"    # the bed's stand-in for the world outside the cluster:
outside_ip="198.19.$net_index.1"         # a host address pods may reach (a Git server, say)
node_ip="198.19.255.$((net_index + 1))"  # the kubelet's address: no pod has a route to it
bridge="cni-ooda$net_index"
nfqueue=$((100 + net_index))
guard_table="ooda_guard_$net_index"                # nftables table (inet) of the host guard
policy_chain="OODA-NETPOL-$net_index"              # iptables-nft mangle chain feeding the NFQUEUE
kubelet_port="${OODA_KUBELET_PORT:-20350}"
kubelet_healthz_port="${OODA_KUBELET_HEALTHZ_PORT:-20348}"
netpol_metrics_port="${OODA_NETPOL_METRICS_PORT:-20380}"

pki="$state/pki"

# --- helpers of the bring-up scripts ---
openssl_quiet() { openssl "$@" 2>/dev/null; }
issue() { # issue NAME SUBJECT [SAN]
  local name="$1" subject="$2" san="${3:-}"
  local extra=(-addext "basicConstraints=CA:FALSE")
  [[ -n "$san" ]] && extra+=(-addext "subjectAltName=$san")
  openssl_quiet req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    "${extra[@]}" -keyout "$pki/$name.key" -out "$pki/$name.csr"
  openssl_quiet x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -copy_extensions copyall -out "$pki/$name.crt"
}
write_kubeconfig() { # write_kubeconfig FILE IDENTITY
  local file="$1" id="$2"
  cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: ooda-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $id
  user:
    client-certificate-data: $(base64 -w0 "$pki/$id.crt")
    client-key-data: $(base64 -w0 "$pki/$id.key")
contexts:
- name: ooda-local
  context: { cluster: ooda-local, user: $id }
current-context: ooda-local
YAML
}
start() { # start NAME BINARY ARGS...: in its own session, so cluster-down can stop its whole group
  local name="$1"; shift
  # Kept, so scripts/bed-restart.sh can start it again just so.
  mkdir -p "$state/commands"
  printf '%s\0' "$@" >"$state/commands/$name"
  setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name"
}
https_ok() { curl -fsS --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$1"; }
wait_for() { # wait_for NAME SECONDS COMMAND...
  local name="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      log "$name exited; last lines of $logs/$name.log:"; tail -n 30 "$logs/$name.log" >&2; exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${seconds}s; last lines of $logs/$name.log:"; tail -n 30 "$logs/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
}
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

pid_of() { local f="$state/pids/$1"; [[ -f "$f" ]] && cat "$f"; }
# stop_component NAME: TERM the component's process group (each runs in a session of its own),
# and KILL it if it is still there after 10s.
stop_component() {
  local name="$1" pid
  pid="$(pid_of "$name" || true)"
  [[ -n "$pid" ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name ($pid) ignored SIGTERM for 10s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$state/pids/$name"
}
alive() { local pid; pid="$(pid_of "$1")" && [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }
