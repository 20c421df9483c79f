//! Backup schedules at work (`fusevol schedule add`): the daemon's scheduler thread calls
//! [`run_due`] about once a second; each due schedule runs its pre hook, takes a snapshot of
//! its volume (a group snapshot for a journal group), labels it in its volume information
//! (origin kind `scheduled`, the schedule's name and id), runs its post hook, and prunes
//! the snapshots *it made* that the retention rules no longer keep. A snapshot made by hand
//! or by another schedule is never touched, nor one that is open (mount or NBD) or that a
//! clone was made from. Each run's outcome (time, snapshot or error) is stored with the
//! schedule and published as an event.
//!
//! Missed slots: the next run is kept on the schedule's cadence (`next_due += every`); when
//! the daemon was stopped across several slots, the first run after the start takes one
//! snapshot and the next run is the next slot in the future — never one per missed slot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hooks::{around, HookEnv};
use crate::format::schedule::{LastResult, ScheduleRec, TargetKind, MIN_EVERY_MS};
use crate::info::InfoState;
use crate::pool::create::now_secs;
use crate::pool::PoolError;
use crate::schedule::retention::{self, Rules};
use crate::schedule::{format_every, parse_every};
use crate::storage::Storage;

/// The origin kind of a snapshot a schedule took.
pub const SCHEDULED: &str = "scheduled";

/// What `schedule add` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// The schedule's name (default: `<target>-<every>`).
    #[serde(default)]
    pub name: String,
    /// A volume, or a journal group when `group` is set.
    pub target: String,
    #[serde(default)]
    pub group: bool,
    /// Interval, as `15m`, `2s`, `1h`...
    pub every: String,
    pub keep: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub pre: String,
    #[serde(default)]
    pub post: String,
    /// Seconds (0: the default, 60).
    #[serde(default)]
    pub hook_timeout: u64,
}

/// A schedule as `schedule list` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub id: u64,
    pub name: String,
    /// volume or group
    pub kind: String,
    pub target: String,
    pub every: String,
    pub every_ms: u64,
    pub keep: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pre: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub post: String,
    pub hook_timeout: u64,
    pub created: u64,
    /// When the next run is due (ms since the Unix epoch).
    pub next_run_ms: u64,
    /// When the last run ended (ms since the Unix epoch; 0: never ran).
    pub last_run_ms: u64,
    /// ok, failed, skipped, or empty (never ran).
    pub last_result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_snapshot: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_message: String,
    pub runs: u64,
    pub failures: u64,
    /// The snapshots this schedule made that exist now, oldest first.
    pub snapshots: Vec<String>,
    /// valid, or invalid (the record does not decode: `error` says why; it never runs).
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

const DEFAULT_HOOK_TIMEOUT: u64 = 60;

/// Check a spec against the pool and store the new schedule; its first run is one
/// interval from now.
pub fn add(st: &Storage, spec: &ScheduleSpec) -> Result<ScheduleRec, PoolError> {
    let inv = PoolError::Invalid;
    let every_ms = parse_every(&spec.every).map_err(inv)?;
    if spec.keep == 0 && spec.hourly == 0 && spec.daily == 0 && spec.weekly == 0 {
        return Err(PoolError::Invalid(
            "a schedule keeps nothing: give --keep N (≥ 1) or --hourly/--daily/--weekly".into(),
        ));
    }
    let kind = if spec.group {
        st.replication.group_list(Some(&spec.target))?;
        let g = &st.replication.group_list(Some(&spec.target))?[0];
        if !g.is_primary() {
            return Err(PoolError::Invalid(format!(
                "journal group '{}' is the secondary here: schedule its group snapshots on the primary",
                spec.target
            )));
        }
        TargetKind::Group
    } else {
        st.volumes.volume_or_err(&spec.target)?;
        TargetKind::Volume
    };
    let name = if spec.name.is_empty() {
        format!("{}-{}", spec.target, format_every(every_ms))
    } else {
        spec.name.clone()
    };
    crate::names::validate("schedule", &name).map_err(inv)?;
    if name.parse::<u64>().is_ok() {
        return Err(PoolError::Invalid(format!(
            "schedule name '{name}' is a number: numbers name schedules by id"
        )));
    }
    let now_ms = now_ms();
    let rec = ScheduleRec {
        id: 0,
        name,
        kind,
        target: spec.target.clone(),
        every_ms,
        keep: spec.keep,
        hourly: spec.hourly,
        daily: spec.daily,
        weekly: spec.weekly,
        label: spec.label.clone(),
        pre: spec.pre.clone(),
        post: spec.post.clone(),
        hook_timeout: if spec.hook_timeout == 0 {
            DEFAULT_HOOK_TIMEOUT
        } else {
            spec.hook_timeout
        },
        created: now_secs(),
        next_due_ms: now_ms + every_ms,
        ..Default::default()
    };
    if rec.encode().len() > crate::format::schedule::SCHEDULE_MAX {
        return Err(PoolError::Invalid(
            "the schedule's hooks and label are too long (16 KiB in all)".into(),
        ));
    }
    let rec = st.schedules.add(rec)?;
    st.pool.events.publish(
        "schedule",
        &rec.name,
        "added",
        serde_json::json!({"id": rec.id, "target": rec.target, "every": format_every(rec.every_ms)}),
    );
    log::info!(
        "schedule '{}' (id {}) added: {} every {}",
        rec.name,
        rec.id,
        rec.target,
        format_every(rec.every_ms)
    );
    Ok(rec)
}

/// Remove the schedule named (or numbered) `key`; its snapshots stay.
pub fn remove(st: &Storage, key: &str) -> Result<ScheduleView, PoolError> {
    let id = st.schedules.find(key)?;
    let view = views(st)?
        .into_iter()
        .find(|v| v.id == id)
        .unwrap_or_default();
    st.schedules.remove(id)?;
    st.pool.events.publish(
        "schedule",
        &view.name,
        "removed",
        serde_json::json!({"id": id}),
    );
    Ok(view)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One generation a schedule made: a snapshot name, its time, and (volume, snapshot id) of
/// each volume that has it (one for a volume schedule, each group member for a group).
struct Made {
    name: String,
    time: u64,
    members: Vec<(String, u64)>,
}

/// The volumes a schedule snapshots now (names).
fn target_volumes(st: &Storage, rec: &ScheduleRec) -> Result<Vec<String>, PoolError> {
    match rec.kind {
        TargetKind::Volume => Ok(vec![st.volumes.volume_or_err(&rec.target)?.name.clone()]),
        TargetKind::Group => {
            let gs = st.replication.group_list(Some(&rec.target))?;
            let mut ids: Vec<u64> = gs[0].rec.lock().volumes.iter().map(|(l, _)| *l).collect();
            ids.sort_unstable();
            Ok(ids
                .into_iter()
                .filter_map(|i| st.volumes.volume_by_id(i))
                .map(|v| v.name.clone())
                .collect())
        }
    }
}

/// Whether the record says schedule `rec` made it.
fn made_by(state: &InfoState, rec: &ScheduleRec) -> bool {
    match state {
        InfoState::Valid(r) => r.origin.as_ref().is_some_and(|o| {
            o.kind == SCHEDULED && o.schedule_id == rec.id && o.schedule == rec.name
        }),
        _ => false,
    }
}

/// The generations schedule `rec` made that exist, oldest first.
fn made(st: &Storage, rec: &ScheduleRec) -> Vec<Made> {
    let Ok(vols) = target_volumes(st, rec) else {
        return Vec::new();
    };
    let mut by_name: BTreeMap<String, Made> = BTreeMap::new();
    for vname in vols {
        let Some(v) = st.volumes.volume(&vname) else {
            continue;
        };
        for s in st.snapshots.reg.read().of_volume(v.id) {
            if made_by(&st.infos.get(s.id), rec) {
                let m = by_name.entry(s.name.clone()).or_insert_with(|| Made {
                    name: s.name.clone(),
                    time: s.created,
                    members: Vec::new(),
                });
                m.time = m.time.min(s.created);
                m.members.push((vname.clone(), s.id));
            }
        }
    }
    let mut out: Vec<Made> = by_name.into_values().collect();
    out.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
    out
}

/// The schedules as `schedule list` shows them.
pub fn views(st: &Storage) -> Result<Vec<ScheduleView>, PoolError> {
    Ok(st
        .schedules
        .list()
        .into_iter()
        .map(|(id, r)| match r {
            Ok(rec) => ScheduleView {
                id,
                name: rec.name.clone(),
                kind: match rec.kind {
                    TargetKind::Volume => "volume".into(),
                    TargetKind::Group => "group".into(),
                },
                target: rec.target.clone(),
                every: format_every(rec.every_ms),
                every_ms: rec.every_ms,
                keep: rec.keep,
                hourly: rec.hourly,
                daily: rec.daily,
                weekly: rec.weekly,
                label: rec.label.clone(),
                pre: rec.pre.clone(),
                post: rec.post.clone(),
                hook_timeout: rec.hook_timeout,
                created: rec.created,
                next_run_ms: rec.next_due_ms,
                last_run_ms: rec.last_ms,
                last_result: rec.last_result.as_str().into(),
                last_snapshot: rec.last_snapshot.clone(),
                last_message: rec.last_message.clone(),
                runs: rec.runs,
                failures: rec.failures,
                snapshots: made(st, &rec).into_iter().map(|m| m.name).collect(),
                status: "valid".into(),
                error: String::new(),
            },
            Err(e) => ScheduleView {
                id,
                status: "invalid".into(),
                error: e,
                ..Default::default()
            },
        })
        .collect())
}

/// A fresh snapshot name: `<schedule>-<UTC date>-<time>`, with `-N` when taken already.
fn snapshot_name(st: &Storage, rec: &ScheduleRec, vols: &[String], now_ms: u64) -> String {
    let stamp = jiff::Timestamp::from_millisecond(now_ms as i64)
        .map(|t| t.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| now_ms.to_string());
    let base = format!("{}-{stamp}", rec.name);
    let taken = |n: &str| vols.iter().any(|v| st.snapshots.snapshot(v, n).is_ok());
    let mut name = base.clone();
    let mut i = 2;
    while taken(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    name
}

/// Take the schedule's snapshot and label it; the snapshot's name.
fn take(st: &Storage, rec: &ScheduleRec, snap: &str) -> Result<(), PoolError> {
    let label = |r: &mut crate::format::volinfo::InfoRecord, created: u64| {
        if !rec.label.is_empty() {
            r.label = rec.label.clone();
        }
        r.time = created;
        if let Some(o) = r.origin.as_mut() {
            o.kind = SCHEDULED.into();
            o.schedule = rec.name.clone();
            o.schedule_id = rec.id;
        }
    };
    match rec.kind {
        TargetKind::Volume => {
            let vol = st.volumes.volume_or_err(&rec.target)?;
            let mut info = st.infos.get(vol.id).record();
            let s = st.snapshots.create_snapshot(&rec.target, snap)?;
            let mut origin = st.origin_of(SCHEDULED, &vol, "");
            origin.time = s.created;
            info = info.for_copy(origin);
            label(&mut info, s.created);
            st.infos.put(s.id, &info).map_err(|e| {
                PoolError::Invalid(format!(
                    "snapshot '{snap}' of '{}' was taken but not labelled (it will not be pruned): {e}",
                    rec.target
                ))
            })?;
        }
        TargetKind::Group => {
            st.group_snapshot_with_info(&rec.target, snap)?;
            for v in target_volumes(st, rec)? {
                let Ok(s) = st.snapshots.snapshot(&v, snap) else {
                    continue;
                };
                st.infos
                    .update(s.id, |r| {
                        if r.origin.is_none() {
                            if let Some(vol) = st.volumes.volume(&v) {
                                r.origin = Some(st.origin_of(SCHEDULED, &vol, ""));
                            }
                        }
                        label(r, s.created);
                        Ok(())
                    })
                    .map_err(|e| {
                        PoolError::Invalid(format!(
                            "group snapshot '{snap}' of '{}' was taken but '{v}@{snap}' was not labelled: {e}",
                            rec.target
                        ))
                    })?;
            }
        }
    }
    Ok(())
}

/// Why snapshot `snap_id` of volume `vol` must not be pruned now, if it must not.
fn held(st: &Storage, vol: &str, snap_id: u64) -> Option<String> {
    let snap = st.snapshots.snapshot_by_id(snap_id)?;
    if snap.open_handles() > 0 {
        return Some(format!(
            "{vol}@{} is open ({} handles)",
            snap.name,
            snap.open_handles()
        ));
    }
    for v in st.volumes.volume_list() {
        if let InfoState::Valid(r) = st.infos.get(v.id) {
            if let Some(o) = &r.origin {
                if o.kind == "clone" && o.volume_id == snap.volume && o.snapshot == snap.name {
                    return Some(format!(
                        "clone '{}' was made from {vol}@{}",
                        v.name, snap.name
                    ));
                }
            }
        }
    }
    None
}

/// Prune what the rules no longer keep; (pruned names, kept-because-held notes). With
/// `coming` (a time), the rules count a snapshot about to be taken at that time too.
fn prune(st: &Storage, rec: &ScheduleRec, coming: Option<u64>) -> (Vec<String>, Vec<String>) {
    let gens = made(st, rec);
    let rules = Rules {
        keep: rec.keep,
        hourly: rec.hourly,
        daily: rec.daily,
        weekly: rec.weekly,
    };
    let mut ids: Vec<(u64, u64)> = gens
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m.time))
        .collect();
    if let Some(t) = coming {
        ids.push((gens.len() as u64, t.max(gens.last().map_or(0, |m| m.time))));
    }
    let (mut pruned, mut notes) = (Vec::new(), Vec::new());
    for i in retention::prune(&ids, rules) {
        if i as usize >= gens.len() {
            continue;
        }
        let m = &gens[i as usize];
        if let Some(why) = m.members.iter().find_map(|(v, id)| held(st, v, *id)) {
            notes.push(format!("kept {}: {why}", m.name));
            continue;
        }
        let mut ok = true;
        for (v, _) in &m.members {
            if let Err(e) = st.snapshots.delete_snapshot(v, &m.name) {
                notes.push(format!("could not prune {v}@{}: {e}", m.name));
                ok = false;
            }
        }
        if ok {
            log::info!("schedule '{}': pruned snapshot '{}'", rec.name, m.name);
            st.pool.events.publish(
                "schedule",
                &rec.name,
                "snapshot-pruned",
                serde_json::json!({"snapshot": m.name, "volumes": m.members.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>()}),
            );
            pruned.push(m.name.clone());
        }
    }
    (pruned, notes)
}

/// Run every schedule that is due at `now_ms`. `locked` says why a schedule's target may
/// not be changed now (an operation lock held by someone), which skips the run. Returns
/// the number of runs.
pub fn run_due(
    st: &Storage,
    now_ms: u64,
    locked: &dyn Fn(&ScheduleRec, &str) -> Option<String>,
) -> usize {
    let mut n = 0;
    for (_, r) in st.schedules.list() {
        let Ok(rec) = r else { continue };
        if rec.next_due_ms > now_ms {
            continue;
        }
        run_one(st, rec, now_ms, locked);
        n += 1;
    }
    n
}

fn run_one(
    st: &Storage,
    mut rec: ScheduleRec,
    now_ms: u64,
    locked: &dyn Fn(&ScheduleRec, &str) -> Option<String>,
) {
    let every = rec.every_ms.max(MIN_EVERY_MS);
    let missed = (now_ms - rec.next_due_ms) / every;
    let vols = target_volumes(st, &rec).unwrap_or_default();
    let snap = snapshot_name(st, &rec, &vols, now_ms);
    let mut notes = Vec::new();
    if missed > 0 {
        notes.push(format!(
            "{missed} earlier run(s) were missed (daemon stopped or busy); taken once"
        ));
    }
    let outcome: Result<(Vec<String>, Vec<String>), String> = match locked(&rec, &snap) {
        Some(why) => Err(format!("skipped: {why}")),
        None => {
            let env = HookEnv {
                op: match rec.kind {
                    TargetKind::Volume => "snapshot".into(),
                    TargetKind::Group => "group-snapshot".into(),
                },
                volumes: vols.clone(),
                snapshot: snap.clone(),
                group: match rec.kind {
                    TargetKind::Group => rec.target.clone(),
                    TargetKind::Volume => String::new(),
                },
                schedule: rec.name.clone(),
            };
            let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
            let (pre, post) = (opt(&rec.pre), opt(&rec.post));
            around(
                pre.as_deref(),
                post.as_deref(),
                &env,
                Duration::from_secs(rec.hook_timeout.max(1)),
                || {
                    // Make room first, so the schedule never holds more than its rules keep
                    // (counting the snapshot about to be taken), then take it.
                    let (pruned, held) = prune(st, &rec, Some(now_ms / 1000));
                    take(st, &rec, &snap)?;
                    Ok::<_, PoolError>((pruned, held))
                },
            )
            .map_err(|e| e.to_string())
        }
    };
    let end_ms = now_ms.max(self::now_ms());
    rec.last_ms = end_ms;
    // On time: the next slot of the cadence. After missed slots (the daemon was stopped):
    // one interval from this catch-up run, so the missed slots are never made up.
    rec.next_due_ms = if missed == 0 {
        rec.next_due_ms + every
    } else {
        end_ms + every
    };
    if rec.next_due_ms <= end_ms {
        rec.next_due_ms = end_ms + every;
    }
    match &outcome {
        Ok((pruned, held)) => {
            if !pruned.is_empty() {
                notes.push(format!("pruned {}", pruned.join(", ")));
            }
            notes.extend(held.iter().cloned());
            rec.runs += 1;
            rec.last_result = LastResult::Ok;
            rec.last_snapshot = snap.clone();
            log::info!("schedule '{}': took snapshot '{snap}'", rec.name);
            st.pool.events.publish(
                "schedule",
                &rec.name,
                "snapshot-taken",
                serde_json::json!({"snapshot": snap, "volumes": vols, "missed": missed}),
            );
        }
        Err(e) => {
            rec.failures += 1;
            rec.last_snapshot = String::new();
            let skipped = e.starts_with("skipped: ");
            rec.last_result = if skipped {
                LastResult::Skipped
            } else {
                LastResult::Failed
            };
            log::warn!("schedule '{}': {e}", rec.name);
            notes.insert(0, e.clone());
            st.pool.events.publish(
                "schedule",
                &rec.name,
                if skipped { "run-skipped" } else { "run-failed" },
                serde_json::json!({"snapshot": snap, "error": e}),
            );
        }
    }
    // Prune also after a failed run (the rules over what exists): a snapshot kept only
    // because it was open at the last run goes now.
    if outcome.is_err() && locked(&rec, "").is_none() {
        let (pruned, held) = prune(st, &rec, None);
        if !pruned.is_empty() {
            notes.push(format!("pruned {}", pruned.join(", ")));
        }
        notes.extend(held);
    }
    rec.last_message = notes.join("; ");
    if rec.last_message.len() > 2048 {
        let mut cut = 2048;
        while !rec.last_message.is_char_boundary(cut) {
            cut -= 1;
        }
        rec.last_message.truncate(cut);
    }
    match st.schedules.update(&rec) {
        Ok(true) => {}
        Ok(false) => log::info!("schedule '{}' was removed during its run", rec.name),
        Err(e) => log::error!(
            "schedule '{}': its last result was not stored: {e}",
            rec.name
        ),
    }
}
