#!/usr/bin/env bash
# scripts/bench-nbd.sh — NBD servers side by side, in one run on one file system, with fio's
# nbd engine (libnbd) as the client:
#
#   fusevol   fusevold --nbd, one thin volume of the default pool layout (3 sparse arrays)
#   qsd       qemu-storage-daemon --export type=nbd over a qcow2 image (the issue's peer for 4K)
#   qemunbd   qemu-nbd over a raw file (the issue's ceiling for 1 MiB sequential)
#
# Every target starts sparse/thin and is filled once by a sequential 1 MiB write of its whole
# size (QD8, ended by a flush), so the measured jobs hit allocated data. Jobs are interleaved
# (job 1 on every target, then job 2, ...); before every job: sync + drop the page cache. Write
# jobs end with an NBD flush (fio end_fsync=1), counted in the job's time. All three servers
# use the page cache of their backing files (qemu's default cache=writeback; fusevol's arrays
# are ordinary files), so reads after the drop come from the disk the first time.
#
# Usage: scripts/bench-nbd.sh [--quick] [--out FILE.md] [--keep]
#   --quick      1 GiB targets, 4 s jobs, 1 s ramp
#   --out FILE   also write the machine info and the table as markdown to FILE
#   --keep       keep the work dir
# Environment:
#   BENCH_TARGETS="fusevol qsd qemunbd"   BENCH_DIR=/var/tmp   BENCH_SIZE=2G
#   BENCH_RUNTIME=10  BENCH_RAMP=2        BENCH_JOBS="..." (names below)
#   BENCH_FUSEVOL_BIN=target/release
# Needs root (drop_caches, FUSE), fio with the nbd engine, qemu-img, qemu-nbd,
# qemu-storage-daemon, python3.
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
        *) echo "bench-nbd.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    SIZE=${BENCH_SIZE:-1G}; RUNTIME=${BENCH_RUNTIME:-4}; RAMP=${BENCH_RAMP:-1}
else
    SIZE=${BENCH_SIZE:-2G}; RUNTIME=${BENCH_RUNTIME:-10}; RAMP=${BENCH_RAMP:-2}
fi
TARGETS=${BENCH_TARGETS:-fusevol qsd qemunbd}
BASE=${BENCH_DIR:-/var/tmp}
FV_BIN=${BENCH_FUSEVOL_BIN:-$ROOT/target/release}
ALL_JOBS="seqwrite-1M-qd8 seqread-1M-qd8 randwrite-4K-qd16 randread-4K-qd16 randwrite-4K-qd1 randread-4K-qd1"
JOBS=${BENCH_JOBS:-$ALL_JOBS}

log() { printf '[bench-nbd %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in fio qemu-img qemu-nbd qemu-storage-daemon python3; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-deps.sh"
done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine (Debian's fio has it)"
[ -x "$FV_BIN/fusevold" ] || die "$FV_BIN/fusevold missing: cargo build --release"

W=$(mktemp -d "$BASE/fusevol-bench-nbd.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    umount -l "$W/mnt" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on port $1"
}

declare -A URI
start_fusevol() {
    local port; port=$(free_port)
    local gib=$(( $(numfmt --from=iec "$SIZE") / 1073741824 + 1 ))
    "$FV_BIN/fusevol" init "$W/pool" --array "a0:${gib}G" --array "a1:${gib}G" --array "a2:${gib}G" >/dev/null
    RUST_LOG=warn "$FV_BIN/fusevold" "$W/pool" "$W/mnt" --nbd "127.0.0.1:$port" 2>"$W/fusevold.log" &
    PIDS+=($!)
    wait_port "$port"
    "$FV_BIN/fusevol" -p "$W/pool" volume create bench --size "$SIZE" >/dev/null
    URI[fusevol]="nbd://127.0.0.1:$port/bench"
}
start_qsd() {
    local port; port=$(free_port)
    qemu-img create -q -f qcow2 "$W/img.qcow2" "$SIZE"
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=file,filename=$W/img.qcow2" \
        --blockdev driver=qcow2,node-name=qcow2,file=file \
        --nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$port" \
        --export type=nbd,id=exp,node-name=qcow2,name=bench,writable=on 2>"$W/qsd.log" &
    PIDS+=($!)
    wait_port "$port"
    URI[qsd]="nbd://127.0.0.1:$port/bench"
}
start_qemunbd() {
    local port; port=$(free_port)
    truncate -s "$SIZE" "$W/img.raw"
    qemu-nbd -f raw -x bench -b 127.0.0.1 -p "$port" -t -e 16 "$W/img.raw" 2>"$W/qemu-nbd.log" &
    PIDS+=($!)
    wait_port "$port"
    URI[qemunbd]="nbd://127.0.0.1:$port/bench"
}

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# fio_job TARGET NAME RW BS QD [extra...]: JSON into $W/TARGET-NAME.json
fio_job() {
    local t=$1 name=$2 rw=$3 bs=$4 qd=$5; shift 5
    drop
    fio --name="$name" --ioengine=nbd --uri="${URI[$t]}" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="$SIZE" --output-format=json --output="$W/$t-$name.json" "$@" >/dev/null \
        || die "fio $name on $t failed"
}

for t in $TARGETS; do
    "start_$t"
    log "$t: ${URI[$t]}; filling $SIZE"
    fio_job "$t" fill write 1M 8 --end_fsync=1
done

for job in $JOBS; do
    for t in $TARGETS; do
        log "$job on $t"
        timed=(--time_based --runtime="$RUNTIME" --ramp_time="$RAMP")
        case $job in
            seqwrite-1M-qd8) fio_job "$t" "$job" write 1M 8 "${timed[@]}" --end_fsync=1 ;;
            seqread-1M-qd8) fio_job "$t" "$job" read 1M 8 "${timed[@]}" ;;
            randwrite-4K-qd16) fio_job "$t" "$job" randwrite 4k 16 "${timed[@]}" --end_fsync=1 ;;
            randread-4K-qd16) fio_job "$t" "$job" randread 4k 16 "${timed[@]}" ;;
            randwrite-4K-qd1) fio_job "$t" "$job" randwrite 4k 1 "${timed[@]}" --end_fsync=1 ;;
            randread-4K-qd1) fio_job "$t" "$job" randread 4k 1 "${timed[@]}" ;;
            *) die "unknown job $job" ;;
        esac
    done
done

python3 - "$W" "$OUT" "$SIZE" "$RUNTIME" "$TARGETS" "$JOBS" <<'EOF'
import json, os, platform, subprocess, sys, time
w, out, size, runtime, targets, jobs = sys.argv[1:7]
targets, jobs = targets.split(), jobs.split()
def res(t, j):
    p = os.path.join(w, f"{t}-{j}.json")
    try:
        d = json.load(open(p))["jobs"][0]
    except Exception:
        return None
    k = "write" if "write" in j else "read"
    return d[k]["bw_bytes"] / 1e6, d[k]["iops"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
head = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs ({cpu}), "
        f"kernel {platform.release()}, targets {size}, {runtime} s per job, fio nbd engine "
        f"({subprocess.run(['fio','--version'],capture_output=True,text=True).stdout.strip()})", ""]
cols = " | ".join(targets)
rows = [f"| job | {cols} | fusevol / qsd | fusevol / qemunbd |", "|---" * (len(targets) + 3) + "|"]
for j in jobs:
    r = {t: res(t, j) for t in targets}
    unit = (lambda v: f"{v[0]:.0f} MB/s") if "1M" in j else (lambda v: f"{v[1]:.0f} IOPS")
    cells = [unit(r[t]) if r[t] else "—" for t in targets]
    def ratio(a, b):
        if r.get(a) and r.get(b):
            return f"{r[a][0] / r[b][0]:.2f}×"
        return "—"
    rows.append(f"| {j} | " + " | ".join(cells) + f" | {ratio('fusevol','qsd')} | {ratio('fusevol','qemunbd')} |")
text = "\n".join(head + rows) + "\n"
print(text)
if out:
    open(out, "w").write(text)
EOF
