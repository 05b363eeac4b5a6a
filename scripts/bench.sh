#!/usr/bin/env bash
# Builds release binaries and runs a benchmark that prints its figures.
# Usage: scripts/bench.sh [foundation]   (default: every bench)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked
if [ $# -eq 0 ]; then
  cargo bench -p pullpass-tests --locked
else
  for bench in "$@"; do cargo bench -p pullpass-tests --locked --bench "$bench"; done
fi
