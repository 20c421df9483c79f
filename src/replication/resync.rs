//! `group resync` (the primary journals the regions written while suspended) and the
//! secondary's side of a resync (its snapshot of the last consistent image). The design is
//! described in `full.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ReplicationError;
use super::full::{need_for, COPY_SHARE, POLL};
use super::group::Group;
use super::remote;
use super::Replication;
use crate::format::group::full::FullState;
use crate::format::journal::{JournalRecord, RecordKind};
use crate::format::{GroupRec, MetaRecord};
use crate::journal::now_ns;
use crate::pool::PoolError;

/// Clear the bits of a resync batch after this many bytes or regions.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_REGIONS: usize = 64;
/// Prefix of the snapshot a secondary keeps during a resync.
pub const RESYNC_SNAPSHOT_PREFIX: &str = "resync-";
/// How long `group resync` waits for the journal to drain below half its limit.
const RESYNC_DRAIN_WAIT: Duration = Duration::from_secs(20);

impl Replication {
    /// `group resync`: journal again, and journal the regions written while suspended.
    pub fn group_resync(self: &Arc<Self>, name: &str) -> Result<(), PoolError> {
        let g = self.full_primary(name)?;
        let dir = remote::group_dir(&g.remote, name);
        remote::read_manifest(&dir).map_err(|e| {
            ReplicationError::Refused(format!(
                "group '{name}': the remote directory {} is not reachable ({e}); a resync needs it",
                dir.display()
            ))
            .into_pool()
        })?;
        self.wait_drained(&g)?;
        {
            let mut log = self.pool.meta.lock();
            let mut r = g.rec.lock();
            let mut rt = g.full.st.lock();
            match rt.state {
                FullState::Journaling if r.ext.full.dirty.is_empty() => {
                    return Err(PoolError::Invalid(format!(
                        "journal group '{name}' is not suspended; there is nothing to resync"
                    )))
                }
                FullState::Resync if rt.copier => {
                    return Err(PoolError::Busy(format!(
                        "journal group '{name}': a resync is running already"
                    )))
                }
                FullState::Resync => {}
                FullState::Journaling | FullState::Suspended => {
                    // The start record goes in before any write journaled from now on.
                    let seq = g
                        .journal()
                        .append(RecordKind::ResyncStart, 0, 0, 0, &[])
                        .map_err(|e| {
                            ReplicationError::in_group(name, ReplicationError::journal(name, e))
                                .into_pool()
                        })?;
                    let bytes = r.ext.full.dirty_regions() * self.pool.extent_size;
                    let f = &mut r.ext.full;
                    f.state = FullState::Resync;
                    f.resync_seq = seq;
                    f.resync_total = bytes;
                    f.resync_done = 0;
                    log.append(&MetaRecord::GroupPut(Box::new(r.clone())))?;
                    rt.state = FullState::Resync;
                    g.publish(
                        "resync-started",
                        serde_json::json!({"seq": seq, "bytes": bytes}),
                    );
                    log::warn!(
                        "group '{name}': RESYNC from sequence {seq}: journaling again; {bytes} bytes of regions written while suspended follow as base records (the secondary is inconsistent until they are applied)"
                    );
                }
            }
            rt.copier = true;
        }
        // The new state is durable before the copier clears any bit.
        if let Err(e) = self.pool.sync_log() {
            g.full.st.lock().copier = false;
            return Err(ReplicationError::in_group(name, e).into_pool());
        }
        start_copier(self, &g);
        Ok(())
    }

    /// Before a resync switches journaling back on: wait (bounded) until the shipper has
    /// drained the journal below half its limit, or the first new writes would find it
    /// full and suspend the group again at once.
    fn wait_drained(&self, g: &Group) -> Result<(), PoolError> {
        let t0 = Instant::now();
        loop {
            if g.full.st.lock().state != FullState::Suspended {
                return Ok(());
            }
            let limit = g.rec.lock().journal_limit;
            let used = g.journal().stats().bytes;
            if limit == 0 || used <= limit / 2 {
                return Ok(());
            }
            if t0.elapsed() >= RESYNC_DRAIN_WAIT {
                return Err(PoolError::Busy(format!(
                    "journal group '{}': the journal still holds {used} of its {limit} bytes after {} s; the secondary is not taking segments yet (see `group status`), resync once it drains",
                    g.name,
                    RESYNC_DRAIN_WAIT.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    pub(crate) fn full_resume(self: &Arc<Self>, g: &Arc<Group>) {
        let resume = {
            let mut rt = g.full.st.lock();
            let go = g.is_primary() && rt.state == FullState::Resync && !rt.copier;
            if go {
                rt.copier = true;
            }
            go
        };
        if resume {
            log::warn!("group '{}': continuing the interrupted resync", g.name);
            start_copier(self, g);
        }
    }
}

/// Secondary: a takeover in the middle of a resync would make an inconsistent image the
/// primary; refuse and say where the consistent one is.
pub(crate) fn refuse_takeover(r: &GroupRec) -> Result<(), PoolError> {
    if r.ext.full.state != FullState::Resync {
        return Ok(());
    }
    let snap = &r.ext.full.resync_snapshot;
    Err(PoolError::Busy(if snap.is_empty() {
        format!(
            "the secondary of journal group '{}' is applying a resync and is inconsistent until it completes; no takeover now",
            r.name
        )
    } else {
        format!(
            "the secondary of journal group '{0}' is applying a resync and is inconsistent until it completes; snapshot '{snap}' of each volume holds the last consistent image: to use it, `fusevol group delete {0}` and `fusevol snapshot rollback VOL {snap}` for each volume",
            r.name
        )
    }))
}
fn stop(r: &Replication, g: &Group) -> bool {
    r.pool.stopping.load(Ordering::Acquire) || g.is_gone() || g.is_stale()
}

/// The copier holds the last reference: the service was dropped without a shutdown (a crash
/// in a test); stop as a killed daemon would.
fn orphaned(r: &Arc<Replication>) -> bool {
    Arc::strong_count(r) == 1
}

/// Wait until `need` journal bytes fit under `share` per mille of the limit (background
/// copies leave the rest to host writes). False when stopped.
pub(crate) fn wait_space(r: &Replication, g: &Group, need: u64) -> bool {
    loop {
        if stop(r, g) {
            return false;
        }
        if space_for(g, need, COPY_SHARE) {
            return true;
        }
        std::thread::sleep(POLL);
    }
}

/// Is there room for a record of `n` bytes under `share` per mille of the limit?
fn space_for(g: &Group, n: u64, share: u64) -> bool {
    let limit = g.rec.lock().journal_limit;
    if limit == 0 {
        return true;
    }
    let cap = (limit / 1000 * share).max(need_for(n)).min(limit);
    let used = g.journal().stats().bytes + g.full.st.lock().reserved;
    used + need_for(n) <= cap
}

fn wait_space_or_orphaned(r: &Arc<Replication>, g: &Group, n: u64) -> bool {
    loop {
        if orphaned(r) || stop(r, g) {
            return false;
        }
        if space_for(g, n, COPY_SHARE) {
            return true;
        }
        std::thread::sleep(POLL);
    }
}

fn start_copier(r: &Arc<Replication>, g: &Arc<Group>) {
    let (wr, g2) = (Arc::downgrade(r), g.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("resync-{}", g.name))
        .spawn(move || {
            loop {
                let Some(r) = wr.upgrade() else { break };
                match resync(&r, &g2) {
                    Ok(()) => break,
                    Err(e) => {
                        g2.set_error(Some(format!("resync: {e}")));
                        if stop(&r, &g2) {
                            break;
                        }
                        drop(r);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
            g2.full.st.lock().copier = false;
        });
    if let Err(e) = spawned {
        log::error!("group '{}': starting the resync copier: {e}", g.name);
        g.full.st.lock().copier = false;
    }
}

/// The resync copier. Ok(()) when done or stopped (a new suspension, the pool stopping).
fn resync(r: &Arc<Replication>, g: &Group) -> Result<(), ReplicationError> {
    let start = g.rec.lock().ext.full.resync_seq;
    // Writers that decided to bypass before the switch finish first (their bits are set).
    while g.full.st.lock().bypass > 0 {
        if stop(r, g) || orphaned(r) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Every record before the start in durable volume data: a redo never replays an old
    // record over a region once its bit is cleared.
    while g.completed() < start {
        if stop(r, g) || orphaned(r) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if g.rec.lock().synced < start {
        r.pool.sync().map_err(ReplicationError::sync)?;
    }
    let es = r.pool.extent_size;
    let mut buf = vec![0u8; es as usize];
    let mut sent = g.rec.lock().ext.full.resync_done;
    loop {
        let todo: Vec<(u64, Vec<u64>)> = {
            let rec = g.rec.lock();
            let rt = g.full.st.lock();
            rec.ext
                .full
                .dirty
                .iter()
                .map(|(v, b)| {
                    let c = rt.copied.get(v);
                    (
                        *v,
                        b.iter()
                            .filter(|x| !c.is_some_and(|c| c.contains(*x)))
                            .collect(),
                    )
                })
                .filter(|(_, x): &(u64, Vec<u64>)| !x.is_empty())
                .collect()
        };
        if todo.is_empty() {
            break;
        }
        let mut batch = (0u64, 0usize);
        for (vid, regions) in todo {
            let vol = r
                .volumes
                .volume_by_id(vid)
                .filter(|v| r.group_of(v.id).is_some_and(|x| x.uid == g.uid));
            for reg in regions {
                if orphaned(r) {
                    return Ok(());
                }
                if stop(r, g) || g.full.st.lock().state != FullState::Resync {
                    flush_clean(r, g, &mut sent)?;
                    return Ok(());
                }
                let n = match &vol {
                    Some(v) if reg * es < v.size() => es.min(v.size() - reg * es),
                    // Out of the group or beyond the end: nothing to send.
                    _ => 0,
                };
                if n > 0 && !space_for(g, n, COPY_SHARE) {
                    // Clear what is copied before waiting (progress, and less to redo).
                    flush_clean(r, g, &mut sent)?;
                    if !wait_space_or_orphaned(r, g, n) {
                        return Ok(());
                    }
                }
                {
                    // Under the stripe: a host write to this region is wholly before (its
                    // data is in what we read) or wholly after (its record is later).
                    let _st = g.lock_range(reg, reg);
                    if let Some(v) = vol.as_ref().filter(|_| n > 0) {
                        let off = reg * es;
                        if v.map.read().get(reg).is_none() {
                            g.journal()
                                .append(RecordKind::Zero, v.id, off, n, &[])
                                .map_err(|e| ReplicationError::journal(&g.name, e))?;
                        } else {
                            r.volumes.read_plain(v, off, &mut buf[..n as usize])?;
                            g.journal()
                                .append(RecordKind::Base, v.id, off, n, &buf[..n as usize])
                                .map_err(|e| ReplicationError::journal(&g.name, e))?;
                        }
                    }
                    g.full.st.lock().copied.entry(vid).or_default().set(reg);
                }
                batch.0 += n;
                batch.1 += 1;
                if batch.0 >= BATCH_BYTES || batch.1 >= BATCH_REGIONS {
                    flush_clean(r, g, &mut sent)?;
                    batch = (0, 0);
                }
            }
        }
        flush_clean(r, g, &mut sent)?;
    }
    // Done: every region written while suspended is journaled again.
    let mut log = r.pool.meta.lock();
    let mut rec = g.rec.lock();
    let mut rt = g.full.st.lock();
    if rt.state != FullState::Resync || !rec.ext.full.dirty.is_empty() {
        return Ok(());
    }
    let seq = g
        .journal()
        .append(RecordKind::ResyncDone, 0, start, sent, &[])
        .map_err(|e| ReplicationError::journal(&g.name, e))?;
    let f = &mut rec.ext.full;
    f.state = FullState::Journaling;
    f.suspended_since = 0;
    f.resync_done = sent;
    f.resyncs += 1;
    log.append(&MetaRecord::GroupPut(Box::new(rec.clone())))?;
    rt.state = FullState::Journaling;
    g.publish(
        "resync-finished",
        serde_json::json!({"seq": seq, "bytes": sent}),
    );
    log::info!(
        "group '{}': resync from sequence {start} complete at sequence {seq}: {sent} bytes journaled again",
        g.name
    );
    Ok(())
}

/// Clear the bits of the regions copied so far, once their records are durable.
fn flush_clean(rp: &Replication, g: &Group, sent: &mut u64) -> Result<(), ReplicationError> {
    if g.full.st.lock().copied.values().all(|b| b.is_empty()) {
        return Ok(());
    }
    g.journal()
        .sync()
        .map_err(|e| ReplicationError::journal(&g.name, e))?;
    let es = rp.pool.extent_size;
    let mut log = rp.pool.meta.lock();
    let mut r = g.rec.lock();
    let mut rt = g.full.st.lock();
    let copied = std::mem::take(&mut rt.copied);
    for (vid, b) in copied {
        let regions: Vec<u64> = b.iter().collect();
        if regions.is_empty() {
            continue;
        }
        log.append(&MetaRecord::GroupClean {
            uid: g.uid,
            volume: vid,
            regions: regions.clone(),
        })?;
        if let Some(d) = r.ext.full.dirty.get_mut(&vid) {
            for x in &regions {
                d.clear(*x);
            }
            if d.is_empty() {
                r.ext.full.dirty.remove(&vid);
            }
        }
        *sent += regions.len() as u64 * es;
    }
    r.ext.full.resync_done = *sent;
    Ok(())
}

/// Secondary: a resync starts (`ResyncStart` at `rec.head.seq`).
pub(crate) fn resync_start_applied(
    rp: &Replication,
    g: &Group,
    rec: &JournalRecord,
) -> Result<(), ReplicationError> {
    let (already, consistent) = {
        let r = g.rec.lock();
        (
            r.ext.full.state == FullState::Resync,
            r.consistent_since != 0 && r.base_pending.is_empty(),
        )
    };
    let seq = rec.head.seq;
    if already {
        // A second start (the primary was suspended again mid-resync): the older snapshot
        // still holds the last consistent image.
        g.rec.lock().ext.full.resync_seq = seq;
        return Ok(rp.put_group(g)?);
    }
    let snap = if consistent {
        let name = format!("{RESYNC_SNAPSHOT_PREFIX}{seq}");
        super::apply::snapshot_group_volumes(rp, g, &name)?;
        name
    } else {
        String::new()
    };
    {
        let mut r = g.rec.lock();
        let f = &mut r.ext.full;
        f.state = FullState::Resync;
        f.resync_seq = seq;
        f.resync_snapshot = snap.clone();
        r.consistent_since = 0;
    }
    rp.put_group(g)?;
    // The snapshot and the state are durable before anything after the start is applied.
    rp.pool.sync_metadata().map_err(ReplicationError::sync)?;
    g.publish(
        "resync-started",
        serde_json::json!({"seq": seq, "snapshot": snap}),
    );
    log::warn!(
        "group '{}': resync from sequence {seq}: inconsistent until it completes{}",
        g.name,
        if snap.is_empty() {
            String::new()
        } else {
            format!("; snapshot '{snap}' holds the last consistent image")
        }
    );
    Ok(())
}

/// Secondary: the resync is complete; consistent again, its snapshot deleted.
pub(crate) fn resync_done_applied(
    rp: &Replication,
    g: &Group,
    rec: &JournalRecord,
) -> Result<(), ReplicationError> {
    let snap = {
        let mut r = g.rec.lock();
        if r.ext.full.state != FullState::Resync {
            return Ok(());
        }
        let f = &mut r.ext.full;
        f.state = FullState::Journaling;
        f.resyncs += 1;
        f.resync_done = rec.head.length;
        let snap = std::mem::take(&mut f.resync_snapshot);
        if r.base_pending.is_empty() {
            r.consistent_since = now_ns() / 1_000_000_000;
        }
        snap
    };
    g.publish(
        "resync-finished",
        serde_json::json!({"seq": rec.head.seq, "bytes": rec.head.length}),
    );
    rp.put_group(g)?;
    if !snap.is_empty() {
        let vols: Vec<u64> = g.rec.lock().volumes.iter().map(|(l, _)| *l).collect();
        for id in vols {
            let s = rp.snapshots.reg.read().get(id, &snap).cloned();
            if let Some(s) = s {
                let mut log = rp.pool.meta.lock();
                rp.snapshots.delete_snapshot_logged(&mut log, &s)?;
            }
        }
    }
    log::info!(
        "group '{}': resync complete at sequence {} ({} bytes); consistent again",
        g.name,
        rec.head.seq,
        rec.head.length
    );
    Ok(())
}
