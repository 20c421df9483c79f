//! What per-volume statistics cost a request, measured outside the I/O path (a benchmark
//! script, not a test): `cargo run --release --example stats_cost [MILLIONS]`.
//!
//! It does what `storage/io.rs` does per host write with statistics on — `Instant::now()`
//! before, then `IoStats::write` (3 relaxed atomic adds, a histogram bucket add and a
//! `fetch_max`) with the elapsed time — against the same loop with statistics off (no clock
//! read, no counter), on 1 thread and on 2 and 4 threads counting into one volume's
//! counters at once (the worst case: their cache lines bounce between CPUs, as when several
//! FUSE threads write one volume). With statistics on, each request also counts one array
//! write as `pool/array.rs` does around its `pwrite` (`ArrayStats::clock()`, then
//! `ArrayStats::write`): a host request that reaches the disk costs both. Compare the ns per
//! request with a request's latency (`fusevol stats`, fio's clat: 100 µs and more through FUSE).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use fusevol::stats::{ArrayStats, IoStats};

/// CPU time (user + system) of the calling thread, in ns: on a shared machine the wall time
/// of a loop mostly measures the other processes.
fn thread_cpu_ns() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let ns =
        |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1000;
    ns(u.user_time()) + ns(u.system_time())
}

/// CPU ns per request, summed over the threads.
fn per_request_ns(threads: usize, n: u64, on: bool) -> f64 {
    let st = Arc::new(IoStats::default());
    let arr = Arc::new(ArrayStats::default());
    let cpu = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (st, arr, cpu) = (st.clone(), arr.clone(), &cpu);
            s.spawn(move || {
                let c0 = thread_cpu_ns();
                for i in 0..n {
                    if on {
                        let t = Instant::now();
                        let a = ArrayStats::clock();
                        black_box(i);
                        arr.write(a, 4096, true);
                        st.write(4096, t.elapsed().as_nanos() as u64);
                    } else {
                        black_box(i);
                    }
                }
                cpu.fetch_add(thread_cpu_ns() - c0, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let ns = cpu.into_inner() as f64 / (n * threads as u64) as f64;
    if on {
        assert_eq!(
            st.counts().writes,
            n * threads as u64,
            "every request counted"
        );
        assert_eq!(
            arr.counts().writes,
            n * threads as u64,
            "every array write counted"
        );
    }
    ns
}

fn main() {
    let millions: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let n = millions * 1_000_000;
    println!("{millions}M requests per thread; CPU ns per request (thread CPU time / requests)");
    println!("threads  stats off  stats on  cost of statistics");
    for threads in [1, 2, 4] {
        let off = per_request_ns(threads, n, false);
        let on = per_request_ns(threads, n, true);
        println!(
            "{threads:7}  {off:9.1}  {on:8.1}  {:.1} ns",
            (on - off).max(0.0)
        );
    }
}
