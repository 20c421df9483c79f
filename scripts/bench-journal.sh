#!/usr/bin/env bash
# scripts/bench-journal.sh — what journaling costs the primary when the secondary runs at
# another site: the primary's group ships to a tmpfs standing in for the remote mount, and
# `fusevol-standin` acknowledges each published segment after reading only its headers
# (no applier on this machine's CPUs). Rows: 1 MiB direct sequential writes QD1 and 4 KiB
# random writes QD1 (psync), journaled vs unjournaled volumes of the same pool, each run
# BENCH_REPEAT times alternately (median). Bars (issue 18): 1 MiB >= 0.8x, 4 KiB QD1 >= 0.9x.
# Usage: scripts/bench-journal.sh [--quick] [--out FILE.md]
# Environment: BENCH_DIR=/var/tmp, BENCH_FUSEVOL_BIN=target/release, BENCH_REPEAT=3
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "bench-journal.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
BIN=${BENCH_FUSEVOL_BIN:-target/release}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
REPEAT=${BENCH_REPEAT:-3}
[ -x "$BIN/fusevold" ] && [ -x "$BIN/fusevol-standin" ] || cargo build --release --bins
command -v fio >/dev/null || bash scripts/install-deps.sh
if [ "$QUICK" = 1 ]; then VOL=1G; RT=4; RAMP=1; else VOL=4G; RT=10; RAMP=2; fi

WORK=$(mktemp -d "$BENCH_DIR/fusevol-bench-journal.XXXXXX")
DPID="" SPID=""
log() { printf '[bench-journal %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cleanup() {
    for p in $SPID $DPID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $SPID $DPID; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    for m in "$WORK/mnt" "$WORK/remote"; do
        findmnt -rn --mountpoint "$m" >/dev/null 2>&1 && umount -l "$m" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

mkdir -p "$WORK/remote"
mount -t tmpfs -o size=16G tmpfs "$WORK/remote"
"$BIN/fusevol" init "$WORK/pool" --extent-size 256K --array a0:32G --array a1:32G >/dev/null
RUST_LOG=warn "$BIN/fusevold" "$WORK/pool" "$WORK/mnt" >"$WORK/daemon.log" 2>&1 &
DPID=$!
fp() { "$BIN/fusevol" -p "$WORK/pool" "$@"; }
for _ in $(seq 100); do fp ping >/dev/null 2>&1 && break; sleep 0.1; done
fp ping >/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
fio_run() { # file rw bs -> MB/s (1M) or IOPS (4k)
    fio --name=b --filename="$1" --rw="$2" --bs="$3" --direct=1 --ioengine=psync --ramp_time="$RAMP" \
        --size="$VOL" --time_based --runtime="$RT" --randrepeat=1 --randseed=7 \
        --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; w=json.load(sys.stdin)["jobs"][0]["write"]; print(int(w["bw_bytes"]/1e6) if sys.argv[1]=="1M" else int(w["iops"]))' "$3"
}
for v in plain jv; do fp volume create "$v" --size "$VOL" >/dev/null; done
# Same starting point: every extent allocated (overwrites, no allocation cost).
for v in plain jv; do
    fio --name=fill --filename="$WORK/mnt/$v" --rw=write --bs=1M --direct=1 --size="$VOL" >/dev/null 2>&1
done
fp group create g --volumes jv --remote "$WORK/remote" >/dev/null
"$BIN/fusevol-standin" --remote "$WORK/remote" --group g 2>"$WORK/standin.log" &
SPID=$!
# The base copy of jv ships as Base records; the stand-in acknowledges them.
for _ in $(seq 600); do
    fp group status g --json | python3 -c 'import json,sys; g=json.load(sys.stdin)[0]; sys.exit(0 if g["state"] == "replicating" and g["acknowledged"] >= g["written"] else 1)' 2>/dev/null && break
    sleep 0.5
done
sleep 2
ROWS=()
median() { python3 -c 'import sys,statistics; print(int(statistics.median(map(float,sys.argv[1:]))))' "$@"; }
for spec in "write 1M MB/s 0.8" "randwrite 4k IOPS 0.9"; do
    set -- $spec
    offs=() ons=()
    for _ in $(seq "$REPEAT"); do
        offs+=("$(fio_run "$WORK/mnt/plain" "$1" "$2")")
        ons+=("$(fio_run "$WORK/mnt/jv" "$1" "$2")")
    done
    off=$(median "${offs[@]}") on=$(median "${ons[@]}")
    r=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / max(float(sys.argv[2]), 1)))" "$on" "$off")
    pass=$(python3 -c "import sys; print('PASS' if float(sys.argv[1]) >= float(sys.argv[2]) else 'FAIL')" "$r" "$4")
    ROWS+=("| $2 $1 QD1 direct | $off $3 (${offs[*]}) | $on $3 (${ons[*]}) | ${r}x | >= $4x | $pass |")
    log "$2 $1: journaled $on vs plain $off $3 = ${r}x"
done
status=$(fp group status g --json)
{
    echo "### Journal cost with a stand-in secondary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, volume $VOL, median of $REPEAT)"
    echo
    echo "| job | unjournaled (every run) | journaled (every run) | ratio | bar | result |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "group status after the runs: $(echo "$status" | python3 -c 'import json,sys; g=json.load(sys.stdin)[0]; print("state %s, written %d, acknowledged %d, lag %.2f s" % (g["state"], g["written"], g["acknowledged"], g["lag_seconds"]))')"
} | tee ${OUT:+"$OUT"}
