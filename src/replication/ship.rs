//! The primary's background work: the shipper (seal by age, publish sealed segments whole,
//! read the acknowledgement, purge) and the base copier (initial copy as `Base` records).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::ReplicationError;
use super::group::Group;
use super::handover::{self, ManifestWatch};
use super::remote::{self, RateLimit};
use super::Replication;
use crate::format::journal::RecordKind;
use crate::pool::PoolError;
use crate::volume::Volume;

const TICK: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_millis(500);
/// Force a pool sync (which advances the redo floor) when this much journal is held only
/// because the volumes' data is not known durable yet.
const UNSYNCED_JOURNAL: u64 = 1 << 30;

fn stop(r: &Replication, g: &Group) -> bool {
    r.pool.stopping.load(Ordering::Acquire) || g.is_gone()
}

/// Start the shipper of a primary group.
pub(crate) fn start_shipper(r: &Arc<Replication>, g: &Arc<Group>) {
    let (wr, g2) = (Arc::downgrade(r), g.clone());
    let h = std::thread::Builder::new()
        .name(format!("ship-{}", g.name))
        .spawn(move || {
            let mut watch = ManifestWatch::new();
            let mut wait_until = Instant::now();
            let mut last_sync = Instant::now();
            let mut syncing: Option<JoinHandle<Result<(), PoolError>>> = None;
            {
                let rec = g2.rec.lock();
                g2.rt.lock().shipped = rec.acked;
            }
            loop {
                let Some(r) = wr.upgrade() else { return };
                if stop(&r, &g2) || g2.is_stale() {
                    // A stale primary ships nothing more: its journal after the takeover
                    // point tells a failback what it changed.
                    return;
                }
                if let Err(e) = g2.journal().seal_if_old() {
                    g2.set_error(Some(e.to_string()));
                }
                if Instant::now() >= wait_until {
                    match ship_once(&r, &g2, &mut watch) {
                        Ok(()) => g2.set_error(None),
                        Err(e) => {
                            g2.set_error(Some(e.to_string()));
                            wait_until = Instant::now() + RETRY;
                        }
                    }
                }
                let (synced, acked) = {
                    let rec = g2.rec.lock();
                    (rec.synced, rec.acked)
                };
                let held = g2.journal().stats().bytes;
                if let Some(h) = syncing.take_if(|h| h.is_finished()) {
                    if let Ok(Err(e)) = h.join() {
                        g2.set_error(Some(format!("sync: {e}")));
                    }
                }
                // A small journal limit frees its space sooner (replication/full.rs).
                let unsynced_max = UNSYNCED_JOURNAL.min(g2.rec.lock().journal_limit / 4);
                if acked > synced
                    && syncing.is_none()
                    && (held > unsynced_max || last_sync.elapsed() > Duration::from_secs(5))
                {
                    // A pool sync can take seconds under a heavy write load; it runs beside
                    // the shipper so that shipping (and so the lag) never waits for it.
                    last_sync = Instant::now();
                    syncing = spawn_sync(&r);
                }
                if let Err(e) = g2.journal().purge_upto(synced.min(acked)) {
                    g2.set_error(Some(e.to_string()));
                }
                super::lag::check_lag(&g2);
                drop(r);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawn shipper");
    *g.worker.lock() = Some(h);
}

/// Sync the pool in a thread of its own (it advances the redo floor, which lets the journal
/// be purged).
fn spawn_sync(r: &Arc<Replication>) -> Option<JoinHandle<Result<(), PoolError>>> {
    let weak = Arc::downgrade(r);
    std::thread::Builder::new()
        .name("ship-sync".into())
        .spawn(move || match weak.upgrade() {
            Some(r) => r.pool.sync(),
            None => Ok(()),
        })
        .ok()
}

fn ship_once(
    rp: &Replication,
    g: &Group,
    watch: &mut ManifestWatch,
) -> Result<(), ReplicationError> {
    let dir = remote::ensure_group_dir(&g.remote, &g.name)
        .map_err(|e| ReplicationError::remote(&g.name, "remote", &g.remote, e))?;
    handover::watch(rp, g, &dir, watch)?;
    let (rate, epoch) = {
        let r = g.rec.lock();
        (r.rate, r.epoch)
    };
    let shipped = g.rt.lock().shipped;
    let mut limit = RateLimit::new(rate);
    for seg in g.journal().sealed_after(shipped) {
        if rp.pool.stopping.load(Ordering::Acquire) {
            break;
        }
        let name = handover::published_name(&seg.name, epoch);
        remote::publish(&seg.path, &dir, &name, &mut limit).map_err(|source| {
            ReplicationError::Publish {
                group: g.name.clone(),
                segment: seg.name.clone(),
                dir: dir.clone(),
                source,
            }
        })?;
        g.rt.lock().shipped = seg.last;
    }
    match remote::read_ack(&dir) {
        Ok(Some(ack)) if ack.group == g.uid => {
            let newer = {
                let mut r = g.rec.lock();
                if ack.epoch == r.epoch && ack.applied > r.acked {
                    r.acked = ack.applied;
                    r.synced_time = ack.time;
                    true
                } else {
                    false
                }
            };
            if newer {
                rp.put_group(g)?;
            }
        }
        Ok(_) => {}
        Err(e) => {
            return Err(ReplicationError::remote(
                &g.name,
                "reading acknowledgement in",
                &dir,
                e,
            ))
        }
    }
    Ok(())
}

/// Start (or restart) the initial copy of the volumes in `rec.base_pending`.
pub(crate) fn start_base_copy(r: &Arc<Replication>, g: &Arc<Group>) {
    let (wr, g2) = (Arc::downgrade(r), g.clone());
    let h = std::thread::Builder::new()
        .name(format!("base-{}", g.name))
        .spawn(move || {
            let mut copied_any = false;
            loop {
                let Some(r) = wr.upgrade() else { return };
                if stop(&r, &g2) {
                    return;
                }
                let next = g2.rec.lock().base_pending.first().copied();
                let Some(vid) = next else {
                    if copied_any {
                        g2.publish(
                            "initial-copy-sent",
                            serde_json::json!({"state": "replicating"}),
                        );
                    }
                    return;
                };
                copied_any = true;
                let res = match r.volumes.volume_by_id(vid) {
                    Some(vol) => base_copy(&r, &g2, &vol),
                    None => Ok(true),
                };
                match res {
                    Ok(true) => {
                        {
                            let mut rec = g2.rec.lock();
                            rec.base_pending.retain(|&v| v != vid);
                            g2.clear_base_progress(&mut rec, vid);
                            g2.base_at.store(0, Ordering::Relaxed);
                        }
                        if let Err(e) = r.put_group(&g2) {
                            g2.set_error(Some(format!("base copy: {e}")));
                            return;
                        }
                    }
                    Ok(false) => return,
                    Err(e) => {
                        g2.set_error(Some(format!("base copy: {e}")));
                        drop(r);
                        std::thread::sleep(RETRY);
                    }
                }
            }
        })
        .expect("spawn base copier");
    *g.base_worker.lock() = Some(h);
}

/// A progress point of the base copy every this many logical extents (durable with the
/// next pool sync that passes it; see `format::group::base`).
const BASE_MARK_EVERY: u64 = 16;

/// Journal every allocated extent of `vol` as a `Base` record, then `BaseDone`, starting at
/// the durable progress of an earlier run. Returns false when stopped.
fn base_copy(r: &Replication, g: &Group, vol: &Volume) -> Result<bool, ReplicationError> {
    let es = r.pool.extent_size;
    // Resume where the durable progress says (after a restart of the primary).
    let mut lext = g.rec.lock().ext.base.start_of(vol.id);
    g.base_at.store(lext, Ordering::Relaxed);
    if lext > 0 {
        log::info!(
            "group '{}': base copy of volume '{}' resumes at extent {lext}",
            g.name,
            vol.name
        );
    }
    let mut buf = vec![0u8; es as usize];
    loop {
        if stop(r, g) {
            return Ok(false);
        }
        let size = vol.size();
        if lext * es >= size {
            break;
        }
        if vol.map.read().get(lext).is_none() {
            lext += 1;
            continue;
        }
        let off = lext * es;
        let n = es.min(size - off) as usize;
        // The initial copy waits for journal space like the resync (the journal limit).
        if !super::full::wait_space(r, g, n as u64) {
            return Ok(false);
        }
        {
            // Under the stripe: a host write to this extent is wholly before (its data is
            // in what we read, its record earlier) or wholly after (its record later).
            let _st = g.lock_range(lext, lext);
            r.volumes.read_plain(vol, off, &mut buf[..n])?;
            let seq = g
                .journal()
                .append(RecordKind::Base, vol.id, off, n as u64, &buf[..n])
                .map_err(|e| ReplicationError::journal(&g.name, e))?;
            if (lext + 1).is_multiple_of(BASE_MARK_EVERY) {
                let at = crate::format::group::BaseRec {
                    volume: vol.id,
                    next: lext + 1,
                };
                g.note_base_mark(seq, at);
            }
        }
        lext += 1;
        g.base_at.store(lext, Ordering::Relaxed);
    }
    g.journal()
        .append(RecordKind::BaseDone, vol.id, 0, vol.size(), &[])
        .map_err(|e| ReplicationError::journal(&g.name, e))?;
    Ok(true)
}
