#!/usr/bin/env bash
# Undoes scripts/real-node-up.sh: stops the node's processes and every container it ran, and
# removes its mounts, cgroups, bridge, addresses, firewall rules and state, leaving the host's
# network and mount tables as they were. Safe to run when nothing, or only part, is up.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rn="$realnode_state"

# The kubelet first, so that it restarts nothing; then every container process, found by the
# cgroups the kubelet put them in (runc's containers and gVisor's sandboxes alike); then the shims
# of this node's containerd, recognised by its socket.
stop_component apiserver-relay
stop_component s3-relay
stop_component local-path-provisioner
stop_component kubelet
# The names below (cgroups, bridge, addresses, firewall) follow the node's net index, which another
# bed may share: only a bed that brought a real node up (and so has its state) takes them down.
if [[ ! -d "$rn" ]]; then
  stop_component containerd
  stop_component kube-network-policies
  exit 0
fi
cgroup_root="ooda-real-$net_index"
pids_in_cgroups() { { find /sys/fs/cgroup/*/"$cgroup_root" -name cgroup.procs -exec cat {} + 2>/dev/null || true; } | sort -u; }
for _ in 1 2 3; do
  pids="$(pids_in_cgroups)"
  [[ -n "$pids" ]] || break
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 0.2
done
shims="$(pgrep -d '|' -f -- "-address $containerd_socket( |$)" || true)"
if [[ -n "$shims" ]]; then
  # A killed shim leaves its socket in /run/containerd/s: note them first.
  shim_sockets="$(ss -xlpn 2>/dev/null | grep -E "pid=($shims)," | awk '{ print $5 }' | grep '^/run/containerd/s/' || true)"
  kill -KILL ${shims//|/ } 2>/dev/null || true
  # shellcheck disable=SC2086
  [[ -n "$shim_sockets" ]] && rm -f $shim_sockets
fi
stop_component containerd
stop_component kube-network-policies

# Mounts below the node's state (container root filesystems, network namespaces, volumes, the
# kubelet's own bind mount), deepest first.
if [[ -d "$rn" ]]; then
  findmnt -rn -o TARGET | awk -v root="$rn" 'index($0, root) == 1' | sort -r | while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || log "cannot unmount $target"
  done
fi
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -d "$hierarchy$cgroup_root" ]] && find "$hierarchy$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# Firewall: the policy diversion, the guard, and kube-network-policies' own table (when this
# kernel could load it and no other node's daemon still uses it).
while iptables -t mangle -D FORWARD -j "$policy_chain" 2>/dev/null; do :; done
while iptables -t mangle -D INPUT -i "$bridge" -j "$policy_chain" 2>/dev/null; do :; done
iptables -t mangle -F "$policy_chain" 2>/dev/null && iptables -t mangle -X "$policy_chain" 2>/dev/null || true
nft delete table inet "$guard_table" 2>/dev/null || true
existed() { grep -qx "$1" "$rn/host-before" 2>/dev/null; }
# iptables-nft created `ip mangle` for the diversion: remove it once no rule is left in it.
if [[ -f "$rn/host-before" ]] && ! existed ip-mangle-table && [[ -z "$(nft -a list table ip mangle 2>/dev/null | grep '# handle' | grep -vE '^\s*(table|chain) ')" ]]; then
  nft delete table ip mangle 2>/dev/null || true
fi
if ! pgrep -f "kube-network-policies --hostname-override" >/dev/null; then nft delete table inet kube-network-policies 2>/dev/null || true; fi

# Network: the bridge (its veths went with the pods' namespaces), the host addresses, forwarding.
ip link delete "$bridge" 2>/dev/null || true
ip address delete "$node_ip/32" dev lo 2>/dev/null || true
ip address delete "$outside_ip/32" dev lo 2>/dev/null || true
[[ -f "$rn/ip_forward.before" ]] && cat "$rn/ip_forward.before" >/proc/sys/net/ipv4/ip_forward

# Containerd's shims keep their sockets in /run/containerd/s whatever the state directory.
if [[ -f "$rn/host-before" ]] && ! existed run-containerd; then
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
fi

rm -rf "$rn"
