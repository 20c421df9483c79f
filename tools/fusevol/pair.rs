//! The `pair` commands, following a copy with a progress bar, and `pair wait`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use fusevol::control::{Client, ClientError, ErrorCode, PairInfo, Request};
use fusevol::units::format_size;

use crate::cli::PairCmd;
use crate::exit::Failure;
use crate::output::{print_json, print_warnings, table, L, R};
use crate::Ctx;

/// How often `pair wait` and `--wait` ask for the pair's state.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub(crate) fn pair(ctx: &Ctx, cmd: PairCmd) -> Result<(), Failure> {
    match cmd {
        PairCmd::Create {
            pvol,
            svol,
            create_svol,
            svol_tier,
            group,
            rate,
            wait,
        } => {
            let req = Request::PairCreate {
                pvol,
                svol,
                create_svol,
                svol_tier,
                group,
                rate,
            };
            pair_change(ctx, req, wait, |p| {
                let group = match &p.group {
                    Some(g) => format!(" in group {g}"),
                    None => String::new(),
                };
                format!(
                    "paired volume {} (P-VOL) with {} (S-VOL){group}: {}, {} to copy{}",
                    p.pvol,
                    p.svol,
                    p.state,
                    format_size(p.bytes_left),
                    rate_limit_text(p.rate_limit)
                )
            })
        }
        PairCmd::Split {
            pvols,
            group,
            quick,
            hooks,
        } => {
            if pvols.is_empty() && group.is_none() {
                return Err(Failure::Usage(
                    "pair split needs at least one PVOL or --group NAME".into(),
                ));
            }
            let env = fusevol::backup::hooks::HookEnv {
                op: "pair-split".into(),
                volumes: pvols.clone(),
                snapshot: String::new(),
                group: group.clone().unwrap_or_default(),
                schedule: String::new(),
            };
            let req = Request::PairSplit {
                pvols,
                group,
                quick,
            };
            let mut ctx = ctx.clone();
            if !quick && ctx.timeout_given.is_none() {
                // A steady split answers once the copies are done: no answer timeout.
                ctx.timeout = Duration::ZERO;
            }
            crate::backup::with_hooks(&hooks, env, || {
                ctx.request(req, move |pairs: Vec<PairInfo>| show_split(&pairs, quick))
            })
        }
        PairCmd::Resync {
            pvol,
            restore,
            rate,
            wait,
        } => {
            let req = Request::PairResync {
                pvol,
                restore,
                rate,
            };
            pair_change(ctx, req, wait, move |p| {
                let direction = if restore {
                    "restoring P-VOL from S-VOL"
                } else {
                    "resyncing S-VOL from P-VOL"
                };
                format!(
                    "{direction} of pair {} -> {}: {}, {} to copy{}",
                    p.pvol,
                    p.svol,
                    p.state,
                    format_size(p.bytes_left),
                    rate_limit_text(p.rate_limit)
                )
            })
        }
        PairCmd::Delete { pvol } => {
            let shown = format!("deleted the pair of volume {pvol}; both volumes keep their data");
            ctx.request(Request::PairDelete { pvol }, move |()| println!("{shown}"))
        }
        PairCmd::Status { pvol } => {
            let of = pvol.clone();
            ctx.request(
                Request::PairStatus { pvol },
                move |pairs: Vec<PairInfo>| match (&of, pairs.is_empty()) {
                    (Some(vol), true) => println!("volume {vol} is not paired (SMPL)"),
                    (None, true) => println!("no pairs"),
                    _ => print!("{}", pair_table(&pairs)),
                },
            )
        }
        PairCmd::Wait {
            pvol,
            state,
            timeout,
        } => {
            // `--timeout` after `wait` is this one; before `pair` it is the global one, which
            // then bounds the wait as well.
            let limit = timeout.or(ctx.timeout_given).filter(|&secs| secs > 0);
            pair_wait(ctx, &pvol, &state, limit)
        }
    }
}

/// Send a request answering `PairInfo` (create, resync). Without `wait`, show the answer; with
/// it, follow the copy (a progress bar when stdout is a terminal and not `--json`) until the
/// pair is PAIR and show the final status.
fn pair_change(
    ctx: &Ctx,
    req: Request,
    wait: bool,
    describe: impl FnOnce(&PairInfo) -> String,
) -> Result<(), Failure> {
    if !wait {
        return ctx.request(req, |p: PairInfo| println!("{}", describe(&p)));
    }
    let mut client = ctx.client()?;
    let (first, warnings) = client.call_ok::<PairInfo>(&req)?;
    print_warnings(&warnings);
    if !ctx.json {
        println!("{}", describe(&first));
    }
    let bar = (!ctx.json && std::io::stdout().is_terminal()).then(|| progress_bar(&first));
    let outcome = follow_copy(&mut client, first, bar.as_ref());
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let last = outcome?;
    if ctx.json {
        print_json(&serde_json::to_value(&last).unwrap_or(Value::Null));
    } else {
        print!("{}", pair_table(std::slice::from_ref(&last)));
    }
    Ok(())
}

/// Poll the pair until it is PAIR; PSUE, a split or a delete meanwhile end the wait.
fn follow_copy(
    client: &mut Client,
    mut info: PairInfo,
    bar: Option<&ProgressBar>,
) -> Result<PairInfo, Failure> {
    let pvol = info.pvol.clone();
    loop {
        if let Some(bar) = bar {
            update_bar(bar, &info);
        }
        match info.state.as_str() {
            "PAIR" => return Ok(info),
            "PSUE" => return Err(Failure::PairSuspended(suspended_message(&info))),
            "COPY" | "COPY(RS)" | "COPY(RS-R)" => {}
            other => {
                return Err(Failure::PairChanged(format!(
                    "pair {pvol} is {other} (split by another command?) and will not reach PAIR"
                )))
            }
        }
        std::thread::sleep(POLL_INTERVAL);
        info = fetch_pair(client, &pvol)?.ok_or_else(|| {
            Failure::PairChanged(format!(
                "pair {pvol} was deleted by another command before reaching PAIR"
            ))
        })?;
    }
}

/// `pair wait`: wait until the pair of `pvol` is in `want` (SMPL: no pair). Subscribes to
/// the pool's events first, then reads the pair's state once, and again only when an event
/// names the pair or its P-VOL (no polling).
fn pair_wait(ctx: &Ctx, pvol: &str, want: &str, limit: Option<u64>) -> Result<(), Failure> {
    let mut events = crate::events::Stream::open(ctx, None, true, true)?;
    let mut client = ctx.client()?;
    let start = Instant::now();
    let deadline = limit.map(|secs| start + Duration::from_secs(secs));
    loop {
        let info = match fetch_pair(&mut client, pvol) {
            Ok(info) => info,
            // Waiting for a pair to go away: a volume the daemon does not know has no pair.
            Err(ClientError::Daemon(body))
                if body.code == ErrorCode::NotFound && want == "SMPL" =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let state = info.as_ref().map_or("SMPL", |p| p.state.as_str());
        if state == want {
            if ctx.json {
                print_json(&serde_json::to_value(&info).unwrap_or(Value::Null));
            } else {
                println!("pair {pvol} is {state}");
            }
            return Ok(());
        }
        if let Some(p) = info.as_ref().filter(|p| p.state == "PSUE") {
            return Err(Failure::PairSuspended(format!(
                "{} (waiting for {want})",
                suspended_message(p)
            )));
        }
        // Until an event names this pair (or its P-VOL) or the time is up.
        loop {
            match events.next(deadline)? {
                None => {
                    return Err(Failure::WaitTimeout(format!(
                    "timed out after {} s waiting for pair {pvol} to reach {want} (it is {state})",
                    limit.unwrap_or(0)
                )))
                }
                Some(crate::events::Line::End(_)) => {
                    return Err(Failure::Unreachable(ClientError::Closed {
                        socket: client.socket_path().to_path_buf(),
                    }))
                }
                Some(crate::events::Line::Event(ev))
                    if (ev.object == "pair" || ev.object == "volume") && ev.name == pvol =>
                {
                    break
                }
                Some(_) => {}
            }
        }
    }
}

/// The pair of `pvol`, or `None` if it has none.
fn fetch_pair(client: &mut Client, pvol: &str) -> Result<Option<PairInfo>, ClientError> {
    let (pairs, _warnings) = client.call_ok::<Vec<PairInfo>>(&Request::PairStatus {
        pvol: Some(pvol.to_string()),
    })?;
    Ok(pairs.into_iter().find(|p| p.pvol == pvol))
}

fn suspended_message(p: &PairInfo) -> String {
    format!(
        "pair {} is PSUE (suspended by an error): {}",
        p.pvol,
        p.error.as_deref().unwrap_or("no error reported")
    )
}

fn progress_bar(info: &PairInfo) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix} {elapsed:>4} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} -> {}", info.pvol, info.svol));
    update_bar(&bar, info);
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

fn update_bar(bar: &ProgressBar, info: &PairInfo) {
    bar.set_position((info.progress.clamp(0.0, 100.0) * 10.0).round() as u64);
    bar.set_message(progress_text(info));
}

/// `COPY  42.0%  1.2 GiB left  120.0 MiB/s`
fn progress_text(info: &PairInfo) -> String {
    format!(
        "{} {:5.1}%  {} left  {}",
        info.state,
        info.progress,
        format_size(info.bytes_left),
        format_rate(info.rate)
    )
}

fn show_split(pairs: &[PairInfo], quick: bool) {
    if pairs.is_empty() {
        println!("no pairs to split");
        return;
    }
    let how = if quick {
        "; the S-VOLs show the split-time image while the copy completes in the background"
    } else {
        ""
    };
    println!(
        "split {} pair{} at one instant{how}",
        pairs.len(),
        if pairs.len() == 1 { "" } else { "s" }
    );
    print!("{}", pair_table(pairs));
}

fn pair_table(pairs: &[PairInfo]) -> String {
    let rows = pairs
        .iter()
        .map(|p| {
            let mut notes = Vec::new();
            if let Some(e) = &p.error {
                notes.push(e.clone());
            }
            if p.quick_split_copying {
                notes.push("quick split copying".to_string());
            }
            if !p.separate_arrays {
                notes.push("S-VOL shares arrays with P-VOL".to_string());
            }
            if let Some(l) = &p.lock {
                notes.push(format!("locked {}", crate::change::lock_text(l)));
            }
            vec![
                p.pvol.clone(),
                p.svol.clone(),
                p.group.clone().unwrap_or_else(|| "-".into()),
                p.state.clone(),
                format!("{:.1}%", p.progress),
                format_size(p.bytes_left),
                if p.rate == 0 {
                    "-".into()
                } else {
                    format_rate(p.rate)
                },
                format_size(p.diff_bytes),
                notes.join("; "),
            ]
        })
        .collect();
    let header = [
        ("PVOL", L),
        ("SVOL", L),
        ("GROUP", L),
        ("STATE", L),
        ("PROGRESS", R),
        ("LEFT", R),
        ("RATE", R),
        ("DIFF", R),
        ("NOTE", L),
    ];
    table(&header, rows)
}

/// ` at up to 200.0 MiB/s`, or nothing without a limit.
fn rate_limit_text(limit: u64) -> String {
    if limit == 0 {
        String::new()
    } else {
        format!(" at up to {}", format_rate(limit))
    }
}

/// Bytes per second for people: `120.0 MiB/s`.
fn format_rate(bytes_per_sec: u64) -> String {
    format!("{}/s", format_size(bytes_per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_table_shows_progress_rates_and_notes() {
        let pair = |pvol: &str, state: &str| PairInfo {
            id: 1,
            pvol: pvol.into(),
            svol: format!("{pvol}s"),
            group: None,
            state: state.into(),
            progress: 100.0,
            bytes_left: 0,
            rate: 0,
            rate_limit: 200 << 20,
            diff_bytes: 0,
            quick_split_copying: false,
            separate_arrays: true,
            error: None,
            lock: None,
        };
        let copying = PairInfo {
            group: Some("g1".into()),
            progress: 42.25,
            bytes_left: 3 << 30,
            rate: 120 << 20,
            ..pair("vm1", "COPY")
        };
        let split = PairInfo {
            diff_bytes: 5 << 20,
            quick_split_copying: true,
            separate_arrays: false,
            ..pair("vm2", "PSUS")
        };
        let broken = PairInfo {
            error: Some("I/O error on array a1".into()),
            ..pair("vm3", "PSUE")
        };
        let out = pair_table(&[copying, split, broken]);
        let expected = table(
            &[
                ("PVOL", L),
                ("SVOL", L),
                ("GROUP", L),
                ("STATE", L),
                ("PROGRESS", R),
                ("LEFT", R),
                ("RATE", R),
                ("DIFF", R),
                ("NOTE", L),
            ],
            vec![
                vec![
                    "vm1".into(),
                    "vm1s".into(),
                    "g1".into(),
                    "COPY".into(),
                    "42.2%".into(),
                    "3.0 GiB".into(),
                    "120.0 MiB/s".into(),
                    "0 B".into(),
                    String::new(),
                ],
                vec![
                    "vm2".into(),
                    "vm2s".into(),
                    "-".into(),
                    "PSUS".into(),
                    "100.0%".into(),
                    "0 B".into(),
                    "-".into(),
                    "5.0 MiB".into(),
                    "quick split copying; S-VOL shares arrays with P-VOL".into(),
                ],
                vec![
                    "vm3".into(),
                    "vm3s".into(),
                    "-".into(),
                    "PSUE".into(),
                    "100.0%".into(),
                    "0 B".into(),
                    "-".into(),
                    "0 B".into(),
                    "I/O error on array a1".into(),
                ],
            ],
        );
        assert_eq!(out, expected);
        assert!(
            out.starts_with("PVOL  SVOL  GROUP  STATE  PROGRESS "),
            "{out}"
        );
        assert_eq!(format_rate(120 << 20), "120.0 MiB/s");
        assert_eq!(rate_limit_text(0), "");
        assert_eq!(rate_limit_text(200 << 20), " at up to 200.0 MiB/s");
        let copying = PairInfo {
            progress: 42.0,
            bytes_left: 3 << 30,
            rate: 120 << 20,
            ..pair("vm1", "COPY")
        };
        assert_eq!(
            progress_text(&copying),
            "COPY  42.0%  3.0 GiB left  120.0 MiB/s"
        );
    }
}
