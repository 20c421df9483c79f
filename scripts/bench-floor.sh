#!/usr/bin/env bash
# scripts/bench-floor.sh — what the FUSE round trip alone costs a 4 KiB random read at QD1, and so
# the best ratio to the raw file any FUSE daemon can reach on this machine (issue 18's bar: 0.8×).
#
# fio 4 KiB random reads, QD1 (psync), O_DIRECT, for RUNTIME seconds each, median of REPS runs:
#   raw            the raw file, data on the disk (page cache dropped; O_DIRECT reaches the disk)
#   fusevol        a fusevol volume with its data on the disk (page cache dropped)
#   fusevol-hole   a fusevol volume of the same size never written: the daemon answers zeros from
#                  the extent map, no disk I/O — the FUSE round trip plus the daemon's own work
#   fusevol-cached the written volume with the arrays' pages in the page cache: no disk I/O,
#                  round trip + lookup + a 4 KiB copy
# and the three fusevol rows again over FUSE-over-io_uring (`--uring`) when the kernel offers it.
# Printed: IOPS and mean completion latency per row, and the bound
#   raw_lat / (raw_lat + hole_lat)
# = the ratio a daemon would reach if its own disk read cost exactly what raw's does and nothing
# else were added but the round trip it measured on the hole.
#
# Usage: scripts/bench-floor.sh [--size 2G] [--runtime 10] [--reps 3] [--out FILE]
# Needs root (drop_caches, FUSE). Writes under ${BENCH_DIR:-/var/tmp} only; cleans up.
# Run under `flock /work/bench.lock` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=2G
RUNTIME=10
REPS=3
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2; shift ;;
        --runtime) RUNTIME=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "bench-floor.sh needs root (drop_caches, FUSE)" >&2; exit 1; }
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio fuse3 >/dev/null; }
B=${BENCH_FUSEVOL_BIN:-target/release}
[ -x "$B/fusevold" ] || cargo build --release --bin fusevold --bin fusevol
B=$(cd "$B" && pwd)
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-floor.XXXXXX")
PIDS=()
MNTS=()
cleanup() {
    local p m
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for m in "${MNTS[@]}"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
log() { printf '[bench-floor %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# start NAME [fusevold args...]: a pool of its own, volumes "data" (written) and "hole" (never).
start() {
    local name=$1 i; shift
    local d="$W/$name"
    mkdir -p "$d/mnt"
    "$B/fusevol" init "$d/pool" >/dev/null
    RUST_LOG=info "$B/fusevold" "$d/pool" "$d/mnt" "$@" > "$d/log" 2>&1 &
    PIDS+=($!)
    MNTS+=("$d/mnt")
    for i in $(seq 300); do [ -S "$d/pool/control.sock" ] && mountpoint -q "$d/mnt" && break; sleep 0.1; done
    mountpoint -q "$d/mnt" || { cat "$d/log" >&2; exit 1; }
    "$B/fusevol" -p "$d/pool" volume create data --size "$SIZE" >/dev/null
    "$B/fusevol" -p "$d/pool" volume create hole --size "$SIZE" >/dev/null
    log "$name: filling data ($SIZE)"
    dd if=/dev/urandom of="$d/mnt/data" bs=1M count=$(( $(numfmt --from=iec "$SIZE") >> 20 )) \
        oflag=direct status=none
}

# fio_qd1 FILE -> "IOPS LAT_US"
fio_qd1() {
    local j="$W/fio.json"
    fio --name=r --filename="$1" --rw=randread --bs=4k --ioengine=psync --direct=1 --time_based \
        --runtime="$RUNTIME" --ramp_time=2 --norandommap --randrepeat=0 --output-format=json \
        --output="$j" >/dev/null
    python3 - "$j" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
r = json.loads(t[t.index('{'):])["jobs"][0]["read"]
print("%.0f %.1f" % (r["iops"], r["clat_ns"]["mean"] / 1000))
EOF
}

declare -A IOPS LAT
ROWS=()
# measure ROW FILE PREP: PREP is "drop" (page cache dropped) or "warm" (FILE read whole first)
measure() {
    local row=$1 f=$2 prep=$3 r vals=()
    for r in $(seq "$REPS"); do
        drop
        if [ "$prep" = warm ]; then cat "$f" > /dev/null; fi
        vals+=("$(fio_qd1 "$f")")
        log "$row run $r: ${vals[-1]} (IOPS, mean clat us)"
    done
    # median by IOPS
    local med
    med=$(printf '%s\n' "${vals[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p")
    IOPS[$row]=${med% *}
    LAT[$row]=${med#* }
    ROWS+=("$row")
}

mkdir -p "$W/raw"
log "raw: filling $SIZE"
dd if=/dev/urandom of="$W/raw/raw.img" bs=1M count=$(( $(numfmt --from=iec "$SIZE") >> 20 )) \
    oflag=direct status=none
start fusevol
URING=0
if [ -e /sys/module/fuse/parameters/enable_uring ]; then
    start fusevol-uring --uring
    for _ in $(seq 300); do
        if grep -q "FUSE over io_uring not used" "$W/fusevol-uring/log"; then
            log "fusevold --uring fell back to /dev/fuse: $(grep 'not used' "$W/fusevol-uring/log")"
            break
        fi
        if grep -q "FUSE over io_uring: " "$W/fusevol-uring/log"; then URING=1; break; fi
        sleep 0.1
    done
fi
measure raw "$W/raw/raw.img" drop
for t in fusevol $([ "$URING" = 1 ] && echo fusevol-uring); do
    measure "$t" "$W/$t/mnt/data" drop
    measure "$t-hole" "$W/$t/mnt/hole" drop
    measure "$t-cached" "$W/$t/mnt/data" warm
done

{
    echo
    echo "### bench-floor.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), size $SIZE, ${RUNTIME} s x $REPS (median), load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| row | IOPS | mean completion µs | IOPS / raw |"
    echo "|---|---:|---:|---:|"
    for r in "${ROWS[@]}"; do
        python3 -c "print('| $r | ${IOPS[$r]} | ${LAT[$r]} | %.2f× |' % (${IOPS[$r]} / ${IOPS[raw]}))"
    done
    echo
    for t in fusevol $([ "$URING" = 1 ] && echo fusevol-uring); do
        python3 -c "
raw, hole, data = ${LAT[raw]}, ${LAT[$t-hole]}, ${LAT[$t]}
print('- $t: the round trip and the daemon\'s own work (hole) %.1f µs; bound raw/(raw+hole) = **%.2f×**; measured %.2f×' % (hole, raw / (raw + hole), raw / data))"
    done
} | tee -a "${OUT:-/dev/null}"
