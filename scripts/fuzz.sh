#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time, on the stable
# toolchain (cargo fuzz with --sanitizer none; no nightly needed).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET ...]   (default: 20 s per target, every target)
#
# Each target starts from its seed corpus (fuzz/corpus/TARGET, read only)
# plus what earlier runs found (target/fuzz/corpus/TARGET). A failing input
# is written to target/fuzz/artifacts/TARGET/ and the script exits non-zero
# after the other targets ran; rerun one with
#   .tools/cargo/bin/cargo-fuzz run --fuzz-dir fuzz --sanitizer none -O TARGET FILE
# cargo-fuzz is installed into .tools/cargo by this script when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-20}
shift || true
CARGO_FUZZ_VERSION=0.13.2
tools=${PULLPASS_TOOLS_DIR:-$root/.tools}
cargo_fuzz=$tools/cargo/bin/cargo-fuzz
if ! "$cargo_fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools/cargo" >&2
  cargo install --quiet --locked --root "$tools/cargo" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH=$tools/cargo/bin:$PATH
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
echo "fuzz: building ${#targets[@]} targets (release, --sanitizer none)" >&2
started=$(date +%s)
cargo fuzz build --fuzz-dir fuzz --sanitizer none -O >/dev/null
echo "fuzz: built in $(( $(date +%s) - started )) s" >&2
work=$root/target/fuzz
failed=()
printf '%-24s %10s %10s %8s %8s  %s\n' target runs exec/s cov corpus result
for target in "${targets[@]}"; do
  mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
  log=$work/$target.log
  status=ok
  if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none -O "$target" \
      "$work/corpus/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$work/artifacts/$target/" -print_final_stats=1 >"$log" 2>&1; then
    status="FAILED (see $log)"
    failed+=("$target")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  corpus=$(find "$work/corpus/$target" -type f | wc -l)
  printf '%-24s %10s %10s %8s %8s  %s\n' "$target" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$corpus" "$status"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}; inputs in $work/artifacts/" >&2
  for target in "${failed[@]}"; do
    grep -E "panicked|SUMMARY|Test unit written" "$work/$target.log" | head -n 5 >&2 || true
  done
  exit 1
fi
