#!/usr/bin/env bash
# scripts/bench-copy.sh — the copy functions of fusevol, measured on one pool:
#   snapshots: create time vs volume size; first 4 KiB random writes after a snapshot vs the
#              same writes with no snapshot (per extent size); 4 KiB random reads with 0/10/100
#              snapshots;
#   pairs:     full initial copy rate; resync with 1 % changed vs a full copy; host write speed
#              during a copy vs none.
# Called by scripts/bench.sh (BENCH_COPY=0 skips it); runs on its own too.
# Usage: scripts/bench-copy.sh [--quick] [--out FILE.md]
# Environment: BENCH_DIR=/var/tmp, BENCH_FUSEVOL_BIN=target/release
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "bench-copy.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

BIN=${BENCH_FUSEVOL_BIN:-target/release}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
[ -x "$BIN/fusevold" ] || cargo build --release --bins
command -v fio >/dev/null || bash scripts/install-deps.sh
if [ "$QUICK" = 1 ]; then VOL=1G; RT=3; SIZES="1G 4G"; else VOL=4G; RT=8; SIZES="1G 8G 64G"; fi

WORK=$(mktemp -d "$BENCH_DIR/fusevol-bench-copy.XXXXXX")
PID=""
log() { printf '[bench-copy %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
stop_daemon() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID"
        for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    PID=""
    if findmnt -rn --mountpoint "$WORK/mnt" >/dev/null 2>&1; then umount -l "$WORK/mnt" || true; fi
}
cleanup() { stop_daemon; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

start_pool() { # extent-size arrays...
    stop_daemon
    rm -rf "$WORK/pool" "$WORK/mnt"
    local es=$1; shift
    local args=()
    for a in "$@"; do args+=(--array "$a"); done
    "$BIN/fusevol" init "$WORK/pool" --extent-size "$es" "${args[@]}" >/dev/null
    RUST_LOG=warn "$BIN/fusevold" "$WORK/pool" "$WORK/mnt" >"$WORK/daemon.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        "$BIN/fusevol" -p "$WORK/pool" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$WORK/daemon.log" >&2
    exit 1
}
fv() { "$BIN/fusevol" -p "$WORK/pool" "$@"; }

# One control request, timed inside python (no process start in the figure): prints ms.
ctl_ms() { # json-request
    python3 - "$WORK/pool/control.sock" "$1" <<'EOF'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
t = time.perf_counter()
s.sendall((sys.argv[2] + "\n").encode())
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
ms = (time.perf_counter() - t) * 1000
r = json.loads(buf)
if not r["ok"]:
    sys.exit("request failed: %s" % r["error"])
print("%.2f" % ms)
EOF
}

fio_iops() { # file rw extra-args... -> IOPS (read+write)
    local f=$1 rw=$2; shift 2
    fio --name=b --filename="$f" --rw="$rw" --bs=4k --direct=1 --ioengine=psync \
        --randrepeat=1 --randseed=42 --output-format=json "$@" 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))'
}
fio_bw() { # file extra-args... -> MB/s written
    fio --name=b --filename="$1" --rw=write --bs=1M --direct=1 --ioengine=psync \
        --output-format=json "${@:2}" 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["write"]["bw_bytes"]/1e6))'
}
fill() { fio --name=f --filename="$1" --rw=write --bs=1M --direct=1 --ioengine=psync --output-format=terse >/dev/null 2>&1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); log "$1: $2 ($3)"; }

# ------------------------------------------------------------------ snapshots
log "snapshot create time vs volume size (extents allocated with fallocate)"
start_pool 256K a0:64G a1:64G
for s in $SIZES; do
    fv volume create "v$s" --size "$s" >/dev/null 2>&1
    fallocate -l "$s" "$WORK/mnt/v$s"
    t1=$(ctl_ms "{\"op\":\"snapshot_create\",\"volume\":\"v$s\",\"name\":\"a\"}")
    t2=$(ctl_ms "{\"op\":\"snapshot_create\",\"volume\":\"v$s\",\"name\":\"b\"}")
    row "snapshot create, $s volume fully allocated" "$t1 ms, $t2 ms" "bar < 10 ms, independent of size"
done

for es in 64K 256K 1M; do
    log "first 4 KiB random writes after a snapshot, extent size $es"
    start_pool "$es" a0:16G a1:16G
    fv volume create v --size "$VOL" >/dev/null
    fill "$WORK/mnt/v"
    n=$((QUICK ? 2000 : 6000))
    base=$(fio_iops "$WORK/mnt/v" randwrite --size="$VOL" --number_ios=$n)
    fv snapshot create v s1 >/dev/null
    after=$(fio_iops "$WORK/mnt/v" randwrite --size="$VOL" --number_ios=$n)
    ratio=$(python3 -c "print('%.2f' % ($after / max($base, 1)))")
    row "4K random writes (QD1 direct, $n writes) after a snapshot, extent $es" "$after IOPS vs $base without: ${ratio}x" "bar >= 0.5x"
done

log "4 KiB random reads with 0 / 10 / 100 snapshots"
start_pool 256K a0:16G a1:16G
fv volume create v --size "$VOL" >/dev/null
fill "$WORK/mnt/v"
r0=$(fio_iops "$WORK/mnt/v" randread --size="$VOL" --runtime=$RT --time_based)
for i in $(seq 1 100); do
    dd if=/dev/urandom of="$WORK/mnt/v" bs=64k count=1 seek=$((i * 37)) conv=notrunc oflag=direct status=none
    fv snapshot create v "g$i" >/dev/null
    if [ "$i" = 10 ]; then r10=$(fio_iops "$WORK/mnt/v" randread --size="$VOL" --runtime=$RT --time_based); fi
done
r100=$(fio_iops "$WORK/mnt/v" randread --size="$VOL" --runtime=$RT --time_based)
row "4K random reads (QD1 direct) with 0 / 10 / 100 snapshots" "$r0 / $r10 / $r100 IOPS" "no slowdown with snapshots"

# ------------------------------------------------------------------ pairs
log "pairs: initial copy, resync with 1 % changed, host writes during a copy"
start_pool 256K p0:16G:fast p1:16G:fast b0:16G:backup b1:16G:backup
fv volume create p --size "$VOL" --tier fast >/dev/null
fill "$WORK/mnt/p"
t=$(now)
fv pair create p s --create-svol --svol-tier backup --rate 100G --wait >/dev/null
full=$(since "$t")
vb=$(python3 -c "import sys; print(int(float(sys.argv[1])))" "$(stat -c %s "$WORK/mnt/p")")
rate=$(python3 -c "print('%.0f' % ($vb / 1e6 / $full))")
row "full initial copy of $VOL (allocated)" "${full} s, $rate MB/s" "throttle off (--rate 100G)"
fv pair split p >/dev/null
# 1 % of the regions changed: one 4 KiB write into every 100th extent.
es=$((256 * 1024))
regions=$((vb / es))
for r in $(seq 0 100 $((regions - 1))); do
    dd if=/dev/urandom of="$WORK/mnt/p" bs=4k count=1 seek=$((r * es / 4096)) conv=notrunc oflag=direct status=none
done
t=$(now)
fv pair resync p --rate 100G --wait >/dev/null
rs=$(since "$t")
pct=$(python3 -c "print('%.1f' % (100 * $rs / $full))")
row "resync after 1 % of the regions changed" "${rs} s = ${pct} % of the full copy" "bar <= 3 %"
cmp "$WORK/mnt/p" "$WORK/mnt/s" || { log "ERROR: S != P after resync"; exit 1; }
fv pair delete p >/dev/null
fv volume create q --size "$VOL" --tier fast >/dev/null
fill "$WORK/mnt/q"
alone=$(fio_bw "$WORK/mnt/q" --size="$VOL" --runtime=$RT --time_based)
fv pair create q q-s --create-svol --svol-tier backup >/dev/null
during=$(fio_bw "$WORK/mnt/q" --size="$VOL" --runtime=$RT --time_based)
st=$(fv --json pair status q | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["state"])')
fv pair wait q --state PAIR >/dev/null
paired=$(fio_bw "$WORK/mnt/q" --size="$VOL" --runtime=$RT --time_based)
ratio=$(python3 -c "print('%.2f' % ($during / max($alone, 1)))")
row "1 MiB direct writes to a P-VOL during its initial copy (default throttle 128 MiB/s)" "$during MB/s during COPY (state at end: $st) vs $alone MB/s unpaired: ${ratio}x; in PAIR (dual writes) $paired MB/s" "bar >= 0.5x"

{
    echo "| measure | result | bar / note |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "${OUT:-/dev/null}"
