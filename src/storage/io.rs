//! The write pipeline. A host request (FUSE today; NBD and forwarding later) is routed once,
//! top to bottom:
//!
//! 1. `Replication::wait_room` — a writer blocked by a full journal waits *before* it takes
//!    the volume's I/O lock, so a snapshot or split of the volume is not held up by it;
//! 2. the volume's `io_lock` (shared): snapshot, split and pair changes take it exclusively,
//!    so a request is either fully under a copy function or fully outside it;
//! 3. admissions, each with its guards: `Replication::admit` (refuses a secondary's volume;
//!    journal space; stripe locks; the journal record appended — *write-ahead*) and
//!    `Mirror::admit` (region locks; a durable difference bit before the write it covers —
//!    *write-intent*; copy-before-write of a quick split; restore-first of a reverse resync);
//! 4. the one data write, `Volumes::apply` (plan → reserve → data → `MapSet` record: *data
//!    before the pointer to it*);
//! 5. completions: `Mirror::dual_target` + the same `Volumes::apply` on the S-VOL, then
//!    `Mirror::complete` (a failed dual write suspends the pair); `Replication::complete`
//!    (a failed data write journals what the volume holds now; the record is done).
//!
//! No copy function calls back into this routine or into another one's; each admission owns
//! its guards, so a completion could run later, on another thread.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Storage;
use crate::pool::IoError;
use crate::volume::{DataOp, Volume};

impl Storage {
    /// EROFS while an unconfirmed salvage holds the pool read-only (an overwrite of an owned
    /// extent writes no record, so the log's refusal alone would not stop it).
    pub(super) fn refuse_read_only(&self, vol: &Volume) -> Result<(), IoError> {
        match self.pool.read_only() {
            Some(why) => Err(IoError::ReadOnly {
                volume: vol.name.clone(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Read `buf.len()` bytes at `offset` (fewer at the end of the volume). A paired volume
    /// reads by its pair's rules (a reverse resync serves regions not yet restored from the
    /// S-VOL; a failed P-VOL read in PAIR is served from the S-VOL).
    pub fn read(&self, vol: &Volume, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        // With statistics off (`--no-stats`) neither the clock nor a counter is touched.
        let t0 = self.io_stats_on().then(Instant::now);
        vol.moving.admit(&vol.name)?;
        // A journaled write acknowledged before its data write: wait for it (destage.rs).
        self.destaging
            .wait(vol.id, offset, offset.saturating_add(buf.len() as u64));
        let res = match self.mirror.read(vol, offset, buf) {
            Some(r) => r,
            None => self.volumes.read_plain(vol, offset, buf),
        };
        if let Some(t0) = t0 {
            match &res {
                Ok(n) => vol.stats.read(*n as u64, t0.elapsed().as_nanos() as u64),
                Err(e) => vol.stats.error(error_kind(e)),
            }
        }
        res
    }

    /// Which parts of `[offset, offset+len)` of `vol` hold data (runs of bytes, mapped or
    /// not); unmapped parts read as zeros. A paired volume reports everything as data: a
    /// reverse resync reads regions not yet restored from its S-VOL, whatever its own map says.
    pub fn allocation(&self, vol: &Volume, offset: u64, len: u64) -> Vec<(u64, bool)> {
        if self.mirror.pair_of_volume(vol.id).is_some() {
            let len = len.min(vol.size().saturating_sub(offset));
            return if len == 0 {
                Vec::new()
            } else {
                vec![(len, true)]
            };
        }
        self.volumes.allocation(vol, offset, len)
    }

    /// Write `data` at `offset`. A write crossing the end of the volume is cut short; one
    /// starting at or after the end fails with `BeyondEnd` (ENOSPC, as on a block device).
    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
        let t0 = self.io_stats_on().then(Instant::now);
        let res = self.write_counted(vol, offset, data);
        if let Some(t0) = t0 {
            match &res {
                Ok(n) => vol.stats.write(*n as u64, t0.elapsed().as_nanos() as u64),
                Err(e) => vol.stats.error(error_kind(e)),
            }
        }
        self.note_nospace(&res);
        res
    }

    fn write_counted(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
        self.refuse_read_only(vol)?;
        vol.moving.admit(&vol.name)?;
        let size = vol.check_start(offset)?;
        let since = self.replication.wait_room(vol, data.len() as u64)?;
        let len = (data.len() as u64).min(size - offset) as usize;
        if len == 0 {
            return Ok(0);
        }
        self.submit(vol, offset, DataOp::Write(&data[..len]), since)
    }

    /// The pool ran out of space: one `pool nospace` event per episode (until a write
    /// succeeds again). One relaxed load on the success path.
    pub(super) fn note_nospace<T>(&self, res: &Result<T, IoError>) {
        let flag = &self.pool.nospace_reported;
        match res {
            Err(e @ IoError::NoSpace { .. }) if !flag.swap(true, Ordering::Relaxed) => {
                self.pool.events.publish(
                    "pool",
                    &self.pool.dir.display().to_string(),
                    "nospace",
                    serde_json::json!({"message": e.to_string()}),
                );
            }
            Ok(_) if flag.load(Ordering::Relaxed) => flag.store(false, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Make `[offset, offset+len)` read as zeros and free the extents it covers whole
    /// (`fallocate` punch-hole / zero-range, discard).
    pub fn discard(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
        self.refuse_read_only(vol)?;
        vol.moving.admit(&vol.name)?;
        let size = vol.size();
        if offset >= size || len == 0 {
            return Ok(());
        }
        let len = len.min(size - offset);
        let res = self
            .replication
            .wait_room(vol, 0)
            .and_then(|since| self.submit(vol, offset, DataOp::Discard(len), since));
        if self.io_stats_on() {
            match &res {
                Ok(_) => vol.stats.discard(len),
                Err(e) => vol.stats.error(error_kind(e)),
            }
        }
        res.map(|_| ())
    }

    /// Allocate extents for every hole in the range (`fallocate` mode 0): later writes there
    /// cannot fail for lack of space (unless the extent is shared with a snapshot).
    pub fn allocate(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
        self.refuse_read_only(vol)?;
        vol.moving.admit(&vol.name)?;
        self.submit(vol, offset, DataOp::Allocate(len), None)
            .map(|_| ())
    }

    /// fsync/fdatasync of a volume file: everything acknowledged before it becomes durable
    /// (journals before arrays, arrays before the metadata log).
    pub fn fsync_volume(&self, vol: &Volume) -> Result<(), IoError> {
        vol.moving.admit(&vol.name)?;
        // Acknowledged writes still being destaged are on the arrays before the sync (their
        // records would be redone anyway; this keeps fsync meaning "on the arrays").
        self.destaging.wait(vol.id, 0, u64::MAX);
        self.volumes.fsync_volume(vol)
    }

    /// Steps 2–5 of the pipeline (see the module comment).
    pub(super) fn submit(
        &self,
        vol: &Volume,
        offset: u64,
        op: DataOp,
        since: Option<std::time::Instant>,
    ) -> Result<usize, IoError> {
        let _io = vol.io_lock.read_recursive();
        let journal = self.replication.admit(vol, offset, op, since)?;
        let region_len = op.len().min(vol.size().saturating_sub(offset));
        let mirror = match self.mirror.admit(vol, offset, region_len) {
            Ok(m) => m,
            Err(e) => {
                if let Some(j) = journal {
                    self.replication.complete(j, vol, false);
                }
                return Err(e);
            }
        };
        let res = self.apply_and_mirror(vol, offset, op, mirror);
        if let Some(j) = journal {
            self.replication.complete(j, vol, res.is_ok());
        }
        res
    }

    /// Steps 4–5 for the data: the one data write, then, for an admitted pair, the same write
    /// on its S-VOL (the dual target) and the pair's completion.
    pub(super) fn apply_and_mirror(
        &self,
        vol: &Volume,
        offset: u64,
        op: DataOp,
        mirror: Option<crate::mirror::MirrorAdmission>,
    ) -> Result<usize, IoError> {
        let res = self.volumes.apply(vol, offset, op);
        // A move's dirty ranges: after the data write, under the io_lock (volume::moving).
        vol.moving.note(offset, op.len());
        match (mirror, res) {
            (Some(m), Ok(n)) => {
                let dual = self
                    .mirror
                    .dual_target(&m)
                    .map(|t| t.and_then(|svol| self.volumes.apply(&svol, offset, op)));
                self.mirror.complete(m, dual).map(|_| n)
            }
            (_, res) => res,
        }
    }
}

/// The kind a failed request is counted under (`stats::ERROR_KINDS`).
pub(super) fn error_kind(e: &IoError) -> usize {
    match e {
        IoError::BeyondEnd { .. } => 0,
        IoError::NoSpace { .. } => 1,
        IoError::Array { .. } => 2,
        IoError::Meta { .. } | IoError::Sync { .. } => 3,
        IoError::ReadOnly { .. } | IoError::Moved { .. } => 4,
        IoError::Journal { .. } => 5,
        IoError::JournalFull { .. } => 6,
        IoError::Invalid { .. } => 7,
    }
}

#[cfg(test)]
mod tests {
    /// An admission owns its guards and can be completed on another thread (the asynchronous
    /// data path and the NBD front end rely on it).
    #[test]
    fn admissions_can_move_to_another_thread() {
        fn send<T: Send + 'static>() {}
        send::<crate::mirror::MirrorAdmission>();
        send::<crate::replication::group::JournalAdmission>();
    }
}
