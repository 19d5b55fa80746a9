#!/usr/bin/env bash
# Installs s3s-fs (https://github.com/Nugine/s3s, Apache-2.0), the s3s project's S3 server backed by
# a directory, from crates.io at S3S_FS_VERSION (scripts/versions.env), built with the Cargo.lock the
# crate ships (--locked), into a cache keyed by version and patch:
#   $OODA_CACHE/tools/s3s-fs-<v>-<patch hash>/bin/s3s-fs
# One patch, scripts/s3s-fs-nodelay.patch: its binary sets TCP_NODELAY on the connections it
# accepts. Without it every keep-alive GET of a small object waits about 40 ms for the client's
# delayed ACK (Nagle's algorithm holds the body behind the head), which caps serving at
# connections / 40 ms whatever the CPU.
# The sites benchmark (scripts/bench-sites.sh) serves from it next to moto. Pure Rust, no C
# dependencies: a release build of about 200 crates, a few minutes on 2 cores; instant once cached.
# Run by scripts/bench-sites.sh (not by `make tools`: the tests do not need it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"

[[ -f "$s3s_fs_dir/.complete" ]] && exit 0
log "building s3s-fs $S3S_FS_VERSION (crates.io, patched) into $s3s_fs_dir"
started=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The crate's source as crates.io serves it: cargo downloads it for a throwaway package that
# depends on it, and says where it put it.
mkdir -p "$work/fetch/src"
touch "$work/fetch/src/lib.rs"
cat >"$work/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-s3s-fs"
version = "0.0.0"
edition = "2021"

[dependencies]
s3s-fs = "=$S3S_FS_VERSION"

[workspace]
TOML
manifest="$(cd "$work/fetch" && cargo metadata --format-version 1 --quiet | python3 -c '
import json, sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "s3s-fs"))')"
cp -r "$(dirname "$manifest")" "$work/s3s-fs"
chmod -R u+w "$work/s3s-fs"
patch --quiet -p1 -d "$work/s3s-fs" <"$here/s3s-fs-nodelay.patch"
# A target directory of its own, outside the clone and apart from ooda's (no lock shared with
# ooda's builds), removed once the binary is installed.
build="$cache/tools/build-s3s-fs-$S3S_FS_VERSION"
rm -rf "$s3s_fs_dir.tmp"
(cd "$work" && CARGO_TARGET_DIR="$build" cargo install --quiet --locked --no-track \
  --root "$s3s_fs_dir.tmp" --features binary --path "$work/s3s-fs")
"$s3s_fs_dir.tmp/bin/s3s-fs" --version >/dev/null
rm -rf "$s3s_fs_dir" && mv "$s3s_fs_dir.tmp" "$s3s_fs_dir" && touch "$s3s_fs_dir/.complete"
rm -rf "$build"
log "s3s-fs $S3S_FS_VERSION built in $((SECONDS - started))s: $s3s_fs_dir/bin/s3s-fs"
