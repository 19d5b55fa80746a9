#!/usr/bin/env bash
# `make e2e-kind`: the e2e suite (tests/e2e) against ooda installed by its chart on a kind cluster.
#
# Here (no registry, a VM without CAP_SYS_RESOURCE, cgroup v1) everything is local and private:
# a Docker engine of its own (own socket, data root, networks only in 198.18.128.0/17, no iptables,
# DNS to loopback), a host guard that drops any packet from that range leaving by another
# interface, a node image built by scripts/build-kind-node.sh, and the machine's workarounds,
# each applied only when detected. Everything is taken down by a trap however the run ends.
#
# On a runner with a registry, OODA_KIND_NODE_IMAGE=kindest/node:<v> runs the same on the stock
# node image (kindnetd brings the pod network and NetworkPolicy). Either way gVisor comes from
# here: its runsc and shim (scripts/build-real-node.sh) are mounted into the node and containerd
# gets the runtime handler `runsc` by kind's containerdConfigPatches.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
cd "$repo"

"$here/build-tools.sh"
"$here/build-real-node.sh" gvisor
node_image="${OODA_KIND_NODE_IMAGE:-}"
if [[ -z "$node_image" ]]; then
  "$here/build-kind-node.sh"
  node_image="ooda.local/kind-node:$KUBERNETES_VERSION"
  node_archive="$(ls "$kind_cache"/node-"$KUBERNETES_VERSION"-*.tar)"
fi
"$here/build-image.sh" >/dev/null
images_dir="$("$here/build-images.sh")"

state="$bed_dir/kind"
docker_socket="$state/docker.sock"
cluster=ooda-e2e
network_bridge=br-ooda-kind
guard=ooda_kind_guard
kind_bin="$kind_dir/kind"
kind_kubeconfig="$state/kubeconfig"
export DOCKER_HOST="unix://$docker_socket"

teardown() {
  local status=$?
  set +e
  if [[ -S "$docker_socket" ]]; then
    "$kind_bin" delete cluster --name "$cluster" >/dev/null 2>&1
    docker network rm kind >/dev/null 2>&1
  fi
  [[ -f "$state/docker.pid" ]] && kill "$(cat "$state/docker.pid")" 2>/dev/null
  for _ in $(seq 100); do [[ -e "$state/docker.pid" ]] || break; sleep 0.1; done
  [[ -f "$state/s3.pid" ]] && kill "$(cat "$state/s3.pid")" 2>/dev/null
  ip link delete docker0 2>/dev/null
  ip link delete "$network_bridge" 2>/dev/null
  nft delete table inet "$guard" 2>/dev/null
  [[ -f "$state/created-lib-modules" ]] && rmdir /lib/modules 2>/dev/null
  grep -q " $state/" /proc/mounts && grep " $state/" /proc/mounts | awk '{ print $2 }' | sort -r | xargs -r umount -l
  rm -rf "$state"
  exit "$status"
}
trap teardown EXIT
rm -rf "$state" && mkdir -p "$state"

# --- the guard, before any container: nothing from the kind range leaves but by its bridges ---
nft -f - <<NFT
table inet $guard {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    ip saddr 198.18.128.0/17 oifname != { "docker0", "$network_bridge" } counter drop
    ip daddr 169.254.169.254 counter drop
  }
  chain postrouting {
    type filter hook postrouting priority filter - 10; policy accept;
    ip saddr 198.18.128.0/17 oifname != { "lo", "docker0", "$network_bridge" } counter drop
  }
}
NFT

# --- the machine's workarounds, detected ---
runtime_flags=()
containerd_patches=""
cap_bounding="$(awk '/^CapBnd/ { print $2 }' /proc/self/status)"
if (( (16#$cap_bounding >> 24 & 1) == 0 )); then
  # Privileged containers get every capability, and this machine cannot grant CAP_SYS_RESOURCE:
  # dockerd's runc drops it from every container and exec it starts.
  log "no CAP_SYS_RESOURCE in the bounding set: runc without it"
  cat >"$state/runc" <<'SH'
#!/bin/bash
# runc, minus CAP_SYS_RESOURCE (this machine's bounding set lacks it) in what it creates or execs.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --bundle | -b) bundle="${args[i + 1]}" ;;
    --process | -p) process="${args[i + 1]}" ;;
  esac
done
drop='with_entries(.value |= map(select(. != "CAP_SYS_RESOURCE")))'
if [[ -n "${bundle:-}" && -f "$bundle/config.json" ]]; then
  jq "(.process.capabilities // {}) |= $drop" "$bundle/config.json" >"$bundle/config.json.tmp" && mv "$bundle/config.json.tmp" "$bundle/config.json"
fi
if [[ -n "${process:-}" && -f "$process" ]]; then
  jq "(.capabilities // {}) |= $drop" "$process" >"$process.tmp" && mv "$process.tmp" "$process"
fi
exec runc "$@"
SH
  chmod +x "$state/runc"
  runtime_flags=(--add-runtime "ooda-runc=$state/runc" --default-runtime ooda-runc)
  # Nor may the node's containerd lower an oom_score_adj (the gVisor shim tolerates it:
  # realnode/gvisor-shim-oom-score.patch).
  containerd_patches='- |-
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true'
fi
kubelet_patch=""
if [[ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]]; then
  log "cgroup v1: the kubelet is told to accept it"
  kubelet_patch='kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false'
fi
if [[ ! -e /lib/modules ]]; then
  mkdir /lib/modules && touch "$state/created-lib-modules"
fi

# --- a Docker engine of the run's own ---
setsid dockerd --data-root "$state/data" --exec-root "$state/exec" --pidfile "$state/docker.pid" \
  -H "$DOCKER_HOST" --bip 198.18.128.1/24 --default-address-pool base=198.18.192.0/18,size=24 \
  --iptables=false --ip6tables=false --ip-masq=false --dns 127.0.0.1 "${runtime_flags[@]}" \
  >"$logs/kind-dockerd.log" 2>&1 </dev/null &
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker network create -d bridge --subnet 198.18.193.0/24 --gateway 198.18.193.1 \
  -o com.docker.network.bridge.enable_ip_masquerade=false -o "com.docker.network.bridge.name=$network_bridge" kind >/dev/null
if [[ -n "${node_archive:-}" ]]; then docker load -i "$node_archive" >/dev/null; else docker pull -q "$node_image"; fi

# --- the cluster, with gVisor mounted into its node ---
# kind's kubelet and containerd use systemd cgroups: runsc must read the same paths.
printf '[runsc_config]\n  platform = "systrap"\n  systemd-cgroup = "true"\n' >"$state/runsc.toml"
cat >"$state/kind.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: 127.0.0.1
  # Below the ephemeral range (32768-60999), which any outgoing connection may be holding.
  apiServerPort: ${OODA_KIND_APISERVER_PORT:-26500}
  kubeProxyMode: iptables
  podSubnet: 198.18.160.0/20
  serviceSubnet: 198.18.176.0/20
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
    runtime_type = "io.containerd.runsc.v1"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
      TypeUrl = "io.containerd.runsc.v1.options"
      ConfigPath = "/etc/containerd/runsc.toml"
$containerd_patches
nodes:
- role: control-plane
  labels: { topology.kubernetes.io/region: europe-west4, sandbox.ooda.run/gvisor: "true" }
  extraMounts:
  - { hostPath: "$gvisor_bin/runsc", containerPath: /usr/local/bin/runsc, readOnly: true }
  - { hostPath: "$gvisor_bin/containerd-shim-runsc-v1", containerPath: /usr/local/bin/containerd-shim-runsc-v1, readOnly: true }
  - { hostPath: "$state/runsc.toml", containerPath: /etc/containerd/runsc.toml, readOnly: true }
$kubelet_patch
YAML
started=$SECONDS
"$kind_bin" create cluster --name "$cluster" --image "$node_image" \
  --config "$state/kind.yaml" --kubeconfig "$kind_kubeconfig" --wait 180s
log "kind cluster up in $((SECONDS - started))s"
for archive in "$ooda_image_docker_archive" "$images_dir/devenv.tar"; do
  "$kind_bin" load image-archive --name "$cluster" "$archive"
done
k() { "$k8s_bin/kubectl" --kubeconfig "$kind_kubeconfig" "$@"; }
# The cluster's own add-ons (CoreDNS, the pod network and its NetworkPolicy) rolled out.
for addon in $(k -n kube-system get daemonsets,deployments -o name); do
  k -n kube-system rollout status "$addon" --timeout 180s
done
k -n kube-system logs daemonset/kube-network-policies -c divert 2>/dev/null | sed 's/^/[e2e-kind] node: /' >&2 || true

# The local S3, on the kind network's gateway address: the node's pods reach it there.
"$moto_dir/bin/moto_server" -H 198.18.193.1 -p "${OODA_KIND_S3_PORT:-34577}" >"$logs/kind-s3.log" 2>&1 &
echo $! >"$state/s3.pid"
for _ in $(seq 100); do curl -fsS "http://198.18.193.1:${OODA_KIND_S3_PORT:-34577}/moto-api/" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS -X PUT "http://198.18.193.1:${OODA_KIND_S3_PORT:-34577}/ooda-sites-eu" >/dev/null

node_ip="$(docker inspect -f '{{ .NetworkSettings.Networks.kind.IPAddress }}' "$cluster-control-plane")"
# The pods' addresses are routed by the node (no masquerade): answers to them go back through it.
ip route add 198.18.160.0/20 via "$node_ip" dev "$network_bridge"
OODA_E2E_KUBECONFIG="$kind_kubeconfig" OODA_E2E_VALUES=tests/e2e/values-kind.yaml \
  OODA_E2E_SET="config.jurisdictions.eu.sites.endpoint=http://198.18.193.1:${OODA_KIND_S3_PORT:-34577}" \
  OODA_E2E_GATEWAY="$node_ip:30443" "$here/e2e.sh"
