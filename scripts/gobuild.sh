# Building Go programs from the module proxy into the version-keyed cache. Sourced, not executed.
# shellcheck shell=bash
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

# wrapper DIR: a throwaway main module. A dependency's `replace` directives are ignored by Go, so
# the wrapper is the main module that pins what the built program's own go.mod replaces.
wrapper() {
  local dir="$1"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'module ooda.local/build\n\ngo 1.26\n' >"$dir/go.mod"
}

# kubernetes_wrapper DIR VERSION PACKAGE...: a wrapper that builds k8s.io/kubernetes commands at
# VERSION, with every `k8s.io/x => ./staging/src/k8s.io/x` replace turned into the published
# `k8s.io/x v0.Y.Z` of the same release.
kubernetes_wrapper() {
  local dir="$1" v="$2"; shift 2
  wrapper "$dir"
  local modfile
  modfile="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local staging_version="v0.${v#v1.}" replaces
  replaces="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$modfile")"
  [[ -n "$replaces" ]] || { log "no staging replaces found in $modfile"; return 1; }
  {
    printf 'require k8s.io/kubernetes %s\n' "$v"
    for m in $replaces; do printf 'replace %s => %s %s\n' "$m" "$m" "$staging_version"; done
  } >>"$dir/go.mod"
  tools_go "$dir" "$@"
  (cd "$dir" && go mod tidy)
}

# tools_go DIR PACKAGE...: makes the wrapper require the packages it builds.
tools_go() {
  local dir="$1"; shift
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } >"$dir/tools.go"
}

kubernetes_ldflags() { # kubernetes_ldflags VERSION
  printf '%s' "-s -w -X k8s.io/component-base/version.gitVersion=$1 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$1"
}

# go_module WORK MODULE VERSION PACKAGE...: makes the wrapper in WORK require MODULE at VERSION,
# ready to build the packages.
go_module() {
  local work="$1" module="$2" version="$3"; shift 3
  printf 'require %s %s\n' "$module" "$version" >>"$work/go.mod"
  tools_go "$work" "$@"
  (cd "$work" && go mod tidy)
}

# go_program WORK OUT LDFLAGS NAME=PACKAGE...: builds each package into OUT.tmp/NAME (GO_TAGS, if
# set, are its build tags).
go_program() {
  local work="$1" out="$2" ldflags="$3" pair; shift 3
  mkdir -p "$out.tmp"
  for pair in "$@"; do
    (cd "$work" && go build -trimpath -tags "${GO_TAGS:-}" -ldflags "$ldflags" -o "$out.tmp/${pair%%=*}" "${pair#*=}")
  done
}

# build_module OUT MODULE VERSION LDFLAGS NAME=PACKAGE...: the whole of a plain build, skipped when
# OUT is complete.
build_module() {
  local out="$1" module="$2" version="$3" ldflags="$4"; shift 4
  [[ -f "$out/.complete" ]] && return 0
  log "building $module $version"
  local work pair packages=()
  work="$(mktemp -d)"
  for pair in "$@"; do packages+=("${pair#*=}"); done
  wrapper "$work"
  go_module "$work" "$module" "$version" "${packages[@]}"
  go_program "$work" "$out" "$ldflags" "$@"
  finish "$out"
  rm -rf "$work"
}

# finish OUT: the staged OUT.tmp becomes OUT, marked complete, so a later run skips it.
finish() {
  local out="$1"
  rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.complete"
}
