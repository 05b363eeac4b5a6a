#!/usr/bin/env bash
# Builds the pullpass container image with buildah, from `scratch`: no base
# image is pulled, so it builds offline. The image has the same layout and
# configuration as packaging/Containerfile's (for docker builds); both lay
# their files out with scripts/image-rootfs.sh, and tests/image.rs checks
# that they agree:
#   /usr/local/bin/        pullpassd (the entrypoint), pullpass,
#                          docker-credential-pullpass,
#                          pullpass-kubelet-credential-provider: stripped
#   /lib/x86_64-linux-gnu/ the glibc libraries they link (ldd), and the
#   /lib64/                dynamic loader
#   /etc/                  passwd and group (nonroot 65532:65532),
#                          nsswitch.conf, ssl/certs/ca-certificates.crt
#   /var/lib/pullpass      the data directory (a volume), owned by 65532
#   /tmp
# No shell, no package manager. Two layers: the base files, then the binaries
# (an upgrade changes only the second).
#
# Usage: scripts/build-image.sh [options]
#   --tag NAME           image name (default $PULLPASS_IMAGE or localhost/pullpass:dev)
#   --binaries DIR       take the four binaries from DIR as they are (e.g.
#                        target/debug, already built); no cargo
#   --profile NAME       else build them with cargo (cargo build --profile NAME
#                        --locked -p pullpass-server -p pullpass-client --bins,
#                        a no-op when up to date):
#                          image    the default, as packaging/Containerfile:
#                                   release with fat LTO and one codegen unit
#                                   (Cargo.toml's [profile.image]), target/image;
#                                   the smallest binaries, the slowest build
#                          release  cargo build --release, target/release
#                          dev      target/debug
#   --debug-dir DIR      where the binaries' debug info goes, NAME.debug
#                        (default target/image/debug); the stripped binaries
#                        link to it (.gnu_debuglink)
#   --root DIR, --runroot DIR, --storage-driver NAME
#                        buildah's storage (default: buildah's own, or what
#                        CONTAINERS_STORAGE_CONF says); tests use a private
#                        root with --storage-driver vfs
#   --no-sizes           skip the size report (it pushes the image to a
#                        temporary OCI layout to measure compressed layers)
#   -h, --help           this text
#
# At the end it prints the image's size, each layer's content size
# (uncompressed, and gzip as a registry would send it) and each binary's size
# as built and stripped. Idempotent: the tag moves to the new image, and the
# image it named before is removed unless a container uses it. Runs unattended (CI: root, no stdin). Needs buildah (Debian:
# apt-get install -y buildah; scripts/install-test-deps.sh installs it),
# binutils and ca-certificates.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

say() { printf 'build-image: %s\n' "$*"; }
fail() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

tag=${PULLPASS_IMAGE:-localhost/pullpass:dev}
binaries='' profile=image debug_dir=$target/image/debug sizes=yes
storage=()
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --binaries) binaries=${2:?--binaries needs a directory}; shift 2 ;;
    --profile) profile=${2:?--profile needs image, release or dev}; shift 2 ;;
    --debug-dir) debug_dir=${2:?--debug-dir needs a directory}; shift 2 ;;
    --root | --runroot | --storage-driver) storage+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --no-sizes) sizes=no; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument $1 (see --help)" ;;
  esac
done
command -v buildah >/dev/null 2>&1 || fail "buildah is missing (apt-get install -y buildah, or scripts/install-test-deps.sh)"

# --- the binaries ------------------------------------------------------------------
if [ -z "$binaries" ]; then
  case $profile in
    image) cargo_profile=(--profile image); binaries=$target/image ;;
    release) cargo_profile=(--release); binaries=$target/release ;;
    dev | debug) cargo_profile=(); binaries=$target/debug ;;
    *) fail "--profile $profile: expected image, release or dev" ;;
  esac
  say "cargo build ${cargo_profile[*]} --locked -p pullpass-server -p pullpass-client --bins"
  started=$SECONDS
  (cd "$root" && cargo build "${cargo_profile[@]}" --locked -p pullpass-server -p pullpass-client --bins) </dev/null
  say "cargo build took $((SECONDS - started)) s"
fi
[ -d "$binaries" ] || fail "$binaries is not a directory"
binaries=$(cd "$binaries" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/pullpass-image.XXXXXX")
ctr=''
base=''
b() { buildah "${storage[@]}" "$@"; }
cleanup() {
  [ -z "$ctr" ] || b rm "$ctr" >/dev/null 2>&1 || true
  [ -z "$base" ] || b rmi "$base" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the files (the same script as packaging/Containerfile's build stage) ---------
"$root/scripts/image-rootfs.sh" --from "$binaries" --bin "$work/bin" --debug "$work/debug" \
  --rootfs "$work/rootfs" --data "$work/data"
mkdir -p "$debug_dir"
cp "$work"/debug/*.debug "$debug_dir"/
say "binaries from $binaries, stripped; debug info in $debug_dir"

# --- layer 1: libraries, certificates, users, data directory ----------------------
ctr=$(b from --quiet --pull=false --format docker scratch </dev/null)
b copy --quiet "$ctr" "$work/rootfs/" / >/dev/null
b copy --quiet --chown 65532:65532 "$ctr" "$work/data/" /var/lib/ >/dev/null
b config --created-by "scripts/image-rootfs.sh: libraries, CA certificates, /etc, /var/lib/pullpass" "$ctr"
base=$(b commit --quiet --format docker --identity-label=false "$ctr" </dev/null)
b rm "$ctr" >/dev/null
ctr=''

# --- layer 2: the binaries, and the configuration ---------------------------------
# Keep in step with packaging/Containerfile's runtime stage (tests/image.rs
# compares them).
ctr=$(b from --quiet --pull=false --format docker "$base" </dev/null)
b copy --quiet "$ctr" "$work/bin/" /usr/local/bin/ >/dev/null
b config \
  --created-by "scripts/build-image.sh: /usr/local/bin (stripped)" \
  --label org.opencontainers.image.title=pullpass \
  --label "org.opencontainers.image.description=pullpass registry-credential broker (pullpassd) and its clients" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env PULLPASS_DATA_DIR=/var/lib/pullpass \
  --user 65532:65532 \
  --workingdir /var/lib/pullpass \
  --volume /var/lib/pullpass \
  --port 50051/tcp --port 50052/tcp --port 9464/tcp \
  --stop-signal SIGTERM \
  --healthcheck 'CMD /usr/local/bin/pullpassd healthcheck 127.0.0.1:50051' \
  --healthcheck-interval 30s --healthcheck-timeout 5s --healthcheck-start-period 10s --healthcheck-retries 3 \
  --entrypoint '["/usr/local/bin/pullpassd"]' \
  --cmd '["--data-dir", "/var/lib/pullpass", "--listen", "0.0.0.0:50051"]' \
  "$ctr"
# Docker format: the OCI image config has no HEALTHCHECK.
previous=$(b images --quiet --no-trunc "$tag" 2>/dev/null || true)
image=$(b commit --quiet --format docker --identity-label=false "$ctr" "$tag" </dev/null)
b rm "$ctr" >/dev/null
ctr=''
b rmi "$base" >/dev/null 2>&1 || true
base=''
# The image the tag named before, now untagged (kept if a container uses it).
if [ -n "$previous" ] && [ "${previous#sha256:}" != "${image#sha256:}" ]; then
  b rmi "$previous" >/dev/null 2>&1 || true
fi
say "built $tag (${image:0:12})"

# --- sizes ---------------------------------------------------------------------------
[ "$sizes" = yes ] || exit 0
human() { awk -v n="$1" 'BEGIN { printf "%.1f MB", n / 1000000 }'; }
b push --quiet --format oci "$tag" "oci:$work/layout:image" </dev/null >/dev/null
manifest=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$work/layout/index.json")
[ -n "$manifest" ] || fail "no manifest in the pushed layout"
# diff IDs (uncompressed) from the config, blobs (gzip) from the manifest.
blob() { cat "$work/layout/blobs/sha256/$1"; }
config=$(blob "$manifest" | tr ',' '\n' | sed -n '/"config"/,/}/s/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' | head -n 1)
mapfile -t gz_layers < <(blob "$manifest" | sed 's/.*"layers":\[//' | tr '}' '\n' | sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p')
mapfile -t created_by < <(blob "$config" | tr '{}' '\n\n' | grep -v '"empty_layer":true' | sed -n 's/.*"created_by":"\([^"]*\)".*/\1/p')
total=0 total_gz=0
for i in "${!gz_layers[@]}"; do
  gz=$(stat -c %s "$work/layout/blobs/sha256/${gz_layers[$i]}")
  raw=$(gzip -dc "$work/layout/blobs/sha256/${gz_layers[$i]}" | wc -c)
  total=$((total + raw)) total_gz=$((total_gz + gz))
  say "layer $((i + 1)): $(human "$raw") ($raw bytes), gzip $(human "$gz"): ${created_by[$i]:-}"
done
say "image $tag: $(human "$total") in ${#gz_layers[@]} layers ($total bytes of layer tars), $(human "$total_gz") gzip"
for name in pullpassd pullpass docker-credential-pullpass pullpass-kubelet-credential-provider; do
  stripped=$(stat -c %s "$work/bin/$name")
  say "$name: $(human "$(stat -c %s "$binaries/$name")") as built, $(human "$stripped") stripped ($stripped bytes), debug file $(human "$(stat -c %s "$work/debug/$name.debug")")"
done
