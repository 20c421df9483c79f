#!/usr/bin/env bash
# Run every test of fusevol: installs missing test tools, builds, runs the unit, model and
# FUSE integration tests, then the failpoint tests, and prints a summary.
#
#   scripts/test.sh                       everything (what CI runs)
#   FUSEVOL_TEST_THREADS=1 scripts/test.sh   fewer FUSE tests at once (default 2)
#
# The FUSE tests need root and /dev/fuse; the ext4 tests need loop devices. They fail (never
# skip) when something is missing, naming scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${FUSEVOL_TEST_THREADS:-2}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/fusevol-test-logs.XXXXXX")
names=()
states=()
secs=()
failed=0

# step NAME CMD...: run, tee the output to a log, record status and time.
step() {
    local name=$1
    shift
    local log="$LOGS/${name// /_}.log"
    local t0=$SECONDS
    echo
    echo "==== $name: $*"
    if "$@" 2>&1 | tee "$log"; then
        states+=("ok")
    else
        states+=("FAILED")
        failed=1
    fi
    names+=("$name")
    secs+=($((SECONDS - t0)))
}

# Clean up mounts and loop devices that a crashed test run may have left behind.
leftovers() {
    local found=0
    while read -r mnt; do
        [ -n "$mnt" ] || continue
        echo "test.sh: unmounting leftover $mnt" >&2
        umount -l "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
        found=1
    done < <(awk '$5 ~ /fusevol-test-/ {print $5}' /proc/self/mountinfo | sort -r)
    while read -r dev; do
        [ -n "$dev" ] || continue
        echo "test.sh: detaching leftover $dev" >&2
        losetup -d "$dev" 2>/dev/null || true
        found=1
    done < <(losetup -a 2>/dev/null | awk -F: '/fusevol-test-/ {print $1}')
    return $found
}

step "install deps" bash scripts/install-deps.sh
# The layers only point down (README "Architecture"): no import cycle, no upward use.
step "module-deps self-test" python3 scripts/module-deps.py --self-test
step "module layers" python3 scripts/module-deps.py --why --impls --layers units,names,sys,fsio,bitmap,format,events,stats,extent_map,meta,journal,pool,volume,snapshot,mirror,replication,info,schedule,storage,backup,nbd,cluster,control,fuse,daemon
step "build" cargo build --release --all-targets
step "tests" cargo test --release --no-fail-fast -- --test-threads="$THREADS"

# The integration tests that start a daemon (every mount test) again over FUSE over io_uring
# where the kernel offers it: tests/common passes --uring to fusevold when
# FUSEVOL_TEST_URING=1 and fails a test whose daemon fell back to /dev/fuse (fusevold turns
# the fuse module's enable_uring on, as root). Tests that work on a pool in-process (model,
# torn writes, metadata copies, decoders) have no transport and run once.
if [ -e /sys/module/fuse/parameters/enable_uring ]; then
    uring_targets=()
    for f in tests/*.rs; do
        grep -Eq 'TestPool|fusevold_bin|sites::' "$f" || continue
        uring_targets+=(--test "$(basename "$f" .rs)")
    done
    step "tests over io_uring" env FUSEVOL_TEST_URING=1 cargo test --release --no-fail-fast \
        "${uring_targets[@]}" -- --test-threads="$THREADS"
else
    echo "test.sh: this kernel has no FUSE over io_uring (no enable_uring parameter); one transport tested" >&2
fi

# Failpoint tests: the feature exists in Cargo.toml; run the targets that use it.
if grep -Eq '^failpoints[[:space:]]*=' Cargo.toml; then
    fp_targets=()
    if grep -rqs 'feature = "failpoints"' src tools; then
        fp_targets+=(--lib)
    fi
    for f in tests/*.rs; do
        if grep -qs 'feature = "failpoints"' "$f"; then
            fp_targets+=(--test "$(basename "$f" .rs)")
        fi
    done
    if [ "${#fp_targets[@]}" -gt 0 ]; then
        step "failpoint tests" cargo test --release --no-fail-fast --features failpoints \
            "${fp_targets[@]}" -- --test-threads="$THREADS"
    fi
fi

if ! leftovers; then
    echo "test.sh: WARNING: tests left mounts or loop devices behind (cleaned up now)" >&2
fi

# Summary: steps, then test counts from cargo's "test result:" lines.
passed=0
tfailed=0
ignored=0
while read -r p f i; do
    passed=$((passed + p))
    tfailed=$((tfailed + f))
    ignored=$((ignored + i))
done < <(cat "$LOGS"/*.log | sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p')

echo
echo "==== summary"
for i in "${!names[@]}"; do
    printf '  %-16s %-7s %5ss\n' "${names[$i]}" "${states[$i]}" "${secs[$i]}"
done
if [ "$failed" -ne 0 ]; then
    echo "  failing tests:"
    grep -h -E '^test .* \.\.\. FAILED$' "$LOGS"/*.log | sed 's/^/    /' | sort -u || true
fi
echo "  logs: $LOGS"
[ "$ignored" -eq 0 ] || echo "  ignored tests: $ignored"
echo "summary: $passed passed, $tfailed failed"
exit "$failed"
