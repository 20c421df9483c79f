//! The volume façade: what the FUSE adapter and the control socket call.
//!
//! A write flows: look up the extents (map read lock) → reserve new extents for holes and for
//! shared extents (copy-on-write), marking those slots pending (map write lock + allocator)
//! → write the data (no lock held; for a shared extent written in part, only the 4 KiB blocks
//! it touches, completed from the old extent: `subcow`) → append the `MapSet` (or
//! `MapSetPartial`) record and publish the new mapping (metadata lock, then map write lock).
//! `fill` completes partial extents in the background.

mod admin;
mod fill;
mod io;
mod subcow;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

pub use io::IoError;

use crate::extent_map::ExtentTable;
use crate::meta::VolState;
use crate::mirror::{Pair, Role};
use std::sync::Arc;

pub struct Volume {
    pub id: u64,
    pub name: String,
    pub tier: String,
    pub created: u64,
    /// The volume this one was cloned from (0: none).
    pub origin: u64,
    size: AtomicU64,
    pub(crate) map: RwLock<ExtentTable>,
    pub(crate) open_handles: AtomicU64,
    /// Writes and discards hold this shared for their whole duration; snapshot, rollback and
    /// clone take it exclusively, so a snapshot never catches a write half done.
    pub(crate) io_lock: RwLock<()>,
    /// Logical extents whose new extent is being written (reserved, not yet published).
    /// A second writer to such a slot waits; readers keep seeing the old mapping.
    pending: Mutex<HashSet<u64>>,
    pending_cv: Condvar,
    /// The pair this volume is in, and its side.
    pub(crate) pair: RwLock<Option<(Arc<Pair>, Role)>>,
    /// Arrays new extents may go to (a paired volume keeps off its partner's arrays).
    pub(crate) allowed_arrays: RwLock<Option<Vec<u32>>>,
    /// The journal group this volume is in (primary: writes are journaled; secondary: the
    /// volume is read-only while the group applies).
    pub(crate) group: RwLock<Option<Arc<crate::replication::group::Group>>>,
}

impl Volume {
    pub(crate) fn new(id: u64, name: String, tier: String, size: u64, created: u64) -> Volume {
        Volume {
            id,
            name,
            tier,
            created,
            origin: 0,
            size: AtomicU64::new(size),
            map: RwLock::new(ExtentTable::new()),
            open_handles: AtomicU64::new(0),
            io_lock: RwLock::new(()),
            pending: Mutex::new(HashSet::new()),
            pending_cv: Condvar::new(),
            pair: RwLock::new(None),
            allowed_arrays: RwLock::new(None),
            group: RwLock::new(None),
        }
    }

    /// The journal group of the volume, if any.
    pub fn group(&self) -> Option<Arc<crate::replication::group::Group>> {
        self.group.read().clone()
    }

    /// The volume's pair and role, if it is paired.
    pub fn pair(&self) -> Option<(Arc<Pair>, Role)> {
        self.pair.read().clone()
    }

    pub(crate) fn from_state(v: VolState) -> Volume {
        let mut vol = Volume::new(v.id, v.name, v.tier, v.size, v.created);
        vol.origin = v.origin;
        *vol.map.get_mut() = v.table;
        vol
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    pub fn mapped_extents(&self) -> u64 {
        self.map.read().mapped()
    }

    pub fn open_handles(&self) -> u64 {
        self.open_handles.load(Ordering::Acquire)
    }

    pub fn opened(&self) {
        self.open_handles.fetch_add(1, Ordering::AcqRel);
    }

    pub fn closed(&self) {
        self.open_handles.fetch_sub(1, Ordering::AcqRel);
    }

    /// Is any of these slots being allocated by another request?
    pub(crate) fn any_pending(&self, lexts: impl IntoIterator<Item = u64>) -> bool {
        let p = self.pending.lock();
        !p.is_empty() && lexts.into_iter().any(|l| p.contains(&l))
    }

    /// Is any slot at or after `from` being allocated?
    pub(crate) fn any_pending_from(&self, from: u64) -> bool {
        self.pending.lock().iter().any(|&l| l >= from)
    }

    pub(crate) fn mark_pending(&self, lexts: &[u64]) {
        self.pending.lock().extend(lexts.iter().copied());
    }

    pub(crate) fn clear_pending(&self, lexts: &[u64]) {
        let mut p = self.pending.lock();
        for l in lexts {
            p.remove(l);
        }
        self.pending_cv.notify_all();
    }

    /// Wait (briefly) for a pending allocation to be published or abandoned.
    pub(crate) fn wait_pending(&self) {
        let mut g = self.pending.lock();
        if !g.is_empty() {
            self.pending_cv.wait_for(&mut g, Duration::from_millis(5));
        }
    }
}
