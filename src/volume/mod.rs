//! The volume façade: what the FUSE adapter and the control socket call.
//!
//! A write flows: look up the extents (map read lock) → reserve extents for holes (map write
//! lock + allocator, slots marked `Pending`) → write the data to the arrays (no lock held) →
//! append the `MapSet` record and publish the mapping (metadata lock, then map write lock).

mod admin;
mod io;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

pub use io::IoError;

use crate::extent_map::{Entry, ExtentTable};
use crate::format::{Phys, VolumeRec};

pub struct Volume {
    pub id: u64,
    pub name: String,
    pub tier: String,
    pub created: u64,
    size: AtomicU64,
    pub(crate) map: RwLock<ExtentTable>,
    pub(crate) open_handles: AtomicU64,
    pending_lock: Mutex<()>,
    pending_cv: Condvar,
}

impl Volume {
    pub(crate) fn new(id: u64, name: String, tier: String, size: u64, created: u64) -> Volume {
        Volume {
            id,
            name,
            tier,
            created,
            size: AtomicU64::new(size),
            map: RwLock::new(ExtentTable::new()),
            open_handles: AtomicU64::new(0),
            pending_lock: Mutex::new(()),
            pending_cv: Condvar::new(),
        }
    }

    pub(crate) fn from_rec(v: &VolumeRec) -> Volume {
        let vol = Volume::new(v.id, v.name.clone(), v.tier.clone(), v.size, v.created);
        {
            let mut m = vol.map.write();
            for (&l, &p) in &v.map {
                m.set(l, Entry::Mapped(Phys::unpack(p)));
            }
        }
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

    /// Wait (briefly) for a pending allocation in this volume to be published or abandoned.
    pub(crate) fn wait_pending(&self) {
        let mut g = self.pending_lock.lock();
        self.pending_cv.wait_for(&mut g, Duration::from_millis(5));
    }

    pub(crate) fn wake_pending(&self) {
        let _g = self.pending_lock.lock();
        self.pending_cv.notify_all();
    }
}
