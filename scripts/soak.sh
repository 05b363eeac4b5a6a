#!/usr/bin/env bash
# Soak: MINUTES of mixed traffic (leases, credential writes, lists, revoked
# and expired tokens) against one release pullpassd at default settings
# (info logs to a file, audit on, metrics on). Prints, every minute, its
# resident memory, open file descriptors and the p50/p99 latency of each
# kind of call; fails if descriptors or memory grew, or if any call failed
# or a dead token was let through. The suite runs the same test for 30 s.
# Usage: scripts/soak.sh [MINUTES]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
case $minutes in
  ''|*[!0-9]*) echo "usage: scripts/soak.sh [MINUTES]" >&2; exit 2 ;;
esac
cargo build --release --workspace --bins --locked
echo "soak: ${minutes} min, reporting every minute (release pullpassd)" >&2
PULLPASS_BIN_DIR=$PWD/target/release \
PULLPASS_SOAK_SECONDS=$((minutes * 60)) \
PULLPASS_SOAK_REPORT_SECONDS=60 \
  cargo test -p pullpass-tests --locked --test soak -- --nocapture --test-threads 1
