//! The volume service: the registry of volumes and their data path over the core. The one
//! data write of the pipeline is `Volumes::apply`; copy functions act around it
//! (`storage::io`).
//!
//! A write flows: look up the extents (map read lock) → reserve new extents for holes and for
//! shared extents (copy-on-write), marking those slots pending (map write lock + allocator)
//! → write the data (no lock held; for a shared extent written in part, only the 4 KiB blocks
//! it touches, completed from the old extent: `subcow`) → append the `MapSet` (or
//! `MapSetPartial`) record and publish the new mapping (metadata lock, then map write lock).
//! `pool::fill` completes partial extents in the background.

mod admin;
mod io;
// `fusevol volume move` (issue 17): dirty ranges and the gate of a volume being moved.
pub mod moving;
// Copies that share extents (copy_file_range), issue 18.
mod share;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

pub use crate::pool::IoError;
pub(crate) use admin::check_size;
pub use io::DataOp;
pub use share::ShareFrom;

use crate::extent_map::ExtentTable;
use crate::meta::{State, VolState};
use crate::pool::{Pool, StateSource};

/// Volumes by id and by name.
#[derive(Default)]
pub struct VolumeReg {
    pub by_id: HashMap<u64, Arc<Volume>>,
    pub by_name: HashMap<String, u64>,
}

impl VolumeReg {
    pub fn get(&self, name: &str) -> Option<&Arc<Volume>> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }
}

/// The volume service: the registry of volumes, their data path over the core (plan,
/// reserve, write, commit) and their administration (create, delete, resize). It knows
/// nothing of snapshots, pairs or groups; the copy functions act around its data path
/// (see `storage::io`).
pub struct Volumes {
    pub pool: Arc<Pool>,
    pub(crate) reg: RwLock<VolumeReg>,
    /// (volume, from): volumes that share extents through copies (`MapShare`); kept for
    /// the checker's family test, saved in checkpoints.
    pub(crate) links: Mutex<Vec<(u64, u64)>>,
}

impl Volumes {
    /// The service over `pool`, with the volumes of the recovered state.
    pub fn new(pool: Arc<Pool>, vols: Vec<VolState>) -> Arc<Volumes> {
        let mut reg = VolumeReg::default();
        for v in vols {
            reg.by_name.insert(v.name.clone(), v.id);
            reg.by_id.insert(v.id, Arc::new(Volume::from_state(v)));
        }
        let me = Arc::new(Volumes {
            pool,
            reg: RwLock::new(reg),
            links: Mutex::new(Vec::new()),
        });
        let weak: std::sync::Weak<dyn StateSource> = Arc::downgrade(&me) as _;
        me.pool.add_state_source(weak);
        me
    }

    /// The recovered links between volumes that share extents through copies.
    pub fn set_links(&self, links: Vec<(u64, u64)>) {
        *self.links.lock() = links;
    }

    pub fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        self.reg.read().get(name).cloned()
    }

    pub fn volume_by_id(&self, id: u64) -> Option<Arc<Volume>> {
        self.reg.read().by_id.get(&id).cloned()
    }

    /// Which parts of `[offset, offset+len)` of `vol` are mapped (runs of bytes, mapped or
    /// not; a hole reads as zeros). Read-only, under the map's read lock; the range is clipped
    /// to the volume's size.
    pub fn allocation(&self, vol: &Volume, offset: u64, len: u64) -> Vec<(u64, bool)> {
        let len = len.min(vol.size().saturating_sub(offset));
        crate::extent_map::allocation(&vol.map.read(), offset, len, self.pool.extent_size)
    }

    /// All volumes, sorted by name.
    pub fn volume_list(&self) -> Vec<Arc<Volume>> {
        let mut v: Vec<Arc<Volume>> = self.reg.read().by_id.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

impl StateSource for Volumes {
    fn save(&self, state: &mut State) {
        state.volumes = self
            .volume_list()
            .iter()
            .map(|v| VolState {
                id: v.id,
                name: v.name.clone(),
                size: v.size(),
                tier: v.tier.clone(),
                created: v.created,
                origin: v.origin,
                table: v.map.read().clone(),
            })
            .collect();
        state.links = self.links.lock().clone();
    }
}

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
    /// Arrays new extents may go to (a paired volume keeps off its partner's arrays).
    pub(crate) allowed_arrays: RwLock<Option<Vec<u32>>>,
    /// Host I/O counted by the pipeline router (`storage::io`) since the daemon started.
    pub stats: crate::stats::IoStats,
    /// Where recent reads of the volume ended: streams read with read-ahead, lone small reads
    /// without (`pool::streams`).
    pub(crate) streams: crate::pool::ReadStreams,
    /// Front ends writing the volume: handles of the volume file open for writing, and
    /// network clients that have written (see `claim_writer`).
    writers: Mutex<Writers>,
    /// A move to another node of the cluster: dirty ranges and the gate (`moving`).
    pub moving: moving::MoveTrack,
}

/// Which front end writes a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The volume file in the mount, opened for writing.
    File,
    /// A network client (NBD); `shared`: the daemon allows it beside the mount's writers.
    Network { shared: bool },
}

#[derive(Default)]
struct Writers {
    file: u64,
    network: u64,
    network_shared: bool,
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
            allowed_arrays: RwLock::new(None),
            stats: crate::stats::IoStats::default(),
            streams: crate::pool::ReadStreams::default(),
            writers: Mutex::new(Writers::default()),
            moving: moving::MoveTrack::default(),
        }
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

    /// The volume's size, or `BeyondEnd` (ENOSPC, as on a block device) for a write that
    /// starts at or after the end.
    pub fn check_start(&self, offset: u64) -> Result<u64, IoError> {
        let size = self.size();
        if offset >= size {
            return Err(IoError::BeyondEnd {
                volume: self.name.clone(),
                offset,
                size,
            });
        }
        Ok(size)
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

    /// Register a front end as a writer. The mount's writers and network writers exclude each
    /// other (two caches of one disk, e.g. a file system mounted through a loop device on the
    /// file and a VM over NBD, would corrupt it) unless the network side is `shared`.
    /// Err: the other kind of writer is there.
    pub fn claim_writer(&self, w: Writer) -> Result<(), Writer> {
        let mut g = self.writers.lock();
        match w {
            Writer::File => {
                if g.network > 0 && !g.network_shared {
                    return Err(Writer::Network { shared: false });
                }
                g.file += 1;
            }
            Writer::Network { shared } => {
                if g.file > 0 && !shared {
                    return Err(Writer::File);
                }
                g.network += 1;
                g.network_shared = shared;
            }
        }
        Ok(())
    }

    /// The end of a writer registered with `claim_writer`.
    pub fn release_writer(&self, w: Writer) {
        let mut g = self.writers.lock();
        match w {
            Writer::File => g.file = g.file.saturating_sub(1),
            Writer::Network { .. } => g.network = g.network.saturating_sub(1),
        }
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
