#!/usr/bin/env bash
# The crash loop (tests/crash_loop.rs) for ROUNDS rounds: concurrent creates,
# rotations, token minting and leases; kill -9 of pullpassd at a random
# moment; audit verify, keys verify, and every acknowledged write and lease
# event checked after each restart. Prints one line per round and a summary.
# Usage: scripts/crash-loop.sh [ROUNDS]   (default 10, as in the suite)
# PULLPASS_CRASH_SEED=N replays a run's kill moments.
# The server under test is the release build (as deployed; the checks after
# each kill read the whole database, which grows by about a thousand
# credentials a round); PULLPASS_BIN_DIR=target/debug tests the debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
cargo build --release --workspace --bins --locked
export PULLPASS_BIN_DIR=${PULLPASS_BIN_DIR:-$PWD/target/release}
PULLPASS_CRASH_ROUNDS=$rounds cargo test -p pullpass-tests --locked --test crash_loop -- --nocapture
