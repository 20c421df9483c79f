//! Point-in-time recovery commands of journal groups: `group set` (retention, apply delay),
//! `group restore-to`, and their part of `group status`.

use std::path::PathBuf;

use fusevol::control::{GroupInfo, PitrInfo, Request, RestoreReport};
use fusevol::names;
use fusevol::units::format_size;

use crate::exit::Failure;
use crate::output::format_local_time;
use crate::Ctx;

/// The answer of a `group set` that changed retention or the apply delay.
pub(crate) fn print_settings(g: &GroupInfo) {
    let p = g.pitr.clone().unwrap_or_default();
    println!(
        "group {}: retention {}, apply delay {}",
        g.name,
        retention_text(&p),
        delay_text(p.apply_delay)
    )
}

pub(crate) fn restore_to(
    ctx: &Ctx,
    name: String,
    seq: Option<u64>,
    time_ns: Option<u64>,
    prefix: Option<String>,
    into: Option<PathBuf>,
) -> Result<(), Failure> {
    if let Some(p) = &prefix {
        // The prefix starts a volume name: the same rules (a name made of it and "x").
        names::validate("volume prefix", &format!("{p}x"))
            .map_err(|e| Failure::Usage(format!("group {name}: {e}")))?;
    }
    let into = match into {
        Some(d) => Some(
            std::path::absolute(&d)
                .ok()
                .and_then(|p| p.to_str().map(str::to_string))
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "group {name}: cannot use {} as the directory for image files",
                        d.display()
                    ))
                })?,
        ),
        None => None,
    };
    // The restore answers when it is built (it may copy a lot): no answer timeout unless
    // --timeout is given, as for a steady pair split.
    let mut ctx = ctx.clone();
    if ctx.timeout_given.is_none() {
        ctx.timeout = std::time::Duration::ZERO;
    }
    ctx.request(
        Request::GroupRestore {
            name,
            seq,
            time_ns,
            prefix,
            into,
        },
        |r: RestoreReport| print!("{}", report_text(&r, format_local_time)),
    )
}

fn report_text(r: &RestoreReport, time: impl Fn(u64) -> String) -> String {
    let when = if r.time_ns == 0 {
        String::new()
    } else {
        format!(" (written {})", time(r.time_ns / 1_000_000_000))
    };
    format!(
        "restored group {} as of sequence {}{when} from the {} and {} record{}:\n{}",
        r.group,
        r.seq,
        r.base,
        r.records,
        if r.records == 1 { "" } else { "s" },
        r.outputs
            .iter()
            .map(|o| format!("  {o}\n"))
            .collect::<String>()
    )
}

fn retention_text(p: &PitrInfo) -> String {
    match (p.retain_secs, p.retain_bytes) {
        (0, 0) => "off".into(),
        (s, 0) => format!("{s} s"),
        (0, b) => format_size(b),
        (s, b) => format!("{s} s, at most {}", format_size(b)),
    }
}

fn delay_text(secs: u64) -> String {
    if secs == 0 {
        "none".into()
    } else {
        format!("{secs} s")
    }
}

/// Lines of `group status` for retention, apply delay and the group snapshots known.
pub(crate) fn status_fields(p: &PitrInfo) -> Vec<(&'static str, String)> {
    status_fields_with(p, format_local_time)
}

fn status_fields_with(p: &PitrInfo, time: impl Fn(u64) -> String) -> Vec<(&'static str, String)> {
    let mut f = vec![("retention", retention_text(p))];
    if p.retained_segments > 0 {
        let since = if p.retained_oldest_time_ns > 0 {
            format!(
                ", written since {}",
                time(p.retained_oldest_time_ns / 1_000_000_000)
            )
        } else {
            String::new()
        };
        f.push((
            "retained",
            format!(
                "{} segment{}, {}, from sequence {}{since}",
                p.retained_segments,
                if p.retained_segments == 1 { "" } else { "s" },
                format_size(p.retained_bytes),
                p.retained_oldest_seq
            ),
        ));
    }
    if p.apply_delay > 0 {
        f.push((
            "apply delay",
            format!("{} s (behind by design)", p.apply_delay),
        ));
    }
    if !p.markers.is_empty() {
        let list: Vec<String> = p
            .markers
            .iter()
            .rev()
            .take(5)
            .map(|m| {
                format!(
                    "{}@{}{}",
                    m.name,
                    m.seq,
                    if m.usable { "" } else { " (gone)" }
                )
            })
            .collect();
        let more = p.markers.len().saturating_sub(5);
        f.push((
            "markers",
            format!(
                "{}{}",
                list.join(", "),
                if more > 0 {
                    format!(" and {more} older")
                } else {
                    String::new()
                }
            ),
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusevol::control::MarkerInfo;

    #[test]
    fn status_lines_and_report() {
        let t = |s: u64| format!("T{s}");
        let mut p = PitrInfo::default();
        assert_eq!(status_fields_with(&p, t), vec![("retention", "off".into())]);
        p.retain_secs = 3600;
        p.retain_bytes = 1 << 30;
        p.retained_segments = 2;
        p.retained_bytes = 3 << 20;
        p.retained_oldest_seq = 17;
        p.retained_oldest_time_ns = 5_000_000_000;
        p.apply_delay = 60;
        p.markers = vec![
            MarkerInfo {
                name: "a".into(),
                seq: 3,
                time_ns: 1,
                usable: false,
            },
            MarkerInfo {
                name: "b".into(),
                seq: 9,
                time_ns: 2,
                usable: true,
            },
        ];
        let f = status_fields_with(&p, t);
        assert_eq!(f[0].1, "3600 s, at most 1.0 GiB");
        assert_eq!(
            f[1].1,
            "2 segments, 3.0 MiB, from sequence 17, written since T5"
        );
        assert_eq!(f[2].1, "60 s (behind by design)");
        assert_eq!(f[3].1, "b@9, a@3 (gone)");
        let r = RestoreReport {
            group: "g".into(),
            seq: 12,
            time_ns: 7_000_000_000,
            base: "snapshot 's1' (sequence 9)".into(),
            records: 3,
            outputs: vec!["g-12-a".into(), "g-12-b".into()],
        };
        assert_eq!(
            report_text(&r, t),
            "restored group g as of sequence 12 (written T7) from the snapshot 's1' (sequence 9) and 3 records:\n  g-12-a\n  g-12-b\n"
        );
    }
}
