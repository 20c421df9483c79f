#!/usr/bin/env bash
# Install what the tests and benchmarks need, only when something is missing (idempotent).
#
#   fio             fio (links libaio)         fusermount3   fuse3
#   mkfs.ext4       e2fsprogs                  losetup       mount (util-linux)
#   fallocate, fstrim, truncate ...            util-linux / coreutils
#   qemu-img, qemu-storage-daemon              qemu-utils (or qemu-system-common on
#                                              releases that ship the daemon there)
#   qemu-io, qemu-nbd                          qemu-utils
#   nbdinfo, nbdcopy                           libnbd-bin (the NBD tests' clients)
#   promtool (checks a /metrics scrape)        prometheus
#   curl (scrapes /metrics)                    curl
#   etcd (the cluster tests' catalog)          etcd-server
#   protoc (builds etcd-client's gRPC code)    protobuf-compiler
#
# Also makes sure /dev/fuse and the loop devices are usable. Debian/Ubuntu (apt-get) only.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-deps: not root and no sudo; cannot install packages" >&2
    fi
fi

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=()
have fio || missing+=(fio)
have fusermount3 || missing+=(fuse3)
{ have mkfs.ext4 && have e2fsck; } || missing+=(e2fsprogs)
have losetup || missing+=(mount)
{ have fallocate && have fstrim; } || missing+=(util-linux)
{ have truncate && have dd && have cmp; } || missing+=(coreutils diffutils)
{ have qemu-img && have qemu-storage-daemon && have qemu-io && have qemu-nbd; } || missing+=(qemu-utils)
{ have nbdinfo && have nbdcopy; } || missing+=(libnbd-bin)
have promtool || missing+=(prometheus)
have curl || missing+=(curl)
# Backups (issue 14): volume information as extended attributes.
{ have getfattr && have setfattr; } || missing+=(attr)
have etcd || missing+=(etcd-server)
have protoc || missing+=(protobuf-compiler)

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: apt-get not found; install these by hand: $*" >&2
        return 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# Debian 12's qemu 7.2 ships qemu-storage-daemon in qemu-system-common, later releases in
# qemu-utils.
if ! have qemu-storage-daemon; then
    echo "install-deps: qemu-storage-daemon not in qemu-utils here; trying qemu-system-common"
    apt_install qemu-system-common || true
fi

# /dev/fuse
if [ ! -c /dev/fuse ]; then
    $SUDO modprobe fuse 2>/dev/null || true
    if [ ! -c /dev/fuse ]; then
        $SUDO mknod -m 0666 /dev/fuse c 10 229 || true
    fi
fi

# Loop devices (modprobe may be impossible in a container; the control device may exist).
if ! losetup -f >/dev/null 2>&1; then
    $SUDO modprobe loop 2>/dev/null || true
    if [ ! -e /dev/loop-control ]; then
        $SUDO mknod -m 0660 /dev/loop-control c 10 237 || true
    fi
    for i in 0 1 2 3 4 5 6 7; do
        [ -e "/dev/loop$i" ] || $SUDO mknod -m 0660 "/dev/loop$i" b 7 "$i" || true
    done
fi

status=0
for t in fio fusermount3 mkfs.ext4 e2fsck losetup fallocate fstrim qemu-img qemu-storage-daemon \
    qemu-io qemu-nbd nbdinfo nbdcopy; do
    if ! have "$t"; then
        echo "install-deps: still missing: $t" >&2
        status=1
    fi
done
for t in etcd protoc; do
    have "$t" || { echo "install-deps: still missing: $t" >&2; status=1; }
done
[ -c /dev/fuse ] || { echo "install-deps: /dev/fuse is not available" >&2; status=1; }
if ! losetup -f >/dev/null 2>&1; then
    echo "install-deps: no free loop device (losetup -f fails); the ext4 tests will fail" >&2
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "install-deps: all test dependencies present"
fi
exit "$status"
