#!/usr/bin/env bash
# Builds the tools that install and check ooda's chart from the Go module proxy, at the versions
# pinned in scripts/versions.env, into a cache outside the repository keyed by version:
#   $OODA_CACHE/tools/helm-<v>/helm
#   $OODA_CACHE/tools/kubeconform-<v>/kubeconform
#   $OODA_CACHE/tools/kstatus-<cli-utils v>-<source hash>/kstatus (scripts/kstatus/main.go)
#   $OODA_CACHE/kind/kind-<v>/kind
#   $OODA_CACHE/tools/anthropic-<v>: a Python virtualenv with Anthropic's SDK from PyPI (the AI
#     relay's tests' client)
#   tests/browser/node_modules: playwright-core and axe-core, as pinned in its package-lock.json
#     (downloads cached in $OODA_CACHE/npm)
#   $OODA_CACHE/tools/kubeconform-schemas-<kubernetes v>-<script hash>/<kind>-<group>-<version>.json,
#     from the OpenAPI documents of the Kubernetes release the bed runs (nothing is fetched at
#     validation time)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

build_module "$helm_dir" helm.sh/helm/v3 "$HELM_VERSION" \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" helm=helm.sh/helm/v3/cmd/helm
build_module "$kubeconform_dir" github.com/yannh/kubeconform "$KUBECONFORM_VERSION" "-s -w" \
  kubeconform=github.com/yannh/kubeconform/cmd/kubeconform
build_module "$kind_dir" sigs.k8s.io/kind "$KIND_VERSION" "-s -w" kind=sigs.k8s.io/kind
if [[ ! -f "$kstatus_dir/.complete" ]]; then
  log "building kstatus (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION)"
  work="$(mktemp -d)"
  wrapper "$work"
  cp "$here/kstatus/main.go" "$work/main.go"
  printf 'require sigs.k8s.io/cli-utils %s\n' "$CLI_UTILS_VERSION" >>"$work/go.mod"
  (cd "$work" && go mod tidy)
  go_program "$work" "$kstatus_dir" "-s -w" kstatus=.
  finish "$kstatus_dir"
  rm -rf "$work"
fi
if [[ ! -f "$kubeconform_schemas/.complete" ]]; then
  log "writing kubeconform's schemas for Kubernetes $KUBERNETES_VERSION"
  spec="$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  rm -rf "$kubeconform_schemas.tmp"
  python3 "$here/kubeconform-schemas.py" "$spec/api/openapi-spec/v3" "$kubeconform_schemas.tmp"
  finish "$kubeconform_schemas"
fi
# virtualenv DIR REQUIREMENT: a Python virtualenv in DIR holding REQUIREMENT from PyPI. A
# virtualenv names its own path inside: built in place, complete once marked.
virtualenv() {
  [[ -f "$1/.complete" ]] && return
  log "installing $2 into $1"
  rm -rf "$1"
  python3 -m venv "$1"
  "$1/bin/pip" install --quiet --disable-pip-version-check "$2"
  touch "$1/.complete"
}
virtualenv "$anthropic_dir" "anthropic==$ANTHROPIC_SDK_VERSION"
virtualenv "$schemathesis_dir" "schemathesis==$SCHEMATHESIS_VERSION"
# The browser tests' packages: `npm ci` checks each against the lock's integrity.
browser="$repo/tests/browser"
lock_sum="$(sha256sum "$browser/package-lock.json" | cut -c1-64)"
if [[ "$(cat "$browser/node_modules/.installed-lock" 2>/dev/null)" != "$lock_sum" ]]; then
  log "installing the browser tests' packages (npm ci)"
  npm ci --prefix "$browser" --cache "$cache/npm" --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$browser/node_modules/.installed-lock"
fi
log "tools ready: $helm_dir/helm, $kubeconform_dir/kubeconform, $kind_dir/kind, $anthropic_dir, $schemathesis_dir, $browser/node_modules"
