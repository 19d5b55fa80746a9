#!/usr/bin/env bash
# Vendors the dashboard's third-party files (src/gateway/dashboard/vendor/vendor.lock) from the npm
# registry: each package's tarball must match the integrity pinned in the lock before a file is
# taken from it. Bare imports between vendored modules (`from"preact"`) become relative ones, since
# the browser loads them without a bundler or an import map (the CSP allows no inline script).
# SHA256SUMS records what was vendored; a test checks the committed files against it, offline.
# Only this script needs the registry; `cargo build` and the dashboard need nothing from it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendor="$here/../src/gateway/dashboard/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

while IFS=$'\t' read -r package version integrity path output; do
  [[ -z "$package" || "$package" == \#* ]] && continue
  tarball="$work/$(echo "$package-$version" | tr '/@' '__').tgz"
  if [[ ! -f "$tarball" ]]; then
    url="$(npm view "$package@$version" dist.tarball)"
    curl -fsSL "$url" -o "$tarball"
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [[ "$actual" != "$integrity" ]]; then
      echo "vendor-dashboard: $package@$version is $actual, not $integrity as pinned" >&2
      exit 1
    fi
  fi
  tar -xzf "$tarball" -O "$path" |
    sed -e 's#from"preact"#from"./preact.js"#g' -e "s#from 'preact'#from './preact.js'#g" -e '/^\/\/# sourceMappingURL=/d' >"$vendor/$output"
  echo "vendored $package@$version $path as $output" >&2
done <"$vendor/vendor.lock"
(cd "$vendor" && sha256sum -- *.js *.css 2>/dev/null | sort -k2 >SHA256SUMS)
