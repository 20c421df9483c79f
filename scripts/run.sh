#!/usr/bin/env bash
# Start fusevol with the embedded default: builds the binaries, then runs fusevold in the
# foreground on a pool in ./fusevol-data/pool (three sparse 4 GiB arrays and a thin 8 GiB
# volume vol0, created on first start) mounted at ./fusevol-data/mnt. Ctrl-C unmounts.
#   POOL=/path/pool MNT=/path/mnt scripts/run.sh     to choose other places
set -euo pipefail
cd "$(dirname "$0")/.."
POOL=${POOL:-$PWD/fusevol-data/pool}
MNT=${MNT:-$PWD/fusevol-data/mnt}
if [ ! -e /dev/fuse ]; then
    echo "run.sh: /dev/fuse is missing; load the fuse module (modprobe fuse) first" >&2
    exit 1
fi
cargo build --release --bins
mkdir -p "$(dirname "$POOL")"
echo "fusevol: pool $POOL, mount $MNT"
echo "  try:  target/release/fusevol -p $POOL volume list"
echo "        dd if=/dev/urandom of=$MNT/vol0 bs=1M count=64 oflag=direct conv=notrunc"
exec env RUST_LOG="${RUST_LOG:-info}" target/release/fusevold "$POOL" "$MNT"
