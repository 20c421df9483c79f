//! `fusevol schedule add|list|remove`: backup schedules the daemon runs (issue 14).

use clap::{Args, Subcommand};

use fusevol::control::{Request, ScheduleSpec, ScheduleView};

use crate::exit::Failure;
use crate::output::{format_time, key_values, table, L, R};
use crate::Ctx;

/// Snapshots the daemon takes by itself, labels, and prunes by retention rules
///
/// Each run: the pre hook (its failure skips the snapshot), a snapshot of the volume (a
/// group snapshot for --group) named `<schedule>-<YYYYmmdd-HHMMSS>` (UTC), labelled in its
/// volume information (origin.kind=scheduled, origin.schedule), the post hook (always), then
/// pruning of the snapshots this schedule made that the rules no longer keep. Snapshots made
/// by hand or by another schedule, open ones and ones a clone was made from are never
/// pruned. A run missed while the daemon was stopped is taken once at start.
#[derive(Subcommand)]
pub(crate) enum ScheduleCmd {
    /// Add a schedule for a volume or (with --group) a journal group's group snapshots
    Add(AddArgs),
    /// Show the schedules with their next run and last result
    List,
    /// Remove a schedule (by name or id); the snapshots it made stay
    Remove {
        /// Schedule name or id
        #[arg(value_name = "ID|NAME")]
        name: String,
    },
}

#[derive(Args)]
pub(crate) struct AddArgs {
    /// The volume to snapshot (with --group: the journal group)
    #[arg(value_name = "VOL")]
    target: Option<String>,
    /// Take group snapshots of this journal group (on its primary)
    #[arg(long, value_name = "GROUP", conflicts_with = "target")]
    group: Option<String>,
    /// Interval: 30s, 15m, 1h, 1d, 1w (at least 1s)
    #[arg(long, value_name = "INTERVAL")]
    every: String,
    /// Keep the N most recent snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep: u32,
    /// Also keep the first snapshot of each of the last N hours
    #[arg(long, value_name = "N", default_value_t = 0)]
    hourly: u32,
    /// Also keep the first snapshot of each of the last N days (UTC)
    #[arg(long, value_name = "N", default_value_t = 0)]
    daily: u32,
    /// Also keep the first snapshot of each of the last N ISO weeks (UTC)
    #[arg(long, value_name = "N", default_value_t = 0)]
    weekly: u32,
    /// The schedule's name [default: <VOL|GROUP>-<INTERVAL>]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Written as `label` into each snapshot's volume information
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
    /// Run CMD (sh -c, by the daemon) before each snapshot; if it fails the run takes none.
    /// Env: FUSEVOL_OP, FUSEVOL_VOLUMES, FUSEVOL_SNAPSHOT, FUSEVOL_GROUP, FUSEVOL_SCHEDULE
    #[arg(long, value_name = "CMD")]
    pre: Option<String>,
    /// Run CMD after each snapshot, always (FUSEVOL_RESULT is ok or failed)
    #[arg(long, value_name = "CMD")]
    post: Option<String>,
    /// Kill a hook that runs longer than SECS
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    hook_timeout: u64,
}

fn when_ms(ms: u64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        format_time(ms / 1000)
    }
}

fn last(v: &ScheduleView) -> String {
    match v.last_result.as_str() {
        "" => "never ran".into(),
        "ok" => format!("ok {}", v.last_snapshot),
        other => format!("{} ({})", other.to_uppercase(), v.last_message),
    }
}

fn show_one(v: &ScheduleView) {
    let mut rows = vec![
        ("schedule", format!("{} (id {})", v.name, v.id)),
        ("target", format!("{} {}", v.kind, v.target)),
        ("every", v.every.clone()),
        (
            "keep",
            format!(
                "{} most recent, hourly {}, daily {}, weekly {}",
                v.keep, v.hourly, v.daily, v.weekly
            ),
        ),
        ("next run", when_ms(v.next_run_ms)),
        ("last run", when_ms(v.last_run_ms)),
        ("last result", last(v)),
    ];
    if !v.last_message.is_empty() && v.last_result == "ok" {
        rows.push(("note", v.last_message.clone()));
    }
    println!("{}", key_values(&rows).trim_end());
}

pub(crate) fn schedule(ctx: &Ctx, cmd: ScheduleCmd) -> Result<(), Failure> {
    match cmd {
        ScheduleCmd::Add(a) => {
            let (target, group) = match (a.target, a.group) {
                (_, Some(g)) => (g, true),
                (Some(v), None) => (v, false),
                (None, None) => {
                    return Err(Failure::Local(
                        "schedule add needs a volume or --group GROUP".into(),
                    ))
                }
            };
            let spec = ScheduleSpec {
                name: a.name.unwrap_or_default(),
                target,
                group,
                every: a.every,
                keep: a.keep,
                hourly: a.hourly,
                daily: a.daily,
                weekly: a.weekly,
                label: a.label.unwrap_or_default(),
                pre: a.pre.unwrap_or_default(),
                post: a.post.unwrap_or_default(),
                hook_timeout: a.hook_timeout,
            };
            ctx.request(Request::ScheduleAdd { spec }, |v: ScheduleView| {
                show_one(&v)
            })
        }
        ScheduleCmd::List => ctx.request(Request::ScheduleList, |l: Vec<ScheduleView>| {
            if l.is_empty() {
                println!("no schedules");
                return;
            }
            let rows = l
                .iter()
                .map(|v| {
                    if v.status != "valid" {
                        return vec![
                            v.id.to_string(),
                            format!("INVALID: {}", v.error),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                        ];
                    }
                    let mut keep = v.keep.to_string();
                    for (n, k) in [(v.hourly, "h"), (v.daily, "d"), (v.weekly, "w")] {
                        if n > 0 {
                            keep.push_str(&format!(" +{n}{k}"));
                        }
                    }
                    vec![
                        v.id.to_string(),
                        v.name.clone(),
                        if v.kind == "group" {
                            format!("group {}", v.target)
                        } else {
                            v.target.clone()
                        },
                        v.every.clone(),
                        keep,
                        v.snapshots.len().to_string(),
                        when_ms(v.next_run_ms),
                        format!("{} {}", when_ms(v.last_run_ms), last(v)),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        ("ID", R),
                        ("NAME", L),
                        ("TARGET", L),
                        ("EVERY", L),
                        ("KEEP", L),
                        ("SNAPS", R),
                        ("NEXT RUN", L),
                        ("LAST RUN", L),
                    ],
                    rows
                )
            );
        }),
        ScheduleCmd::Remove { name } => {
            ctx.request(Request::ScheduleRemove { name }, |v: ScheduleView| {
                println!(
                    "schedule '{}' (id {}) removed; its {} snapshots stay",
                    v.name,
                    v.id,
                    v.snapshots.len()
                )
            })
        }
    }
}
