#!/usr/bin/env bash
# Test: `make cluster-down` leaves the machine as `make cluster-up` found it. Brings up a second
# bed (own directory, ports and pod network), runs a runc pod and a gVisor pod with a workspace
# volume and a NetworkPolicy on the real node, takes the bed down, and compares the host's
# mounts, interfaces, addresses, firewall, cgroups, /run, forwarding switch and the bed's
# processes with a snapshot taken before. Run it while no other bed is changing the host (`make test` runs it first).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OODA_BED_DIR="$here/../.local/teardown-test" OODA_REAL_NODE_NET=7
export OODA_ETCD_PORT=33790 OODA_ETCD_PEER_PORT=33800 OODA_APISERVER_PORT=36443 OODA_CONTROLLER_MANAGER_PORT=30257 \
  OODA_SCHEDULER_PORT=30259 OODA_KWOK_PORT=30250 OODA_S3_PORT=34566 OODA_KUBELET_PORT=30350 \
  OODA_KUBELET_HEALTHZ_PORT=30348 OODA_NETPOL_METRICS_PORT=30380
source "$here/lib.sh"

snapshot() { # snapshot DIR
  mkdir -p "$1"
  ip -o address >"$1/addresses"
  ip -o link | awk '{ print $2 }' >"$1/links"
  nft list ruleset >"$1/nftables"
  { iptables-save 2>/dev/null || true; } | sed -e "/^#/d" -e "s/\[[0-9]*:[0-9]*\]//" >"$1/iptables"
  findmnt -rn -o TARGET | sort >"$1/mounts"
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sort >"$1/cgroups"
  find /run | sort >"$1/run"
  # The bed's processes: anything run from its cache or directory, or naming either (components,
  # shims, gVisor sandboxes, pause), or listening on its outside address (the relays). A container's own processes live in the pod cgroups, which
  # cannot be removed while any is left (the cgroups line above would show it). Other processes
  # of the machine come and go on their own and are not the bed's to account for, nor is a
  # compiler writing into cargo's target directories in the cache (a build beside this test).
  for proc in /proc/[0-9]*; do
    exe="$(readlink "$proc/exe" 2>/dev/null)" || continue
    args="$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null)" || continue
    case "$exe $args" in
      *"$cache/target"* | *"$cache/fuzz-target"*) ;;
      *"$cache"* | *"$bed_dir"* | *"bind=$outside_ip,"*) printf '%s\n' "${exe##*/}" ;;
    esac
  done | sort | uniq -c >"$1/processes"
  cat /proc/sys/net/ipv4/ip_forward >"$1/ip_forward"
}

work="$OODA_BED_DIR/snapshots"
rm -rf "$work"
snapshot "$work/before"
trap '"$here/cluster-down.sh" >/dev/null 2>&1 || true' EXIT
"$here/cluster-up.sh" >/dev/null 2>&1 || { tail -n 5 "$logs"/*.log >&2; echo "test-bed-teardown: cluster-up failed" >&2; exit 1; }

kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Namespace
metadata: { name: teardown }
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: teardown }
spec: { podSelector: {}, policyTypes: [Ingress, Egress] }
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: workspace, namespace: teardown }
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: eu-local-path
  resources: { requests: { storage: 1Gi } }
---
apiVersion: v1
kind: Pod
metadata: { name: gvisor, namespace: teardown }
spec:
  runtimeClassName: gvisor
  nodeSelector: { kubernetes.io/hostname: real-0 }
  tolerations: [{ key: ooda.run/real-node, operator: Exists }]
  containers: [{ name: env, image: ooda.local/devenv:bookworm, volumeMounts: [{ name: w, mountPath: /workspace }] }]
  volumes: [{ name: w, persistentVolumeClaim: { claimName: workspace } }]
---
apiVersion: v1
kind: Pod
metadata: { name: runc, namespace: teardown }
spec:
  nodeSelector: { kubernetes.io/hostname: real-0 }
  tolerations: [{ key: ooda.run/real-node, operator: Exists }]
  containers: [{ name: env, image: ooda.local/devenv:bookworm }]
YAML
kubectl wait --for=condition=Ready pod/gvisor pod/runc -n teardown --timeout=120s >/dev/null
# The pods are left running: taking the bed down has to stop them.
"$here/cluster-down.sh" >/dev/null 2>&1
trap - EXIT
snapshot "$work/after"

if ! diff -r "$work/before" "$work/after" >"$work/diff"; then
  echo "test-bed-teardown: FAILED: the host differs after cluster-down:" >&2
  cat "$work/diff" >&2
  exit 1
fi
rm -rf "$OODA_BED_DIR"
echo "test-bed-teardown: ok (processes, mounts, interfaces, addresses, firewall, cgroups, /run unchanged)"
