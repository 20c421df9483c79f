#!/usr/bin/env bash
# scripts/bench-repl.sh — journal groups and replication, measured with daemons on this
# machine (the remote directory is a tmpfs standing in for a mounted remote file system):
#   write throughput of 1 MiB direct writes with journaling on vs off (bar >= 0.8x), twice:
#   with the secondary's pool on this disk, and with it on a tmpfs standing in for the
#   other site's disk (its CPU work still runs here); with the disk bytes written per byte
#   the host wrote, which shows when the disk is the limit;
#   the CPU time each daemon spends per MB written in those runs (where the 2 CPUs go);
#   4 KiB random write IOPS (QD1) with journaling on vs off;
#   replication lag under a steady write load at half of the measured maximum (bar < 1 s,
#   not growing).
# Called by scripts/bench.sh (BENCH_REPL=0 skips it); runs on its own too.
# Usage: scripts/bench-repl.sh [--quick] [--out FILE.md]
# Environment: BENCH_DIR=/var/tmp, BENCH_FUSEVOL_BIN=target/release
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench-repl.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

BIN=${BENCH_FUSEVOL_BIN:-target/release}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
[ -x "$BIN/fusevold" ] || cargo build --release --bins
command -v fio >/dev/null || bash scripts/install-deps.sh
if [ "$QUICK" = 1 ]; then VOL=2G; RT=5; LAGT=10; RAMP=1; else VOL=4G; RT=10; LAGT=30; RAMP=2; fi

WORK=$(mktemp -d "$BENCH_DIR/fusevol-bench-repl.XXXXXX")
PIDS=()
declare -A SITEPID
log() { printf '[bench-repl %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    for m in "$WORK/p/mnt" "$WORK/s/mnt" "$WORK/t/mnt" "$WORK/t" "$WORK/remote"; do
        findmnt -rn --mountpoint "$m" >/dev/null 2>&1 && umount -l "$m" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

start() { # site
    mkdir -p "$WORK/$1"
    "$BIN/fusevol" init "$WORK/$1/pool" --extent-size 256K --array a0:32G --array a1:32G >/dev/null
    RUST_LOG=warn "$BIN/fusevold" "$WORK/$1/pool" "$WORK/$1/mnt" >"$WORK/$1/daemon.log" 2>&1 &
    PIDS+=($!)
    SITEPID[$1]=$!
    for _ in $(seq 100); do
        "$BIN/fusevol" -p "$WORK/$1/pool" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$WORK/$1/daemon.log" >&2
    exit 1
}
fp() { "$BIN/fusevol" -p "$WORK/p/pool" "$@"; }
fs() { "$BIN/fusevol" -p "$WORK/s/pool" "$@"; }
# Measured runs start after a ramp (as in bench.sh): the first second of a journaled run
# fills the journal's and the remote's spare files, after which the pages are reused.
fio_bw() { # file extra... -> MB/s written
    fio --name=b --filename="$1" --rw=write --bs=1M --direct=1 --ioengine=psync --ramp_time="$RAMP" \
        --output-format=json "${@:2}" 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["write"]["bw_bytes"]/1e6))'
}
fio_iops() { # file extra...
    fio --name=b --filename="$1" --rw=randwrite --bs=4k --direct=1 --ioengine=psync --ramp_time="$RAMP" \
        --randrepeat=1 --randseed=7 --output-format=json "${@:2}" 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["write"]["iops"]))'
}
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / max(float(sys.argv[2]), 1)))" "$1" "$2"; }
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); log "$1: $2 ($3)"; }

# The device under BENCH_DIR, for the bytes written to it (/proc/diskstats).
DEV=$(basename "$(findmnt -no SOURCE --target "$BENCH_DIR" | head -1)")
disk_sectors() { awk -v d="$DEV" '$3==d {print $10}' /proc/diskstats; }
# CPU time (utime + stime, clock ticks) of a daemon, threads included.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
MEASURED_BW=0
DISK_PER_BYTE=0
CPU_PER_MB=""
measure_bw() { # site-of-secondary file extra... -> sets MEASURED_BW (MB/s), DISK_PER_BYTE, CPU_PER_MB
    local sec=$1 s0 s1 p0 p1 q0 q1 t0 t1
    shift
    s0=$(disk_sectors) p0=$(cpu_ticks "${SITEPID[p]}") q0=$(cpu_ticks "${SITEPID[$sec]:-0}") t0=$(date +%s.%N)
    MEASURED_BW=$(fio_bw "$@")
    s1=$(disk_sectors) p1=$(cpu_ticks "${SITEPID[p]}") q1=$(cpu_ticks "${SITEPID[$sec]:-0}") t1=$(date +%s.%N)
    DISK_PER_BYTE=$(python3 -c "import sys; a,b,bw,t=map(float,sys.argv[1:]); print('%.2f' % ((b-a)*512/max(bw*1e6*t,1)))" "${s0:-0}" "${s1:-0}" "$MEASURED_BW" "$RT")
    # Per MB written over the whole run, ramp included (the rate is steady after the ramp).
    CPU_PER_MB=$(python3 - "$p0" "$p1" "$q0" "$q1" "$t0" "$t1" "$MEASURED_BW" "$(getconf CLK_TCK)" "$sec" <<'PY'
import sys
p0, p1, q0, q1, t0, t1, bw, hz = map(float, sys.argv[1:9])
mb = max(bw * (t1 - t0), 1)
out = "primary daemon %.2f ms of CPU per MB" % ((p1 - p0) / hz * 1000 / mb)
if sys.argv[9] != "-":
    out += ", secondary daemon %.2f" % ((q1 - q0) / hz * 1000 / mb)
print(out)
PY
)
}

mkdir -p "$WORK/remote" "$WORK/t"
mount -t tmpfs -o size=16G tmpfs "$WORK/remote"
start p
for v in plain jv jt; do fp volume create "$v" --size "$VOL" >/dev/null; done
# Same starting point for all: every extent allocated (overwrites, no allocation cost).
for v in plain jv jt; do RAMP=0 fio_bw "$WORK/p/mnt/$v" --size="$VOL" >/dev/null; done
fp group create g --volumes jv --remote "$WORK/remote" >/dev/null
fp group create gt --volumes jt --remote "$WORK/remote" >/dev/null
# Two secondaries, second daemons on this machine sharing its 2 CPUs: `s` keeps its pool on
# this disk too; `t` keeps it on a tmpfs, standing in for the other site's own disk.
start s
mount -t tmpfs -o size=$((${VOL%G} * 2 + 2))G tmpfs "$WORK/t"
start t
ft() { "$BIN/fusevol" -p "$WORK/t/pool" "$@"; }
fs group attach g --remote "$WORK/remote" >/dev/null
ft group attach gt --remote "$WORK/remote" >/dev/null
for x in "fs g" "ft gt"; do
    set -- $x
    $1 group wait "$2" --consistent --timeout 600 >/dev/null
    $1 group wait "$2" --caught-up --timeout 600 >/dev/null || true
done

log "1 MiB direct sequential writes, journal off vs on (secondary applying)"
measure_bw - "$WORK/p/mnt/plain" --size="$VOL" --time_based --runtime="$RT"
off=$MEASURED_BW doff=$DISK_PER_BYTE coff=$CPU_PER_MB
measure_bw s "$WORK/p/mnt/jv" --size="$VOL" --time_based --runtime="$RT"
on=$MEASURED_BW don=$DISK_PER_BYTE con=$CPU_PER_MB
fs group wait g --caught-up --timeout 600 >/dev/null || true
measure_bw t "$WORK/p/mnt/jt" --size="$VOL" --time_based --runtime="$RT"
ont=$MEASURED_BW dont=$DISK_PER_BYTE cont=$CPU_PER_MB
ft group wait gt --caught-up --timeout 600 >/dev/null || true
row "1 MiB direct writes, journaling on vs off, secondary's pool on this disk" "$on MB/s vs $off MB/s: $(ratio "$on" "$off")x (disk bytes per byte written: $don vs $doff)" "bar >= 0.8x"
row "1 MiB direct writes, journaling on vs off, secondary's pool on a tmpfs (the other site's disk)" "$ont MB/s vs $off MB/s: $(ratio "$ont" "$off")x (disk bytes per byte written: $dont vs $doff)" "bar >= 0.8x"
row "CPU per MB in those runs (fio's own not counted)" "journal off: $coff; on, pool on disk: $con; on, pool on tmpfs: $cont" "(2 CPUs in all)"
log "1 MiB direct sequential writes from 4 jobs, journal off vs on"
off4=$(fio_bw "$WORK/p/mnt/plain" --numjobs=4 --offset_increment=$((${VOL%G} * 256))m --size=$((${VOL%G} * 256))m --group_reporting --time_based --runtime="$RT")
on4=$(fio_bw "$WORK/p/mnt/jv" --numjobs=4 --offset_increment=$((${VOL%G} * 256))m --size=$((${VOL%G} * 256))m --group_reporting --time_based --runtime="$RT")
row "1 MiB direct writes from 4 jobs, journaling on vs off" "$on4 MB/s vs $off4 MB/s: $(ratio "$on4" "$off4")x" "(no bar; the bar row is the one above)"
fs group wait g --caught-up --timeout 600 >/dev/null || true
log "4 KiB random writes QD1, journal off vs on"
ioff=$(fio_iops "$WORK/p/mnt/plain" --size="$VOL" --time_based --runtime="$RT")
ion=$(fio_iops "$WORK/p/mnt/jv" --size="$VOL" --time_based --runtime="$RT")
row "4 KiB random writes QD1, journaling on vs off" "$ion vs $ioff IOPS: $(ratio "$ion" "$ioff")x" "(no bar)"
fs group wait g --caught-up --timeout 600 >/dev/null || true

half=$((on / 2))
[ "$half" -ge 1 ] || half=1
log "lag under a steady load of ${half} MB/s (half of the journaled maximum) for ${LAGT} s"
fio --name=l --filename="$WORK/p/mnt/jv" --rw=write --bs=1M --direct=1 --ioengine=psync \
    --size="$VOL" --time_based --runtime="$LAGT" --rate="${half}m" --output-format=terse >/dev/null 2>&1 &
FIO=$!
samples=()
end=$((SECONDS + LAGT))
while [ $SECONDS -lt $end ]; do
    samples+=("$(fp group status g --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["lag_seconds"])')")
    sleep 0.5
done
wait $FIO || true
stats=$(python3 - "${samples[@]}" <<'EOF'
import sys
v = [float(x) for x in sys.argv[1:]]
n = len(v)
h = n // 2
a, b = sum(v[:h]) / max(h, 1), sum(v[h:]) / max(n - h, 1)
print("max %.2f s, mean %.2f s (first half %.2f s, second half %.2f s; %d samples)" % (max(v), sum(v) / n, a, b, n))
EOF
)
row "replication lag at ${half} MB/s steady" "$stats" "bar < 1 s, not growing"

{
    echo "### Replication ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, remote = tmpfs, volume $VOL)"
    echo
    echo "| what | result | bar |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee ${OUT:+"$OUT"}
