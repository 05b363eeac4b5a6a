#!/usr/bin/env bash
# Builds release binaries and runs benchmarks that print their figures.
# Usage: scripts/bench.sh [foundation|broker|sdk|gateway|replicas|startup|clouds ...]   (default: every bench)
# The broker and replicas benches drive pullpassd with h2load (Debian
# nghttp2-client), which this script installs when missing; the gateway and
# replicas benches need the test peers (docker-registry, skopeo, PostgreSQL,
# the issuer fixture; the clouds bench: moto and the cloud fixtures),
# installed by scripts/install-test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v h2load >/dev/null 2>&1 && { [ $# -eq 0 ] || [[ " $* " == *" broker "* ]] || [[ " $* " == *" replicas "* ]]; }; then
  echo "bench: installing nghttp2-client (h2load)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nghttp2-client >/dev/null
fi
if [ $# -eq 0 ] || [[ " $* " == *" gateway "* ]] || [[ " $* " == *" replicas "* ]] || [[ " $* " == *" clouds "* ]]; then
  scripts/install-test-deps.sh
fi
cargo build --release --workspace --bins --locked
if [ $# -eq 0 ]; then
  cargo bench -p pullpass-tests --locked
else
  for bench in "$@"; do cargo bench -p pullpass-tests --locked --bench "$bench"; done
fi
