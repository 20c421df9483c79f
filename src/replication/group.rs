//! A journal group at run time, and the journaled write path of the primary.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

use super::error::ReplicationError;
use super::full::Admit;
use super::Replication;
use crate::format::journal::RecordKind;
use crate::format::GroupRec;
use crate::journal::{Journal, JournalError};
use crate::pool::{Pool, PoolError};
use crate::volume::{DataOp, IoError, Volume};

pub const ROLE_PRIMARY: u8 = 1;
pub const ROLE_SECONDARY: u8 = 2;
/// Local journal segments live in `<POOL>/journals/<GROUP>/`.
pub const JOURNALS_DIR: &str = "journals";
const STRIPES: usize = 64;

/// What the background thread of a group last saw (not persistent).
#[derive(Default, Clone)]
pub struct Runtime {
    /// Last sequence number published to the remote directory (primary) or seen there
    /// (secondary).
    pub shipped: u64,
    pub remote_written: u64,
    pub remote_bytes: u64,
    pub last_error: Option<String>,
    /// Secondary: apply no record after this one (a takeover at a marker).
    pub apply_upto: Option<u64>,
    /// Retention and apply delay (point-in-time recovery).
    pub pitr: super::pitr::PitrRuntime,
    /// The lag alert (lag.rs).
    pub lag: super::lag::LagRuntime,
}

/// Progress points the base copy keeps in memory, one per `BASE_MARK_EVERY` extents.
const MAX_BASE_MARKS: usize = 4096;

pub struct Group {
    pub uid: u64,
    pub name: String,
    pub role: u8,
    pub remote: PathBuf,
    /// The persistent part; every change is logged as a `GroupPut`.
    pub(crate) rec: Mutex<GroupRec>,
    /// Where its state changes are published (the pool's event log).
    pub(crate) events: Arc<crate::events::EventLog>,
    /// The primary's journal.
    pub(crate) journal: Option<Journal>,
    /// A write holds the stripes of its extents from its journal append to the end of its
    /// data write, so overlapping writes reach the volume in journal order.
    stripes: Vec<Arc<Mutex<()>>>,
    pub(crate) rt: Mutex<Runtime>,
    pub(crate) gone: AtomicBool,
    /// The applier thread stops (a takeover applies the rest itself).
    pub(crate) halt: AtomicBool,
    /// A newer epoch exists: this primary refuses writes (split-brain protection).
    pub(crate) stale: AtomicBool,
    pub(crate) worker: Mutex<Option<JoinHandle<()>>>,
    pub(crate) base_worker: Mutex<Option<JoinHandle<()>>>,
    /// Journal limit: admission, suspension and resync (replication/full.rs).
    pub(crate) full: super::full::FullRuntime,
    /// Progress points of the base copy not yet durable: (sequence number of a `Base`
    /// record, the progress it completes). `note_synced` moves the newest one at or below the
    /// redo floor into the group record (`ext.base`). Lock order: `rec`, then this.
    base_marks: Mutex<std::collections::VecDeque<(u64, crate::format::group::BaseRec)>>,
    /// The logical extent the base copy of the first pending volume has reached (status).
    pub(crate) base_at: AtomicU64,
    /// The highest acknowledged number appended to the metadata log.
    acked_logged: AtomicU64,
    /// The highest acknowledged number known durable in the metadata log: a pool sync does
    /// not fdatasync journal segments wholly at or before it (`Journal::sync_after`).
    /// (Only the sync path, under the pool's sync lock, raises it.)
    acked_durable: AtomicU64,
}

impl Group {
    pub(crate) fn new(
        rec: GroupRec,
        journal: Option<Journal>,
        events: Arc<crate::events::EventLog>,
    ) -> Group {
        let stale = rec.ext.handover.stale.is_some();
        let full = super::full::FullRuntime::new(&rec.ext.full);
        // Loaded from the metadata: durable.
        let acked = rec.acked;
        Group {
            events,
            uid: rec.uid,
            name: rec.name.clone(),
            role: rec.role,
            remote: PathBuf::from(&rec.remote),
            rec: Mutex::new(rec),
            journal,
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
            rt: Mutex::new(Runtime::default()),
            gone: AtomicBool::new(false),
            halt: AtomicBool::new(false),
            stale: AtomicBool::new(stale),
            worker: Mutex::new(None),
            base_worker: Mutex::new(None),
            full,
            base_marks: Mutex::new(Default::default()),
            base_at: AtomicU64::new(0),
            acked_logged: AtomicU64::new(acked),
            acked_durable: AtomicU64::new(acked),
        }
    }

    /// The base copy journaled record `seq`, after which it may resume at `at` (kept until
    /// the redo floor passes `seq`; at most `MAX_BASE_MARKS`, the oldest go first).
    pub(crate) fn note_base_mark(&self, seq: u64, at: crate::format::group::BaseRec) {
        let mut m = self.base_marks.lock();
        if m.len() >= MAX_BASE_MARKS {
            m.pop_front();
        }
        m.push_back((seq, at));
    }

    /// Under `rec`: the newest progress point at or below the redo floor becomes the base
    /// progress of the record (its `Base` records are in the durable journal or applied).
    fn promote_base_mark(&self, r: &mut GroupRec) {
        let mut m = self.base_marks.lock();
        let mut best = None;
        while let Some(&(seq, at)) = m.front() {
            if seq > r.synced {
                break;
            }
            best = Some(at);
            m.pop_front();
        }
        if let Some(at) = best {
            r.ext.base = at;
        }
    }

    /// The base copy of `volume` is over or no longer wanted: forget its progress.
    pub(crate) fn clear_base_progress(&self, r: &mut GroupRec, volume: u64) {
        self.base_marks.lock().retain(|(_, at)| at.volume != volume);
        if r.ext.base.volume == volume {
            r.ext.base = Default::default();
        }
    }

    pub fn is_primary(&self) -> bool {
        self.role == ROLE_PRIMARY
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// A primary that saw a newer epoch of its group (taken over elsewhere).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    pub(crate) fn journal(&self) -> &Journal {
        self.journal.as_ref().expect("primary group has a journal")
    }

    /// Lock the stripes of logical extents `[first, last]` in index order. The guards are
    /// owned (they do not borrow the group), so a journal admission can hold them until its
    /// completion.
    pub(crate) fn lock_range(&self, first: u64, last: u64) -> Vec<ArcMutexGuard<RawMutex, ()>> {
        let mut idx: Vec<usize> = (first..=last.min(first + STRIPES as u64))
            .map(|l| (l % STRIPES as u64) as usize)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| self.stripes[i].lock_arc())
            .collect()
    }

    /// Every record up to the returned number has finished its data write.
    pub(crate) fn completed(&self) -> u64 {
        self.journal().completed()
    }

    /// Journal a record whose data write follows (in flight until `done`).
    fn append(
        &self,
        vol: &Volume,
        kind: RecordKind,
        off: u64,
        len: u64,
        data: &[u8],
    ) -> Result<u64, IoError> {
        self.journal()
            .append_tracked(kind, vol.id, off, len, data)
            .map_err(|e| journal_err(vol, e))
    }

    fn done(&self, seq: u64) {
        self.journal().done(seq);
    }

    /// Set or clear the group's error; a new error and its clearing are events.
    pub(crate) fn set_error(&self, msg: Option<String>) {
        let mut rt = self.rt.lock();
        if rt.last_error == msg {
            return;
        }
        match &msg {
            Some(m) => {
                log::warn!("group '{}': {m}", self.name);
                self.publish("error", serde_json::json!({"message": m}));
            }
            None => {
                self.publish("error-cleared", serde_json::Value::Null);
            }
        }
        rt.last_error = msg;
    }

    /// Publish a change of this group, with its role.
    pub(crate) fn publish(&self, change: &str, detail: serde_json::Value) -> u64 {
        let mut detail = match detail {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let role = if self.role == ROLE_PRIMARY {
            "primary"
        } else {
            "secondary"
        };
        detail.insert("role".into(), role.into());
        self.events.publish(
            "group",
            &self.name,
            change,
            serde_json::Value::Object(detail),
        )
    }
}

/// What `before_arrays` (the journal sync) made durable, for `after_arrays`.
pub(crate) struct JournalSynced {
    group: Arc<Group>,
    /// Every record up to this one had finished its data write before the journal sync.
    done: u64,
}

/// A journal failure on the host write path keeps the journal's own error: a full disk is
/// ENOSPC, an I/O error EIO (not EINVAL).
fn journal_err(vol: &Volume, e: JournalError) -> IoError {
    IoError::Journal {
        volume: vol.name.clone(),
        source: e,
    }
}

/// A secondary's volumes change only through the applier.
fn refuse_replica(vol: &Volume, g: &Group) -> Result<(), IoError> {
    if g.is_primary() && g.is_stale() {
        return Err(IoError::ReadOnly {
            volume: vol.name.clone(),
            why: format!(
                "journal group '{}' was taken over by another site (a newer epoch); run `fusevol group failback {}` to make this site its secondary",
                g.name, g.name
            ),
        });
    }
    if g.is_primary() {
        return Ok(());
    }
    Err(IoError::ReadOnly {
        volume: vol.name.clone(),
        why: format!(
            "it is the secondary of journal group '{}' (read-only while attached)",
            g.name
        ),
    })
}

/// A host write, discard or allocate of a volume in a journal group, admitted by
/// `Replication::admit` and finished by `Replication::complete` after the data write.
///
/// A journaled write holds the stripes of its extents from its journal append (write-ahead)
/// to the end of its data write, so overlapping writes reach the volume in journal order.
/// A write that bypasses the journal (the group is suspended) holds them, and its
/// bypass count, until its data write is done.
pub struct JournalAdmission {
    group: Arc<Group>,
    /// The journal record of the write; None: not journaled (it bypasses the journal while
    /// the group is suspended, or it is an allocate, or it covers nothing).
    seq: Option<u64>,
    offset: u64,
    len: u64,
    stripes: Vec<ArcMutexGuard<RawMutex, ()>>,
    /// A bypassing write's admission (the bypass count the resync copier waits out),
    /// released after the data write.
    bypass: Option<Admit>,
}

impl JournalAdmission {
    fn unjournaled(group: Arc<Group>, offset: u64) -> JournalAdmission {
        JournalAdmission {
            group,
            seq: None,
            offset,
            len: 0,
            stripes: Vec::new(),
            bypass: None,
        }
    }

    /// The journal record of the write, if it was journaled.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }
}

impl Replication {
    pub(crate) fn group_by_name(&self, name: &str) -> Option<Arc<Group>> {
        self.groups
            .read()
            .values()
            .find(|g| g.name == name)
            .cloned()
    }

    /// Log the group's record (its state changed).
    pub(crate) fn put_group(&self, g: &Group) -> Result<(), PoolError> {
        // Cloned under the metadata lock, so the record holds every change logged before it
        // (the suspension bitmap's `GroupDirty` records change `rec` under that lock too).
        let mut log = self.pool.meta.lock();
        let rec = g.rec.lock().clone();
        let acked = rec.acked;
        log.append(&crate::format::MetaRecord::GroupPut(Box::new(rec)))?;
        g.acked_logged.fetch_max(acked, Ordering::AcqRel);
        Ok(())
    }

    /// Before a writer of `vol` takes the volume's I/O lock: while its group's journal is
    /// full under the block policy, wait here for room (or fail with ENOSPC at the block
    /// timeout), so a snapshot, split or group change of the volume is not held up behind
    /// a blocked writer for the whole timeout. Returns when the wait began (`admit` counts
    /// the timeout from it), or None when the journal is not full.
    ///
    /// `len` is the journal payload of the request: the data length of a write, 0 for a
    /// discard (its `Zero` record carries no data). An allocate does not wait here.
    pub(crate) fn wait_room(
        &self,
        vol: &Volume,
        len: u64,
    ) -> Result<Option<std::time::Instant>, IoError> {
        let Some(g) = self.group_of(vol.id) else {
            return Ok(None);
        };
        if !g.is_primary()
            || g.is_stale()
            || g.journal.is_none()
            || g.full.st.lock().full_since == 0
        {
            return Ok(None);
        }
        let t0 = std::time::Instant::now();
        self.admit_loop(&g, vol, len, t0, false)?;
        Ok(Some(t0))
    }

    /// Under `vol.io_lock` (shared), before the data write; `op` is clipped to the volume by
    /// the caller (a write or discard starts before the end and is cut at it). None: the
    /// volume is in no journal group. A secondary's volume, or a stale primary's, is
    /// read-only (EROFS). An allocate is only checked for that. A write or discard of a
    /// primary group: the journal record first (write-ahead), then — after this returns —
    /// the data, with the extents' stripes held across both (until `complete`).
    pub(crate) fn admit(
        &self,
        vol: &Volume,
        offset: u64,
        op: DataOp,
        since: Option<std::time::Instant>,
    ) -> Result<Option<JournalAdmission>, IoError> {
        let Some(g) = self.group_of(vol.id) else {
            return Ok(None);
        };
        refuse_replica(vol, &g)?;
        let (kind, data, len) = match op {
            DataOp::Allocate(_) => return Ok(Some(JournalAdmission::unjournaled(g, offset))),
            DataOp::Write(data) => (RecordKind::Write, data, data.len() as u64),
            // The other site zeroes the same range.
            DataOp::Discard(len) => (RecordKind::Zero, &[][..], len),
        };
        if len == 0 {
            return Ok(Some(JournalAdmission::unjournaled(g, offset)));
        }
        let es = self.pool.extent_size;
        // Journal space (or the suspension) is decided before any lock is taken.
        let admit = self.full_admit(&g, vol, data.len() as u64, since)?;
        let stripes = g.lock_range(offset / es, (offset + len - 1) / es);
        if admit.bypass() {
            self.full_mark(&g, vol, offset, len)?;
            return Ok(Some(JournalAdmission {
                group: g,
                seq: None,
                offset,
                len,
                stripes,
                bypass: Some(admit),
            }));
        }
        let seq = g.append(vol, kind, offset, len, data)?;
        drop(admit);
        Ok(Some(JournalAdmission {
            group: g,
            seq: Some(seq),
            offset,
            len,
            stripes,
            bypass: None,
        }))
    }

    /// After the data write of an admitted request (`ok`: it succeeded): a failed write of a
    /// journaled record journals what the volume holds now; the record is done; the stripes
    /// (and a bypassing write's admission) are released.
    pub(crate) fn complete(&self, adm: JournalAdmission, vol: &Volume, ok: bool) {
        let JournalAdmission {
            group: g,
            seq,
            offset,
            len,
            stripes,
            bypass,
        } = adm;
        if let Some(seq) = seq {
            if !ok {
                self.journal_correction(&g, vol, offset, len);
            }
            g.done(seq);
        }
        drop(stripes);
        drop(bypass);
    }

    /// After a failed data write the volume may hold part of it: journal what it holds now,
    /// so the other site ends up with the same bytes.
    fn journal_correction(&self, g: &Group, vol: &Volume, offset: u64, len: u64) {
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(1 << 20);
            let mut buf = vec![0u8; n as usize];
            let res = self
                .volumes
                .read_plain(vol, pos, &mut buf)
                .and_then(|_| g.append(vol, RecordKind::Write, pos, n, &buf));
            match res {
                Ok(seq) => g.done(seq),
                Err(e) => {
                    g.set_error(Some(format!(
                        "volume '{}' offset {pos}: a write failed and its range could not be journaled again ({e}); the secondary may differ there",
                        vol.name
                    )));
                    return;
                }
            }
            pos += n;
        }
    }
}

impl crate::pool::SyncHook for Replication {
    /// Make every primary journal durable and return what `after_arrays` records once the
    /// arrays are synced. Called by `Pool::sync` before it syncs the arrays.
    ///
    /// Journal before data, with one exception: records the secondary has acknowledged (and
    /// whose acknowledgement is durable here) are durable at the other site, and this sync
    /// makes their data durable here, so their segments are not fdatasynced; they are purged
    /// right after, usually before the kernel writes them back. A machine crash before the
    /// arrays are synced can lose such records here, as it can lose any unsynced write; the
    /// secondary then holds them (as when a crash loses a shipped, unsynced segment).
    fn before_arrays(&self, pool: &Pool) -> Result<Box<dyn Any + Send>, PoolError> {
        let groups: Vec<Arc<Group>> = self
            .groups
            .read()
            .values()
            .filter(|g| g.is_primary() && !g.is_gone())
            .cloned()
            .collect();
        let mut out: Vec<JournalSynced> = Vec::new();
        // The acknowledged numbers logged so far are made durable first (a small fdatasync
        // of the metadata log), so the segments they cover need none.
        let logged: Vec<u64> = groups
            .iter()
            .map(|g| g.acked_logged.load(Ordering::Acquire))
            .collect();
        let behind = groups
            .iter()
            .zip(&logged)
            .any(|(g, &l)| l > g.acked_durable.load(Ordering::Acquire));
        if behind {
            // Under the pool's sync lock (this runs inside `Pool::sync`).
            pool.sync_meta_locked()?;
            for (g, &l) in groups.iter().zip(&logged) {
                g.acked_durable.fetch_max(l, Ordering::AcqRel);
            }
        }
        for g in groups {
            let done = g.completed();
            g.journal()
                .sync_after(g.acked_durable.load(Ordering::Acquire))
                .map_err(|e| {
                    ReplicationError::in_group(&g.name, ReplicationError::journal(&g.name, e))
                        .into_pool()
                })?;
            out.push(JournalSynced { group: g, done });
        }
        Ok(Box::new(out))
    }

    /// The arrays are synced: records up to `done` need no redo after a crash.
    fn after_arrays(&self, _pool: &Pool, token: Box<dyn Any + Send>) -> Result<(), PoolError> {
        let done = token.downcast::<Vec<JournalSynced>>().map_err(|_| {
            PoolError::Inconsistent("journal sync: not the replication service's token".into())
        })?;
        for d in done.iter() {
            let (g, seq) = (&d.group, d.done);
            let changed = {
                let mut r = g.rec.lock();
                if seq > r.synced {
                    r.synced = seq;
                    g.promote_base_mark(&mut r);
                    true
                } else {
                    false
                }
            };
            if changed && !g.is_gone() {
                self.put_group(g)?;
            }
        }
        Ok(())
    }
}
