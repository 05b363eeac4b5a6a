#!/usr/bin/env bash
# Lints the pullpass.v1 contract with buf (STANDARD rules, exceptions in
# buf.yaml) and checks it for breaking changes against the previous commit's
# proto/ (`buf breaking --against .git#ref=HEAD~1,subdir=proto`), offline.
# buf comes from npm (@bufbuild/buf, pinned in scripts/node/package-lock.json),
# installed by scripts/install-test-deps.sh into .tools/node.
# Usage: scripts/check-api.sh [AGAINST]   (AGAINST: any buf input; default
# the previous commit). The test suite runs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
buf=${PULLPASS_TOOLS_DIR:-$root/.tools}/node/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
  echo "check-api: buf not found at $buf: run scripts/install-test-deps.sh" >&2
  exit 1
fi
against=${1:-}
if [ -z "$against" ]; then
  if ! git rev-parse --verify --quiet HEAD~1 >/dev/null; then
    echo "check-api: no previous commit to compare with (a shallow clone?); pass an input to compare against" >&2
    exit 1
  fi
  against=".git#ref=HEAD~1,subdir=proto"
fi
echo "check-api: buf $("$buf" --version) lint"
"$buf" lint
echo "check-api: buf breaking against $against"
"$buf" breaking --against "$against"
echo "check-api: the contract lints and breaks nothing"
