#!/usr/bin/env bash
# scripts/bench.sh — fio side by side, in one run on one file system, against three targets:
#
#   raw      a plain file on BENCH_DIR's file system (the ceiling for this layout)
#   qemu     qemu-storage-daemon --export type=fuse over a qcow2 image (the nearest peer)
#   fusevol  a fusevol volume in a FUSE mount (default pool, one volume)
#
# Every target starts sparse/thin and is filled once by a sequential 1 MiB O_DIRECT write of its whole
# size before anything is measured, so every measured job (also the random reads) hits allocated data.
# Jobs are interleaved (job 1 on raw, qemu, fusevol; job 2 on raw, qemu, fusevol; ...) so that drift of
# a shared/virtual machine hits all targets alike. Before every job: sync + drop the page cache.
# Write jobs end with fsync (fio end_fsync=1, counted in the job's time), so a target cannot win by
# leaving dirty data in some page cache. See docs/benchmarks.md for results and how to read them.
#
# Usage: scripts/bench.sh [--quick] [--out FILE.md] [--keep]
#   --quick       smoke run: 1 GiB targets, 3 s jobs, 1 s ramp
#   --out FILE    also write the machine info and the table as markdown to FILE
#   --keep        keep the work dir (images, fio JSON, daemon logs) instead of removing it
# Environment:
#   BENCH_TARGETS="raw qemu fusevol fusevol-uring"  which targets to run (any subset, any order);
#                                     fusevol-uring (fusevold --uring, FUSE over io_uring) is in the
#                                     default set where the kernel has the fuse enable_uring parameter
#   BENCH_DIR=/var/tmp                where the work dir is made (must not be tmpfs)
#   BENCH_SIZE=4G                     size of each target (1G with --quick)
#   BENCH_RUNTIME=12  BENCH_RAMP=2    seconds per measured job / ramp time excluded from the numbers
#   BENCH_REPEAT=1                    run every job N times per target and report the median
#   BENCH_JOBS="..."                  subset of job names (see JOBS below)
#   BENCH_END_FSYNC=1                 0: no fsync at the end of write jobs
#   BENCH_FUSEVOL_BIN=target/release  where fusevol and fusevold are
#   BENCH_FUSEVOL_THREADS=N           pass --threads N to fusevold
#   BENCH_FUSEVOL_IO_THREADS=N        pass --io-threads N to fusevold (0: no I/O stage, as before issue 18)
#   BENCH_FUSEVOL_METRICS=ADDR:PORT   pass --metrics ADDR:PORT to fusevold and scrape /metrics with
#                                     curl once a second for the whole run (statistics are always on;
#                                     this adds the exporter and a scraper far busier than Prometheus')
#   BENCH_STATS=on|off|both           per-volume statistics of fusevol: on (default, as always),
#                                     off (fusevold --no-stats), or both: a second fusevol target,
#                                     "fusevol-nostats" (its own pool and daemon with --no-stats), runs
#                                     beside "fusevol", which then has statistics AND metrics on (the
#                                     exporter at BENCH_FUSEVOL_METRICS, default 127.0.0.1:19187, scraped
#                                     every second); an extra table gives stats-on / stats-off per job
#   BENCH_FUSEVOL_INIT_ARGS="..."     extra args for `fusevol init` (default: none; arrays are sized up
#                                     automatically when BENCH_SIZE does not fit the default pool)
#   BENCH_QEMU_FILE_OPTS="..."        extra options for qemu's file blockdev, e.g. "cache.direct=on,aio=native"
#   BENCH_SAVE_JSON=DIR               copy every fio JSON result to DIR
#   BENCH_DISK_BYTES=1                also count the bytes read from the disk per 4 KiB read: the
#                                     backing device's sectors read (/sys/class/block/DEV/stat, the
#                                     whole machine's I/O) and, for fusevol, the daemon's own
#                                     read_bytes (/proc/PID/io), divided by the job's reads (ramp
#                                     included); printed after the table
# Needs root (drop_caches, FUSE mounts), fio, python3; qemu-img/qemu-storage-daemon and fuse3 for qemu.
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
        *) echo "bench.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    SIZE=${BENCH_SIZE:-1G}; RUNTIME=${BENCH_RUNTIME:-3}; RAMP=${BENCH_RAMP:-1}
else
    SIZE=${BENCH_SIZE:-4G}; RUNTIME=${BENCH_RUNTIME:-12}; RAMP=${BENCH_RAMP:-2}
fi
TARGETS=${BENCH_TARGETS:-raw qemu fusevol}
# The fourth target: the same daemon serving FUSE over io_uring, where the kernel offers it.
if [ -z "${BENCH_TARGETS:-}" ] && [ -e /sys/module/fuse/parameters/enable_uring ]; then
    TARGETS="$TARGETS fusevol-uring"
fi
STATS=${BENCH_STATS:-on}
case "$STATS" in
    on|off) ;;
    both)
        case " $TARGETS " in *" fusevol "*) ;; *) TARGETS="$TARGETS fusevol" ;; esac
        case " $TARGETS " in *" fusevol-nostats "*) ;; *) TARGETS="$TARGETS fusevol-nostats" ;; esac
        BENCH_FUSEVOL_METRICS=${BENCH_FUSEVOL_METRICS:-127.0.0.1:19187}
        ;;
    *) echo "bench.sh: BENCH_STATS must be on, off or both (not '$STATS')" >&2; exit 2 ;;
esac
BASE=${BENCH_DIR:-/var/tmp}
REPEAT=${BENCH_REPEAT:-1}
END_FSYNC=${BENCH_END_FSYNC:-1}
FV_BIN=${BENCH_FUSEVOL_BIN:-$ROOT/target/release}
ALL_JOBS="seqwrite-1M-buffered seqread-1M-buffered seqwrite-1M-direct seqread-1M-direct randwrite-4K-qd1 randread-4K-qd1 randwrite-4K-qd16 randread-4K-qd16"
JOBS=${BENCH_JOBS:-$ALL_JOBS}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

size_bytes() {
    python3 - "$1" <<'EOF'
import sys, re
m = re.fullmatch(r'\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*', sys.argv[1])
if not m:
    sys.exit("bad size: " + sys.argv[1])
print(int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))
EOF
}
SIZE_B=$(size_bytes "$SIZE")
[ $((SIZE_B % 1048576)) = 0 ] || die "BENCH_SIZE must be a multiple of 1 MiB"

for t in $TARGETS; do
    case "$t" in raw|qemu|fusevol|fusevol-nostats|fusevol-uring) ;; *) die "unknown target '$t' in BENCH_TARGETS" ;; esac
done
for j in $JOBS; do
    case " $ALL_JOBS " in *" $j "*) ;; *) die "unknown job '$j' in BENCH_JOBS (known: $ALL_JOBS)" ;; esac
done
has_target() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- dependencies
need_cmds="fio python3 findmnt"
has_target qemu && need_cmds="$need_cmds qemu-img qemu-storage-daemon fusermount3"
missing=""
for c in $need_cmds; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
if [ -n "$missing" ]; then
    log "missing:$missing"
    if [ -x "$ROOT/scripts/install-deps.sh" ]; then
        log "running scripts/install-deps.sh"
        "$ROOT/scripts/install-deps.sh"
    fi
    missing=""
    for c in $need_cmds; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
    if [ -n "$missing" ]; then
        [ "$(id -u)" = 0 ] || die "need root to apt-get install:$missing"
        log "apt-get install fio qemu-utils fuse3"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio qemu-utils fuse3 >/dev/null
    fi
fi
if { has_target qemu || has_target fusevol || has_target fusevol-nostats || has_target fusevol-uring; } && [ ! -e /dev/fuse ]; then die "/dev/fuse is missing"; fi
CAN_DROP=1
if [ "$(id -u)" != 0 ] || ! [ -w /proc/sys/vm/drop_caches ]; then
    CAN_DROP=0
    log "WARNING: cannot write /proc/sys/vm/drop_caches (not root?): page cache is NOT dropped between jobs"
fi
if has_target fusevol || has_target fusevol-nostats || has_target fusevol-uring; then
    [ -x "$FV_BIN/fusevol" ] && [ -x "$FV_BIN/fusevold" ] ||
        die "$FV_BIN/fusevol and fusevold not found: run 'cargo build --release' (or drop fusevol from BENCH_TARGETS)"
fi

# ---------------------------------------------------------------- work dir and cleanup
mkdir -p "$BASE"
FSTYPE=$(findmnt -rn -o FSTYPE --target "$BASE" | head -1)
case "$FSTYPE" in
    tmpfs|ramfs) [ "${BENCH_ALLOW_TMPFS:-0}" = 1 ] ||
        die "BENCH_DIR=$BASE is on $FSTYPE: put it on a disk file system (or BENCH_ALLOW_TMPFS=1)" ;;
esac
W=$(mktemp -d "$BASE/fusevol-bench.XXXXXX")
mkdir -p "$W/json"
RESULTS="$W/results.tsv"
: > "$RESULTS"
QSD_PID=""
FVD_PID=""
FIO_PID=""
QEMU_FILE="$W/qemu/export.img"
FV_MNT="$W/fusevol/mnt"
FV_POOL="$W/fusevol/pool"
# BENCH_STATS=both: the second fusevol target (statistics off)
FVN_PID=""
FVN_MNT="$W/fusevol-nostats/mnt"
FVN_POOL="$W/fusevol-nostats/pool"
FVU_PID=""

is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }

stop_pid() { # pid name mountpoint
    local pid=$1 name=$2 mnt=$3 i
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not exit in 20 s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$mnt" ] && is_mounted "$mnt"; then
        log "$mnt still mounted: unmounting"
        fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$FIO_PID" ] && kill -0 "$FIO_PID" 2>/dev/null; then
        log "stopping fio (pid $FIO_PID)"
        kill -TERM "$FIO_PID" 2>/dev/null || true
        wait "$FIO_PID" 2>/dev/null || true
    fi
    stop_pid "$QSD_PID" qemu-storage-daemon "$QEMU_FILE"
    stop_pid "$FVD_PID" fusevold "$FV_MNT"
    stop_pid "$FVN_PID" "fusevold --no-stats" "$FVN_MNT"
    stop_pid "$FVU_PID" "fusevold --uring" "$W/fusevol-uring/mnt"
    QSD_PID=""; FVD_PID=""; FVN_PID=""; FVU_PID=""
    if [ "$KEEP" = 1 ]; then
        log "work dir kept: $W"
    elif is_mounted "$QEMU_FILE" || is_mounted "$FV_MNT" || is_mounted "$FVN_MNT" || is_mounted "$W/fusevol-uring/mnt"; then
        log "a mount is still there; not removing $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() {
    timeout 300 sync || log "WARNING: sync took over 300 s"
    if [ "$CAN_DROP" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

wait_for() { # seconds description command...
    local secs=$1 what=$2 i; shift 2
    for i in $(seq 1 $((secs * 10))); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${secs}s waiting for $what"
}

# ---------------------------------------------------------------- targets
declare -A FILE
setup_raw() {
    mkdir -p "$W/raw"
    FILE[raw]="$W/raw/raw.img"
    truncate -s "$SIZE_B" "${FILE[raw]}"     # sparse, like a fresh qcow2 image or fusevol volume
}

setup_qemu() {
    mkdir -p "$W/qemu"
    qemu-img create -q -f qcow2 "$W/qemu/image.qcow2" "$SIZE_B"
    : > "$QEMU_FILE"    # the fuse export's mountpoint must be an existing regular file
    local fileopts="driver=file,node-name=file,filename=$W/qemu/image.qcow2"
    if [ -n "${BENCH_QEMU_FILE_OPTS:-}" ]; then fileopts="$fileopts,$BENCH_QEMU_FILE_OPTS"; fi
    QSD_CMD=(qemu-storage-daemon
        --blockdev "$fileopts"
        --blockdev driver=qcow2,node-name=qcow2,file=file
        --export "type=fuse,id=exp,node-name=qcow2,mountpoint=$QEMU_FILE,writable=on")
    log "starting: ${QSD_CMD[*]}"
    "${QSD_CMD[@]}" > "$W/qemu/qsd.log" 2>&1 &
    QSD_PID=$!
    wait_for 30 "qemu-storage-daemon's fuse export" qsd_ready
    FILE[qemu]="$QEMU_FILE"
}
qsd_ready() {
    kill -0 "$QSD_PID" 2>/dev/null || { cat "$W/qemu/qsd.log" >&2; die "qemu-storage-daemon exited"; }
    is_mounted "$QEMU_FILE" && [ "$(stat -c %s "$QEMU_FILE")" = "$SIZE_B" ]
}

setup_fusevol() {
    mkdir -p "$W/fusevol"
    local init_args=()
    if [ -n "${BENCH_FUSEVOL_INIT_ARGS:-}" ]; then
        read -r -a init_args <<< "$BENCH_FUSEVOL_INIT_ARGS"
    elif [ "$SIZE_B" -gt $((9 << 30)) ]; then
        # the default pool (3 x 4 GiB) is too small to fill the volume: three arrays of SIZE/2 each
        local a=$(( (SIZE_B / 2 + (1 << 30) - 1) >> 30 ))G
        init_args=(--array "a0:$a" --array "a1:$a" --array "a2:$a")
    fi
    FV_INIT_CMD=("$FV_BIN/fusevol" init "$FV_POOL" "${init_args[@]}")
    log "running: ${FV_INIT_CMD[*]}"
    "${FV_INIT_CMD[@]}" > "$W/fusevol/init.log" 2>&1 || { cat "$W/fusevol/init.log" >&2; die "fusevol init failed"; }
    FVD_CMD=("$FV_BIN/fusevold" "$FV_POOL" "$FV_MNT")
    if [ -n "${BENCH_FUSEVOL_THREADS:-}" ]; then FVD_CMD+=(--threads "$BENCH_FUSEVOL_THREADS"); fi
    if [ -n "${BENCH_FUSEVOL_IO_THREADS:-}" ]; then FVD_CMD+=(--io-threads "$BENCH_FUSEVOL_IO_THREADS"); fi
    if [ -n "${BENCH_FUSEVOL_METRICS:-}" ]; then FVD_CMD+=(--metrics "$BENCH_FUSEVOL_METRICS"); fi
    if [ "$STATS" = off ]; then FVD_CMD+=(--no-stats); fi
    log "starting: ${FVD_CMD[*]}"
    RUST_LOG=${RUST_LOG:-info} "${FVD_CMD[@]}" > "$W/fusevol/fusevold.log" 2>&1 &
    FVD_PID=$!
    wait_for 60 "fusevold to mount $FV_MNT and open its control socket" fvd_ready
    FV_CREATE_CMD=("$FV_BIN/fusevol" -p "$FV_POOL" volume create bench --size "$SIZE_B")
    log "running: ${FV_CREATE_CMD[*]}"
    "${FV_CREATE_CMD[@]}" > "$W/fusevol/create.log" 2>&1 || { cat "$W/fusevol/create.log" >&2; die "volume create failed"; }
    FILE[fusevol]="$FV_MNT/bench"
    wait_for 30 "$FV_MNT/bench" fv_file_ready
    if [ -n "${BENCH_FUSEVOL_METRICS:-}" ]; then
        # A scraper for the whole run; it ends with fusevold (curl fails, the loop stops).
        ( while kill -0 "$FVD_PID" 2>/dev/null; do
              curl -sf "http://$BENCH_FUSEVOL_METRICS/metrics" > "$W/fusevol/last-scrape.txt" || true
              sleep 1
          done ) &
        log "scraping http://$BENCH_FUSEVOL_METRICS/metrics every second"
    fi
}
fvd_ready() {
    kill -0 "$FVD_PID" 2>/dev/null || { tail -n 30 "$W/fusevol/fusevold.log" >&2; die "fusevold exited"; }
    is_mounted "$FV_MNT" && [ -S "$FV_POOL/control.sock" ]
}
fv_file_ready() { [ -f "$FV_MNT/bench" ] && [ "$(stat -c %s "$FV_MNT/bench")" = "$SIZE_B" ]; }

# BENCH_STATS=both: the same pool layout and daemon options as "fusevol", with --no-stats and no
# exporter, in a pool of its own.
setup_fusevol-nostats() {
    mkdir -p "$W/fusevol-nostats"
    local init_args=()
    if [ -n "${BENCH_FUSEVOL_INIT_ARGS:-}" ]; then
        read -r -a init_args <<< "$BENCH_FUSEVOL_INIT_ARGS"
    elif [ "$SIZE_B" -gt $((9 << 30)) ]; then
        local a=$(( (SIZE_B / 2 + (1 << 30) - 1) >> 30 ))G
        init_args=(--array "a0:$a" --array "a1:$a" --array "a2:$a")
    fi
    "$FV_BIN/fusevol" init "$FVN_POOL" "${init_args[@]}" > "$W/fusevol-nostats/init.log" 2>&1 ||
        { cat "$W/fusevol-nostats/init.log" >&2; die "fusevol init (no stats) failed"; }
    FVN_CMD=("$FV_BIN/fusevold" "$FVN_POOL" "$FVN_MNT" --no-stats)
    if [ -n "${BENCH_FUSEVOL_THREADS:-}" ]; then FVN_CMD+=(--threads "$BENCH_FUSEVOL_THREADS"); fi
    if [ -n "${BENCH_FUSEVOL_IO_THREADS:-}" ]; then FVN_CMD+=(--io-threads "$BENCH_FUSEVOL_IO_THREADS"); fi
    log "starting: ${FVN_CMD[*]}"
    RUST_LOG=${RUST_LOG:-info} "${FVN_CMD[@]}" > "$W/fusevol-nostats/fusevold.log" 2>&1 &
    FVN_PID=$!
    wait_for 60 "fusevold --no-stats to mount $FVN_MNT" fvn_ready
    "$FV_BIN/fusevol" -p "$FVN_POOL" volume create bench --size "$SIZE_B" > "$W/fusevol-nostats/create.log" 2>&1 ||
        { cat "$W/fusevol-nostats/create.log" >&2; die "volume create (no stats) failed"; }
    FILE[fusevol-nostats]="$FVN_MNT/bench"
    wait_for 30 "$FVN_MNT/bench" fvn_file_ready
    # the switch is real: the daemon says so
    if "$FV_BIN/fusevol" -p "$FVN_POOL" stats > "$W/fusevol-nostats/stats.log" 2>&1; then
        die "fusevold --no-stats still answers 'fusevol stats'"
    fi
}
fvn_ready() {
    kill -0 "$FVN_PID" 2>/dev/null || { tail -n 30 "$W/fusevol-nostats/fusevold.log" >&2; die "fusevold --no-stats exited"; }
    is_mounted "$FVN_MNT" && [ -S "$FVN_POOL/control.sock" ]
}
fvn_file_ready() { [ -f "$FVN_MNT/bench" ] && [ "$(stat -c %s "$FVN_MNT/bench")" = "$SIZE_B" ]; }

# fusevol-uring: the same pool layout and daemon as fusevol, with --uring (FUSE over io_uring);
# it must say that its rings registered, else the row would measure /dev/fuse again.
setup_fusevol-uring() {
    local d="$W/fusevol-uring" init_args=()
    mkdir -p "$d"
    if [ -n "${BENCH_FUSEVOL_INIT_ARGS:-}" ]; then
        read -r -a init_args <<< "$BENCH_FUSEVOL_INIT_ARGS"
    elif [ "$SIZE_B" -gt $((9 << 30)) ]; then
        local a=$(( (SIZE_B / 2 + (1 << 30) - 1) >> 30 ))G
        init_args=(--array "a0:$a" --array "a1:$a" --array "a2:$a")
    fi
    "$FV_BIN/fusevol" init "$d/pool" "${init_args[@]}" > "$d/init.log" 2>&1 || { cat "$d/init.log" >&2; die "fusevol init failed"; }
    local cmd=("$FV_BIN/fusevold" "$d/pool" "$d/mnt" --uring)
    if [ -n "${BENCH_FUSEVOL_THREADS:-}" ]; then cmd+=(--threads "$BENCH_FUSEVOL_THREADS"); fi
    if [ -n "${BENCH_FUSEVOL_IO_THREADS:-}" ]; then cmd+=(--io-threads "$BENCH_FUSEVOL_IO_THREADS"); fi
    log "starting: ${cmd[*]}"
    RUST_LOG=${RUST_LOG:-info} "${cmd[@]}" > "$d/fusevold.log" 2>&1 &
    FVU_PID=$!
    wait_for 60 "fusevold --uring to mount $d/mnt" fvu_ready
    wait_for 30 "fusevold --uring to register its rings" fvu_rings
    "$FV_BIN/fusevol" -p "$d/pool" volume create bench --size "$SIZE_B" > "$d/create.log" 2>&1 || { cat "$d/create.log" >&2; die "volume create failed"; }
    FILE[fusevol-uring]="$d/mnt/bench"
    wait_for 30 "$d/mnt/bench" fvu_file_ready
}
fvu_ready() {
    kill -0 "$FVU_PID" 2>/dev/null || { tail -n 30 "$W/fusevol-uring/fusevold.log" >&2; die "fusevold --uring exited"; }
    is_mounted "$W/fusevol-uring/mnt" && [ -S "$W/fusevol-uring/pool/control.sock" ]
}
fvu_rings() {
    if grep -q "FUSE over io_uring not used" "$W/fusevol-uring/fusevold.log"; then
        grep "FUSE over io_uring not used" "$W/fusevol-uring/fusevold.log" >&2
        die "fusevold --uring fell back to /dev/fuse (drop fusevol-uring from BENCH_TARGETS)"
    fi
    grep -q "FUSE over io_uring: " "$W/fusevol-uring/fusevold.log"
}
fvu_file_ready() { local f="$W/fusevol-uring/mnt/bench"; [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$SIZE_B" ]; }

# Before every job: the target is what we think it is (a FUSE file, not the empty file under a dead mount).
check_target() {
    local t=$1 f=${FILE[$1]}
    [ "$(stat -c %s "$f" 2>/dev/null || echo -1)" = "$SIZE_B" ] || die "$t: $f is not $SIZE_B bytes"
    case "$t" in
        qemu) kill -0 "$QSD_PID" 2>/dev/null && is_mounted "$QEMU_FILE" || die "qemu-storage-daemon is gone" ;;
        fusevol) kill -0 "$FVD_PID" 2>/dev/null && is_mounted "$FV_MNT" || die "fusevold is gone" ;;
        fusevol-nostats) kill -0 "$FVN_PID" 2>/dev/null && is_mounted "$FVN_MNT" || die "fusevold --no-stats is gone" ;;
        fusevol-uring) kill -0 "$FVU_PID" 2>/dev/null && is_mounted "$W/fusevol-uring/mnt" || die "fusevold --uring is gone" ;;
    esac
}

# ---------------------------------------------------------------- fio
job_args() { # job -> fio options
    local wf="--end_fsync=$END_FSYNC"
    local timed="--time_based=1 --runtime=$RUNTIME --ramp_time=$RAMP"
    case "$1" in
        fill)                 echo "--rw=write --bs=1M --ioengine=psync --direct=1 --end_fsync=1" ;;
        seqwrite-1M-buffered) echo "--rw=write --bs=1M --ioengine=psync --direct=0 $wf $timed" ;;
        seqread-1M-buffered)  echo "--rw=read --bs=1M --ioengine=psync --direct=0 $timed" ;;
        seqwrite-1M-direct)   echo "--rw=write --bs=1M --ioengine=psync --direct=1 $wf $timed" ;;
        seqread-1M-direct)    echo "--rw=read --bs=1M --ioengine=psync --direct=1 $timed" ;;
        randwrite-4K-qd1)     echo "--rw=randwrite --bs=4k --ioengine=psync --direct=1 $wf $timed" ;;
        randread-4K-qd1)      echo "--rw=randread --bs=4k --ioengine=psync --direct=1 $timed" ;;
        randwrite-4K-qd16)    echo "--rw=randwrite --bs=4k --ioengine=libaio --iodepth=16 --direct=1 $wf $timed" ;;
        randread-4K-qd16)     echo "--rw=randread --bs=4k --ioengine=libaio --iodepth=16 --direct=1 $timed" ;;
    esac
}
FIO_COMMON="--size=$SIZE_B --allow_file_create=0 --fallocate=none --invalidate=1 --randrepeat=0 --numjobs=1 --output-format=json"

# Bytes read from the disk so far: the backing device's (whole machine) and fusevold's own.
DISK_STAT=""
disk_stat_file() {
    local src dev
    src=$(findmnt -rn -o SOURCE --target "$BASE" | head -1)
    dev=$(basename "$(readlink -f "$src" 2>/dev/null || echo "$src")")
    [ -r "/sys/class/block/$dev/stat" ] && echo "/sys/class/block/$dev/stat"
}
disk_read_bytes() { # -> "device_bytes daemon_bytes"
    local dev=0 fvd=0
    [ -n "$DISK_STAT" ] && dev=$(awk '{printf "%.0f", $3 * 512}' "$DISK_STAT")
    if [ -n "$FVD_PID" ] && [ -r "/proc/$FVD_PID/io" ]; then
        fvd=$(awk '/^read_bytes:/ {print $2}' "/proc/$FVD_PID/io")
    fi
    echo "$dev $fvd"
}
DISK_RESULTS="$W/disk.tsv"

run_job() { # target job rep
    local t=$1 job=$2 rep=$3 f=${FILE[$1]} out val before after
    check_target "$t"
    drop_caches
    before=$(disk_read_bytes)
    out="$W/json/$t.$job.$rep.json"
    # shellcheck disable=SC2046
    # in the background + wait, so that SIGINT/SIGTERM reach the trap at once (and cleanup stops fio)
    timeout $(( RUNTIME + RAMP + 600 )) fio --name="$job" --filename="$f" $FIO_COMMON $(job_args "$job") \
        --output="$out" 2> "$out.err" &
    FIO_PID=$!
    if ! wait "$FIO_PID"; then
        FIO_PID=""
        cat "$out.err" "$out" >&2 2>/dev/null || true
        die "fio $job on $t failed"
    fi
    FIO_PID=""
    after=$(disk_read_bytes)
    if [ "${BENCH_DISK_BYTES:-0}" = 1 ] && [[ $job == randread* ]]; then
        printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$job" "$out" "$before" "$after" >> "$DISK_RESULTS"
    fi
    val=$(python3 - "$out" "$job" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index('{'):])
job = j["jobs"][0]
if job.get("error"):
    sys.exit("fio error %s" % job["error"])
d = job["write"] if "write" in sys.argv[2] or sys.argv[2] == "fill" else job["read"]
if "4K" in sys.argv[2]:
    print("%.0f %.1f" % (d["iops"], d["clat_ns"]["mean"] / 1000.0))
else:
    print("%.1f %.1f" % (d["bw_bytes"] / 1e6, d["clat_ns"]["mean"] / 1000.0))
EOF
) || die "cannot parse $out"
    printf '%s\t%s\t%s\t%s\n' "$t" "$job" "$rep" "${val// /$'\t'}" >> "$RESULTS"
    log "$job on $t: $val ($( [[ $job == *4K* ]] && echo IOPS || echo MB/s ), mean clat us)"
}

# ---------------------------------------------------------------- machine info
machine_info() {
    local mem cpu fsdesc
    mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
    cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
    fsdesc=$(findmnt -rn -o FSTYPE,SOURCE,OPTIONS --target "$BASE" | head -1)
    cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r)
- work dir: $W on: $fsdesc
- fio: $(fio --version); qemu-storage-daemon: $(qemu-storage-daemon --version 2>/dev/null | head -1 | awk '{print $3}' || echo n/a)
- fusevol: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit") $( [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ] && echo "(work tree has uncommitted changes)")
- size per target: $SIZE ($SIZE_B bytes); jobs: ${RUNTIME}s + ${RAMP}s ramp, median of $REPEAT run(s); write jobs end_fsync=$END_FSYNC; page cache dropped before every job: $( [ "$CAN_DROP" = 1 ] && echo yes || echo NO)
- targets: $TARGETS; fusevol statistics: $STATS$( [ "$STATS" = both ] && echo " (fusevol: statistics + metrics at $BENCH_FUSEVOL_METRICS scraped every second; fusevol-nostats: --no-stats)" ); load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
}

# ---------------------------------------------------------------- run
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DISK_STAT=$(disk_stat_file || true)
: > "$DISK_RESULTS"
log "work dir $W ($FSTYPE), size $SIZE, targets: $TARGETS, load average $LOAD_START"
for t in $TARGETS; do "setup_$t"; done
for t in $TARGETS; do
    log "filling $t (${FILE[$t]}) with a sequential 1 MiB O_DIRECT write of $SIZE"
    run_job "$t" fill 1
done
for rep in $(seq 1 "$REPEAT"); do
    for job in $JOBS; do
        for t in $TARGETS; do run_job "$t" "$job" "$rep"; done
    done
done

INFO=$(machine_info)
python3 - "$RESULTS" "$OUT" "$INFO" "$JOBS" <<'EOF'
import sys, statistics
results, out, info, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
vals, lat = {}, {}
for line in open(results):
    t, job, rep, v, l = line.rstrip("\n").split("\t")
    vals.setdefault((t, job), []).append(float(v))
    lat.setdefault((t, job), []).append(float(l))
med = {k: statistics.median(v) for k, v in vals.items()}
# bars from DESIGN.md "Targets (measured, not assumed)": (min x qemu, min x raw)
bars = {
    "seqwrite-1M-buffered": (2.0, 0.7), "seqread-1M-buffered": (2.0, 0.7),
    "seqwrite-1M-direct": (1.0, 0.7), "seqread-1M-direct": (1.0, 0.7),
    "randwrite-4K-qd1": (1.5, None), "randread-4K-qd1": (1.5, None),
    "randwrite-4K-qd16": (2.5, None), "randread-4K-qd16": (2.5, None),
    "fill": (None, None),
}
def fmt(x):
    return "-" if x is None else ("%.0f" % x if x >= 100 else "%.1f" % x)
def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b
rows = []
for job in ["fill"] + jobs:
    unit = "IOPS" if "4K" in job else "MB/s"
    r, q, f = (med.get((t, job)) for t in ("raw", "qemu", "fusevol"))
    fr, fq = ratio(f, r), ratio(f, q)
    bq, br = bars[job]
    bar, verdict = [], []
    if bq is not None:
        bar.append("≥ %g× qemu" % bq)
        verdict.append("n/a" if fq is None else ("PASS" if fq >= bq else "FAIL"))
    if br is not None:
        bar.append("≥ %g× raw" % br)
        verdict.append("n/a" if fr is None else ("PASS" if fr >= br else "FAIL"))
    name = job + (" (first write, info)" if job == "fill" else "")
    rows.append([name, unit, fmt(r), fmt(q), fmt(f),
                 "-" if fr is None else "%.2f×" % fr, "-" if fq is None else "%.2f×" % fq,
                 ", ".join(bar) or "-", "-" if not verdict else ("n/a" if set(verdict) == {"n/a"} else "/".join(verdict))])
head = ["job", "unit", "raw", "qemu", "fusevol", "fusevol/raw", "fusevol/qemu", "bar (DESIGN.md)", "result"]
w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
line = lambda cells: "  ".join(str(c).ljust(w[i]) for i, c in enumerate(cells)).rstrip()
table = "\n".join([line(head), line(["-" * n for n in w])] + [line(r) for r in rows])
md = "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
               + ["| " + " | ".join(r) + " |" for r in rows])
# The fourth target (fusevold --uring): its own table beside the /dev/fuse one.
uring_rows = []
for job in ["fill"] + jobs:
    u = med.get(("fusevol-uring", job))
    if u is None:
        continue
    r, q, f = (med.get((t, job)) for t in ("raw", "qemu", "fusevol"))
    bq, br = bars[job]
    verdict = []
    if bq is not None:
        fq = ratio(u, q)
        verdict.append("n/a" if fq is None else ("PASS" if fq >= bq else "FAIL"))
    if br is not None:
        fr = ratio(u, r)
        verdict.append("n/a" if fr is None else ("PASS" if fr >= br else "FAIL"))
    pct = lambda x: "-" if x is None else "%.2f×" % x
    uring_rows.append([job, "IOPS" if "4K" in job else "MB/s", fmt(f), fmt(u), pct(ratio(u, f)),
                       pct(ratio(u, r)), pct(ratio(u, q)),
                       "-" if not verdict else ("n/a" if set(verdict) == {"n/a"} else "/".join(verdict))])
uring_head = ["job", "unit", "fusevol", "fusevol-uring", "uring/fusevol", "uring/raw", "uring/qemu", "result"]
uring_md = "\n".join(["| " + " | ".join(uring_head) + " |", "|" + "|".join("---" for _ in uring_head) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in uring_rows])
lat_head = ["job"] + ["%s clat µs" % t for t in ("raw", "qemu", "fusevol", "fusevol-uring")]
lat_rows = [[job] + [fmt(statistics.median(lat[(t, job)])) if (t, job) in lat else "-"
                     for t in ("raw", "qemu", "fusevol", "fusevol-uring")] for job in jobs if "4K" in job]
lat_md = "\n".join(["| " + " | ".join(lat_head) + " |", "|" + "|".join("---" for _ in lat_head) + "|"]
                   + ["| " + " | ".join(r) + " |" for r in lat_rows])
runs_head = ["job"] + ["%s (every run)" % t for t in ("raw", "qemu", "fusevol", "fusevol-uring")]
runs_rows = [[job] + [" / ".join(fmt(v) for v in vals[(t, job)]) if (t, job) in vals else "-"
                      for t in ("raw", "qemu", "fusevol", "fusevol-uring")] for job in jobs]
runs_md = "\n".join(["| " + " | ".join(runs_head) + " |", "|" + "|".join("---" for _ in runs_head) + "|"]
                    + ["| " + " | ".join(r) + " |" for r in runs_rows])
notes = """Notes:
- MB/s = 10^6 bytes/s (1 MiB jobs); IOPS for 4 KiB jobs. Ratios are fusevol divided by the other target.
- Every target was sparse/thin, then filled once by a sequential 1 MiB O_DIRECT write of its whole size.
- sync + drop_caches before every job. fusevol opens volume files with direct_io (no page cache of the FUSE
  file; buffered I/O reaches the daemon as it comes); the page cache of the backing files is used by all
  targets: a 12 s time-based job re-reads the file when it finishes a pass, so passes after the first may
  be served from memory — for every target alike. qemu's fuse export (10.0, libfuse, one thread) keeps no
  FUSE page cache across opens and its buffered writes are write-through: every 1 MiB write is copied into
  the page cache and sent to qemu synchronously; its qcow2 file is read and written through the host page
  cache (qemu's default cache.direct=off), as fusevol's arrays and the raw file are.
- Write jobs include a final fsync in their time (end_fsync), so no target gains by leaving dirty pages."""
print()
print(info)
print()
print(table)
print()
if uring_rows:
    print("FUSE over io_uring (fusevold --uring), against the same daemon on /dev/fuse and the bars:")
    uw = [max(len(str(x)) for x in col) for col in zip(uring_head, *uring_rows)]
    for r in [uring_head, ["-" * n for n in uw]] + uring_rows:
        print("  ".join(str(c).ljust(uw[i]) for i, c in enumerate(r)).rstrip())
    print()
print("Mean completion latency of the 4 KiB jobs (µs):")
lw = [max(len(str(x)) for x in col) for col in zip(lat_head, *lat_rows)]
for r in [lat_head] + lat_rows:
    print("  ".join(str(c).ljust(lw[i]) for i, c in enumerate(r)).rstrip())
if max(len(v) for v in vals.values()) > 1:
    print()
    print("Every run (the table shows the median):")
    rw = [max(len(str(x)) for x in col) for col in zip(runs_head, *runs_rows)]
    for r in [runs_head] + runs_rows:
        print("  ".join(str(c).ljust(rw[i]) for i, c in enumerate(r)).rstrip())
print()
print(notes)
# BENCH_STATS=both: statistics + metrics on ("fusevol") against statistics off ("fusevol-nostats")
stats_md = ""
if any(t == "fusevol-nostats" for t, _ in vals):
    sh = ["job", "unit", "stats+metrics on", "stats off", "on/off", "on (every run)", "off (every run)", "run-to-run spread (max/min, worse of the two)"]
    srows = []
    for job in jobs:
        on, off = vals.get(("fusevol", job)), vals.get(("fusevol-nostats", job))
        if not on or not off:
            continue
        spread = max(max(v) / min(v) if min(v) > 0 else 0 for v in (on, off))
        srows.append([job, "IOPS" if "4K" in job else "MB/s", fmt(statistics.median(on)), fmt(statistics.median(off)),
                      "%.3f×" % (statistics.median(on) / statistics.median(off)),
                      " / ".join(fmt(v) for v in on), " / ".join(fmt(v) for v in off), "%.3f×" % spread])
    sw = [max(len(str(x)) for x in col) for col in zip(sh, *srows)]
    print()
    print("Statistics and metrics on (fusevol) vs statistics off (fusevol-nostats), medians:")
    for r in [sh] + srows:
        print("  ".join(str(c).ljust(sw[i]) for i, c in enumerate(r)).rstrip())
    stats_md = ("Statistics and metrics on (`fusevol`: counters, exporter, a scrape every second) vs statistics off "
                "(`fusevol-nostats`: `fusevold --no-stats`), medians; the spread is the larger max/min of the runs "
                "of either target:\n\n"
                + "\n".join(["| " + " | ".join(sh) + " |", "|" + "|".join("---" for _ in sh) + "|"]
                             + ["| " + " | ".join(r) + " |" for r in srows]) + "\n\n")
if out:
    with open(out, "w") as fh:
        fh.write("# fusevol benchmark run\n\n" + info + "\n\n" + md
                 + ("\n\nFUSE over io_uring (fusevold --uring):\n\n" + uring_md if uring_rows else "")
                 + "\n\nMean completion latency of the 4 KiB jobs:\n\n"
                 + lat_md + "\n\n"
                 + ("Every run (the table shows the median):\n\n" + runs_md + "\n\n" if max(len(v) for v in vals.values()) > 1 else "")
                 + stats_md
                 + notes + "\n")
    print("\nmarkdown written to " + out)
EOF

if [ "${BENCH_DISK_BYTES:-0}" = 1 ] && [ -s "$DISK_RESULTS" ]; then
    python3 - "$DISK_RESULTS" "$OUT" "$RUNTIME" "$RAMP" <<'EOF'
import json, sys
rows = []
for line in open(sys.argv[1]):
    t, job, out, before, after = line.rstrip("\n").split("\t")
    text = open(out).read()
    j = json.loads(text[text.index('{'):])["jobs"][0]
    # reads in the job's whole time, ramp included (fio counts only the measured part)
    ops = j["read"]["iops"] * (float(sys.argv[3]) + float(sys.argv[4]))
    d0, p0 = map(int, before.split())
    d1, p1 = map(int, after.split())
    dev = (d1 - d0) / ops / 1024 if ops else 0
    own = "%.1f" % ((p1 - p0) / ops / 1024) if t == "fusevol" and ops else "-"
    rows.append([t, job, "%.0f" % ops, "%.1f" % dev, own])
head = ["target", "job", "reads (est.)", "device KiB/read (whole machine)", "fusevold KiB/read"]
md = "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
               + ["| " + " | ".join(r) + " |" for r in rows])
print("\nBytes read from the disk per 4 KiB read:")
print(md)
if sys.argv[2]:
    with open(sys.argv[2], "a") as fh:
        fh.write("\nBytes read from the disk per 4 KiB read (device: all of the machine's reads; "
                 "fusevold: /proc/PID/io read_bytes):\n\n" + md + "\n")
EOF
fi

# ---------------------------------------------------------------- copy functions
# Snapshots and pairs (scripts/bench-copy.sh) after the fio comparison; BENCH_COPY=0 skips.
if [ "${BENCH_COPY:-1}" = 1 ] && has_target fusevol; then
    (cleanup) || true   # stop this script's daemons now (cleanup exits, hence the subshell)
    trap - EXIT
    copy_args=()
    [ "$QUICK" = 1 ] && copy_args+=(--quick)
    [ -n "$OUT" ] && copy_args+=(--out "${OUT%.md}-copy.md")
    BENCH_FUSEVOL_BIN="${BENCH_FUSEVOL_BIN:-target/release}" bash "$(dirname "$0")/bench-copy.sh" "${copy_args[@]}"
fi

# ---------------------------------------------------------------- replication
# Journal on vs off and replication lag (scripts/bench-repl.sh); BENCH_REPL=0 skips.
if [ "${BENCH_REPL:-1}" = 1 ] && has_target fusevol; then
    (cleanup) || true
    trap - EXIT
    repl_args=()
    [ "$QUICK" = 1 ] && repl_args+=(--quick)
    [ -n "$OUT" ] && repl_args+=(--out "${OUT%.md}-repl.md")
    BENCH_FUSEVOL_BIN="${BENCH_FUSEVOL_BIN:-target/release}" bash "$(dirname "$0")/bench-repl.sh" "${repl_args[@]}"
fi
