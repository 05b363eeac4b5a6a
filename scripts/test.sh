#!/usr/bin/env bash
# Installs what the tests need (scripts/install-test-deps.sh), builds every
# binary, and runs the whole suite: unit tests, end-to-end tests against the
# real peers, doctests. The README's test command; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
fi
