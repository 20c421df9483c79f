#!/usr/bin/env bash
# scripts/bench-export.sh — backups (issue 14): `fusevol volume export` of a fully allocated
# volume vs `dd` and `qemu-img convert` of the same volume file in the mount, and an
# incremental export of 1 % changed vs the full one. Page caches are dropped before each run
# (when root). Prints a markdown table; with --out FILE appends it there.
# Usage: scripts/bench-export.sh [--size 1G] [--out docs/benchmarks.md]
# Environment: BENCH_DIR=/var/tmp, BENCH_FUSEVOL_BIN=target/release,
# BENCH_BASELINE_BIN=DIR (optional: another build's `fusevol` also timed, full and
# incremental, against the same daemon and volume — "before" rows). Run under
# `flock /work/bench.lock` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=1G
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
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
# Wall time of a command in seconds (the clock is read around it, nothing else counted).
secs() {
    local s e
    s=$(date +%s%N)
    "$@" >/dev/null
    e=$(date +%s%N)
    python3 -c "print(f'{($e-$s)/1e9:.3f}')"
}
OLD=${BENCH_BASELINE_BIN:+$(cd "$BENCH_BASELINE_BIN" && pwd)}

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
# Where the time goes: reading alone (to /dev/null), and writing alone.
drop; T_RD_EXPORT=$(secs sh -c "'$B/fusevol' volume export v@s1 - >/dev/null")
drop; T_RD_DD=$(secs dd if="$W/mnt/.snapshots/v/s1" of=/dev/null bs=1M status=none)
drop; T_WR_DD=$(secs dd if=/dev/zero of="$W/zero.img" bs=1M count=$MIB conv=fsync status=none)
rm -f "$W/zero.img"
if [ -n "$OLD" ]; then
    drop; T_OLD=$(secs "$OLD/fusevol" volume export v@s1 "$W/old.fvs")
    cmp -s "$W/full.fvs" "$W/old.fvs" || echo "warning: the baseline's full stream differs" >&2
    rm -f "$W/old.fvs"
fi
rm -f "$W/full.fvs"
# 1 % changed: 1 MiB at every 100th MiB.
for ((i = 0; i < MIB; i += 100)); do
    dd if=/dev/urandom of="$W/mnt/v" bs=1M count=1 seek=$i conv=notrunc status=none
done
sync "$W/mnt/v"
"$B/fusevol" snapshot create v s2 >/dev/null
drop; T_INC=$(secs "$B/fusevol" volume export v@s2 "$W/inc.fvs" --from s1)
INC_BYTES=$(stat -c %s "$W/inc.fvs")
# The fixed cost of a CLI command that asks the daemon something (cold caches, as above).
drop; T_CLI=$(secs "$B/fusevol" volume info v)
if [ -n "$OLD" ]; then
    drop; T_OLD_INC=$(secs "$OLD/fusevol" volume export v@s2 "$W/old-inc.fvs" --from s1)
    cmp -s "$W/inc.fvs" "$W/old-inc.fvs" || echo "warning: the baseline's incremental stream differs" >&2
fi
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
rate() { python3 -c "print(f'{$MIB/$1:.0f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
TABLE=$(cat <<EOT

### Export (issue 14) — $(date -u +%Y-%m-%d), $(nproc)-vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB

Volume of $SIZE, fully allocated (1 MiB extents), read through the mount from snapshot s1;
page caches dropped before each run; every row ends with its output file durable (the export
fsyncs its file; dd runs with conv=fsync; qemu-img is followed by sync FILE).
\`scripts/bench-export.sh --size $SIZE\`; load average at the end: $LOAD.

| what | seconds | MiB/s | vs dd |
|---|---:|---:|---:|
| \`fusevol volume export v@s1 FILE\` (stream, CRC32C per extent) | $T_EXPORT | $(rate "$T_EXPORT") | $(ratio "$T_DD" "$T_EXPORT")× |
| \`dd if=.snapshots/v/s1 of=FILE bs=1M conv=fsync\` | $T_DD | $(rate "$T_DD") | 1.00× |
| \`qemu-img convert -f raw -O raw\` of the same file, then sync | $T_QEMU | $(rate "$T_QEMU") | $(ratio "$T_DD" "$T_QEMU")× |
| incremental \`--from s1\`, 1 % changed ($((INC_BYTES >> 20)) MiB stream) | $T_INC | | $(python3 -c "print(f'{100*$T_INC/$T_EXPORT:.1f}')") % of the full export's time |
| reading alone: \`fusevol volume export v@s1 - >/dev/null\` | $T_RD_EXPORT | $(rate "$T_RD_EXPORT") | |
| reading alone: \`dd if=.snapshots/v/s1 of=/dev/null bs=1M\` | $T_RD_DD | $(rate "$T_RD_DD") | |
| writing alone: \`dd if=/dev/zero of=FILE bs=1M conv=fsync\` | $T_WR_DD | $(rate "$T_WR_DD") | |
| a CLI request alone: \`fusevol volume info v\` | $T_CLI | | |
EOT
)
if [ -n "$OLD" ]; then
    TABLE+=$(cat <<EOT

| baseline build ($OLD/fusevol), same daemon and volume | $T_OLD | $(rate "$T_OLD") | $(ratio "$T_DD" "$T_OLD")× |
| baseline incremental \`--from s1\` | $T_OLD_INC | | $(python3 -c "print(f'{100*$T_OLD_INC/$T_OLD:.1f}')") % of its full export's time |
EOT
)
fi
echo "$TABLE"
[ -n "$OUT" ] && echo "$TABLE" >> "$OUT"
exit 0
