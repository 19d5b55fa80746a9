#!/usr/bin/env bash
# Builds the local control plane from the Go module proxy at the versions pinned in
# scripts/versions.env, into a cache outside the repository keyed by version:
#   $OODA_CACHE/controlplane/kubernetes-<v>/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $OODA_CACHE/controlplane/etcd-<v>/etcd
#   $OODA_CACHE/controlplane/kwok-<v>/kwok  (+ stages/ from the module's kustomize/stage)
# A component whose directory holds a `.complete` marker is not rebuilt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${OODA_CACHE:-$HOME/.cache/ooda}/controlplane"
mkdir -p "$cache"

# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

build_kubernetes() {
  local v="$KUBERNETES_VERSION" out="$cache/kubernetes-$KUBERNETES_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kubernetes $v (apiserver, controller-manager, scheduler, kubectl)"
  local work; work="$(mktemp -d)"
  local commands=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  kubernetes_wrapper "$work" "$v" "${commands[@]}"
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "$(kubernetes_ldflags "$v")" -o "$out.tmp/" "${commands[@]}")
  finish "$out"
  rm -rf "$work"
}

build_etcd() {
  local v="$ETCD_VERSION" out="$cache/etcd-$ETCD_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building etcd $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require go.etcd.io/etcd/server/v3 %s\n' "$v" >>"$work/go.mod"
  tools_go "$work" go.etcd.io/etcd/server/v3
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  finish "$out"
  rm -rf "$work"
}

build_kwok() {
  local v="$KWOK_VERSION" out="$cache/kwok-$KWOK_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kwok $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require sigs.k8s.io/kwok %s\n' "$v" >>"$work/go.mod"
  tools_go "$work" sigs.k8s.io/kwok/cmd/kwok
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp/stages"
  (cd "$work" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v" -o "$out.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  local src; src="$(cd "$work" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  cp -r "$src/kustomize/stage/." "$out.tmp/stages/"
  chmod -R u+w "$out.tmp/stages"
  finish "$out"
  rm -rf "$work"
}

build_etcd
build_kwok
build_kubernetes
log "control plane binaries ready in $cache"
