#!/usr/bin/env bash
# Starts the bed's real node `real-0` beside kwok's simulated nodes, on a running control plane
# (scripts/cluster-up.sh calls it): containerd 2 with runc and gVisor (runsc), a kubelet with a
# node certificate from the bed's CA, pods on a CNI bridge in $pod_cidr that nothing leaves,
# NetworkPolicy enforced by kube-network-policies, and workspaces from the local-path provisioner.
# Every host-global change is undone by scripts/real-node-down.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$repo/scripts/images.sh"

[[ $EUID == 0 ]] || { log "the real node needs root (network, mounts, cgroups); OODA_REAL_NODE=0 skips it"; exit 1; }
"$repo/scripts/build-real-node.sh"
"$repo/scripts/build-images.sh" >/dev/null
started_at=$(date +%s.%N)
rn="$realnode_state"

# --- a node on this net index that nobody took down ---
# A bed killed with its machine (or its checkout deleted) leaves its addresses, bridge and firewall
# behind, and this bed cannot take them: another bed's live kubelet on them is refused by name; a
# dead one's are removed, as its own down script would have.
leftovers=()
ip -o address show dev lo | grep -qE " (${node_ip//./\\.}|${outside_ip//./\\.})/32 " && leftovers+=(addresses)
ip link show "$bridge" >/dev/null 2>&1 && leftovers+=("bridge $bridge")
nft list table inet "$guard_table" >/dev/null 2>&1 && leftovers+=("firewall table $guard_table")
if ((${#leftovers[@]})); then
  if owner="$(pgrep -f -- "--node-ip $node_ip( |$)")"; then
    log "another bed's real node (kubelet pid ${owner//$'\n'/ }) holds net index $net_index; give this bed another with OODA_REAL_NODE_NET (0-63)"
    exit 1
  fi
  log "removing what a real node on net index $net_index left behind when it was not taken down: ${leftovers[*]}"
  mkdir -p "$rn"
  "$repo/scripts/real-node-down.sh"
fi
mkdir -p "$rn"/{containerd,kubelet,pod-logs,volumes,cni/net.d,cni/ipam,secrets} "$state/pids" "$logs"

# --- what this machine lacks, detected rather than assumed ---
# Without CAP_SYS_RESOURCE in the bounding set nothing may lower an oom_score_adj: containerd
# must not try (the gVisor shim tolerates it: realnode/gvisor-shim-oom-score.patch).
capabilities=$(awk '/^CapBnd/ { print $2 }' /proc/self/status)
if (((16#$capabilities >> 24) & 1)); then restrict_oom_score_adj=false; else restrict_oom_score_adj=true; fi
# kube-network-policies diverts packets to its queue with nftables' `queue`; kernels without
# nft_queue but with xt_NFQUEUE get the same diversion from iptables rules instead.
probe="ooda_probe_$net_index"
if nft -f - 2>/dev/null <<NFT
table inet $probe { chain probe { queue num $nfqueue bypass } }
NFT
then nft_queue=true; nft delete table inet "$probe"; else nft_queue=false; fi
log "host: restrict_oom_score_adj=$restrict_oom_score_adj, nftables queue=$nft_queue"

# What exists on the host before the node does, so the down script removes only what it added.
: >"$rn/host-before"
nft list table ip mangle >/dev/null 2>&1 && echo ip-mangle-table >>"$rn/host-before"
[[ -e /run/containerd ]] && echo run-containerd >>"$rn/host-before"

# --- host network: the node's address, the bridge's reachable outside, and the guard ---
cat /proc/sys/net/ipv4/ip_forward >"$rn/ip_forward.before"
ip address add "$node_ip/32" dev lo
ip address add "$outside_ip/32" dev lo
# Loaded before the first pod: a pod packet may stay on the bridge or reach the host's outside
# address, nothing else. Forwarding elsewhere, new connections to other host addresses, and any
# packet from the pod range leaving by another interface are dropped.
nft -f - <<NFT
table inet $guard_table {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "$bridge" oifname != "$bridge" counter drop
    ip saddr $pod_cidr oifname != "$bridge" counter drop
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "$bridge" ct state established,related accept
    iifname "$bridge" ip daddr $outside_ip accept
    iifname "$bridge" counter drop
  }
  chain postrouting {
    type filter hook postrouting priority filter - 10; policy accept;
    ip saddr $pod_cidr oifname != { "lo", "$bridge" } counter drop
  }
}
NFT
echo 1 >/proc/sys/net/ipv4/ip_forward # bridged pod traffic is forwarded; the guard bounds it

cat >"$rn/cni/net.d/10-ooda.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "ooda-pods-$net_index",
  "plugins": [{
    "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$rn/cni/ipam",
      "ranges": [[{ "subnet": "$pod_cidr", "gateway": "$pod_gateway" }]],
      "routes": [{ "dst": "$outside_cidr" }]
    }
  }]
}
JSON

# --- containerd, on its own socket and directories ---
cat >"$rn/runsc.toml" <<TOML
binary_name = "$gvisor_bin/runsc"
root = "$rn/runsc"
[runsc_config]
  platform = "systrap"
TOML
cat >"$rn/containerd.toml" <<TOML
version = 3
root = "$rn/containerd/root"
state = "$rn/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$containerd_socket"
[ttrpc]
  address = "$containerd_socket.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$rn/containerd/opt"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$pause_image"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = $restrict_oom_score_adj
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$(command -v runc)"
      Root = "$rn/runc"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc]
    runtime_type = "io.containerd.runsc.v1"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc.options]
      TypeUrl = "io.containerd.runsc.v1.options"
      ConfigPath = "$rn/runsc.toml"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$rn/cni/net.d"
    max_conf_num = 1
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
PATH="$containerd_bin:$gvisor_bin:$PATH" start containerd "$containerd_bin/containerd" --config "$rn/containerd.toml"
wait_for containerd 30 ctr version
for image in pause devenv; do ctr images import --local "$images_dir/$image.tar" >>"$logs/containerd.log" 2>&1; done
# ooda's own image, once `make image` has built it (the chart's pods run it).
if [[ -f "$ooda_image_archive" ]]; then
  ctr images import --local "$ooda_image_archive" >>"$logs/containerd.log" 2>&1
fi

# --- kubelet `real-0`: EU region, gVisor, tainted so that only pods that choose it land there ---
issue kubelet "/O=system:nodes/CN=system:node:real-0"
issue kubelet-serving "/O=system:nodes/CN=system:node:real-0" "IP:$node_ip"
issue local-path-provisioner "/CN=ooda-bed:local-path-provisioner"
write_kubeconfig "$rn/kubelet.kubeconfig" kubelet
write_kubeconfig "$rn/local-path-provisioner.kubeconfig" local-path-provisioner
cat >"$rn/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $pki/ca.crt }
authorization: { mode: Webhook }
containerRuntimeEndpoint: unix://$containerd_socket
cgroupDriver: cgroupfs
cgroupRoot: /ooda-real-$net_index
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: ""
podLogsDir: $rn/pod-logs
volumePluginDir: $rn/kubelet/volume-plugins
serializeImagePulls: false
registerWithTaints: [{ key: ooda.run/real-node, value: "true", effect: NoSchedule }]
evictionHard: { memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%" }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
kubectl apply -f "$repo/scripts/bed/real-node/" >/dev/null
# The kubelet's pods live under a cgroup of their own in every hierarchy (removed by the down script).
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -f "${hierarchy}cgroup.procs" ]] && mkdir -p "${hierarchy}ooda-real-$net_index"
done
start kubelet "$realnode_bin/kubelet-$KUBERNETES_VERSION/kubelet" --config "$rn/kubelet.yaml" \
  --kubeconfig "$rn/kubelet.kubeconfig" --root-dir "$rn/kubelet" --cert-dir "$rn/kubelet/pki" \
  --hostname-override real-0 --node-ip "$node_ip" \
  --node-labels "ooda.run/real-node=true,sandbox.ooda.run/gvisor=true,topology.kubernetes.io/region=europe-west4,topology.kubernetes.io/zone=europe-west4-a"
wait_for kubelet 60 kubectl get node real-0
wait_for kubelet 60 kubectl wait --for=condition=Ready node/real-0 --timeout=2s

# --- NetworkPolicy: kube-network-policies on the host, with a token of its ServiceAccount ---
kubectl create token kube-network-policies -n kube-system --duration 168h >"$rn/secrets/token"
cp "$pki/ca.crt" "$rn/secrets/ca.crt"
printf 'kube-system' >"$rn/secrets/namespace"
# It only knows in-cluster configuration: in a mount namespace of its own, a tmpfs /run holds the
# token where client-go looks for it, and nothing of the host's /run is touched.
KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$apiserver_port" start kube-network-policies \
  unshare --mount --propagation private sh -c '
    mount -t tmpfs -o size=1m,mode=0755 ooda-run /run &&
    mkdir -p /run/secrets/kubernetes.io/serviceaccount &&
    cp "$0"/token "$0"/ca.crt "$0"/namespace /run/secrets/kubernetes.io/serviceaccount/ &&
    exec "$@"' "$rn/secrets" \
  "$realnode_bin/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION/kube-network-policies" \
  --hostname-override real-0 --disable-nri --nfqueue-id "$nfqueue" \
  --metrics-bind-address "127.0.0.1:$netpol_metrics_port"
wait_for kube-network-policies 30 curl -fsS --max-time 2 "http://127.0.0.1:$netpol_metrics_port/metrics"
if ! $nft_queue; then
  # Pod-to-pod (bridged) and pod-to-host packets go to the queue; replies do not. With no daemon
  # reading the queue, new connections fail closed.
  iptables -t mangle -N "$policy_chain"
  iptables -t mangle -A "$policy_chain" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
  iptables -t mangle -A "$policy_chain" -s "$pod_cidr" -j NFQUEUE --queue-num "$nfqueue"
  iptables -t mangle -A "$policy_chain" -d "$pod_cidr" -j NFQUEUE --queue-num "$nfqueue"
  iptables -t mangle -A FORWARD -j "$policy_chain"
  iptables -t mangle -A INPUT -i "$bridge" -j "$policy_chain"
fi

# --- workspaces: the local-path provisioner, with the dev environment image as its helper ---
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: { name: local-path-config, namespace: local-path-storage }
data:
  config.json: '{"nodePathMap": [{"node": "real-0", "paths": ["$rn/volumes"]}]}'
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata: { name: helper-pod }
    spec:
      automountServiceAccountToken: false
      containers:
      - name: helper-pod
        image: $devenv_image
        imagePullPolicy: Never
        securityContext: { runAsUser: 0, runAsGroup: 0 }
YAML
kubectl get configmap local-path-config -n local-path-storage -o jsonpath='{.data.config\.json}' >"$rn/local-path-config.json"
start local-path-provisioner "$realnode_bin/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION/local-path-provisioner" \
  start --kubeconfig "$rn/local-path-provisioner.kubeconfig" --namespace local-path-storage \
  --config "$rn/local-path-config.json" --helper-image "$devenv_image" \
  --service-account-name local-path-helper --provisioner-name rancher.io/local-path
wait_for local-path-provisioner 30 grep -q "Started provisioner controller" "$logs/local-path-provisioner.log"

# --- the API server and S3 as pods see them: at the outside address, relayed to loopback ---
# A cluster's own pods (ooda installed by its chart) reach the API server as pods do where there
# is no kube-proxy: at an address given to them (the chart's apiServer.host). The API server's
# certificate names this address too.
for relay in "apiserver-relay $apiserver_port" "s3-relay $s3_port"; do
  set -- $relay
  start "$1" socat "TCP-LISTEN:$2,bind=$outside_ip,reuseaddr,fork" "TCP:127.0.0.1:$2"
  wait_for "$1" 10 bash -c "exec 3<>/dev/tcp/$outside_ip/$2"
done

log "real-0 ready in $(awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s (pods in $pod_cidr on $bridge)"
