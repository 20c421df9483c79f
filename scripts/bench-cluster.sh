#!/usr/bin/env bash
# scripts/bench-cluster.sh — forwarded vs local I/O on the same volume, in one run:
#
#   local      node A's mount: A owns the volume, I/O goes straight into A's pool
#   forwarded  node B's mount: the same volume, every request forwarded to A over NBD
#              (loopback TCP; both daemons on this machine, so both share its CPUs)
#
# A real etcd (etcd-server) and two fusevold with their own pools (default layout: three
# sparse 4 GiB arrays). The volume is filled once through A by a sequential 1 MiB write, so
# the jobs hit allocated data. Jobs (fio, O_DIRECT on the volume file), interleaved (job 1 on
# both targets, then job 2 ...), sync + drop caches before each:
#   seqwrite-1M  seqread-1M     psync, QD1, 1 MiB
#   randwrite-4K randread-4K    libaio, QD16, 4 KiB
# The bar (issue 17): forwarded 1 MiB sequential >= 0.5x local.
#
# Usage: scripts/bench-cluster.sh [--quick] [--out FILE.md] [--keep]
#   --quick      512 MiB volume, 4 s jobs, 1 s ramp
#   --out FILE   also write the machine info and the table as markdown to FILE
#   --keep       keep the work dir
# Environment: BENCH_DIR=/var/tmp BENCH_SIZE=2G BENCH_RUNTIME=10 BENCH_RAMP=2
#              BENCH_FUSEVOL_BIN=target/release
# Needs root (drop_caches, FUSE), fio, etcd, python3. Run it under `flock /work/bench.lock`
# on a shared machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
OUT=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-cluster.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    SIZE=${BENCH_SIZE:-512M}; RUNTIME=${BENCH_RUNTIME:-4}; RAMP=${BENCH_RAMP:-1}
else
    SIZE=${BENCH_SIZE:-2G}; RUNTIME=${BENCH_RUNTIME:-10}; RAMP=${BENCH_RAMP:-2}
fi
BASE=${BENCH_DIR:-/var/tmp}
FV_BIN=${BENCH_FUSEVOL_BIN:-$ROOT/target/release}
JOBS="seqwrite-1M seqread-1M randwrite-4K randread-4K"

log() { printf '[bench-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in fio etcd python3; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-deps.sh"
done
[ -x "$FV_BIN/fusevold" ] || die "$FV_BIN/fusevold missing: cargo build --release"

W=$(mktemp -d "$BASE/fusevol-bench-cluster.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    umount -l "$W/a/mnt" 2>/dev/null || true
    umount -l "$W/b/mnt" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

EP=$(free_port); PP=$(free_port)
etcd --name b0 --data-dir "$W/etcd" \
    --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
    --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
    --initial-cluster "b0=http://127.0.0.1:$PP" >"$W/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$EP/health" 2>/dev/null | grep -q '"health":"true"' && break
    sleep 0.2
done

start_node() { # NAME
    local n=$1 port
    port=$(free_port)
    mkdir -p "$W/$n"
    "$FV_BIN/fusevol" init "$W/$n/pool" >/dev/null
    RUST_LOG=warn "$FV_BIN/fusevold" "$W/$n/pool" "$W/$n/mnt" --nbd "127.0.0.1:$port" \
        --cluster "http://127.0.0.1:$EP" --node "$n" >"$W/$n.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        "$FV_BIN/fusevol" -p "$W/$n/pool" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "node $n did not start: $(cat "$W/$n.log")"
}
start_node a
start_node b
"$FV_BIN/fusevol" -p "$W/a/pool" volume create bench --size "$SIZE" >/dev/null
for _ in $(seq 200); do [ -e "$W/b/mnt/bench" ] && break; sleep 0.1; done
[ -e "$W/b/mnt/bench" ] || die "volume not visible on node b"

log "filling the volume through node a ($SIZE)"
fio --name=fill --filename="$W/a/mnt/bench" --rw=write --bs=1M --ioengine=psync --direct=1 \
    --size="$SIZE" --end_fsync=1 >/dev/null

declare -A RESULT
run_job() { # JOB TARGET FILE
    local job=$1 target=$2 file=$3 args
    case "$job" in
        seqwrite-1M) args="--rw=write --bs=1M --ioengine=psync --iodepth=1" ;;
        seqread-1M) args="--rw=read --bs=1M --ioengine=psync --iodepth=1" ;;
        randwrite-4K) args="--rw=randwrite --bs=4k --ioengine=libaio --iodepth=16" ;;
        randread-4K) args="--rw=randread --bs=4k --ioengine=libaio --iodepth=16" ;;
    esac
    sync; echo 3 >/proc/sys/vm/drop_caches
    # shellcheck disable=SC2086
    local json
    json=$(fio --name="$job" --filename="$file" $args --direct=1 --size="$SIZE" \
        --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --output-format=json 2>/dev/null)
    RESULT[$job,$target]=$(python3 -c '
import json,sys
s=sys.stdin.read()
j=json.loads(s[s.find("{"):])["jobs"][0]
side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
print("%.1f %.0f" % (side["bw_bytes"]/1048576.0, side["iops"]))' <<<"$json")
    log "$job $target: ${RESULT[$job,$target]} (MiB/s IOPS)"
}
for job in $JOBS; do
    run_job "$job" local "$W/a/mnt/bench"
    run_job "$job" forwarded "$W/b/mnt/bench"
done

table() {
    echo "| job | local MiB/s | local IOPS | forwarded MiB/s | forwarded IOPS | forwarded / local |"
    echo "|---|---:|---:|---:|---:|---:|"
    for job in $JOBS; do
        read -r lb li <<<"${RESULT[$job,local]}"
        read -r fb fi_ <<<"${RESULT[$job,forwarded]}"
        ratio=$(python3 -c "print('%.2fx' % ($fb/$lb if $lb>0 else 0))")
        echo "| $job | $lb | $li | $fb | $fi_ | $ratio |"
    done
}
machine="$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
{
    echo "bench-cluster.sh: $(date -u +%Y-%m-%dT%H:%MZ), $machine, volume $SIZE, ${RUNTIME}s jobs"
    echo
    table
} | tee /dev/stderr >/dev/null
if [ -n "$OUT" ]; then
    {
        echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $machine, volume $SIZE, ${RUNTIME}s jobs (${RAMP}s ramp), fusevol $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        table
    } >"$OUT"
fi
