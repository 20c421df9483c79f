//! The secondary's applier (strict sequence order, gap hold, durable applied number, ack)
//! and the primary's redo of its journal tail after a crash.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::group::{Group, ROLE_SECONDARY};
use super::remote;
use crate::format::journal::{Ack, JournalRecord, RecordKind};
use crate::journal::{now_ns, read_sealed};
use crate::pool::{Pool, PoolError};
use crate::volume::Volume;

const TICK: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_millis(500);

/// Start the applier of a secondary group.
pub(crate) fn start_applier(pool: &Arc<Pool>, g: &Arc<Group>) {
    let (pool, g2) = (Arc::downgrade(pool), g.clone());
    let h = std::thread::Builder::new()
        .name(format!("apply-{}", g.name))
        .spawn(move || loop {
            let Some(pool) = pool.upgrade() else { return };
            if pool.stopping.load(Ordering::Acquire)
                || g2.is_gone()
                || g2.halt.load(Ordering::Acquire)
            {
                return;
            }
            let pause = match apply_available(&pool, &g2) {
                Ok(true) => Duration::ZERO,
                Ok(false) => TICK,
                Err(e) => {
                    g2.set_error(Some(e));
                    RETRY
                }
            };
            drop(pool);
            std::thread::sleep(pause);
        })
        .expect("spawn applier");
    *g.worker.lock() = Some(h);
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
    bytes: u64,
}

/// Apply the published segments that are there, in order, a batch at a time, then make the
/// data and the applied number durable and acknowledge. Ok(true): something was applied.
pub(crate) fn apply_available(pool: &Pool, g: &Group) -> Result<bool, String> {
    let dir = remote::group_dir(&g.remote, &g.name);
    super::handover::sweep_other_epochs(&dir, g.rec.lock().epoch)?;
    super::pitr::housekeeping(g, &dir, false);
    let list =
        remote::list_published(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let (applied, epoch) = {
        let r = g.rec.lock();
        (r.synced, r.epoch)
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
        bytes: 0,
    };
    let mut progressed = false;
    let mut failure = None;
    for _ in 0..BATCH_SEGMENTS {
        match apply_segment(pool, g, &dir, &list, epoch, upto, &mut done) {
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
        commit(pool, g, &dir, epoch, &done)?;
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
    pool: &Pool,
    g: &Group,
    dir: &std::path::Path,
    list: &[(u64, std::path::PathBuf)],
    epoch: u64,
    upto: u64,
    done: &mut Applied,
) -> Result<bool, String> {
    let want = done.last + 1;
    if want > upto {
        return Ok(false);
    }
    // The segment holding `want`: the last one starting at or before it.
    let Some((first, path)) = list.iter().rev().find(|(f, _)| *f <= want).cloned() else {
        if let Some((f, _)) = list.first() {
            if *f > want {
                return Err(format!(
                    "waiting for sequence number {want}: the remote directory starts at {f} (a gap; nothing after it is applied)"
                ));
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
    let seg = read_sealed(&path, (g.uid, epoch)).map_err(|e| e.to_string())?;
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
        // Already applied (re-shipped after a restart): drop it once acknowledged.
        super::pitr::retire_segment(g, dir, &path);
        return Ok(true);
    }
    for rec in seg
        .records
        .iter()
        .filter(|r| r.head.seq >= want && r.head.seq <= upto)
    {
        if pool.stopping.load(Ordering::Acquire) || g.is_gone() {
            return Ok(false);
        }
        apply_record(pool, g, rec).map_err(|e| {
            format!(
                "{} sequence number {}: {e}; nothing after it is applied",
                path.display(),
                rec.head.seq
            )
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
    pool: &Pool,
    g: &Group,
    dir: &std::path::Path,
    epoch: u64,
    done: &Applied,
) -> Result<(), String> {
    pool.sync().map_err(|e| format!("sync: {e}"))?;
    {
        let mut r = g.rec.lock();
        r.synced = done.last;
        r.synced_time = done.last_time;
        r.acked = done.last;
    }
    pool.put_group(g).map_err(|e| e.to_string())?;
    pool.sync_metadata().map_err(|e| format!("sync: {e}"))?;
    let ack = Ack {
        group: g.uid,
        epoch,
        applied: done.last,
        time: done.last_time,
        acked_at: now_ns(),
    };
    remote::write_ack(dir, &ack).map_err(|e| format!("writing acknowledgement: {e}"))?;
    for path in &done.whole {
        super::pitr::retire_segment(g, dir, path);
    }
    Ok(())
}

fn local_volume(g: &Group, pool: &Pool, primary_vol: u64) -> Option<Arc<Volume>> {
    let r = g.rec.lock();
    r.volumes
        .iter()
        .find(|(_, p)| *p == primary_vol)
        .and_then(|(l, _)| pool.volume_by_id(*l))
}

/// Apply one record to the secondary's volumes.
fn apply_record(pool: &Pool, g: &Group, rec: &JournalRecord) -> Result<(), String> {
    let h = &rec.head;
    match h.kind {
        RecordKind::VolumeAdd => {
            let name = rec.name().map_err(|e| e.to_string())?;
            if let Some(v) = local_volume(g, pool, h.volume) {
                if v.size() != h.length {
                    pool.resize(&v, h.length).map_err(|e| e.to_string())?;
                }
            } else {
                let vol = match pool.volume(&name) {
                    Some(v) if v.group().is_some_and(|x| x.uid == g.uid) => v,
                    Some(_) => {
                        return Err(format!(
                        "volume '{name}' already exists in this pool and is not part of the group"
                    ))
                    }
                    None => {
                        pool.create_volume(&name, h.length, None)
                            .map_err(|e| e.to_string())?
                            .0
                    }
                };
                *vol.group.write() = pool.groups.read().get(&g.uid).cloned();
                let mut r = g.rec.lock();
                r.volumes.push((vol.id, h.volume));
                if !r.base_pending.contains(&h.volume) {
                    r.base_pending.push(h.volume);
                }
                r.consistent_since = 0;
            }
            drop_lock_and_put(pool, g)?;
        }
        RecordKind::VolumeRemove => {
            if let Some(v) = local_volume(g, pool, h.volume) {
                *v.group.write() = None;
            }
            g.rec.lock().volumes.retain(|(_, p)| *p != h.volume);
            drop_lock_and_put(pool, g)?;
        }
        RecordKind::VolumeResize => {
            let v = need(g, pool, h.volume)?;
            pool.resize(&v, h.length).map_err(|e| e.to_string())?;
            pool.notify(v.id);
        }
        RecordKind::Write | RecordKind::Base => {
            let v = need(g, pool, h.volume)?;
            let _io = v.io_lock.read_recursive();
            pool.write_plain(&v, h.offset, &rec.payload)
                .map_err(|e| e.to_string())?;
        }
        RecordKind::Zero => {
            let v = need(g, pool, h.volume)?;
            let _io = v.io_lock.read_recursive();
            pool.discard_locked(&v, h.offset, h.length)
                .map_err(|e| e.to_string())?;
        }
        RecordKind::BaseDone => {
            {
                let mut r = g.rec.lock();
                r.base_pending.retain(|&v| v != h.volume);
                if r.base_pending.is_empty() && r.consistent_since == 0 {
                    r.consistent_since = now_ns() / 1_000_000_000;
                }
            }
            drop_lock_and_put(pool, g)?;
        }
        RecordKind::Marker => {
            let name = rec.name().map_err(|e| e.to_string())?;
            snapshot_group_volumes(pool, g, &name)?;
            super::pitr::note_marker(pool, g, rec, &name);
            log::info!("group '{}': snapshot '{name}' taken at its marker", g.name);
        }
        RecordKind::FailbackDone => super::handover::failback_done(pool, g, rec)?,
        RecordKind::ResyncStart => super::full::resync_start_applied(pool, g, rec)?,
        RecordKind::ResyncDone => super::full::resync_done_applied(pool, g, rec)?,
        RecordKind::Seal => {}
    }
    Ok(())
}

/// Snapshot every volume of the group as `name` (those that have it already are skipped: a
/// record applied again after a crash).
pub(crate) fn snapshot_group_volumes(pool: &Pool, g: &Group, name: &str) -> Result<(), String> {
    // Data before the pointer to it: what the records before this one wrote is made durable
    // first, so that after a machine crash the snapshot (which a re-apply skips) never
    // points at data that was lost.
    pool.sync()
        .map_err(|e| format!("sync before snapshot '{name}': {e}"))?;
    let vols: Vec<u64> = g.rec.lock().volumes.iter().map(|(l, _)| *l).collect();
    for id in vols {
        let Some(v) = pool.volume_by_id(id) else {
            continue;
        };
        if pool.snapshots.read().get(v.id, name).is_some() {
            continue;
        }
        let _io = v.io_lock.write();
        let mut log = pool.meta.lock();
        pool.snapshot_locked(&mut log, &v, name)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn drop_lock_and_put(pool: &Pool, g: &Group) -> Result<(), String> {
    pool.put_group(g).map_err(|e| e.to_string())
}

fn need(g: &Group, pool: &Pool, primary_vol: u64) -> Result<Arc<Volume>, String> {
    local_volume(g, pool, primary_vol)
        .ok_or_else(|| format!("record for volume #{primary_vol}, which the group does not have"))
}

/// After a crash of the primary: replay into the volumes every local journal record after
/// the redo floor, so the volumes hold everything the journal (and so the secondary) holds.
pub(crate) fn redo(pool: &Pool, g: &Group) -> Result<u64, PoolError> {
    debug_assert!(g.role != ROLE_SECONDARY);
    let floor = g.rec.lock().synced;
    let epoch = g.rec.lock().epoch;
    let mut n = 0;
    for seg in g.journal().sealed_after(floor) {
        let s = read_sealed(&seg.path, (g.uid, epoch))
            .map_err(|e| PoolError::Inconsistent(e.to_string()))?;
        for rec in s.records.iter().filter(|r| r.head.seq > floor) {
            let h = &rec.head;
            let Some(v) = pool.volume_by_id(h.volume) else {
                continue;
            };
            if !matches!(h.kind, RecordKind::Write | RecordKind::Zero) {
                continue;
            }
            // Regions written while the group was suspended hold newer data than this
            // record; the resync sends them (replication/full.rs).
            let pieces = super::full::clean_pieces(g, pool.extent_size, v.id, h.offset, h.length);
            let _io = v.io_lock.read_recursive();
            let res = pieces.iter().try_for_each(|&(o, n)| {
                if h.kind == RecordKind::Write {
                    let at = (o - h.offset) as usize;
                    pool.write_plain(&v, o, &rec.payload[at..at + n as usize])
                        .map(|_| ())
                } else {
                    pool.discard_locked(&v, o, n)
                }
            });
            res.map_err(|e| {
                PoolError::Inconsistent(format!(
                    "group '{}': redo of {} sequence number {}: {e}",
                    g.name,
                    seg.path.display(),
                    h.seq
                ))
            })?;
            n += 1;
        }
    }
    Ok(n)
}
