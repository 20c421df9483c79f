//! The filler: completes partial extents in the background (see `extent_map::partial`).
//!
//! One thread per pool (started by the daemon next to its flusher, stopped by
//! `Pool::shutdown`), throttled to `FILL_RATE`. Each step takes a batch of partial extents and,
//! for each, copies its invalid blocks from the source while holding the extent's stripe lock
//! (a writer of those blocks waits, so no copy lands on a newer block). Then — data before the
//! pointer — it fdatasyncs the arrays it wrote, and only then appends one `PartialDone` record
//! for the batch, which ends their partial state and drops their references on the sources.
//! A source that loses its last reference goes the usual way: pending free → the record
//! durable → punched → reused.
//!
//! A crash anywhere before the record leaves the extents partial (the copied blocks are just
//! unused bytes in invalid blocks); the next step copies them again. A failed sync is sticky
//! (the array reports it to every later fsync) and no record is written.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Pool, PoolError};
use crate::extent_map::partial::BLOCK;
use crate::extent_map::RefCounts;
use crate::format::{MetaRecord, Phys};

/// The filler's copy rate (bytes/s): low, so host I/O keeps the disk.
pub const FILL_RATE: u64 = 64 << 20;
/// Bytes of extents per step (one array sync per step).
const FILL_BATCH_BYTES: u64 = 16 << 20;

impl Pool {
    /// Partial extents outstanding.
    pub fn partial_extents(&self) -> usize {
        self.partials.len()
    }

    /// One filler step, synchronously: complete up to `max` partial extents (copy, sync,
    /// record). Returns how many were completed.
    pub fn fill_step(&self, max: usize) -> Result<usize, PoolError> {
        if self.partials.is_empty() || max == 0 {
            return Ok(0);
        }
        // Held for the whole step: no extent it touches (source or destination) is punched
        // and reused meanwhile, even if a volume drops it.
        let _gate = self.io_gate.read_recursive();
        let mut copied: Vec<Phys> = Vec::new();
        let mut arrays: Vec<u32> = Vec::new();
        for n in self.partials.pick(max) {
            let _x = self.partials.lock_extent(n);
            let Some(e) = self.partials.get(n) else {
                continue;
            };
            let (src, dst) = match (self.array(e.src.array), self.array(n.array)) {
                (Some(s), Some(d)) => (s, d),
                _ => {
                    return Err(PoolError::Inconsistent(format!(
                        "partial extent {n:?} or its source {:?} has no array",
                        e.src
                    )))
                }
            };
            // (Tests pause here to let a writer race the copy: it must wait for the lock.)
            fail::fail_point!("pool::fill_step::before_copy");
            for (a, b) in e.valid.runs(false, 0, e.valid.nblocks()) {
                let (off, len) = (a as u64 * BLOCK, (b - a) as u64 * BLOCK);
                src.copy_to(e.src.index, &dst, n.index, off, len)
                    .map_err(|err| PoolError::io("fill partial extent in", &dst.path, err))?;
            }
            copied.push(n);
            if !arrays.contains(&n.array) {
                arrays.push(n.array);
            }
        }
        if copied.is_empty() {
            return Ok(0);
        }
        // Crash-ordering: the copied blocks are durable before the record that makes them
        // the extent's own (data before the pointer to it).
        self.sync_arrays_in(Some(&arrays))?;
        fail::fail_point!("pool::fill_step::before_done", |_| Err(PoolError::Invalid(
            "failpoint pool::fill_step::before_done".into()
        )));
        let mut log = self.meta.lock();
        // An extent may have been dropped meanwhile (its entry went with it).
        copied.retain(|&n| self.partials.contains(n));
        if copied.is_empty() {
            return Ok(0);
        }
        log.append(&MetaRecord::PartialDone {
            exts: copied.iter().map(|n| n.pack()).collect(),
        })?;
        let mut al = self.alloc.lock();
        for &n in &copied {
            if let Some(e) = self.partials.remove(n) {
                al.decref(e.src);
            }
        }
        Ok(copied.len())
    }

    /// Start the background filler (once). It stops when the pool is shutting down.
    pub fn start_filler(self: &Arc<Self>) {
        let mut slot = self.filler.lock();
        if slot.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        let batch = (FILL_BATCH_BYTES / self.extent_size).max(1) as usize;
        let es = self.extent_size;
        *slot = Some(
            thread::Builder::new()
                .name("filler".into())
                .spawn(move || {
                    let nap = |d: Duration| {
                        let until = Instant::now() + d;
                        loop {
                            let left = until.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return true;
                            }
                            match weak.upgrade() {
                                Some(p) if !p.stopping.load(Ordering::Acquire) => {}
                                _ => return false,
                            }
                            thread::sleep(left.min(Duration::from_millis(100)));
                        }
                    };
                    loop {
                        let Some(pool) = weak.upgrade() else { return };
                        if pool.stopping.load(Ordering::Acquire) {
                            return;
                        }
                        let res = pool.fill_step(batch);
                        drop(pool);
                        let pause = match res {
                            Ok(0) => Duration::from_millis(200),
                            Ok(k) => {
                                Duration::from_secs_f64((k as u64 * es) as f64 / FILL_RATE as f64)
                            }
                            Err(e) => {
                                log::error!("filling partial extents: {e}");
                                Duration::from_secs(5)
                            }
                        };
                        if !nap(pause) {
                            return;
                        }
                    }
                })
                .expect("spawn filler"),
        );
    }

    /// Stop the filler (part of `shutdown`).
    pub(crate) fn stop_filler(&self) {
        if let Some(h) = self.filler.lock().take() {
            let _ = h.join();
        }
    }
}
