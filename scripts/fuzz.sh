#!/usr/bin/env bash
# `make fuzz`: every target in fuzz/ for OODA_FUZZ_SECONDS (300 unless set) or the last argument.
# `make test` runs each for a few seconds, built with --dev: unoptimised, the targets build from
# cold in 6 minutes instead of 15 on these 2 cores, and a few seconds need the seeds replayed more
# than speed (overflow checks are on in both builds). A target starts from its committed seeds
# (fuzz/corpus/<target>) and what earlier runs found (kept outside the clone, so runs build on
# each other); the first failure stops the run, and libFuzzer keeps the input that caused it in
# fuzz/artifacts/<target>/. Prints each target's executions.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"
profile=(--codegen-units 16)
if [[ "${1:-}" == --dev ]]; then
  profile=(--dev)
  shift
fi
seconds="${1:-${OODA_FUZZ_SECONDS:-300}}"

cargo_fuzz_dir="$cache/tools/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [[ ! -x "$cargo_fuzz_dir/bin/cargo-fuzz" ]]; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$cargo_fuzz_dir"
fi
export PATH="$cargo_fuzz_dir/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: libFuzzer's instrumentation needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi

# No sanitizer: what is fuzzed is safe Rust, so AddressSanitizer would only slow every execution;
# the targets assert their properties, and libFuzzer reports panics, hangs and runaway memory.
build=("${profile[@]}" --fuzz-dir "$repo/fuzz" --sanitizer none --target-dir "$cache/fuzz-target")
started=$SECONDS
cargo +nightly fuzz build "${build[@]}"
log "fuzz targets built in $((SECONDS - started))s"

summary=()
for target in $(cargo +nightly fuzz list --fuzz-dir "$repo/fuzz"); do
  found="$cache/fuzz-corpus/$target"
  mkdir -p "$found"
  output="$(mktemp)"
  status=0
  cargo +nightly fuzz run "${build[@]}" "$target" "$found" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$output" 2>&1 || status=$?
  executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$output")"
  coverage="$(grep -o 'cov: [0-9]*' "$output" | tail -1 | cut -d' ' -f2)"
  summary+=("$(printf '%-18s %12s executions  %6s edges  %s' "$target" "${executions:-?}" "${coverage:-?}" \
    "$( ((status == 0)) && echo ok || echo FAILED)")")
  if ((status != 0)); then
    tail -n 60 "$output" >&2
    rm -f "$output"
    printf '%s\n' "${summary[@]}"
    echo "fuzz: $target failed; its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -f "$output"
done
printf '%s\n' "${summary[@]}"
