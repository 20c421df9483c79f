//! The `group` commands (journal groups: asynchronous replication through a remote
//! directory), their status display and `group wait`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use fusevol::control::{Client, ClientError, GroupInfo, GroupOptions, HandoverReport, Request};
use fusevol::control::{FullInfo, GroupSetOptions};
use fusevol::names;
use fusevol::units::format_size;

use crate::cli::GroupCmd;
use crate::exit::Failure;
use crate::output::{format_local_time, key_values, print_json, print_warnings};
use crate::Ctx;

pub(crate) fn group(ctx: &Ctx, cmd: GroupCmd) -> Result<(), Failure> {
    match cmd {
        GroupCmd::Create {
            name,
            volumes,
            remote,
            segment_size,
            seal_ms,
            rate,
            journal_limit,
            journal_full,
            block_timeout,
        } => {
            check_name("group", &name, &name)?;
            check_volumes(&name, &volumes)?;
            let remote = absolute_remote(&name, &remote)?;
            ctx.request(
                Request::GroupCreate {
                    name,
                    volumes,
                    remote,
                    options: GroupOptions {
                        segment_size,
                        seal_ms,
                        rate,
                        journal_limit,
                        journal_full,
                        block_timeout_ms: block_timeout,
                    },
                },
                |g: GroupInfo| {
                    println!(
                        "created group {} ({}) with volumes {}, replicating to {}: {}",
                        g.name,
                        g.role,
                        volume_list(&g.volumes),
                        g.remote,
                        g.state
                    )
                },
            )
        }
        GroupCmd::Attach {
            name,
            remote,
            pitr,
            rename,
            map,
        } => {
            check_name("group", &name, &name)?;
            let remote = absolute_remote(&name, &remote)?;
            let pitr = pitr.options();
            let mut names = fusevol::control::VolumeNames {
                prefix: rename,
                map: Default::default(),
            };
            for (g, l) in map {
                check_name("volume", &name, &g)?;
                check_name("volume", &name, &l)?;
                if names.map.insert(g.clone(), l).is_some() {
                    return Err(Failure::Usage(format!(
                        "group attach {name}: --map names volume '{g}' twice"
                    )));
                }
            }
            ctx.request(
                Request::GroupAttach {
                    name,
                    remote,
                    pitr,
                    names,
                },
                |g: GroupInfo| {
                    println!(
                        "attached to group {} as {} from {}: volumes {}, {}",
                        g.name,
                        g.role,
                        g.remote,
                        volume_list(&g.volumes),
                        g.state
                    );
                    if let Some(note) = renamed_note(&g) {
                        println!("{note}");
                    }
                },
            )
        }
        GroupCmd::Add { name, volume } => {
            check_name("group", &name, &name)?;
            check_name("volume", &name, &volume)?;
            let shown = format!("added volume {volume} to group {name}");
            ctx.request(
                Request::GroupAddVolume { name, volume },
                move |g: GroupInfo| println!("{shown} (volumes: {})", volume_list(&g.volumes)),
            )
        }
        GroupCmd::Remove { name, volume } => {
            check_name("group", &name, &name)?;
            check_name("volume", &name, &volume)?;
            let shown = format!("removed volume {volume} from group {name}");
            ctx.request(
                Request::GroupRemoveVolume { name, volume },
                move |g: GroupInfo| println!("{shown} (volumes: {})", volume_list(&g.volumes)),
            )
        }
        GroupCmd::Snapshot {
            name,
            snapshot,
            hooks,
        } => {
            check_name("group", &name, &name)?;
            check_name("snapshot", &name, &snapshot)?;
            let shown =
                format!("took snapshot {snapshot} of every volume of group {name} at one instant");
            let env = fusevol::backup::hooks::HookEnv {
                op: "group-snapshot".into(),
                volumes: Vec::new(),
                snapshot: snapshot.clone(),
                group: name.clone(),
                schedule: String::new(),
            };
            crate::backup::with_hooks(&hooks, env, || {
                ctx.request(Request::GroupSnapshot { name, snapshot }, move |()| {
                    println!("{shown}")
                })
            })
        }
        GroupCmd::Takeover { name, at_marker } => {
            check_name("group", &name, &name)?;
            if let Some(m) = &at_marker {
                check_name("snapshot", &name, m)?;
            }
            ctx.request(
                Request::GroupTakeover { name, at_marker },
                |r: HandoverReport| {
                    println!(
                        "took over group {} at sequence {}: this site is the primary of epoch {}, volumes {} writable; {}",
                        r.info.name,
                        r.info.start_seq,
                        r.info.epoch,
                        volume_list(&r.info.volumes),
                        r.detail
                    )
                },
            )
        }
        GroupCmd::Failback {
            name,
            keep_snapshot,
        } => {
            check_name("group", &name, &name)?;
            ctx.request(
                Request::GroupFailback {
                    name,
                    keep_snapshot,
                },
                |r: HandoverReport| {
                    println!(
                        "group {} is now the secondary of epoch {} from sequence {}: {}",
                        r.info.name, r.info.epoch, r.info.start_seq, r.detail
                    )
                },
            )
        }
        GroupCmd::Set {
            name,
            journal_limit,
            journal_full,
            block_timeout,
            pitr,
            lag_alert,
        } => {
            check_name("group", &name, &name)?;
            let options = GroupSetOptions {
                journal_limit,
                journal_full,
                block_timeout_ms: block_timeout,
            };
            let pitr = pitr.options();
            let (full_set, pitr_set) = (options != GroupSetOptions::default(), !pitr.is_empty());
            if !full_set && !pitr_set && lag_alert.is_none() {
                return Err(Failure::Usage(format!(
                    "group set {name}: give at least one of --journal-limit, --journal-full, --block-timeout, --retain-secs, --retain-size, --apply-delay, --lag-alert"
                )));
            }
            let req = Request::GroupSet {
                name,
                options,
                pitr,
                lag_alert_ms: lag_alert,
            };
            let alert_set = lag_alert.is_some();
            ctx.request(req, move |g: GroupInfo| {
                if full_set {
                    println!(
                        "group {}: journal limit {}, when full: {} (block timeout {})",
                        g.name,
                        format_size(g.journal_limit),
                        g.full.policy,
                        format_ms(g.full.block_timeout_ms)
                    )
                }
                if pitr_set {
                    crate::pitr::print_settings(&g)
                }
                if alert_set {
                    match g.lag_alert_secs {
                        Some(s) => println!(
                            "group {}: lag alert at {s} s (lag-above / lag-below events)",
                            g.name
                        ),
                        None => println!("group {}: lag alert off", g.name),
                    }
                }
            })
        }
        GroupCmd::Resync { name } => {
            check_name("group", &name, &name)?;
            ctx.request(Request::GroupResync { name }, |g: GroupInfo| {
                println!(
                    "group {}: resync from sequence {} started: journaling again, {} of regions changed while suspended follow; the secondary is inconsistent until they are applied",
                    g.name,
                    g.full.resync_seq,
                    format_size(g.full.resync_total)
                )
            })
        }
        GroupCmd::Delete { name } => {
            check_name("group", &name, &name)?;
            let shown = format!("deleted group {name}; its volumes stay, writable");
            ctx.request(Request::GroupDelete { name }, move |()| println!("{shown}"))
        }
        GroupCmd::Status { name } => {
            if let Some(name) = &name {
                check_name("group", name, name)?;
            }
            ctx.request(Request::GroupStatus { name }, |groups: Vec<GroupInfo>| {
                if groups.is_empty() {
                    println!("no groups");
                } else {
                    print!("{}", status_text(&groups));
                }
            })
        }
        GroupCmd::Wait {
            name,
            applied,
            consistent,
            caught_up,
            timeout,
        } => {
            check_name("group", &name, &name)?;
            let goal = match (applied, consistent, caught_up) {
                (Some(seq), _, _) => Goal::Applied(seq),
                (None, true, _) => Goal::Consistent,
                (None, false, true) => Goal::CaughtUp,
                (None, false, false) => {
                    return Err(Failure::Usage(
                        "group wait needs --applied SEQ, --consistent or --caught-up".into(),
                    ))
                }
            };
            // As for `pair wait`: `--timeout` after `wait` is this one; before `group` it is the
            // global one, which then bounds the wait as well.
            let limit = timeout.or(ctx.timeout_given).filter(|&secs| secs > 0);
            group_wait(ctx, &name, goal, limit)
        }
        GroupCmd::RestoreTo {
            name,
            seq,
            time,
            prefix,
            into,
        } => {
            check_name("group", &name, &name)?;
            crate::pitr::restore_to(ctx, name, seq, time, prefix, into)
        }
    }
}

/// A name as the daemon will check it, refused here already (exit 2) with the group named.
fn check_name(kind: &str, group: &str, name: &str) -> Result<(), Failure> {
    names::validate(kind, name).map_err(|e| {
        if kind == "group" {
            Failure::Usage(e)
        } else {
            Failure::Usage(format!("group {group}: {e}"))
        }
    })
}

/// `--volumes`: at least one, each a valid name, none twice.
fn check_volumes(group: &str, volumes: &[String]) -> Result<(), Failure> {
    if volumes.iter().all(|v| v.is_empty()) {
        return Err(Failure::Usage(format!(
            "group {group} needs at least one volume (--volumes V1,V2)"
        )));
    }
    for (i, v) in volumes.iter().enumerate() {
        check_name("volume", group, v)?;
        if volumes[..i].contains(v) {
            return Err(Failure::Usage(format!(
                "group {group}: volume {v} is listed twice in --volumes"
            )));
        }
    }
    Ok(())
}

/// The remote directory as an absolute path (relative to the current directory), as the
/// daemon needs it: it does not share the CLI's current directory.
fn absolute_remote(group: &str, remote: &Path) -> Result<String, Failure> {
    if remote.as_os_str().is_empty() {
        return Err(Failure::Usage(format!(
            "group {group}: the remote directory (--remote) is empty"
        )));
    }
    let abs = std::path::absolute(remote).map_err(|e| {
        Failure::Usage(format!(
            "group {group}: cannot make the remote directory {} absolute: {e}",
            remote.display()
        ))
    })?;
    abs.to_str().map(str::to_string).ok_or_else(|| {
        Failure::Usage(format!(
            "group {group}: the remote directory {} is not valid UTF-8",
            abs.display()
        ))
    })
}

fn volume_list(volumes: &[String]) -> String {
    if volumes.is_empty() {
        "-".into()
    } else {
        volumes.join(", ")
    }
}

/// Every group as a block of `key  value` lines, blocks separated by an empty line.
fn status_text(groups: &[GroupInfo]) -> String {
    groups
        .iter()
        .map(group_block)
        .collect::<Vec<_>>()
        .join("\n")
}

fn group_block(g: &GroupInfo) -> String {
    let mut fields = vec![
        ("group", g.name.clone()),
        ("role", g.role.clone()),
        ("state", g.state.clone()),
        ("epoch", g.epoch.to_string()),
        ("volumes", volume_list(&g.volumes)),
        ("remote", g.remote.clone()),
        ("written", g.written.to_string()),
        ("sealed", g.sealed.to_string()),
        ("shipped", g.shipped.to_string()),
        ("applied", g.applied.to_string()),
        ("acknowledged", g.acknowledged.to_string()),
        ("lag", format_lag(g.lag_records, g.lag_bytes, g.lag_seconds)),
        (
            "journal",
            format_journal(
                g.journal_bytes,
                g.journal_limit,
                g.journal_free,
                g.journal_spare_bytes,
            ),
        ),
        (
            "consistent",
            format_consistent(g.consistent, g.consistent_since, format_local_time),
        ),
    ];
    if let Some(note) = renamed_note(g) {
        fields.push(("local names", note));
    }
    if let Some(t) = g.lag_alert_secs {
        fields.push((
            "lag alert",
            format!(
                "at {t} s{}",
                if g.lag_above {
                    " (lag above it now)"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some(b) = &g.base_copy {
        fields.push(("initial copy", format_base_copy(b)));
    }
    if let Some(l) = &g.lock {
        fields.push(("lock", crate::change::lock_text(l)));
    }
    if g.start_seq > 0 {
        fields.push(("epoch starts after", g.start_seq.to_string()));
    }
    if let Some(s) = &g.stale {
        fields.push(("stale", s.clone()));
    }
    if let Some(f) = &g.failback {
        fields.push(("failback", f.clone()));
    }
    if g.failback_bytes > 0 {
        fields.push(("last failback delta", format_size(g.failback_bytes)));
    }
    if let Some(p) = &g.pitr {
        fields.extend(crate::pitr::status_fields(p));
    }
    if let Some(e) = &g.last_error {
        fields.push(("last error", e.clone()));
    }
    full_fields(&mut fields, g.role == "primary", &g.full);
    key_values(&fields)
}

/// "r-data is the group's data, r-vol0 is the group's vol0" for volumes kept under other
/// names here (`group attach --rename/--map`).
fn renamed_note(g: &GroupInfo) -> Option<String> {
    (!g.renamed.is_empty()).then(|| {
        g.renamed
            .iter()
            .map(|(l, n)| format!("{l} is the group's {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// "volume a: extent 1024 of 4096 (25 %), 1 more volume after it".
fn format_base_copy(b: &fusevol::control::BaseCopyInfo) -> String {
    let pct = (b.extents_done * 100)
        .checked_div(b.extents_total)
        .unwrap_or(100);
    let mut s = format!(
        "volume {}: extent {} of {} ({pct} %)",
        b.volume, b.extents_done, b.extents_total
    );
    match b.volumes_after {
        0 => {}
        1 => s.push_str(", 1 more volume after it"),
        n => s.push_str(&format!(", {n} more volumes after it")),
    }
    s
}

/// The journal limit's policy, warning, suspension and resync lines.
fn full_fields(fields: &mut Vec<(&'static str, String)>, primary: bool, f: &FullInfo) {
    if primary {
        fields.push((
            "when full",
            if f.policy == "block" {
                format!(
                    "block (writers wait up to {}, then ENOSPC)",
                    format_ms(f.block_timeout_ms)
                )
            } else {
                f.policy.clone()
            },
        ));
        fields.push(("high-water mark", format_size(f.high_water)));
    }
    if let Some(w) = &f.warning {
        fields.push(("warning", w.clone()));
    }
    if let Some(t) = f.suspended_since {
        fields.push((
            "suspended",
            format!(
                "since {} after sequence {}; {} regions ({}) changed since",
                format_local_time(t),
                f.suspended_seq,
                f.dirty_regions,
                format_size(f.dirty_bytes)
            ),
        ));
    }
    if f.state == "resync" {
        let line = if primary {
            let pct = if f.resync_total == 0 {
                100.0
            } else {
                f.resync_done as f64 * 100.0 / f.resync_total as f64
            };
            format!(
                "from sequence {}: {} of {} sent ({pct:.0} %)",
                f.resync_seq,
                format_size(f.resync_done),
                format_size(f.resync_total)
            )
        } else {
            format!(
                "from sequence {}: inconsistent until it completes{}",
                f.resync_seq,
                f.resync_snapshot
                    .as_ref()
                    .map(|s| format!("; snapshot {s} holds the last consistent image"))
                    .unwrap_or_default()
            )
        };
        fields.push(("resync", line));
    }
}

/// `30 s`, `2.5 s`
fn format_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `3 records, 1.5 MiB, 0.25 s`
fn format_lag(records: u64, bytes: u64, seconds: f64) -> String {
    let plural = if records == 1 { "" } else { "s" };
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    format!(
        "{records} record{plural}, {}, {seconds:.2} s",
        format_size(bytes)
    )
}

/// `12.0 MiB / 1.0 GiB used, 1012.0 MiB free` (`no limit` when the limit is 0), and the spare
/// segment files the journal keeps, when there are any.
fn format_journal(used: u64, limit: u64, free: u64, spare: u64) -> String {
    let spare = if spare > 0 {
        format!(" (+{} of spare segment files)", format_size(spare))
    } else {
        String::new()
    };
    if limit == 0 {
        return format!("{} used, no limit{spare}", format_size(used));
    }
    format!(
        "{} / {} used, {} free{spare}",
        format_size(used),
        format_size(limit),
        format_size(free)
    )
}

/// `yes, since <local time>`, `yes`, or `no`.
fn format_consistent(consistent: bool, since: Option<u64>, time: impl Fn(u64) -> String) -> String {
    match (consistent, since) {
        (false, _) => "no".into(),
        (true, None) => "yes".into(),
        (true, Some(t)) => format!("yes, since {}", time(t)),
    }
}

/// What `group wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    /// `applied >= SEQ`
    Applied(u64),
    /// The secondary image is consistent.
    Consistent,
    /// Everything written on this side is applied and nothing lags.
    CaughtUp,
}

impl Goal {
    fn reached(self, g: &GroupInfo) -> bool {
        match self {
            Goal::Applied(seq) => g.applied >= seq,
            Goal::Consistent => g.consistent,
            Goal::CaughtUp => g.applied == g.written && g.lag_records == 0,
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::Applied(seq) => format!("apply sequence number {seq}"),
            Goal::Consistent => "be consistent".into(),
            Goal::CaughtUp => "catch up".into(),
        }
    }
}

/// Where a group is, for messages: `state replicating, written 9, applied 7, lag 2 records`.
fn progress(g: &GroupInfo) -> String {
    format!(
        "state {}, written {}, applied {}, lag {} record{}, consistent {}",
        g.state,
        g.written,
        g.applied,
        g.lag_records,
        if g.lag_records == 1 { "" } else { "s" },
        if g.consistent { "yes" } else { "no" }
    )
}

fn is_error_state(state: &str) -> bool {
    state == "error" || state.ends_with("-error")
}

/// `group wait`: wait on the pool's events until `goal` is reached or the limit passes. The
/// status is read once after subscribing, then again when an event names the group; the
/// applied sequence number is not an event, so for `--applied` and `--caught-up` it is read
/// again after a second without one too. A secondary in state `error` ends the wait at once
/// with its error (nothing after the failed record is applied until an operator acts); a
/// primary's `remote-error` does not (shipping resumes by itself).
fn group_wait(ctx: &Ctx, name: &str, goal: Goal, limit: Option<u64>) -> Result<(), Failure> {
    let mut events = crate::events::Stream::open(ctx, None, true, true)?;
    let mut client = ctx.client()?;
    let start = Instant::now();
    let deadline = limit.map(|secs| start + Duration::from_secs(secs));
    let mut last_error: Option<String> = None;
    loop {
        let g = fetch_group(&mut client, name)?;
        if g.state == "error" && !goal.reached(&g) {
            return Err(Failure::GroupError(format!(
                "group {name} is in state error and will not {} without an operator: {} ({})",
                goal.describe(),
                g.last_error.as_deref().unwrap_or("no error message"),
                progress(&g)
            )));
        }
        if is_error_state(&g.state) {
            last_error = Some(
                g.last_error
                    .clone()
                    .unwrap_or_else(|| format!("state {} without an error message", g.state)),
            );
        }
        if goal.reached(&g) {
            if let Some(e) = &last_error {
                print_warnings(&[format!("group {name} reported an error while waiting: {e}")]);
            }
            if ctx.json {
                print_json(&serde_json::to_value(&g).unwrap_or(Value::Null));
            } else {
                println!("group {name} did {}: {}", goal.describe(), progress(&g));
            }
            return Ok(());
        }
        let recheck = match goal {
            Goal::Consistent => None,
            Goal::Applied(_) | Goal::CaughtUp => Some(Instant::now() + APPLIED_RECHECK),
        };
        let until = match (deadline, recheck) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        loop {
            match events.next(until)? {
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let error = match last_error.or(g.last_error.clone()) {
                        Some(e) => format!("; last error: {e}"),
                        None => String::new(),
                    };
                    return Err(Failure::WaitTimeout(format!(
                        "timed out after {} s waiting for group {name} to {} ({}){error}",
                        limit.unwrap_or(0),
                        goal.describe(),
                        progress(&g)
                    )));
                }
                None => break,
                Some(crate::events::Line::End(_)) => {
                    return Err(Failure::Unreachable(ClientError::Closed {
                        socket: client.socket_path().to_path_buf(),
                    }))
                }
                Some(crate::events::Line::Event(ev)) if ev.object == "group" && ev.name == name => {
                    break
                }
                Some(_) => {}
            }
        }
    }
}

/// `group wait --applied/--caught-up`: how long to go without an event before reading the
/// applied sequence number again (it moves without events).
const APPLIED_RECHECK: Duration = Duration::from_secs(1);

/// The status of group `name` (the daemon answers not found for an unknown group).
fn fetch_group(client: &mut Client, name: &str) -> Result<GroupInfo, ClientError> {
    let (groups, _warnings) = client.call_ok::<Vec<GroupInfo>>(&Request::GroupStatus {
        name: Some(name.to_string()),
    })?;
    groups.into_iter().find(|g| g.name == name).ok_or_else(|| {
        ClientError::Daemon(fusevol::control::ErrorBody {
            code: fusevol::control::ErrorCode::NotFound,
            message: format!("group '{name}' not found"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> GroupInfo {
        GroupInfo {
            name: "g1".into(),
            role: "secondary".into(),
            state: "consistent".into(),
            epoch: 2,
            volumes: vec!["v1".into(), "v2".into()],
            remote: "/r".into(),
            written: 10,
            sealed: 9,
            shipped: 9,
            applied: 8,
            acknowledged: 7,
            lag_records: 2,
            lag_bytes: 3 << 19,
            lag_seconds: 0.254,
            journal_bytes: 12 << 20,
            journal_limit: 1 << 30,
            journal_free: (1 << 30) - (12 << 20),
            journal_spare_bytes: 32 << 20,
            consistent: true,
            consistent_since: Some(1_700_000_000),
            last_error: None,
            start_seq: 0,
            stale: None,
            failback: None,
            failback_bytes: 0,
            full: Default::default(),
            pitr: None,
            base_copy: None,
            lock: None,
            renamed: Default::default(),
            lag_alert_secs: None,
            lag_above: false,
        }
    }

    #[test]
    fn status_shows_the_initial_copy_while_it_runs() {
        let mut g = info();
        assert!(!group_block(&g).contains("initial copy"));
        g.base_copy = Some(fusevol::control::BaseCopyInfo {
            volume: "v1".into(),
            extents_done: 1024,
            extents_total: 4096,
            volumes_after: 1,
        });
        let text = group_block(&g);
        assert!(
            text.contains(
                "\ninitial copy  volume v1: extent 1024 of 4096 (25 %), 1 more volume after it\n"
            ),
            "{text}"
        );
        g.base_copy.as_mut().unwrap().volumes_after = 3;
        assert!(group_block(&g).contains("(25 %), 3 more volumes after it\n"));
    }

    #[test]
    fn formats_lag_journal_and_consistency() {
        assert_eq!(format_lag(2, 3 << 19, 0.254), "2 records, 1.5 MiB, 0.25 s");
        assert_eq!(format_lag(1, 0, 0.0), "1 record, 0 B, 0.00 s");
        assert_eq!(format_lag(0, 100, 12.345), "0 records, 100 B, 12.35 s");
        assert_eq!(format_lag(0, 0, f64::NAN), "0 records, 0 B, 0.00 s");
        assert_eq!(format_lag(0, 0, -1.0), "0 records, 0 B, 0.00 s");
        assert_eq!(
            format_journal(12 << 20, 1 << 30, (1 << 30) - (12 << 20), 0),
            "12.0 MiB / 1.0 GiB used, 1012.0 MiB free"
        );
        assert_eq!(format_journal(0, 0, 0, 0), "0 B used, no limit");
        assert_eq!(
            format_journal(0, 1 << 30, 1 << 30, 32 << 20),
            "0 B / 1.0 GiB used, 1.0 GiB free (+32.0 MiB of spare segment files)"
        );
        let t = |s: u64| format!("T{s}");
        assert_eq!(format_consistent(false, Some(5), t), "no");
        assert_eq!(format_consistent(true, None, t), "yes");
        assert_eq!(format_consistent(true, Some(5), t), "yes, since T5");
    }

    #[test]
    fn status_block_lists_every_field() {
        let mut g = info();
        let text = group_block(&g);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "group         g1");
        assert_eq!(lines[4], "volumes       v1, v2");
        assert_eq!(lines[11], "lag           2 records, 1.5 MiB, 0.25 s");
        assert!(
            lines[13].starts_with("consistent    yes, since 2023-11-1"),
            "{text}"
        );
        assert_eq!(lines.len(), 14, "{text}");
        for key in [
            "role",
            "state",
            "epoch",
            "remote",
            "written",
            "sealed",
            "shipped",
            "applied",
            "acknowledged",
            "journal",
        ] {
            assert!(lines.iter().any(|l| l.starts_with(key)), "{key}: {text}");
        }
        g.last_error = Some("segment 7: bad CRC".into());
        g.consistent = false;
        g.volumes.clear();
        let text = group_block(&g);
        assert!(text.contains("\nvolumes       -\n"), "{text}");
        assert!(text.contains("\nconsistent    no\n"), "{text}");
        assert!(
            text.ends_with("last error    segment 7: bad CRC\n"),
            "{text}"
        );
        let two = status_text(&[info(), info()]);
        assert_eq!(
            two,
            format!("{}\n{}", group_block(&info()), group_block(&info()))
        );
    }

    #[test]
    fn wait_goals() {
        let g = info();
        assert!(Goal::Applied(8).reached(&g));
        assert!(!Goal::Applied(9).reached(&g));
        assert!(Goal::Consistent.reached(&g));
        assert!(!Goal::CaughtUp.reached(&g));
        let done = GroupInfo {
            applied: 10,
            lag_records: 0,
            ..info()
        };
        assert!(Goal::CaughtUp.reached(&done));
        let lagging = GroupInfo {
            applied: 10,
            lag_records: 1,
            ..info()
        };
        assert!(!Goal::CaughtUp.reached(&lagging));
        assert!(is_error_state("error") && is_error_state("remote-error"));
        assert!(!is_error_state("replicating") && !is_error_state("consistent"));
        assert_eq!(
            progress(&g),
            "state consistent, written 10, applied 8, lag 2 records, consistent yes"
        );
    }

    #[test]
    fn checks_names_and_makes_the_remote_absolute() {
        assert!(matches!(
            check_name("group", "../x", "../x"),
            Err(Failure::Usage(_))
        ));
        match check_volumes("g1", &["v1".into(), "../x".into()]) {
            Err(Failure::Usage(m)) => assert!(m.starts_with("group g1: volume name"), "{m}"),
            _ => panic!("bad volume name accepted"),
        }
        match check_volumes("g1", &["".into()]) {
            Err(Failure::Usage(m)) => assert!(m.contains("group g1 needs at least one volume")),
            _ => panic!("empty volume list accepted"),
        }
        match check_volumes("g1", &["v1".into(), "v1".into()]) {
            Err(Failure::Usage(m)) => assert!(m.contains("listed twice"), "{m}"),
            _ => panic!("duplicate accepted"),
        }
        assert!(check_volumes("g1", &["v1".into(), "v2".into()]).is_ok());
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_remote("g1", Path::new("rel/dir")).ok(),
            Some(cwd.join("rel/dir").to_str().unwrap().to_string())
        );
        assert_eq!(
            absolute_remote("g1", Path::new("/abs")).ok().as_deref(),
            Some("/abs")
        );
        assert!(matches!(
            absolute_remote("g1", Path::new("")),
            Err(Failure::Usage(_))
        ));
    }
}
