#!/usr/bin/env bash
# Installs what the tests need (scripts/install-test-deps.sh), builds every
# binary, and runs the whole suite: unit tests, end-to-end tests against the
# real peers, doctests; then the end-to-end broker, access and audit tests a
# second time with every server on PostgreSQL; then every fuzz target for a
# bounded time (scripts/fuzz.sh, PULLPASS_FUZZ_SECONDS per target, default
# 20). The README's test command; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --workspace --bins --locked

# One PostgreSQL cluster for the run; each test creates its own database.
pg_dir=$(mktemp -d /tmp/pullpass-test-pg.XXXXXX)
trap 'scripts/postgres-cluster.sh stop "$pg_dir"' EXIT
eval "$(scripts/postgres-cluster.sh start "$pg_dir")"

on_postgres=(--test registry_broker --test access_matrix --test audit_and_tokens --test cloud_federation)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  PULLPASS_TEST_BACKEND=postgres cargo nextest run -p pullpass-tests --locked --no-fail-fast "${on_postgres[@]}"
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
  PULLPASS_TEST_BACKEND=postgres cargo test -p pullpass-tests --locked --no-fail-fast "${on_postgres[@]}"
fi

# Every fuzz target, bounded (hour-long runs: scripts/fuzz.sh 3600).
scripts/fuzz.sh "${PULLPASS_FUZZ_SECONDS:-20}"
