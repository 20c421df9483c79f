#!/usr/bin/env bash
# scripts/bench-scale.sh — how the daemon's cost grows with the pool (issue 18, item 6).
#
# One pool of sparse arrays (SCALE_SIZE of volume space plus room), one daemon, measured in steps:
#   map       `fallocate` of a SCALE_SIZE volume: maps every extent, writes no data (time; the log
#             grows because the flusher is told not to checkpoint: --flush-ms 3600000)
#   rss       VmRSS / VmHWM of fusevold with the volume fully mapped (bar: < 256 MiB for 1 TiB)
#   replay    kill -9, start again: recovery replays the whole metadata log (time to a mounted,
#             answering daemon), then writes a checkpoint
#   restart   clean stop (checkpoint), start again: time after a checkpoint (bar: < 2 s, 1 TiB)
#   snapshots SCALE_SNAPS snapshots of a 64 GiB volume with data, each create timed by the daemon
#             round trip (first, median of the last 10, max); RSS after
#   volumes   SCALE_VOLS volumes created over one control connection, then `fusevol volume list
#             --json` and `ls MOUNTPOINT` timed; RSS after
# Usage: scripts/bench-scale.sh [--quick] [--out FILE.md] [--keep]
#   --quick   64 GiB volume, 100 snapshots, 1,000 volumes (a smoke run)
# Environment: SCALE_DIR=/var/tmp (not tmpfs)  SCALE_SIZE=1T  SCALE_EXTENT=256K  SCALE_SNAPS=1000
#   SCALE_VOLS=10000  BENCH_FUSEVOL_BIN=target/release
# Needs: fallocate, python3, FUSE. Run under `flock /work/bench.lock` next to other benches.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0; OUT=""; KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-scale.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    SIZE=${SCALE_SIZE:-64G}; SNAPS=${SCALE_SNAPS:-100}; VOLS=${SCALE_VOLS:-1000}
else
    SIZE=${SCALE_SIZE:-1T}; SNAPS=${SCALE_SNAPS:-1000}; VOLS=${SCALE_VOLS:-10000}
fi
EXTENT=${SCALE_EXTENT:-256K}
BIN=${BENCH_FUSEVOL_BIN:-$ROOT/target/release}
FV=("$BIN/fusevol"); FVD="$BIN/fusevold"
BASE=${SCALE_DIR:-/var/tmp}
W=$(mktemp -d "$BASE/fusevol-scale.XXXXXX")
POOL=$W/pool; MNT=$W/mnt; mkdir -p "$MNT"
export FUSEVOL_POOL=$POOL
PID=""

log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }
rss() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f MiB (peak %.1f MiB)", r/1024, h/1024}' "/proc/$PID/status"; }
cleanup() {
    local rc=$?
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill "$PID"; wait "$PID" 2>/dev/null || true; fi
    mountpoint -q "$MNT" && fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
    exit $rc
}
trap cleanup EXIT

start() { # extra args...; sets PID and TOOK (seconds until mounted and answering)
    local t0; t0=$(now)
    RUST_LOG=${RUST_LOG:-info} "$FVD" "$POOL" "$MNT" --flush-ms 3600000 "$@" >> "$W/fusevold.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 6000); do
        kill -0 "$PID" 2>/dev/null || { tail -20 "$W/fusevold.log" >&2; die "fusevold exited"; }
        if mountpoint -q "$MNT" && "${FV[@]}" pool info > /dev/null 2>&1; then TOOK=$(since "$t0"); return; fi
        sleep 0.02
    done
    die "fusevold did not come up"
}
stop() { kill -"${1:-TERM}" "$PID"; wait "$PID" 2>/dev/null || true; PID=""
         mountpoint -q "$MNT" && { fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT"; } || true; }

bytes() { python3 -c "import sys,re; m=re.fullmatch(r'(\d+)([KMGT]?)',sys.argv[1]); print(int(m[1])*1024**' KMGT'.index(m[2] or ' '))" "$1"; }
SIZE_B=$(bytes "$SIZE"); ARR=$(( SIZE_B / 4 / 1073741824 + 24 ))G
RESULTS=()
rec() { RESULTS+=("| $1 | $2 |"); log "$1: $2"; }

log "work dir $W; volume $SIZE, extent $EXTENT, $SNAPS snapshots, $VOLS volumes"
"${FV[@]}" init "$POOL" --extent-size "$EXTENT" --array "a0:$ARR" --array "a1:$ARR" --array "a2:$ARR" --array "a3:$ARR" > /dev/null
start; rec "start, empty pool (s)" "$TOOK"
rec "RSS, empty pool" "$(rss)"
"${FV[@]}" volume create big --size "$SIZE" > /dev/null
t0=$(now); fallocate -l "$SIZE_B" "$MNT/big"; rec "fallocate $SIZE (maps every extent) (s)" "$(since "$t0")"
rec "mapped extents" "$("${FV[@]}" --json volume info big | python3 -c "import json,sys; v=json.load(sys.stdin); print(v['allocated'] // $(bytes "$EXTENT"))")"
rec "RSS, $SIZE mapped" "$(rss)"
rec "metadata log (bytes)" "$(stat -c %s "$POOL/meta.log")"
stop KILL
start; rec "start after kill -9, replaying that log (s)" "$TOOK"
rec "RSS after the replay" "$(rss)"
stop TERM
rec "checkpoint (bytes)" "$(stat -c %s "$POOL/checkpoint")"
start; rec "start after a checkpoint, $SIZE mapped (s)" "$TOOK"
rec "RSS after a start from the checkpoint" "$(rss)"

# Snapshots: a 64 GiB volume with data spread over it (one 64 KiB write per 64 MiB).
"${FV[@]}" volume create snapvol --size 64G > /dev/null
python3 - "$MNT/snapvol" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(1024):
    os.pwrite(fd, os.urandom(65536), i * (64 << 20))
os.close(fd)
PY
python3 - "$POOL/control.sock" "$SNAPS" > "$W/snaps.txt" <<'PY'
import json, socket, sys, time, statistics
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
t = []
for i in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    f.write((json.dumps({"op": "snapshot_create", "volume": "snapvol", "name": "s%05d" % i}) + "\n").encode()); f.flush()
    r = json.loads(f.readline())
    t.append((time.perf_counter() - t0) * 1000)
    if not r.get("ok"): sys.exit("snapshot %d: %s" % (i, r))
print("%.2f %.2f %.2f" % (t[0], statistics.median(t[-10:]), max(t)))
PY
read -r first last max < "$W/snaps.txt"
rec "snapshot create, 1st / median of the last 10 of $SNAPS / max (ms, round trip)" "$first / $last / $max"
t0=$(now); "${FV[@]}" --json snapshot list snapvol > /dev/null; rec "snapshot list, $SNAPS snapshots (s)" "$(since "$t0")"
rec "RSS with $SNAPS snapshots" "$(rss)"

python3 - "$POOL/control.sock" "$VOLS" > "$W/vols.txt" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
t0 = time.perf_counter()
for i in range(int(sys.argv[2])):
    f.write((json.dumps({"op": "volume_create", "name": "v%05d" % i, "size": 1 << 30}) + "\n").encode()); f.flush()
    r = json.loads(f.readline())
    if not r.get("ok"): sys.exit("volume %d: %s" % (i, r))
print("%.1f" % (time.perf_counter() - t0))
PY
rec "create $VOLS volumes over one connection (s)" "$(cat "$W/vols.txt")"
t0=$(now); "${FV[@]}" --json volume list > "$W/list.json"; rec "volume list --json, $((VOLS + 2)) volumes (s)" "$(since "$t0")"
t0=$(now); ls "$MNT" > /dev/null; rec "ls MOUNTPOINT (s)" "$(since "$t0")"
rec "RSS with $VOLS more volumes" "$(rss)"
stop TERM
start; rec "start after a checkpoint, everything above (s)" "$TOOK"
rec "RSS after that start" "$(rss)"
stop TERM

INFO="- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); kernel $(uname -r)
- fusevol $(git -C "$ROOT" rev-parse --short HEAD); pool on $(findmnt -rn -o FSTYPE --target "$BASE"); volume $SIZE, extent $EXTENT; load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
TABLE=$(printf '| what | measured |\n|---|---|\n'; printf '%s\n' "${RESULTS[@]}")
printf '\n%s\n\n%s\n' "$INFO" "$TABLE"
if [ -n "$OUT" ]; then printf '%s\n\n%s\n' "$INFO" "$TABLE" > "$OUT"; fi
