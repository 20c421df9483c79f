//! The background copier of a pair: initial copy, resync, restore, and a quick split's fill.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::{Mirror, Pair, PairState};
use crate::format::MetaRecord;

/// Copy progress is recorded after this many regions or this long, whichever comes first.
const BATCH_REGIONS: usize = 1024;
const BATCH_TIME: Duration = Duration::from_secs(5);

/// What the copy reads from and writes to, decided from the state each step.
enum Mode {
    PtoS,
    StoP,
    SnapToS(Arc<crate::snapshot::Snapshot>),
    Idle,
}

fn mode(pair: &Pair) -> Mode {
    let m = pair.st.lock();
    match m.state {
        PairState::Copy | PairState::CopyRs => Mode::PtoS,
        PairState::CopyRsR => Mode::StoP,
        PairState::Psus => match &m.split_snap {
            Some(s) => Mode::SnapToS(s.clone()),
            None => Mode::Idle,
        },
        PairState::Pair | PairState::Psue => Mode::Idle,
    }
}

/// Start the copier of `pair` unless one is running.
pub(crate) fn ensure(m: &Arc<Mirror>, pair: &Arc<Pair>) {
    let mut w = pair.worker.lock();
    if w.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    if let Some(h) = w.take() {
        let _ = h.join();
    }
    let (weak, p) = (Arc::downgrade(m), pair.clone());
    *w = Some(
        thread::Builder::new()
            .name(format!("copy-{}", pair.pvol.name))
            .spawn(move || run(weak, p))
            .expect("spawn copier"),
    );
}

struct Throttle {
    since: Instant,
    bytes: u64,
}

impl Throttle {
    fn take(&mut self, bytes: u64, limit: u64) {
        if limit == 0 {
            return;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
        let el = self.since.elapsed();
        if due > el {
            thread::sleep(due - el);
        }
        if el > Duration::from_secs(2) {
            self.since = Instant::now();
            self.bytes = 0;
        }
    }
}

impl Mode {
    /// Same source and destination (and the same split snapshot)?
    fn same(&self, other: &Mode) -> bool {
        match (self, other) {
            (Mode::PtoS, Mode::PtoS) | (Mode::StoP, Mode::StoP) | (Mode::Idle, Mode::Idle) => true,
            (Mode::SnapToS(a), Mode::SnapToS(b)) => a.id == b.id,
            _ => false,
        }
    }
}

/// The copy loop. Each region is copied holding both volumes' `io_lock` shared and the
/// region's stripe lock: split, resync and delete (which take the io_locks exclusively)
/// therefore never change the pair in the middle of a region. Copied regions are recorded in
/// batches; a batch belongs to one mode and is dropped (copied again later) if the mode
/// changes before it is recorded — a region filled from the split image must not count as
/// copied for a resync that follows.
fn run(weak: Weak<Mirror>, pair: Arc<Pair>) {
    let mut cursor = 0u64;
    let mut batch: Vec<u64> = Vec::new();
    let mut batch_mode = Mode::Idle;
    let mut last_flush = Instant::now();
    let mut throttle = Throttle {
        since: Instant::now(),
        bytes: 0,
    };
    {
        let mut m = pair.st.lock();
        m.copy_total = m.todo.count();
        m.rate_window = (Instant::now(), 0);
    }
    loop {
        let Some(mirror) = weak.upgrade() else {
            return;
        };
        let stopping = pair.stopped()
            || mirror
                .pool
                .stopping
                .load(std::sync::atomic::Ordering::Acquire);
        let cur = mode(&pair);
        if !cur.same(&batch_mode) {
            batch.clear();
            pair.st.lock().copied_unrecorded.clear_all();
            cursor = 0;
            batch_mode = cur;
        }
        if stopping || matches!(batch_mode, Mode::Idle) {
            let _ = flush_checked(&mirror, &pair, &batch_mode, &mut batch);
            return;
        }
        let next = {
            let m = pair.st.lock();
            let mut n = m.todo.next_from(cursor);
            // Regions copied but not yet recorded stay in `todo` until the flush.
            while let Some(r) = n {
                if batch.contains(&r) {
                    n = m.todo.next_from(r + 1);
                } else {
                    break;
                }
            }
            n
        };
        let Some(region) = next else {
            if let Err(e) = flush_checked(&mirror, &pair, &batch_mode, &mut batch) {
                mirror.suspend(&pair, format!("recording copy progress: {e}"));
                return;
            }
            if cursor > 0 {
                cursor = 0;
                continue;
            }
            finish(&mirror, &pair);
            return;
        };
        let limit = pair.st.lock().rate_limit;
        throttle.take(mirror.pool.extent_size, limit);
        let _pio = pair.pvol.io_lock.read_recursive();
        let _sio = pair.svol.io_lock.read_recursive();
        if !mode(&pair).same(&batch_mode) {
            continue;
        }
        let res = {
            let _g = pair.lock_regions([region]);
            if !pair.st.lock().todo.contains(region) {
                Ok(())
            } else {
                let r = match &batch_mode {
                    Mode::PtoS => mirror.copy_region(&pair, &pair.pvol, None, &pair.svol, region),
                    Mode::StoP => mirror.copy_region(&pair, &pair.svol, None, &pair.pvol, region),
                    Mode::SnapToS(s) => {
                        mirror.copy_region(&pair, &pair.pvol, Some(s), &pair.svol, region)
                    }
                    Mode::Idle => Ok(()),
                };
                if r.is_ok() {
                    // Still under the region lock: from here on host writes to this region
                    // go to the S-VOL too (see `Mirror::dual_target`).
                    pair.st.lock().copied_unrecorded.set(region);
                }
                r
            }
        };
        if let Err(e) = res {
            let _ = flush(&mirror, &pair, &mut batch);
            if let Mode::SnapToS(_) = batch_mode {
                log::error!("pair {}: quick split copy: {e}", pair.pvol.name);
                pair.st.lock().error = Some(e.to_string());
            } else {
                mirror.suspend(&pair, format!("copy of region {region}: {e}"));
            }
            return;
        }
        batch.push(region);
        cursor = region + 1;
        if batch.len() >= BATCH_REGIONS || last_flush.elapsed() >= BATCH_TIME {
            if let Err(e) = flush(&mirror, &pair, &mut batch) {
                mirror.suspend(&pair, format!("recording copy progress: {e}"));
                return;
            }
            last_flush = Instant::now();
        }
    }
}

/// `flush`, holding both io_locks and only if the pair is still in the batch's mode.
fn flush_checked(
    mirror: &Mirror,
    pair: &Pair,
    batch_mode: &Mode,
    batch: &mut Vec<u64>,
) -> Result<(), crate::pool::PoolError> {
    let _pio = pair.pvol.io_lock.read_recursive();
    let _sio = pair.svol.io_lock.read_recursive();
    if !mode(pair).same(batch_mode) && !matches!(mode(pair), Mode::Idle) {
        batch.clear();
        pair.st.lock().copied_unrecorded.clear_all();
        return Ok(());
    }
    flush(mirror, pair, batch)
}

/// Make the copied data durable, then record the regions as copied.
fn flush(mirror: &Mirror, pair: &Pair, batch: &mut Vec<u64>) -> Result<(), crate::pool::PoolError> {
    if batch.is_empty() {
        return Ok(());
    }
    fail::fail_point!("mirror::copier_flush::before_progress", |_| Err(
        crate::pool::PoolError::Invalid("failpoint mirror::copier_flush::before_progress".into())
    ));
    // The destination's arrays (a pair keeps the two volumes on separate arrays when it can).
    let dst = match pair.st.lock().state {
        PairState::CopyRsR => &pair.pvol,
        _ => &pair.svol,
    };
    let arrays = dst.allowed_arrays.read().clone();
    mirror.pool.sync_some(arrays.as_deref())?;
    mirror.pool.meta.lock().append(&MetaRecord::PairCopied {
        id: pair.id,
        regions: batch.clone(),
    })?;
    let mut m = pair.st.lock();
    for &r in batch.iter() {
        m.todo.clear(r);
        m.copied_unrecorded.clear(r);
    }
    batch.clear();
    Ok(())
}

/// Nothing left to copy: record the state the copy leads to.
fn finish(mirror: &Mirror, pair: &Pair) {
    let mut log = mirror.pool.meta.lock();
    let mut m = pair.st.lock();
    if !m.todo.is_empty() {
        return;
    }
    let next = match m.state {
        PairState::Copy | PairState::CopyRs | PairState::CopyRsR => PairState::Pair,
        PairState::Psus if m.split_snap.is_some() => PairState::Psus,
        _ => return,
    };
    if let Err(e) = log.append(&MetaRecord::PairState {
        id: pair.id,
        state: next as u8,
        error: String::new(),
    }) {
        log::error!("pair {}: recording {}: {e}", pair.pvol.name, next.name());
        return;
    }
    let snap = m.split_snap.take();
    m.error = None;
    m.rate = 0;
    pair.set_state(&mut m, next);
    drop(m);
    if let Some(s) = snap {
        // The quick split's image is all in the S-VOL now: its snapshot can go.
        if let Err(e) = mirror.snapshots.delete_snapshot_logged(&mut log, &s) {
            log::error!("pair {}: deleting split snapshot: {e}", pair.pvol.name);
        }
    }
    drop(log);
    log::info!(
        "pair {} → {}: {}",
        pair.pvol.name,
        pair.svol.name,
        next.name()
    );
}
