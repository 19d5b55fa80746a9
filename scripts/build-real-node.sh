#!/usr/bin/env bash
# Builds the bed's real node from the Go module proxy at the versions pinned in
# scripts/versions.env, into a cache outside the repository keyed by version:
#   $OODA_CACHE/realnode/kubelet-<v>/kubelet
#   $OODA_CACHE/realnode/containerd-<v>/{containerd,ctr,containerd-shim-runc-v2}
#   $OODA_CACHE/realnode/gvisor-<v>-<patches>/{runsc,containerd-shim-runsc-v1} (scripts/realnode/gvisor-*.patch)
#   $OODA_CACHE/realnode/kube-network-policies-<v>/kube-network-policies
#   $OODA_CACHE/realnode/local-path-provisioner-<v>/local-path-provisioner
# runc and the CNI plugins are Debian's (scripts/install-prerequisites.sh). Run after the control
# plane's build: kubelet then reuses most of its compiled packages. Arguments name the pieces to
# build (default: all).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
cache="$realnode_bin"
mkdir -p "$cache"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"


build_kubelet() {
  local v="$KUBERNETES_VERSION" out="$cache/kubelet-$KUBERNETES_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kubelet $v"
  local work; work="$(mktemp -d)"
  kubernetes_wrapper "$work" "$v" k8s.io/kubernetes/cmd/kubelet
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "$(kubernetes_ldflags "$v")" -o "$out.tmp/" k8s.io/kubernetes/cmd/kubelet)
  finish "$out"
  rm -rf "$work"
}

build_containerd() {
  local v="$CONTAINERD_VERSION" m=github.com/containerd/containerd/v2
  # The snapshotters this node does not use need cgo or kernel features; overlayfs is built in.
  GO_TAGS="no_btrfs no_devmapper no_zfs no_aufs" build_module "$cache/containerd-$v" "$m" "$v" \
    "-s -w -X $m/version.Version=$v" containerd="$m/cmd/containerd" ctr="$m/cmd/ctr" \
    containerd-shim-runc-v2="$m/cmd/containerd-shim-runc-v2"
}

# The shim is built from a patched copy of the module, so the wrapper replaces the module with it.
build_gvisor() {
  local v="$GVISOR_VERSION" out="$gvisor_bin"
  [[ -f "$out/.complete" ]] && return 0
  log "building gVisor $v (runsc, containerd-shim-runsc-v1)"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  local src; src="$(cd "$work" && go mod download -json "gvisor.dev/gvisor@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  cp -r "$src" "$work/gvisor" && chmod -R u+w "$work/gvisor"
  for fix in "$here"/realnode/gvisor-*.patch; do patch -s -d "$work/gvisor" -p1 <"$fix"; done
  printf 'replace gvisor.dev/gvisor => ./gvisor\n' >>"$work/go.mod"
  go_module "$work" gvisor.dev/gvisor "$v" gvisor.dev/gvisor/runsc gvisor.dev/gvisor/shim
  go_program "$work" "$out" "-s -w" runsc=gvisor.dev/gvisor/runsc containerd-shim-runsc-v1=gvisor.dev/gvisor/shim
  finish "$out"
  rm -rf "$work"
}

build_kube_network_policies() {
  local v="$KUBE_NETWORK_POLICIES_VERSION"
  build_module "$cache/kube-network-policies-$v" sigs.k8s.io/kube-network-policies "$v" "-s -w" \
    kube-network-policies=sigs.k8s.io/kube-network-policies/cmd
}

build_local_path_provisioner() {
  local v="$LOCAL_PATH_PROVISIONER_VERSION"
  build_module "$cache/local-path-provisioner-$v" github.com/rancher/local-path-provisioner "$v" "-s -w" \
    local-path-provisioner=github.com/rancher/local-path-provisioner
}

# Every piece, or those named: `build-real-node.sh gvisor` builds only gVisor.
pieces=("$@")
((${#pieces[@]})) || pieces=(kubelet containerd gvisor kube-network-policies local-path-provisioner)
for piece in "${pieces[@]}"; do
  declare -F "build_${piece//-/_}" >/dev/null || { log "no piece $piece"; exit 2; }
  "build_${piece//-/_}"
done
log "real node binaries ready in $cache: ${pieces[*]}"
