//! `fusevol stats [VOL] [--watch SECS]`: host I/O of volumes, like `iostat -x`.

use std::time::Duration;

use fusevol::control::{Request, VolumeStats};
use fusevol::units::format_size;

use crate::exit::Failure;
use crate::output::{print_json, table, L, R};
use crate::Ctx;

pub(crate) fn stats(ctx: &Ctx, volume: Option<String>, watch: Option<u64>) -> Result<(), Failure> {
    let mut client = ctx.client()?;
    let req = Request::Stats { volume };
    let mut prev: Option<Vec<VolumeStats>> = None;
    loop {
        let (now, _) = client.call_ok::<Vec<VolumeStats>>(&req)?;
        if ctx.json {
            print_json(&serde_json::to_value(&now).unwrap_or_default());
        } else {
            print!("{}", stats_table(&now, prev.as_deref()));
        }
        let Some(secs) = watch.filter(|&s| s > 0) else {
            return Ok(());
        };
        use std::io::Write;
        let _ = std::io::stdout().flush();
        prev = Some(now);
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
