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

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

# A throwaway wrapper module: a dependency's `replace` directives are ignored by Go, so the
# wrapper is the main module that pins each k8s.io staging module to its published version.
wrapper() {
  local dir="$1"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'module ooda.local/controlplane\n\ngo 1.26\n' >"$dir/go.mod"
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" out="$cache/kubernetes-$KUBERNETES_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kubernetes $v (apiserver, controller-manager, scheduler, kubectl)"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  local modfile
  modfile="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local staging_version="v0.${v#v1.}"
  # Every `k8s.io/x => ./staging/src/k8s.io/x` replace becomes `k8s.io/x => k8s.io/x v0.Y.Z`.
  local replaces
  replaces="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$modfile")"
  [[ -n "$replaces" ]] || { log "no staging replaces found in $modfile"; exit 1; }
  {
    printf 'require k8s.io/kubernetes %s\n' "$v"
    for m in $replaces; do printf 'replace %s => %s %s\n' "$m" "$m" "$staging_version"; done
  } >>"$work/go.mod"
  cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$work" && go mod tidy)
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$v"
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.complete"
  rm -rf "$work"
}

build_etcd() {
  local v="$ETCD_VERSION" out="$cache/etcd-$ETCD_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building etcd $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require go.etcd.io/etcd/server/v3 %s\n' "$v" >>"$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$work/tools.go"
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.complete"
  rm -rf "$work"
}

build_kwok() {
  local v="$KWOK_VERSION" out="$cache/kwok-$KWOK_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kwok $v"
  local work; work="$(mktemp -d)"
  wrapper "$work"
  printf 'require sigs.k8s.io/kwok %s\n' "$v" >>"$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kwok/cmd/kwok"\n' >"$work/tools.go"
  (cd "$work" && go mod tidy)
  mkdir -p "$out.tmp/stages"
  (cd "$work" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v" -o "$out.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  local src; src="$(cd "$work" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  cp -r "$src/kustomize/stage/." "$out.tmp/stages/"
  chmod -R u+w "$out.tmp/stages"
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.complete"
  rm -rf "$work"
}

build_etcd
build_kwok
build_kubernetes
log "control plane binaries ready in $cache"
