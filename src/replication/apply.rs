//! The secondary's applier (strict sequence order, gap hold, durable applied number, ack)
//! and the primary's redo of its journal tail after a crash.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::error::ReplicationError;
use super::group::{Group, ROLE_SECONDARY};
use super::remote;
use super::Replication;
use crate::format::journal::{Ack, JournalRecord, RecordKind};
use crate::journal::{now_ns, read_sealed};
use crate::pool::PoolError;
use crate::volume::Volume;

const TICK: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_millis(500);

/// Start the applier of a secondary group.
pub(crate) fn start_applier(r: &Arc<Replication>, g: &Arc<Group>) {
    let (r, g2) = (Arc::downgrade(r), g.clone());
    let h = std::thread::Builder::new()
        .name(format!("apply-{}", g.name))
        .spawn(move || {
            let mut reacked = false;
            loop {
                let Some(r) = r.upgrade() else { return };
                if r.pool.stopping.load(Ordering::Acquire)
                    || g2.is_gone()
                    || g2.halt.load(Ordering::Acquire)
                {
                    return;
                }
                let res = if reacked {
                    apply_available(&r, &g2)
                } else {
                    reacknowledge(&r, &g2).map(|()| {
                        reacked = true;
                        true
                    })
                };
                super::lag::check_lag(&g2);
                let pause = match res {
                    Ok(true) => Duration::ZERO,
                    Ok(false) => TICK,
                    Err(e) => {
                        g2.set_error(Some(e.to_string()));
                        RETRY
                    }
                };
                drop(r);
                std::thread::sleep(pause);
            }
        })
        .expect("spawn applier");
    *g.worker.lock() = Some(h);
}

/// Once per start of the applier: the acknowledgement of what is durably applied here is
/// written again when the remote one is missing or older. A crash in `commit` after the
/// applied number is durable and before the acknowledgement is written leaves it behind, and
/// when nothing more is published no later commit writes it: the primary would hold its
/// journal and report the lag for ever.
fn reacknowledge(r: &Replication, g: &Group) -> Result<(), ReplicationError> {
    let dir = remote::group_dir(&g.remote, &g.name);
    let (epoch, acked, time) = {
        let rec = g.rec.lock();
        (rec.epoch, rec.acked, rec.synced_time)
    };
    if acked == 0 {
        return Ok(());
    }
    let behind = match remote::read_ack(&dir) {
        Ok(None) => true,
        Ok(Some(a)) => a.group == g.uid && a.epoch == epoch && a.applied < acked,
        Err(e) => {
            return Err(ReplicationError::remote(
                &g.name,
                "reading acknowledgement in",
                &dir,
                e,
            ))
        }
    };
    if !behind {
        return Ok(());
    }
    // The applied number read back at start-up may still be only in the page cache (a crash
    // between `put_group` and its sync): durable before it is acknowledged.
    r.pool.sync_metadata().map_err(ReplicationError::sync)?;
    let ack = Ack {
        group: g.uid,
        epoch,
        applied: acked,
        time,
        acked_at: now_ns(),
    };
    remote::write_ack(&dir, &ack)
        .map_err(|e| ReplicationError::remote(&g.name, "writing acknowledgement in", &dir, e))?;
    log::info!(
        "group '{}': acknowledgement of sequence number {acked} written again",
        g.name
    );
    Ok(())
}

/// At most this much is applied between two syncs of the secondary's pool: one sync (and one
/// acknowledgement) covers several segments when the applier is behind.
const BATCH_SEGMENTS: usize = 16;
const BATCH_BYTES: u64 = 256 << 20;
const BATCH_TIME: Duration = Duration::from_millis(500);

/// What a batch applied and not yet made durable.
struct Applied {
    /// Last sequence number applied (in the page cache).
    last: u64,
    last_time: u64,
    /// Segments applied whole: removed once the acknowledgement is written.
    whole: Vec<std::path::PathBuf>,
    /// Segments found applied already and retired in this batch (still in its listing).
    retired: Vec<std::path::PathBuf>,
    bytes: u64,
}

/// Apply the published segments that are there, in order, a batch at a time, then make the
/// data and the applied number durable and acknowledge. Ok(true): something was applied.
pub(crate) fn apply_available(r: &Replication, g: &Group) -> Result<bool, ReplicationError> {
    let dir = remote::group_dir(&g.remote, &g.name);
    super::handover::sweep_other_epochs(&g.name, &dir, g.rec.lock().epoch)?;
    super::pitr::housekeeping(g, &dir, false);
    let list = remote::list_published(&dir)
        .map_err(|e| ReplicationError::remote(&g.name, "listing", &dir, e))?;
    let (applied, epoch) = {
        let rec = g.rec.lock();
        (rec.synced, rec.epoch)
    };
    let upto = g.rt.lock().apply_upto.unwrap_or(u64::MAX);
    {
        let mut rt = g.rt.lock();
        rt.remote_bytes = 0;
        if let Some((first, _)) = list.last() {
            rt.remote_written = rt.remote_written.max(first.saturating_sub(1));
        }
        for (first, p) in &list {
            if *first > applied {
                rt.remote_bytes += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let t0 = std::time::Instant::now();
    let mut done = Applied {
        last: applied,
        last_time: 0,
        whole: Vec::new(),
        retired: Vec::new(),
        bytes: 0,
    };
    let mut progressed = false;
    let mut failure = None;
    for _ in 0..BATCH_SEGMENTS {
        match apply_segment(r, g, &dir, &list, epoch, upto, &mut done) {
            Ok(true) => progressed = true,
            Ok(false) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if done.bytes >= BATCH_BYTES || t0.elapsed() >= BATCH_TIME {
            break;
        }
    }
    if done.last > applied {
        // What was applied before a failure is made durable and acknowledged too.
        commit(r, g, &dir, epoch, &done)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if progressed {
        g.set_error(None);
    }
    Ok(progressed)
}

/// Apply the segment holding `done.last + 1`, if it is published. Ok(false): nothing to do.
fn apply_segment(
    r: &Replication,
    g: &Group,
    dir: &std::path::Path,
    list: &[(u64, std::path::PathBuf)],
    epoch: u64,
    upto: u64,
    done: &mut Applied,
) -> Result<bool, ReplicationError> {
    let want = done.last + 1;
    if want > upto {
        return Ok(false);
    }
    // The segment holding `want`: the last one starting at or before it.
    let Some((first, path)) = list
        .iter()
        .rev()
        .find(|(f, p)| *f <= want && !done.retired.contains(p))
        .cloned()
    else {
        if let Some((f, _)) = list.first() {
            if *f > want {
                return Err(ReplicationError::Gap {
                    group: g.name.clone(),
                    want,
                    first: *f,
                });
            }
        }
        g.set_error(None);
        return Ok(false);
    };
    if done.whole.contains(&path) {
        // Applied whole in this batch and nothing after it is published yet.
        return Ok(false);
    }
    if super::pitr::not_due(g, want) {
        g.set_error(None);
        return Ok(false);
    }
    let seg =
        read_sealed(&path, (g.uid, epoch)).map_err(|e| ReplicationError::journal(&g.name, e))?;
    let seg_last = seg.last_seq().unwrap_or(first);
    let upto = if seg_last < want {
        upto
    } else {
        // The apply delay: only the records that are due.
        let due = super::pitr::due_upto(g, &seg, want);
        if due < want {
            g.set_error(None);
            return Ok(false);
        }
        upto.min(due)
    };
    let last = seg_last.min(upto);
    {
        let mut rt = g.rt.lock();
        rt.remote_written = rt.remote_written.max(seg_last);
    }
    if seg_last < want {
        // Already applied (re-shipped after a restart, or left by a crash before it was
        // retired): drop it; the batch goes on with the segments listed before it.
        super::pitr::retire_segment(g, dir, &path);
        done.retired.push(path);
        return Ok(true);
    }
    for rec in seg
        .records
        .iter()
        .filter(|x| x.head.seq >= want && x.head.seq <= upto)
    {
        if r.pool.stopping.load(Ordering::Acquire) || g.is_gone() {
            return Ok(false);
        }
        apply_record(r, g, rec).map_err(|e| ReplicationError::Apply {
            group: g.name.clone(),
            path: path.clone(),
            seq: rec.head.seq,
            source: Box::new(e),
        })?;
        done.last = rec.head.seq;
        done.last_time = rec.head.time;
        done.bytes += rec.payload.len() as u64;
    }
    if last == seg_last && done.last == seg_last {
        done.whole.push(path);
    }
    seg.recycle();
    Ok(true)
}

/// Make a batch durable: data first, then the applied number (idempotent redo covers a crash
/// in between), then the acknowledgement, then remove the segments applied whole.
fn commit(
    r: &Replication,
    g: &Group,
    dir: &std::path::Path,
    epoch: u64,
    done: &Applied,
) -> Result<(), ReplicationError> {
    // Crash point: the batch's records are applied (in the page cache), nothing of it is
    // durable or acknowledged; the restarted applier applies them again from `synced`.
    fail::fail_point!("replication::apply::before_sync", |_| {
        crate::journal::crash_point("replication::apply::before_sync")
    });
    r.pool.sync().map_err(ReplicationError::sync)?;
    {
        let mut rec = g.rec.lock();
        rec.synced = done.last;
        rec.synced_time = done.last_time;
        rec.acked = done.last;
    }
    r.put_group(g)?;
    r.pool.sync_metadata().map_err(ReplicationError::sync)?;
    // Crash point: the data and the applied number are durable, the acknowledgement is not
    // written (the restarted applier writes it again, see `reacknowledge`).
    fail::fail_point!("replication::apply::before_ack", |_| {
        crate::journal::crash_point("replication::apply::before_ack")
    });
    let ack = Ack {
        group: g.uid,
        epoch,
        applied: done.last,
        time: done.last_time,
        acked_at: now_ns(),
    };
    remote::write_ack(dir, &ack)
        .map_err(|e| ReplicationError::remote(&g.name, "writing acknowledgement in", dir, e))?;
    // Crash point: acknowledged, the applied segments not retired yet (the restarted applier
    // finds them wholly applied and retires them).
    fail::fail_point!("replication::ack::after_write", |_| {
        crate::journal::crash_point("replication::ack::after_write")
    });
    for path in &done.whole {
        super::pitr::retire_segment(g, dir, path);
    }
    Ok(())
}

fn local_volume(g: &Group, r: &Replication, primary_vol: u64) -> Option<Arc<Volume>> {
    let rec = g.rec.lock();
    rec.volumes
        .iter()
        .find(|(_, p)| *p == primary_vol)
        .and_then(|(l, _)| r.volumes.volume_by_id(*l))
}

/// Apply one record to the secondary's volumes.
fn apply_record(r: &Replication, g: &Group, rec: &JournalRecord) -> Result<(), ReplicationError> {
    let h = &rec.head;
    match h.kind {
        RecordKind::VolumeAdd => {
            let name = rec
                .name()
                .map_err(|source| ReplicationError::BadRecord { seq: h.seq, source })?;
            // The group's name, as this pool keeps it (`group attach --rename`, rename.rs).
            let name = g.local_name(&name);
            if let Some(v) = local_volume(g, r, h.volume) {
                if v.size() != h.length {
                    r.volumes.resize(&v, h.length)?;
                }
            } else {
                let vol = match r.volumes.volume(&name) {
                    Some(v) if r.group_of(v.id).is_some_and(|x| x.uid == g.uid) => v,
                    Some(_) => return Err(ReplicationError::NameTaken { volume: name }),
                    None => r.volumes.create_volume(&name, h.length, None)?.0,
                };
                let member = r.groups.read().get(&g.uid).cloned();
                r.set_member(vol.id, member);
                let mut gr = g.rec.lock();
                gr.volumes.push((vol.id, h.volume));
                if !gr.base_pending.contains(&h.volume) {
                    gr.base_pending.push(h.volume);
                }
                gr.consistent_since = 0;
            }
            drop_lock_and_put(r, g)?;
        }
        RecordKind::VolumeRemove => {
            if let Some(v) = local_volume(g, r, h.volume) {
                r.set_member(v.id, None);
            }
            g.rec.lock().volumes.retain(|(_, p)| *p != h.volume);
            drop_lock_and_put(r, g)?;
        }
        RecordKind::VolumeResize => {
            let v = need(g, r, h.volume)?;
            r.volumes.resize(&v, h.length)?;
            r.pool.notify(v.id);
        }
        RecordKind::Write | RecordKind::Base => {
            let v = need(g, r, h.volume)?;
            let _io = v.io_lock.read_recursive();
            r.volumes.write_plain(&v, h.offset, &rec.payload)?;
        }
        RecordKind::Zero => {
            let v = need(g, r, h.volume)?;
            let _io = v.io_lock.read_recursive();
            r.volumes.discard_locked(&v, h.offset, h.length)?;
        }
        RecordKind::BaseDone => {
            {
                let mut gr = g.rec.lock();
                gr.base_pending.retain(|&v| v != h.volume);
                if gr.base_pending.is_empty() && gr.consistent_since == 0 {
                    gr.consistent_since = now_ns() / 1_000_000_000;
                    g.publish(
                        "initial-copy-done",
                        serde_json::json!({"seq": rec.head.seq, "state": "consistent"}),
                    );
                }
            }
            drop_lock_and_put(r, g)?;
        }
        RecordKind::Marker => {
            let name = rec
                .name()
                .map_err(|source| ReplicationError::BadRecord { seq: h.seq, source })?;
            snapshot_group_volumes(r, g, &name)?;
            super::pitr::note_marker(r, g, rec, &name);
            log::info!("group '{}': snapshot '{name}' taken at its marker", g.name);
        }
        RecordKind::Info => super::info::apply_info(r, g, rec, local_volume(g, r, h.volume))?,
        RecordKind::FailbackDone => super::handover::failback_done(r, g, rec)?,
        RecordKind::ResyncStart => super::full::resync_start_applied(r, g, rec)?,
        RecordKind::ResyncDone => super::full::resync_done_applied(r, g, rec)?,
        RecordKind::Seal => {}
    }
    Ok(())
}

/// Snapshot every volume of the group as `name` (those that have it already are skipped: a
/// record applied again after a crash).
pub(crate) fn snapshot_group_volumes(
    r: &Replication,
    g: &Group,
    name: &str,
) -> Result<(), ReplicationError> {
    // Data before the pointer to it: what the records before this one wrote is made durable
    // first, so that after a machine crash the snapshot (which a re-apply skips) never
    // points at data that was lost.
    r.pool
        .sync()
        .map_err(|source| ReplicationError::SnapshotSync {
            snapshot: name.to_string(),
            source,
        })?;
    let vols: Vec<u64> = g.rec.lock().volumes.iter().map(|(l, _)| *l).collect();
    for id in vols {
        let Some(v) = r.volumes.volume_by_id(id) else {
            continue;
        };
        if r.snapshots.reg.read().get(v.id, name).is_some() {
            continue;
        }
        let _io = v.io_lock.write();
        let mut log = r.pool.meta.lock();
        r.snapshots.snapshot_locked(&mut log, &v, name)?;
    }
    Ok(())
}

fn drop_lock_and_put(r: &Replication, g: &Group) -> Result<(), ReplicationError> {
    Ok(r.put_group(g)?)
}

fn need(g: &Group, r: &Replication, primary_vol: u64) -> Result<Arc<Volume>, ReplicationError> {
    local_volume(g, r, primary_vol).ok_or(ReplicationError::NotInGroup {
        volume: primary_vol,
    })
}

/// After a crash of the primary: replay into the volumes every local journal record after
/// the redo floor, so the volumes hold everything the journal (and so the secondary) holds.
pub(crate) fn redo(r: &Replication, g: &Group) -> Result<u64, PoolError> {
    debug_assert!(g.role != ROLE_SECONDARY);
    let floor = g.rec.lock().synced;
    let epoch = g.rec.lock().epoch;
    let mut n = 0;
    for seg in g.journal().sealed_after(floor) {
        let s = read_sealed(&seg.path, (g.uid, epoch))
            .map_err(|e| ReplicationError::journal(&g.name, e).into_pool())?;
        for rec in s.records.iter().filter(|x| x.head.seq > floor) {
            let h = &rec.head;
            let Some(v) = r.volumes.volume_by_id(h.volume) else {
                continue;
            };
            if !matches!(h.kind, RecordKind::Write | RecordKind::Zero) {
                continue;
            }
            // Regions written while the group was suspended hold newer data than this
            // record; the resync sends them (replication/full.rs).
            let pieces = super::full::clean_pieces(g, r.pool.extent_size, v.id, h.offset, h.length);
            let _io = v.io_lock.read_recursive();
            let res = pieces.iter().try_for_each(|&(o, n)| {
                if h.kind == RecordKind::Write {
                    let at = (o - h.offset) as usize;
                    r.volumes
                        .write_plain(&v, o, &rec.payload[at..at + n as usize])
                        .map(|_| ())
                } else {
                    r.volumes.discard_locked(&v, o, n)
                }
            });
            res.map_err(|source| {
                let redo = ReplicationError::Redo {
                    group: g.name.clone(),
                    path: seg.path.clone(),
                    seq: h.seq,
                    source: Box::new(source),
                };
                ReplicationError::in_group(&g.name, redo).into_pool()
            })?;
            n += 1;
        }
    }
    Ok(n)
}
