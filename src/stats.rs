//! Per-volume and per-array I/O statistics: counters and latency histograms of relaxed
//! atomics, cheap enough to stay on always. The write pipeline router (`storage::io`) counts
//! every host read, write and discard of a volume once, with its latency and, when it fails,
//! its error kind; each array counts the reads, writes, in-kernel copies and fdatasyncs the
//! daemon makes on its file (host I/O, copy-on-write, pair copies, destage, scrubbing: all of
//! it); `fusevol stats` and the metrics endpoint read them.
//!
//! A latency histogram has 4 buckets per power of two of nanoseconds (an upper bound within
//! 25 % of the true value), so a percentile costs a walk over 256 counters and recording one
//! costs a `leading_zeros` and one `fetch_add`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::{Deserialize, Serialize};

const BUCKETS: usize = 256;

/// Kinds of errors counted, in the order of `IoStats::errors`.
pub const ERROR_KINDS: [&str; 8] = [
    "beyond_end",
    "no_space",
    "array_io",
    "metadata",
    "read_only",
    "journal",
    "journal_full",
    "other",
];

/// A latency histogram (nanoseconds).
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let l = 63 - ns.leading_zeros() as usize;
    let frac = ((ns >> (l - 2)) & 3) as usize;
    (l * 4 + frac).min(BUCKETS - 1)
}

/// The largest value bucket `i` holds.
fn bucket_upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    if i < 8 {
        return 3; // unused: 4..=7 start at bucket 8
    }
    let (l, frac) = (i / 4, (i % 4) as u64);
    ((5 + frac) << (l - 2)).saturating_sub(1)
}

impl Histogram {
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    /// The `q` quantile (0..=1) in nanoseconds: the upper bound of its bucket, at most the
    /// maximum seen. 0 when nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper(i).min(self.max_ns.load(Relaxed));
            }
        }
        self.max_ns.load(Relaxed)
    }

    /// Cumulative counts at the upper bounds of the non-empty buckets (for a Prometheus
    /// histogram): `(upper bound ns, count of values ≤ it)`.
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let c = b.load(Relaxed);
            if c > 0 {
                seen += c;
                out.push((bucket_upper(i), seen));
            }
        }
        out
    }

    pub fn summary(&self) -> Latency {
        Latency {
            count: self.count.load(Relaxed),
            sum_us: self.sum_ns.load(Relaxed) / 1000,
            p50_us: self.quantile(0.50) as f64 / 1000.0,
            p99_us: self.quantile(0.99) as f64 / 1000.0,
            max_us: self.max_ns.load(Relaxed) as f64 / 1000.0,
        }
    }
}

/// Latency of one kind of request since the daemon started, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub sum_us: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// The counters of one volume.
#[derive(Default)]
pub struct IoStats {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub discards: AtomicU64,
    pub discard_bytes: AtomicU64,
    pub read_latency: Histogram,
    pub write_latency: Histogram,
    pub errors: [AtomicU64; ERROR_KINDS.len()],
}

/// What `fusevol stats` shows of one volume (totals since the daemon started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IoCounts {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub discards: u64,
    pub discard_bytes: u64,
    pub read_latency: Latency,
    pub write_latency: Latency,
    /// Failed requests by kind (only kinds seen).
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl IoStats {
    pub fn read(&self, bytes: u64, ns: u64) {
        self.reads.fetch_add(1, Relaxed);
        self.read_bytes.fetch_add(bytes, Relaxed);
        self.read_latency.record(ns);
    }

    pub fn write(&self, bytes: u64, ns: u64) {
        self.writes.fetch_add(1, Relaxed);
        self.write_bytes.fetch_add(bytes, Relaxed);
        self.write_latency.record(ns);
    }

    pub fn discard(&self, bytes: u64) {
        self.discards.fetch_add(1, Relaxed);
        self.discard_bytes.fetch_add(bytes, Relaxed);
    }

    /// A failed request; `kind` indexes `ERROR_KINDS`.
    pub fn error(&self, kind: usize) {
        self.errors[kind.min(ERROR_KINDS.len() - 1)].fetch_add(1, Relaxed);
    }

    pub fn counts(&self) -> IoCounts {
        IoCounts {
            reads: self.reads.load(Relaxed),
            read_bytes: self.read_bytes.load(Relaxed),
            writes: self.writes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            discards: self.discards.load(Relaxed),
            discard_bytes: self.discard_bytes.load(Relaxed),
            read_latency: self.read_latency.summary(),
            write_latency: self.write_latency.summary(),
            errors: ERROR_KINDS
                .iter()
                .zip(&self.errors)
                .map(|(k, c)| (k.to_string(), c.load(Relaxed)))
                .filter(|(_, c)| *c > 0)
                .collect(),
        }
    }
}

/// Whether arrays count their I/O (process-wide: one daemon serves one pool; `fusevold
/// --no-stats` turns it off with the volumes' counters).
static ARRAY_STATS: AtomicBool = AtomicBool::new(true);

pub fn set_array_stats(on: bool) {
    ARRAY_STATS.store(on, Relaxed);
}

pub fn array_stats_on() -> bool {
    ARRAY_STATS.load(Relaxed)
}

/// Requests in progress on one array file now. Always counted (two atomic operations per
/// request, whatever `--no-stats` says): sampled, it is a cluster node's I/O load, the
/// figure that says a node is busy (`cluster::load`).
#[derive(Debug, Default)]
pub struct InFlight(AtomicU32);

impl InFlight {
    /// Count a request until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Relaxed);
        InFlightGuard(&self.0)
    }

    pub fn now(&self) -> u32 {
        self.0.load(Relaxed)
    }
}

pub struct InFlightGuard<'a>(&'a AtomicU32);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The counters of one array file: what the daemon reads from and writes to it.
#[derive(Default)]
pub struct ArrayStats {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// In-kernel copies into this array (copy_file_range: copy-on-write, pair copies).
    pub copies: AtomicU64,
    pub copy_bytes: AtomicU64,
    /// fdatasyncs that had something to flush.
    pub syncs: AtomicU64,
    pub errors: AtomicU64,
    pub read_latency: Histogram,
    pub write_latency: Histogram,
    pub sync_latency: Histogram,
}

/// What `fusevol stats --arrays` shows of one array (totals since the daemon started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArrayCounts {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub copies: u64,
    pub copy_bytes: u64,
    pub syncs: u64,
    pub errors: u64,
    pub read_latency: Latency,
    pub write_latency: Latency,
    pub sync_latency: Latency,
}

/// Nanoseconds since `t0` (0 when the clock was not read).
fn since(t0: Option<Instant>) -> u64 {
    t0.map_or(0, |t| t.elapsed().as_nanos() as u64)
}

impl ArrayStats {
    /// The clock for one I/O, or None when statistics are off (nothing is touched then).
    pub fn clock() -> Option<Instant> {
        array_stats_on().then(Instant::now)
    }

    /// One I/O started at `t0` ended: counted in `ops` (and `bytes`, and `latency`) when it
    /// succeeded, as an error when not; nothing when statistics were off at its start.
    fn done(
        &self,
        t0: Option<Instant>,
        ok: bool,
        ops: &AtomicU64,
        bytes: Option<(&AtomicU64, u64)>,
        latency: Option<&Histogram>,
    ) {
        if t0.is_none() {
            return;
        }
        if !ok {
            self.errors.fetch_add(1, Relaxed);
            return;
        }
        ops.fetch_add(1, Relaxed);
        if let Some((b, n)) = bytes {
            b.fetch_add(n, Relaxed);
        }
        if let Some(h) = latency {
            h.record(since(t0));
        }
    }

    /// A read of `bytes` started at `t0` ended; `ok` whether it succeeded.
    pub fn read(&self, t0: Option<Instant>, bytes: u64, ok: bool) {
        let b = Some((&self.read_bytes, bytes));
        self.done(t0, ok, &self.reads, b, Some(&self.read_latency));
    }

    pub fn write(&self, t0: Option<Instant>, bytes: u64, ok: bool) {
        let b = Some((&self.write_bytes, bytes));
        self.done(t0, ok, &self.writes, b, Some(&self.write_latency));
    }

    pub fn copy(&self, t0: Option<Instant>, bytes: u64, ok: bool) {
        self.done(t0, ok, &self.copies, Some((&self.copy_bytes, bytes)), None);
    }

    pub fn sync(&self, t0: Option<Instant>, ok: bool) {
        self.done(t0, ok, &self.syncs, None, Some(&self.sync_latency));
    }

    #[cfg(test)]
    fn clock_off_counts_nothing(&self) -> bool {
        let before = self.counts();
        self.read(None, 4096, true);
        self.write(None, 4096, false);
        self.sync(None, true);
        before == self.counts()
    }

    pub fn counts(&self) -> ArrayCounts {
        ArrayCounts {
            reads: self.reads.load(Relaxed),
            read_bytes: self.read_bytes.load(Relaxed),
            writes: self.writes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            copies: self.copies.load(Relaxed),
            copy_bytes: self.copy_bytes.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            errors: self.errors.load(Relaxed),
            read_latency: self.read_latency.summary(),
            write_latency: self.write_latency.summary(),
            sync_latency: self.sync_latency.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_values_within_a_quarter() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            999,
            1000,
            123_456,
            10_000_000_000,
        ] {
            let i = bucket_of(ns);
            assert!(bucket_upper(i) >= ns, "{ns} in bucket {i}");
            if ns >= 8 {
                assert!(bucket_upper(i) as f64 <= ns as f64 * 1.25 + 1.0, "{ns}");
            }
            if i > 0 {
                assert!(
                    bucket_upper(i - 1) < ns,
                    "{ns} belongs in an earlier bucket"
                );
            }
        }
    }

    #[test]
    fn quantiles_and_max() {
        let h = Histogram::default();
        for us in 1..=100u64 {
            h.record(us * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((45.0..=63.0).contains(&s.p50_us), "{s:?}");
        assert!((99.0..=100.0).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 100.0);
        assert_eq!(h.cumulative().last().map(|c| c.1), Some(100));
    }

    #[test]
    fn counts_show_errors_by_kind() {
        let st = IoStats::default();
        st.write(4096, 10_000);
        st.read(8192, 5_000);
        st.discard(1 << 20);
        st.error(1);
        st.error(99);
        let c = st.counts();
        assert_eq!(
            (c.writes, c.write_bytes, c.reads, c.read_bytes),
            (1, 4096, 1, 8192)
        );
        assert_eq!((c.discards, c.discard_bytes), (1, 1 << 20));
        assert_eq!(c.errors.get("no_space"), Some(&1));
        assert_eq!(c.errors.get("other"), Some(&1));
    }

    #[test]
    fn array_counts_and_the_switch() {
        let a = ArrayStats::default();
        a.read(ArrayStats::clock(), 4096, true);
        a.write(ArrayStats::clock(), 8192, true);
        a.write(ArrayStats::clock(), 8192, false);
        a.copy(ArrayStats::clock(), 1 << 20, true);
        a.sync(ArrayStats::clock(), true);
        let c = a.counts();
        assert_eq!((c.reads, c.read_bytes), (1, 4096));
        assert_eq!((c.writes, c.write_bytes, c.errors), (1, 8192, 1));
        assert_eq!((c.copies, c.copy_bytes, c.syncs), (1, 1 << 20, 1));
        assert_eq!(c.write_latency.count, 1);
        // Off: no clock, nothing counted.
        assert!(a.clock_off_counts_nothing());
    }
}
