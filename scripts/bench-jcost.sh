#!/usr/bin/env bash
# scripts/bench-jcost.sh — where the CPU of a journaled write goes, per MiB written, against an
# unjournaled one (issue 18 item 5). CPU per byte does not depend on how loaded the machine is,
# throughput does: on a shared 2-CPU machine this is the number to compare.
#
# One daemon, one pool, two volumes (plain, jv); jv is in a journal group shipping to a tmpfs
# remote, acknowledged by `fusevol-standin` (headers only: the CPU of a real secondary is at
# the other site). Cases, each run BENCH_REPEAT times, alternating:
#   1M   sequential direct writes QD1 (psync), unjournaled (plain) and journaled (jv)
#   4k   random direct writes QD1 (psync), unjournaled and journaled
# For every run the CPU time of every thread is read before and after (/proc/PID/task/*/
# schedstat: ns on CPU; stat: user/system split): the daemon's threads grouped by name (fuser
# workers, fuse-io stage, ship-GROUP, ship-sync, flusher, ...; threads that ended in between
# are "(exited)"), the stand-in, fio (its own JSON usr/sys), and kernel threads (kworker, jbd2,
# ... machine-wide, so other users' I/O counts there too). After fio ends the run waits until
# the stand-in has acknowledged everything written and 1 s more, so the shipping, destage and
# sync a write causes are counted with it. Printed: CPU-ms per MiB written per group (median of
# the runs), throughput, and the CPU-bound ceiling of journaled/unjournaled throughput.
# Usage: scripts/bench-jcost.sh [--quick] [--out FILE.md] [--perf DIR]
#   --perf DIR: also `perf record -g` the daemon during one extra run of each case (DIR/*.data)
# Environment: BENCH_DIR=/var/tmp, BENCH_FUSEVOL_BIN=target/release, BENCH_REPEAT=3,
#              BENCH_RUNTIME (s, default 8; 4 with --quick)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=""
PERF=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        --perf) PERF=$2; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "bench-jcost.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
BIN=${BENCH_FUSEVOL_BIN:-target/release}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
REPEAT=${BENCH_REPEAT:-3}
[ -x "$BIN/fusevold" ] && [ -x "$BIN/fusevol-standin" ] || cargo build --release --bins
command -v fio >/dev/null || bash scripts/install-deps.sh
if [ "$QUICK" = 1 ]; then VOL=1G; RT=${BENCH_RUNTIME:-4}; else VOL=2G; RT=${BENCH_RUNTIME:-8}; fi

WORK=$(mktemp -d "$BENCH_DIR/fusevol-bench-jcost.XXXXXX")
DPID="" SPID=""
log() { printf '[bench-jcost %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
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

# snap.py snap OUT PID...   : per-thread CPU of the PIDs and of the kernel threads, as JSON
# snap.py diff A B FIO MIB  : per-group CPU ms between two snapshots (+ fio's), as JSON
cat >"$WORK/snap.py" <<'EOF'
import json, os, re, sys

def task_cpu(d):
    """(ns on CPU, user ticks, system ticks, comm) of a task directory."""
    with open(d + "/schedstat") as f:
        ns = int(f.read().split()[0])
    with open(d + "/stat") as f:
        s = f.read()
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    return ns, int(rest[11]), int(rest[12]), comm

def group_of(comm):
    # fuse-io-3 -> fuse-io, kworker/1:2H-kblockd -> kworker, ship-g -> ship-GROUP
    if comm.startswith("kworker"):
        return "kworker"
    if comm.startswith("ship-") and comm != "ship-sync":
        return "ship-GROUP"
    if comm.startswith("apply-") or comm.startswith("base-"):
        return comm.split("-")[0] + "-GROUP"
    return re.sub(r"[-/_:]?\d+$", "", comm) or comm

def snap(pids):
    out = {"procs": {}, "kernel": {}}
    for pid in pids:
        p = {"threads": {}}
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        rest = s[s.rindex(")") + 2:].split()
        # The process's own times include its ended threads (kept in the signal struct).
        p["utime"], p["stime"] = int(rest[11]), int(rest[12])
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                p["threads"][tid] = task_cpu(f"/proc/{pid}/task/{tid}")
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
        out["procs"][str(pid)] = p
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
            if pid != "2" and ppid != 2:
                continue
            ns, ut, st, comm = task_cpu(f"/proc/{pid}")
            out["kernel"][pid] = (ns, ut, st, comm)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    out["machine_busy_ticks"] = sum(cpu) - cpu[3] - cpu[4]
    return out

def diff(a, b, labels):
    hz = os.sysconf("SC_CLK_TCK")
    res = {}
    def add(name, ms, ums=0.0, sms=0.0):
        r = res.setdefault(name, [0.0, 0.0, 0.0])
        r[0] += ms; r[1] += ums; r[2] += sms
    for pid, label in labels.items():
        pa, pb = a["procs"][pid], b["procs"][pid]
        live = 0.0
        for tid, (ns, ut, st, comm) in pb["threads"].items():
            ns0, ut0, st0, _ = pa["threads"].get(tid, (0, 0, 0, comm))
            ms = (ns - ns0) / 1e6
            live += ((ut - ut0) + (st - st0)) * 1000 / hz
            name = label if label != "daemon" else "daemon " + group_of(comm)
            add(name, ms, (ut - ut0) * 1000 / hz, (st - st0) * 1000 / hz)
        total = ((pb["utime"] - pa["utime"]) + (pb["stime"] - pa["stime"])) * 1000 / hz
        exited = total - live
        if label == "daemon" and exited > 0:
            add("daemon (exited threads)", exited)
    for pid, (ns, ut, st, comm) in b["kernel"].items():
        ns0 = a["kernel"].get(pid, (0,))[0]
        if ns > ns0:
            add("kernel " + group_of(comm), (ns - ns0) / 1e6)
    res["machine (all CPUs, everyone)"] = [
        (b["machine_busy_ticks"] - a["machine_busy_ticks"]) * 1000 / hz, 0, 0]
    return res

if sys.argv[1] == "snap":
    json.dump(snap(sys.argv[3:]), open(sys.argv[2], "w"))
else:
    a, b = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
    labels = json.loads(sys.argv[4])
    res = diff(a, b, labels)
    fio = json.load(open(sys.argv[5]))
    job = fio["jobs"][0]
    rt = job["job_runtime"]
    res["fio"] = [(job["usr_cpu"] + job["sys_cpu"]) * rt / 100,
                  job["usr_cpu"] * rt / 100, job["sys_cpu"] * rt / 100]
    w = job["write"]
    json.dump({"cpu_ms": res, "mib": w["io_bytes"] / 2**20, "secs": rt / 1000,
               "iops": w["iops"], "mbps": w["bw_bytes"] / 1e6}, sys.stdout)
EOF

mkdir -p "$WORK/remote"
mount -t tmpfs -o size=16G tmpfs "$WORK/remote"
"$BIN/fusevol" init "$WORK/pool" --extent-size 256K --array a0:16G --array a1:16G >/dev/null
RUST_LOG=warn "$BIN/fusevold" "$WORK/pool" "$WORK/mnt" >"$WORK/daemon.log" 2>&1 &
DPID=$!
fp() { "$BIN/fusevol" -p "$WORK/pool" "$@"; }
for _ in $(seq 100); do fp ping >/dev/null 2>&1 && break; sleep 0.1; done
fp ping >/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
for v in plain jv; do fp volume create "$v" --size "$VOL" >/dev/null; done
# Same starting point: every extent allocated (overwrites, no allocation cost).
for v in plain jv; do
    fio --name=fill --filename="$WORK/mnt/$v" --rw=write --bs=1M --direct=1 --size="$VOL" >/dev/null 2>&1
done
fp group create g --volumes jv --remote "$WORK/remote" >/dev/null
"$BIN/fusevol-standin" --remote "$WORK/remote" --group g 2>"$WORK/standin.log" &
SPID=$!
caught_up() {
    fp group status g --json | python3 -c 'import json,sys; g=json.load(sys.stdin)[0]; sys.exit(0 if g["state"] == "replicating" and g["acknowledged"] >= g["written"] else 1)' 2>/dev/null
}
wait_caught_up() {
    for _ in $(seq 600); do caught_up && return 0; sleep 0.1; done
    log "the stand-in did not catch up in 60 s"; return 1
}
wait_caught_up
fp sync >/dev/null 2>&1 || sync
sleep 2

LABELS="{\"$DPID\": \"daemon\", \"$SPID\": \"stand-in\"}"
one_run() { # name file rw bs -> appends a JSON line to $WORK/runs.jsonl
    local name=$1 file=$2 rw=$3 bs=$4
    python3 "$WORK/snap.py" snap "$WORK/a.json" "$DPID" "$SPID"
    fio --name=b --filename="$file" --rw="$rw" --bs="$bs" --direct=1 --ioengine=psync \
        --size="$VOL" --time_based --runtime="$RT" --randrepeat=1 --randseed=7 \
        --output-format=json >"$WORK/fio.json" 2>/dev/null
    [ "$name" = "${name%journaled}" ] || wait_caught_up
    sleep 1
    python3 "$WORK/snap.py" snap "$WORK/b.json" "$DPID" "$SPID"
    python3 "$WORK/snap.py" diff "$WORK/a.json" "$WORK/b.json" "$LABELS" "$WORK/fio.json" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); d["case"]=sys.argv[1]; d["load"]=open("/proc/loadavg").read().split()[0]; print(json.dumps(d))' "$name" >>"$WORK/runs.jsonl"
    log "$name: $(tail -1 "$WORK/runs.jsonl" | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d["cpu_ms"]; dm=sum(v[0] for k,v in c.items() if k.startswith("daemon")); print("%.0f MB/s %.0f IOPS, daemon %.2f ms/MiB, load %s" % (d["mbps"], d["iops"], dm/d["mib"], d["load"]))')"
}
: >"$WORK/runs.jsonl"
for _ in $(seq "$REPEAT"); do
    one_run "1M unjournaled" "$WORK/mnt/plain" write 1M
    one_run "1M journaled" "$WORK/mnt/jv" write 1M
done
for _ in $(seq "$REPEAT"); do
    one_run "4k QD1 unjournaled" "$WORK/mnt/plain" randwrite 4k
    one_run "4k QD1 journaled" "$WORK/mnt/jv" randwrite 4k
done
if [ -n "$PERF" ] && command -v perf >/dev/null; then
    mkdir -p "$PERF"
    for spec in "plain write 1M" "jv write 1M" "plain randwrite 4k" "jv randwrite 4k"; do
        set -- $spec
        perf record -g -o "$PERF/$1-$3.data" -p "$DPID" -- sleep "$RT" >/dev/null 2>&1 &
        ppid=$!
        fio --name=b --filename="$WORK/mnt/$1" --rw="$2" --bs="$3" --direct=1 --ioengine=psync \
            --size="$VOL" --time_based --runtime="$RT" >/dev/null 2>&1
        wait "$ppid" || true
        [ "$1" = plain ] || wait_caught_up
    done
    log "perf data in $PERF (perf report -i $PERF/jv-1M.data --no-children)"
fi

status=$(fp group status g --json)
{
    echo "### Journal CPU cost per MiB ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), volume $VOL, ${RT} s runs, median of $REPEAT, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo
    python3 - "$WORK/runs.jsonl" <<'EOF'
import json, os, statistics, sys
ncpu = os.cpu_count()
runs = [json.loads(l) for l in open(sys.argv[1])]
cases = ["1M unjournaled", "1M journaled", "4k QD1 unjournaled", "4k QD1 journaled"]
by = {c: [r for r in runs if r["case"] == c] for c in cases}
groups = sorted({g for r in runs for g in r["cpu_ms"]},
                key=lambda g: (not g.startswith("daemon"), g.startswith("machine"), g))
def per_mib(c, g):
    return statistics.median(r["cpu_ms"].get(g, [0])[0] / r["mib"] for r in by[c])
def daemon(c):
    return statistics.median(sum(v[0] for k, v in r["cpu_ms"].items() if k.startswith("daemon")) / r["mib"] for r in by[c])
def primary(c):  # everything on the primary's machine that the write causes
    return statistics.median(sum(v[0] for k, v in r["cpu_ms"].items()
                                 if k.startswith("daemon") or k == "fio" or k.startswith("kernel")) / r["mib"] for r in by[c])
print("CPU-ms per MiB written (median of the runs; ms on CPU / MiB fio wrote):")
print()
print("| thread group | " + " | ".join(cases) + " |")
print("|---|" + "---:|" * len(cases))
for g in groups:
    vals = [per_mib(c, g) for c in cases]
    if max(vals) < 0.005 and not g.startswith("machine"):
        continue
    print(f"| {g} | " + " | ".join("%.3f" % v for v in vals) + " |")
print("| **daemon, all threads** | " + " | ".join("**%.3f**" % daemon(c) for c in cases) + " |")
print("| **daemon + fio + kernel threads** | " + " | ".join("**%.3f**" % primary(c) for c in cases) + " |")
print("| throughput (median) | " + " | ".join(
    ("%.0f MB/s" if c.startswith("1M") else "%.0f IOPS") % statistics.median(
        r["mbps"] if c.startswith("1M") else r["iops"] for r in by[c]) for c in cases) + " |")
print("| throughput (every run) | " + " | ".join(" ".join(
    "%.0f" % (r["mbps"] if c.startswith("1M") else r["iops"]) for r in by[c]) for c in cases) + " |")
print("| load average (1 min) at each run's end | " + " | ".join(" ".join(r["load"] for r in by[c]) for c in cases) + " |")
print()
for bs, bar in (("1M", 0.8), ("4k QD1", 0.9)):
    u, j = f"{bs} unjournaled", f"{bs} journaled"
    tu = statistics.median(r["mbps"] for r in by[u]); tj = statistics.median(r["mbps"] for r in by[j])
    print(f"- {bs}: measured journaled/unjournaled {tj / tu:.2f}x (bar {bar}x); "
          f"CPU-bound ceiling on this machine = daemon {daemon(u):.3f} / {daemon(j):.3f} = {daemon(u) / daemon(j):.2f}x, "
          f"daemon + fio + kernel threads {primary(u):.3f} / {primary(j):.3f} = {primary(u) / primary(j):.2f}x; "
          f"with every CPU ({ncpu}) busy on it, journaled <= {ncpu * 1000 / primary(j) * 1.048576:.0f} MB/s "
          f"= {ncpu * 1000 / primary(j) * 1.048576 / tu:.2f}x the unjournaled median")
EOF
    echo
    echo "group status after the runs: $(echo "$status" | python3 -c 'import json,sys; g=json.load(sys.stdin)[0]; print("state %s, written %d, acknowledged %d, lag %.2f s" % (g["state"], g["written"], g["acknowledged"], g["lag_seconds"]))')"
} | tee ${OUT:+"$OUT"}
