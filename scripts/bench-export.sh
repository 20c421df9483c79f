#!/usr/bin/env bash
# scripts/bench-export.sh — backups (issue 14): `fusevol volume export` of a fully allocated
# volume vs `dd` and `qemu-img convert` of the same volume file in the mount, and an
# incremental export of 1 % changed vs the full one. Page caches are dropped before each run
# (when root). Prints a markdown table; with --out FILE appends it there.
# Usage: scripts/bench-export.sh [--size 1G] [--out docs/benchmarks.md]
# Environment: BENCH_DIR=/var/tmp, BENCH_FUSEVOL_BIN=target/release. Run under
# `flock /work/bench.lock` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=1G
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
B=${BENCH_FUSEVOL_BIN:-target/release}
B=$(cd "$B" && pwd)
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-export.XXXXXX")
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    mountpoint -q "$W/mnt" 2>/dev/null && fusermount3 -u "$W/mnt" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
drop() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches || true; }
secs() { local s=$(date +%s.%N); "$@" >/dev/null; python3 -c "import time;print(f'{time.time()-$s:.3f}')"; }

"$B/fusevol" init "$W/pool" --array a0:4G --array a1:4G --array a2:4G --extent-size 1M >/dev/null
mkdir "$W/mnt"
"$B/fusevold" "$W/pool" "$W/mnt" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 200); do [ -S "$W/pool/control.sock" ] && mountpoint -q "$W/mnt" && break; sleep 0.1; done
export FUSEVOL_POOL=$W/pool
"$B/fusevol" volume create v --size "$SIZE" >/dev/null
BYTES=$("$B/fusevol" --json volume info v | python3 -c 'import json,sys;print(json.load(sys.stdin)["size"])')
MIB=$((BYTES >> 20))
dd if=/dev/urandom of="$W/mnt/v" bs=1M count=$MIB conv=notrunc,fsync status=none
"$B/fusevol" snapshot create v s1 >/dev/null
drop; T_EXPORT=$(secs "$B/fusevol" volume export v@s1 "$W/full.fvs")
drop; T_DD=$(secs dd if="$W/mnt/.snapshots/v/s1" of="$W/dd.img" bs=1M conv=fsync status=none)
drop; T_QEMU=$(secs sh -c "qemu-img convert -f raw -O raw '$W/mnt/.snapshots/v/s1' '$W/qemu.img' && sync '$W/qemu.img'")
rm -f "$W/dd.img" "$W/qemu.img"
# 1 % changed: 1 MiB at every 100th MiB.
for ((i = 0; i < MIB; i += 100)); do
    dd if=/dev/urandom of="$W/mnt/v" bs=1M count=1 seek=$i conv=notrunc status=none
done
sync "$W/mnt/v"
"$B/fusevol" snapshot create v s2 >/dev/null
drop; T_INC=$(secs "$B/fusevol" volume export v@s2 "$W/inc.fvs" --from s1)
INC_BYTES=$(stat -c %s "$W/inc.fvs")
rate() { python3 -c "print(f'{$MIB/$1:.0f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
TABLE=$(cat <<EOT

### Export (issue 14) — $(date -u +%Y-%m-%d), $(nproc)-vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB

Volume of $SIZE, fully allocated (1 MiB extents), read through the mount from snapshot s1;
page caches dropped before each run; every row ends with its output file durable (the export
fsyncs its file; dd runs with conv=fsync; qemu-img is followed by sync FILE).
\`scripts/bench-export.sh --size $SIZE\`.

| what | seconds | MiB/s | vs dd |
|---|---:|---:|---:|
| \`fusevol volume export v@s1 FILE\` (stream, CRC32C per extent) | $T_EXPORT | $(rate "$T_EXPORT") | $(ratio "$T_DD" "$T_EXPORT")× |
| \`dd if=.snapshots/v/s1 of=FILE bs=1M conv=fsync\` | $T_DD | $(rate "$T_DD") | 1.00× |
| \`qemu-img convert -f raw -O raw\` of the same file, then sync | $T_QEMU | $(rate "$T_QEMU") | $(ratio "$T_DD" "$T_QEMU")× |
| incremental \`--from s1\`, 1 % changed ($((INC_BYTES >> 20)) MiB stream) | $T_INC | | $(python3 -c "print(f'{100*$T_INC/$T_EXPORT:.1f}')") % of the full export's time |
EOT
)
echo "$TABLE"
[ -n "$OUT" ] && echo "$TABLE" >> "$OUT"
exit 0
