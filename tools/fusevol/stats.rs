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

/// Rates over the interval since `prev` (or since the daemon started), latency since start.
fn stats_table(now: &[VolumeStats], prev: Option<&[VolumeStats]>) -> String {
    let rows = now
        .iter()
        .map(|s| {
            let before = prev.and_then(|p| p.iter().find(|x| x.volume == s.volume));
            let secs = match before {
                Some(b) => s.seconds - b.seconds,
                None => s.seconds,
            }
            .max(1e-3);
            let d = |f: fn(&VolumeStats) -> u64| f(s) - before.map_or(0, f).min(f(s));
            let rate = |n: u64| format!("{:.1}", n as f64 / secs);
            let bytes = |n: u64| format!("{}/s", format_size((n as f64 / secs) as u64));
            let ms = |us: f64| format!("{:.3}", us / 1000.0);
            let errors: u64 = s.io.errors.values().sum();
            vec![
                s.volume.clone(),
                rate(d(|x| x.io.reads)),
                rate(d(|x| x.io.writes)),
                bytes(d(|x| x.io.read_bytes)),
                bytes(d(|x| x.io.write_bytes)),
                ms(s.io.read_latency.p50_us),
                ms(s.io.read_latency.p99_us),
                ms(s.io.read_latency.max_us),
                ms(s.io.write_latency.p50_us),
                ms(s.io.write_latency.p99_us),
                ms(s.io.write_latency.max_us),
                rate(d(|x| x.io.discards)),
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
            let secs = match before {
                Some(b) => s.seconds - b.seconds,
                None => s.seconds,
            }
            .max(1e-3);
            let d = |f: fn(&ArrayStatsInfo) -> u64| f(s) - before.map_or(0, f).min(f(s));
            let rate = |n: u64| format!("{:.1}", n as f64 / secs);
            let bytes = |n: u64| format!("{}/s", format_size((n as f64 / secs) as u64));
            let ms = |us: f64| format!("{:.3}", us / 1000.0);
            vec![
                s.array.clone(),
                s.tier.clone(),
                rate(d(|x| x.io.reads)),
                rate(d(|x| x.io.writes)),
                bytes(d(|x| x.io.read_bytes)),
                bytes(d(|x| x.io.write_bytes)),
                bytes(d(|x| x.io.copy_bytes)),
                ms(s.io.read_latency.p50_us),
                ms(s.io.read_latency.p99_us),
                ms(s.io.write_latency.p50_us),
                ms(s.io.write_latency.p99_us),
                rate(d(|x| x.io.syncs)),
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
