#!/usr/bin/env bash
# Assembles what the pullpass image holds, from built binaries, into plain
# directories. One script for both ways of building the image, so that they
# cannot lay it out differently:
#   - scripts/build-image.sh (buildah, from scratch, on this machine);
#   - packaging/Containerfile's build stage (docker/podman build), whose
#     runtime stage is `FROM scratch` and copies these directories in.
#
# Usage: scripts/image-rootfs.sh --from DIR --bin DIR --debug DIR --rootfs DIR --data DIR
#
#   --from DIR    the built binaries: pullpassd, pullpass,
#                 docker-credential-pullpass, pullpass-kubelet-credential-provider
#   --bin DIR     gets them stripped (the image's /usr/local/bin)
#   --debug DIR   gets their debug info, NAME.debug (objcopy --only-keep-debug);
#                 each stripped binary names its file in a .gnu_debuglink
#                 section, so `gdb` finds it with `set debug-file-directory`
#                 or next to the binary
#   --rootfs DIR  gets the rest of the image's files, owned by root:
#                   the shared libraries the binaries link, at the paths ldd
#                   reports (glibc's libc, libm, libgcc_s, and the dynamic
#                   loader /lib64/ld-linux-x86-64.so.2);
#                   /etc/ssl/certs/ca-certificates.crt (Debian's bundle);
#                   /etc/passwd and /etc/group with root, nobody and
#                   nonroot (65532:65532, home /var/lib/pullpass);
#                   /etc/nsswitch.conf (hosts: files dns); /tmp (1777);
#                   /var/lib (0755).
#                 No shell, no package manager, nothing else.
#   --data DIR    gets pullpass/, an empty directory of mode 0700: the image
#                 build copies DIR's content into /var/lib/ owned by
#                 65532:65532, so that /var/lib/pullpass is the runtime user's
#                 and /var/lib stays root's
#
# Needs ldd (libc-bin), objcopy (binutils) and /etc/ssl/certs/ca-certificates.crt
# (ca-certificates): all in rust:*-bookworm and on Debian hosts. Output
# directories are emptied first, so it is idempotent.
set -euo pipefail

BINARIES=(pullpassd pullpass docker-credential-pullpass pullpass-kubelet-credential-provider)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

fail() { printf 'image-rootfs: %s\n' "$*" >&2; exit 1; }

from='' bin='' debug='' rootfs='' data=''
while [ $# -gt 0 ]; do
  case $1 in
    --from) from=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --debug) debug=${2:?}; shift 2 ;;
    --rootfs) rootfs=${2:?}; shift 2 ;;
    --data) data=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$from" ] && [ -n "$bin" ] && [ -n "$debug" ] && [ -n "$rootfs" ] && [ -n "$data" ] \
  || fail "--from, --bin, --debug, --rootfs and --data are all needed (see --help)"
for tool in ldd objcopy; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (Debian: apt-get install -y libc-bin binutils)"
done
[ -f "$CA_BUNDLE" ] || fail "$CA_BUNDLE is missing (Debian: apt-get install -y ca-certificates)"
for name in "${BINARIES[@]}"; do
  [ -x "$from/$name" ] || fail "$from/$name is missing: build it first"
done

umask 022
for dir in "$bin" "$debug" "$rootfs" "$data"; do
  rm -rf "$dir"
  mkdir -p "$dir"
done

# The binaries: debug info apart, then stripped with a link to it.
for name in "${BINARIES[@]}"; do
  objcopy --only-keep-debug "$from/$name" "$debug/$name.debug"
  chmod 0644 "$debug/$name.debug"
  objcopy --strip-all --remove-section=.comment \
    --add-gnu-debuglink="$debug/$name.debug" "$from/$name" "$bin/$name"
  chmod 0755 "$bin/$name"
done

# The shared libraries and the loader, as regular files at the paths the
# binaries look for them (ldd: "name => /path (addr)" or "/path (addr)").
libraries=$(for name in "${BINARIES[@]}"; do ldd "$bin/$name"; done \
  | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libraries" ] || fail "ldd lists no libraries: are these dynamically linked glibc binaries?"
while read -r library; do
  [ -f "$library" ] || fail "ldd names $library, which is not a file here"
  install -D -m 0755 "$(readlink -f "$library")" "$rootfs$library"
done <<<"$libraries"

install -D -m 0644 "$(readlink -f "$CA_BUNDLE")" "$rootfs$CA_BUNDLE"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/var/lib/pullpass:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0755 "$rootfs/var/lib"
# Directories as a package would make them, whatever the caller's umask was.
find "$rootfs" -type d -exec chmod 0755 {} +
chmod 1777 "$rootfs/tmp"
install -d -m 0700 "$data/pullpass"
