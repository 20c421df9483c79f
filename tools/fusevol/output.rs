//! Printing: JSON and warnings, aligned tables, key-value lists, percentages and times.

use serde_json::Value;

pub(crate) fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

pub(crate) fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Align {
    Left,
    Right,
}
pub(crate) use Align::{Left as L, Right as R};

/// Render rows under a header, columns padded to their widest cell; no trailing spaces.
pub(crate) fn table(header: &[(&str, Align)], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let head: Vec<String> = header.iter().map(|(h, _)| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&head).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match header[i].1 {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key   value` lines with the values aligned.
pub(crate) fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// `part` as a percentage of `whole`, one decimal (`-` when `whole` is 0).
pub(crate) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn format_time(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Seconds since the Unix epoch as a local time: `YYYY-MM-DD HH:MM:SS <zone>` (the system
/// time zone: TZ or /etc/localtime).
pub(crate) fn format_local_time(epoch_secs: u64) -> String {
    format_time_in(epoch_secs, &jiff::tz::TimeZone::system())
}

/// Seconds since the Unix epoch in the time zone `tz`; falls back to UTC if out of range.
pub(crate) fn format_time_in(epoch_secs: u64, tz: &jiff::tz::TimeZone) -> String {
    let ts = i64::try_from(epoch_secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok());
    match ts {
        Some(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        None => format_time(epoch_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let out = table(
            &[("NAME", L), ("SIZE", R), ("TIER", L)],
            vec![
                vec!["a".into(), "4.0 GiB".into(), "fast".into()],
                vec!["longname".into(), "17 B".into(), "s".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         SIZE  TIER\n\
             a         4.0 GiB  fast\n\
             longname     17 B  s\n"
        );
    }

    #[test]
    fn formats_times_and_percentages() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(1, 0), "-");
    }

    #[test]
    fn formats_local_times() {
        use jiff::tz::{Offset, TimeZone};
        assert_eq!(
            format_time_in(1_700_000_000, &TimeZone::UTC),
            "2023-11-14 22:13:20 UTC"
        );
        let plus_two = TimeZone::fixed(Offset::constant(2));
        assert_eq!(
            format_time_in(1_700_000_000, &plus_two),
            "2023-11-15 00:13:20 +02"
        );
        // Beyond what a timestamp can hold: UTC as format_time gives it.
        assert_eq!(
            format_time_in(u64::MAX, &TimeZone::UTC),
            format_time(u64::MAX)
        );
        assert!(!format_local_time(0).is_empty());
    }
}
