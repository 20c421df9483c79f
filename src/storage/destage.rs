//! Early acknowledgement of journaled writes ("destage in the background").
//!
//! A write to a volume of a primary journal group is safe once its record is in the journal:
//! recovery redoes every record above the group's redo floor, and a record whose data write
//! has not finished stays in flight (`Journal::append_tracked` … `done`), so the floor never
//! passes it. `Storage::write_early_ack` therefore answers the host right after the journal
//! append, then does the data write (the destage) on the same thread, with every guard of the
//! pipeline still held: the volume's `io_lock` (a snapshot or split waits for the destage),
//! the group's stripe locks (a later write or discard of the range waits for it).
//!
//! Only writes that cannot fail for lack of space are acknowledged early: every extent they
//! touch is owned by the volume alone, complete (not a sub-extent copy-on-write in progress)
//! and mapped, so the data write is an overwrite in place; and the volume is not paired (a
//! dual write can suspend a pair, which the host must hear about). Everything else — holes,
//! shared extents, pairs, a group that bypasses its journal — takes the ordinary path and is
//! acknowledged after its data write.
//!
//! Reads of a range whose destage has not finished wait for it (`Destaging::wait`), so a read
//! after an acknowledged write always sees it. An fsync waits for the volume's destages,
//! then syncs as always. A destage that fails after the acknowledgement (an array I/O error)
//! is logged as an error and published as a `volume destage-failed` event; the journal gets a
//! correction record with what the volume holds (as for any failed journaled write), so the
//! secondary stays equal to the primary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::Storage;
use crate::pool::IoError;
use crate::volume::{DataOp, Volume};

/// Writes answered whose destage still runs on the thread that received them, in this
/// process. The FUSE dispatcher (`fuse::stage::Dispatch::begin`) does not count them as in
/// flight: a request arriving while the previous one destages runs on the FUSE worker that
/// received it, as at QD1 without a journal, instead of being handed to the I/O stage — a
/// copy of its data (a fresh 1 MiB buffer for a 1 MiB write) and a wake-up across CPUs on
/// the host's path for every journaled write (measured: `scripts/bench-jcost.sh`).
static AFTER_REPLY: AtomicUsize = AtomicUsize::new(0);

/// Writes answered whose destage is still running (see `AFTER_REPLY`).
pub fn destaging_after_reply() -> usize {
    AFTER_REPLY.load(Ordering::Acquire)
}

/// Counts one write in `AFTER_REPLY` until dropped (also when the destage panics).
struct AfterReply;

impl AfterReply {
    fn enter() -> AfterReply {
        AFTER_REPLY.fetch_add(1, Ordering::AcqRel);
        AfterReply
    }
}

impl Drop for AfterReply {
    fn drop(&mut self) {
        AFTER_REPLY.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Ranges acknowledged to the host whose data write is still running.
#[derive(Default)]
pub struct Destaging {
    /// (volume id, start, end) of every destage in progress.
    ranges: Mutex<Vec<(u64, u64, u64)>>,
    done: Condvar,
    /// `ranges.len()`, read without the lock on every read request.
    count: AtomicUsize,
}

impl Destaging {
    fn add(&self, vol: u64, start: u64, end: u64) {
        let mut r = self.ranges.lock();
        r.push((vol, start, end));
        self.count.store(r.len(), Ordering::Release);
    }

    fn remove(&self, vol: u64, start: u64, end: u64) {
        let mut r = self.ranges.lock();
        if let Some(i) = r.iter().position(|&x| x == (vol, start, end)) {
            r.swap_remove(i);
        }
        self.count.store(r.len(), Ordering::Release);
        drop(r);
        self.done.notify_all();
    }

    /// Wait until no destage of `vol` overlaps `[start, end)` (the whole volume: `u64::MAX`).
    pub fn wait(&self, vol: u64, start: u64, end: u64) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut r = self.ranges.lock();
        while r.iter().any(|&(v, s, e)| v == vol && s < end && start < e) {
            self.done.wait(&mut r);
        }
    }
}

impl Storage {
    /// Write `data` at `offset` and call `ack` with the result — as soon as the write's
    /// journal record is appended when the write can be destaged in the background (see the
    /// module comment), else when the whole pipeline is done. `ack` is called exactly once;
    /// this returns when the data write is over either way.
    pub fn write_early_ack<F>(&self, vol: &Volume, offset: u64, data: &[u8], ack: F)
    where
        F: FnOnce(Result<usize, IoError>),
    {
        let mut ack = Some(ack);
        let t0 = Instant::now();
        let res = self.write_early_inner(vol, offset, data, &mut ack, t0);
        if let Some(ack) = ack.take() {
            match &res {
                Ok(n) => vol.stats.write(*n as u64, t0.elapsed().as_nanos() as u64),
                Err(e) => vol.stats.error(super::io::error_kind(e)),
            }
            self.note_nospace(&res);
            ack(res);
        }
    }

    fn write_early_inner<F>(
        &self,
        vol: &Volume,
        offset: u64,
        data: &[u8],
        ack: &mut Option<F>,
        t0: Instant,
    ) -> Result<usize, IoError>
    where
        F: FnOnce(Result<usize, IoError>),
    {
        self.refuse_read_only(vol)?;
        let size = vol.check_start(offset)?;
        let since = self.replication.wait_room(vol, data.len() as u64)?;
        let len = (data.len() as u64).min(size - offset) as usize;
        if len == 0 {
            return Ok(0);
        }
        let data = &data[..len];
        let op = DataOp::Write(data);
        let _io = vol.io_lock.read_recursive();
        let Some(journal) = self.replication.admit(vol, offset, op, since)? else {
            drop(_io);
            return self.submit(vol, offset, op, since);
        };
        let early = journal.seq().is_some()
            && self.mirror.pair_of_volume(vol.id).is_none()
            && self.volumes.overwrites_in_place(vol, offset, len as u64);
        if !early {
            // The ordinary order: data (and a pair's dual write), then the answer.
            let res = self
                .mirror
                .admit(vol, offset, len as u64)
                .and_then(|m| self.apply_and_mirror(vol, offset, op, m));
            self.replication.complete(journal, vol, res.is_ok());
            return res;
        }
        // Acknowledge: the record is in the journal (write-ahead), its data write in flight.
        let end = offset + len as u64;
        self.destaging.add(vol.id, offset, end);
        // Counted before the reply: the host's next request can only follow it.
        let _after = AfterReply::enter();
        if let Some(a) = ack.take() {
            vol.stats.write(len as u64, t0.elapsed().as_nanos() as u64);
            a(Ok(len));
        }
        fail::fail_point!("storage::destage::before_data");
        let res = self.volumes.apply(vol, offset, op);
        if let Err(e) = &res {
            log::error!("acknowledged write could not be destaged: {e}");
            vol.stats.error(super::io::error_kind(e));
            self.pool.events.publish(
                "volume",
                &vol.name,
                "destage-failed",
                serde_json::json!({"offset": offset, "length": len, "message": e.to_string()}),
            );
        }
        self.replication.complete(journal, vol, res.is_ok());
        self.destaging.remove(vol.id, offset, end);
        res
    }
}
