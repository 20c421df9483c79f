//! `fusevol stats [VOL] [--watch SECS]`: host I/O of volumes, like `iostat -x`.

use std::time::Duration;

use fusevol::control::{ArrayStatsInfo, Request, VolumeStats};
use fusevol::units::format_size;

use crate::exit::Failure;
use crate::output::{print_json, table, L, R};
use crate::Ctx;

pub(crate) fn stats(
    ctx: &Ctx,
    volume: Option<String>,
    arrays_only: bool,
    watch: Option<u64>,
) -> Result<(), Failure> {
    let mut client = ctx.client()?;
    let show_volumes = !arrays_only;
    // The arrays' table goes with the volumes' of the whole pool (not of one volume, not in
    // the volumes' JSON, which stays a list of volumes).
    let show_arrays = arrays_only || (volume.is_none() && !ctx.json);
    let req = Request::Stats { volume };
    let mut prev: Option<(Vec<VolumeStats>, Vec<ArrayStatsInfo>)> = None;
    loop {
        let vols = if show_volumes {
            client.call_ok::<Vec<VolumeStats>>(&req)?.0
        } else {
            Vec::new()
        };
        let arrays = if show_arrays {
            client
                .call_ok::<Vec<ArrayStatsInfo>>(&Request::ArrayStats)?
                .0
        } else {
            Vec::new()
        };
        if ctx.json {
            let v = if arrays_only {
                serde_json::to_value(&arrays)
            } else {
                serde_json::to_value(&vols)
            };
            print_json(&v.unwrap_or_default());
        } else {
            if show_volumes {
                print!("{}", stats_table(&vols, prev.as_ref().map(|p| &p.0[..])));
            }
            if show_arrays {
                if show_volumes {
                    println!();
                }
                print!("{}", array_table(&arrays, prev.as_ref().map(|p| &p.1[..])));
            }
        }
        let Some(secs) = watch.filter(|&s| s > 0) else {
            return Ok(());
        };
        use std::io::Write;
        let _ = std::io::stdout().flush();
        prev = Some((vols, arrays));
        std::thread::sleep(Duration::from_secs(secs));
        if !ctx.json {
            println!();
        }
    }
}

/// One row's counters over an interval: since the previous sample, or since the start.
struct Rates<'a, T> {
    now: &'a T,
    before: Option<&'a T>,
    secs: f64,
}

impl<'a, T> Rates<'a, T> {
    fn new(now: &'a T, before: Option<&'a T>, secs: f64) -> Self {
        Rates {
            now,
            before,
            secs: secs.max(1e-3),
        }
    }

    /// How much the counter `f` grew (a restarted daemon's counters start again at 0).
    fn delta(&self, f: fn(&T) -> u64) -> f64 {
        let now = f(self.now);
        (now - self.before.map_or(0, f).min(now)) as f64
    }

    fn per_sec(&self, f: fn(&T) -> u64) -> String {
        format!("{:.1}", self.delta(f) / self.secs)
    }

    fn bytes(&self, f: fn(&T) -> u64) -> String {
        format!("{}/s", format_size((self.delta(f) / self.secs) as u64))
    }
}

/// Microseconds as milliseconds.
fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

/// Rates over the interval since `prev` (or since the daemon started), latency since start.
fn stats_table(now: &[VolumeStats], prev: Option<&[VolumeStats]>) -> String {
    let rows = now
        .iter()
        .map(|s| {
            let before = prev.and_then(|p| p.iter().find(|x| x.volume == s.volume));
            let r = Rates::new(s, before, s.seconds - before.map_or(0.0, |b| b.seconds));
            let errors: u64 = s.io.errors.values().sum();
            vec![
                s.volume.clone(),
                r.per_sec(|x| x.io.reads),
                r.per_sec(|x| x.io.writes),
                r.bytes(|x| x.io.read_bytes),
                r.bytes(|x| x.io.write_bytes),
                ms(s.io.read_latency.p50_us),
                ms(s.io.read_latency.p99_us),
                ms(s.io.read_latency.max_us),
                ms(s.io.write_latency.p50_us),
                ms(s.io.write_latency.p99_us),
                ms(s.io.write_latency.max_us),
                r.per_sec(|x| x.io.discards),
                if errors == 0 {
                    "0".into()
                } else {
                    s.io.errors
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            ("VOLUME", L),
            ("r/s", R),
            ("w/s", R),
            ("rB/s", R),
            ("wB/s", R),
            ("r_p50ms", R),
            ("r_p99ms", R),
            ("r_maxms", R),
            ("w_p50ms", R),
            ("w_p99ms", R),
            ("w_maxms", R),
            ("discard/s", R),
            ("ERRORS", L),
        ],
        rows,
    )
}

/// The arrays' I/O: rates over the interval since `prev` (or since the daemon started),
/// latency since start.
fn array_table(now: &[ArrayStatsInfo], prev: Option<&[ArrayStatsInfo]>) -> String {
    let rows = now
        .iter()
        .map(|s| {
            let before = prev.and_then(|p| p.iter().find(|x| x.array == s.array));
            let r = Rates::new(s, before, s.seconds - before.map_or(0.0, |b| b.seconds));
            vec![
                s.array.clone(),
                s.tier.clone(),
                r.per_sec(|x| x.io.reads),
                r.per_sec(|x| x.io.writes),
                r.bytes(|x| x.io.read_bytes),
                r.bytes(|x| x.io.write_bytes),
                r.bytes(|x| x.io.copy_bytes),
                ms(s.io.read_latency.p50_us),
                ms(s.io.read_latency.p99_us),
                ms(s.io.write_latency.p50_us),
                ms(s.io.write_latency.p99_us),
                r.per_sec(|x| x.io.syncs),
                ms(s.io.sync_latency.p99_us),
                s.io.errors.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("ARRAY", L),
            ("TIER", L),
            ("r/s", R),
            ("w/s", R),
            ("rB/s", R),
            ("wB/s", R),
            ("copyB/s", R),
            ("r_p50ms", R),
            ("r_p99ms", R),
            ("w_p50ms", R),
            ("w_p99ms", R),
            ("sync/s", R),
            ("sync_p99ms", R),
            ("ERRORS", R),
        ],
        rows,
    )
}
