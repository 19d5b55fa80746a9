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
  build_module "$cache/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "-s -w" etcd=go.etcd.io/etcd/server/v3
}

# kwok also ships its stages (simulated pod and node lifecycles), from the module's kustomize/stage.
build_kwok() {
  local v="$KWOK_VERSION" out="$cache/kwok-$KWOK_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kwok $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  go_module "$work" sigs.k8s.io/kwok "$v" sigs.k8s.io/kwok/cmd/kwok
  go_program "$work" "$out" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v" kwok=sigs.k8s.io/kwok/cmd/kwok
  mkdir -p "$out.tmp/stages"
  cp -r "$(cd "$work" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage/." "$out.tmp/stages/"
  chmod -R u+w "$out.tmp/stages"
  finish "$out"
  rm -rf "$work"
}

build_etcd
build_kwok
build_kubernetes
log "control plane binaries ready in $cache"
