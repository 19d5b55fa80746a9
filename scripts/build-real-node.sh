#!/usr/bin/env bash
# Builds the bed's real node from the Go module proxy at the versions pinned in
# scripts/versions.env, into a cache outside the repository keyed by version:
#   $OODA_CACHE/realnode/kubelet-<v>/kubelet
#   $OODA_CACHE/realnode/containerd-<v>/{containerd,ctr,containerd-shim-runc-v2}
#   $OODA_CACHE/realnode/gvisor-<v>-<patch>/{runsc,containerd-shim-runsc-v1}
#   $OODA_CACHE/realnode/kube-network-policies-<v>/kube-network-policies
#   $OODA_CACHE/realnode/local-path-provisioner-<v>/local-path-provisioner
# runc and the CNI plugins are Debian's (scripts/install-prerequisites.sh). Run after the control
# plane's build: kubelet then reuses most of its compiled packages.
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
  local v="$CONTAINERD_VERSION" out="$cache/containerd-$CONTAINERD_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building containerd $v"
  local work; work="$(mktemp -d)"
  local commands=(github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
  wrapper "$work"
  printf 'require github.com/containerd/containerd/v2 %s\n' "$v" >>"$work/go.mod"
  tools_go "$work" "${commands[@]}"
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp"
  # The snapshotters this node does not use need cgo or kernel features; overlayfs is built in.
  (cd "$work" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$v" -o "$out.tmp/" "${commands[@]}")
  finish "$out"
  rm -rf "$work"
}

build_gvisor() {
  local v="$GVISOR_VERSION" out="$gvisor_bin"
  [[ -f "$out/.complete" ]] && return 0
  log "building gVisor $v (runsc, containerd-shim-runsc-v1)"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require gvisor.dev/gvisor %s\n' "$v" >>"$work/go.mod"
  local src; src="$(cd "$work" && go mod download -json "gvisor.dev/gvisor@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  cp -r "$src" "$work/gvisor" && chmod -R u+w "$work/gvisor"
  patch -s -d "$work/gvisor" -p1 <"$here/realnode/gvisor-shim-oom-score.patch"
  printf 'replace gvisor.dev/gvisor => ./gvisor\n' >>"$work/go.mod"
  tools_go "$work" gvisor.dev/gvisor/runsc gvisor.dev/gvisor/shim
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/runsc" gvisor.dev/gvisor/runsc &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/containerd-shim-runsc-v1" gvisor.dev/gvisor/shim)
  finish "$out"
  rm -rf "$work"
}

build_kube_network_policies() {
  local v="$KUBE_NETWORK_POLICIES_VERSION" out="$cache/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kube-network-policies $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require sigs.k8s.io/kube-network-policies %s\n' "$v" >>"$work/go.mod"
  tools_go "$work" sigs.k8s.io/kube-network-policies/cmd
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/kube-network-policies" sigs.k8s.io/kube-network-policies/cmd)
  finish "$out"
  rm -rf "$work"
}

build_local_path_provisioner() {
  local v="$LOCAL_PATH_PROVISIONER_VERSION" out="$cache/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building local-path-provisioner $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require github.com/rancher/local-path-provisioner %s\n' "$v" >>"$work/go.mod"
  tools_go "$work" github.com/rancher/local-path-provisioner
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/local-path-provisioner" github.com/rancher/local-path-provisioner)
  finish "$out"
  rm -rf "$work"
}

build_kubelet
build_containerd
build_gvisor
build_kube_network_policies
build_local_path_provisioner
log "real node binaries ready in $cache"
