//! The pool: its arrays, the extent allocator, the metadata log and the volumes.
//!
//! Lock order (outermost first): a volume's `io_lock` (P-VOL before S-VOL) → a pair's region
//! stripes → `io_gate` → `meta` → `volumes` → a volume's `map` → `alloc` → `arrays`.
//! `io_gate` is taken shared (recursively) by every data access and exclusively only by
//! `Pool::recycle`, to drain I/O that may still use a freed extent; nobody waits for anything
//! else while holding it shared.

pub mod alloc;
pub mod array;
pub(crate) mod create;
pub(crate) mod open;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use alloc::Allocator;
pub use array::Array;
pub use create::{create_pool, default_pool_with_volume, ArraySpec, PoolSpec, DEFAULT_EXTENT_SIZE};

use crate::format::{ArrayRec, FormatError, Phys};
use crate::meta::{MetaError, MetaLog, SnapState, State, VolState};
use crate::snapshot::Snapshot;
use crate::volume::Volume;

pub const ARRAYS_DIR: &str = "arrays";
pub const LOCK_FILE: &str = "pool.lock";
pub const SOCKET_FILE: &str = "control.sock";
/// Write a checkpoint when the log grows past this.
pub const CHECKPOINT_LOG_BYTES: u64 = 64 << 20;

/// Errors of pool-level operations. Messages name the pool file, volume or array concerned.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("array file {path} header at offset {offset}: {source}")]
    BadHeader {
        path: PathBuf,
        offset: u64,
        source: FormatError,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Inconsistent(String),
}

impl PoolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Volumes by id and by name.
#[derive(Default)]
pub struct Volumes {
    pub by_id: HashMap<u64, Arc<Volume>>,
    pub by_name: HashMap<String, u64>,
}

impl Volumes {
    pub fn get(&self, name: &str) -> Option<&Arc<Volume>> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }
}

/// Snapshots by id; names are unique per volume.
#[derive(Default)]
pub struct Snapshots {
    pub by_id: HashMap<u64, Arc<Snapshot>>,
}

impl Snapshots {
    pub fn get(&self, volume: u64, name: &str) -> Option<&Arc<Snapshot>> {
        self.by_id
            .values()
            .find(|s| s.volume == volume && s.name == name)
    }

    /// Snapshots of one volume, oldest first.
    pub fn of_volume(&self, volume: u64) -> Vec<Arc<Snapshot>> {
        let mut v: Vec<Arc<Snapshot>> = self
            .by_id
            .values()
            .filter(|s| s.volume == volume)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}

type Listener = Box<dyn Fn(u64) + Send + Sync>;

pub struct Pool {
    pub dir: PathBuf,
    pub pool_id: u64,
    pub extent_size: u64,
    pub(crate) io_gate: RwLock<()>,
    pub(crate) meta: Mutex<MetaLog>,
    pub(crate) volumes: RwLock<Volumes>,
    pub(crate) snapshots: RwLock<Snapshots>,
    pub(crate) pairs: RwLock<crate::mirror::Pairs>,
    /// Set at shutdown: background copiers stop.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    pub(crate) alloc: Mutex<Allocator>,
    /// Partial extents (sub-extent copy-on-write); see `extent_map::partial`.
    pub(crate) partials: Arc<crate::extent_map::partial::Partials>,
    /// The background filler of partial extents (daemon only; tests call `fill_step`).
    pub(crate) filler: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) arrays: RwLock<Vec<Option<Arc<Array>>>>,
    /// Journal groups by uid.
    pub(crate) groups: RwLock<HashMap<u64, Arc<crate::replication::group::Group>>>,
    /// Next id for a volume or snapshot (one id space, never reused).
    pub(crate) next_id: Mutex<u64>,
    /// Serializes `sync` callers so frees are promoted once per durable log prefix.
    sync_lock: Mutex<()>,
    /// Told the id of a volume or snapshot whose size or content changed outside its file
    /// (resize by CLI, rollback, delete), so the kernel drops what it cached.
    listener: RwLock<Option<Listener>>,
}

impl Pool {
    pub fn array(&self, id: u32) -> Option<Arc<Array>> {
        self.arrays.read().get(id as usize).cloned().flatten()
    }

    pub fn arrays(&self) -> Vec<Arc<Array>> {
        self.arrays.read().iter().flatten().cloned().collect()
    }

    pub fn set_listener(&self, f: Listener) {
        *self.listener.write() = Some(f);
    }

    pub(crate) fn notify(&self, volume_id: u64) {
        if let Some(f) = self.listener.read().as_ref() {
            f(volume_id);
        }
    }

    pub fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        self.volumes.read().get(name).cloned()
    }

    pub fn volume_by_id(&self, id: u64) -> Option<Arc<Volume>> {
        self.volumes.read().by_id.get(&id).cloned()
    }

    /// All volumes, sorted by name.
    pub fn volume_list(&self) -> Vec<Arc<Volume>> {
        let mut v: Vec<Arc<Volume>> = self.volumes.read().by_id.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Make everything acknowledged so far durable: array data first, then the metadata log
    /// (data before the pointer to it), then recycle extents whose free records are now
    /// durable. A failed fsync is reported, never retried as if it had worked.
    pub fn sync(&self) -> Result<(), PoolError> {
        let _one = self.sync_lock.lock();
        // Journal before data: the journal of a group is durable before the arrays are.
        let done = self.sync_journals()?;
        self.sync_arrays()?;
        self.note_synced(&done)?;
        self.sync_meta_locked()
    }

    /// The background flush: make the metadata log durable and recycle freed extents, but
    /// leave array data to the kernel's writeback (an fsync forces it). Data written without
    /// an fsync may be lost in a machine crash, as with any file; a slot whose record became
    /// durable before its data reads zeros (rule 1), never another volume's bytes.
    pub fn sync_metadata(&self) -> Result<(), PoolError> {
        let _one = self.sync_lock.lock();
        self.sync_meta_locked()
    }

    pub(crate) fn sync_arrays(&self) -> Result<(), PoolError> {
        self.sync_arrays_in(None)
    }

    /// fdatasync the written arrays among `only` (all when `None`).
    pub(crate) fn sync_arrays_in(&self, only: Option<&[u32]>) -> Result<(), PoolError> {
        for a in self.arrays() {
            if only.is_some_and(|l| !l.contains(&a.id)) {
                continue;
            }
            a.sync()
                .map_err(|e| PoolError::io("fdatasync array file", &a.path, e))?;
        }
        Ok(())
    }

    /// Like `sync`, but only the arrays in `only` are flushed (with the metadata log): a
    /// pair's copier makes its destination durable without forcing the host's other data.
    pub(crate) fn sync_some(&self, only: Option<&[u32]>) -> Result<(), PoolError> {
        let _one = self.sync_lock.lock();
        self.sync_arrays_in(only)?;
        self.sync_meta_locked()
    }

    pub(crate) fn sync_meta_locked(&self) -> Result<(), PoolError> {
        // Take what is pending *before* syncing: those extents were freed by records already
        // appended, so the sync below makes their free records durable.
        let (handle, unsynced, pending) = {
            let log = self.meta.lock();
            log.check_healthy()?;
            let pending = self.alloc.lock().take_pending();
            (log.sync_handle()?, log.unsynced(), pending)
        };
        let res = if unsynced > 0 || !pending.is_empty() {
            let fsync_log = || -> io::Result<()> {
                fail::fail_point!("pool::sync_log", |_| Err(io::Error::from_raw_os_error(
                    libc::EIO
                )));
                handle.sync_data()
            };
            fsync_log()
        } else {
            Ok(())
        };
        let res = self.meta.lock().mark_synced(unsynced, res);
        if let Err(e) = res {
            // Put the extents back so they are never reused on the strength of a failed sync.
            self.alloc.lock().restore_pending(pending);
            return Err(e.into());
        }
        if !pending.is_empty() {
            self.recycle(pending)?;
        }
        Ok(())
    }

    /// Punch freed extents and return them to the allocator. Waits for in-flight I/O first:
    /// a reader or writer may have looked up one of these extents before it was unmapped.
    fn recycle(&self, pending: Vec<Phys>) -> Result<(), PoolError> {
        drop(self.io_gate.write());
        for p in &pending {
            let a = self.array(p.array).ok_or_else(|| {
                PoolError::Inconsistent(format!("freed extent {p:?} has no array"))
            })?;
            a.punch(p.index, 0, self.extent_size)
                .map_err(|e| PoolError::io("punch freed extent in", &a.path, e))?;
        }
        // The punches are durable before any extent can be reused by another volume.
        self.sync_arrays()?;
        self.alloc.lock().make_free(&pending);
        Ok(())
    }

    /// The whole metadata state at the given epoch. Call with `meta` held. Tables are
    /// copied by sharing their chunks, so this is cheap.
    pub(crate) fn snapshot_state(&self, epoch: u64) -> State {
        let arrays = self
            .arrays()
            .iter()
            .map(|a| ArrayRec {
                id: a.id,
                name: a.name.clone(),
                tier: a.tier.clone(),
                capacity: a.capacity_extents * a.extent_size,
                file: a
                    .path
                    .strip_prefix(&self.dir)
                    .unwrap_or(&a.path)
                    .to_string_lossy()
                    .into_owned(),
            })
            .collect();
        let volumes = self
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
        let mut snaps: Vec<Arc<Snapshot>> = self.snapshots.read().by_id.values().cloned().collect();
        snaps.sort_by_key(|s| s.id);
        let snapshots = snaps
            .iter()
            .map(|s| SnapState {
                id: s.id,
                volume: s.volume,
                name: s.name.clone(),
                created: s.created,
                size: s.size,
                table: s.table.read().clone(),
            })
            .collect();
        let mut pairs: Vec<Arc<crate::mirror::Pair>> =
            self.pairs.read().by_id.values().cloned().collect();
        pairs.sort_by_key(|p| p.id);
        let pairs = pairs
            .iter()
            .map(|p| {
                let m = p.st.lock();
                crate::meta::PairSt {
                    id: p.id,
                    pvol: p.pvol.id,
                    svol: p.svol.id,
                    group: p.group.clone(),
                    state: m.state as u8,
                    rate: m.rate_limit,
                    error: m.error.clone().unwrap_or_default(),
                    split_snap: m.split_snap.as_ref().map_or(0, |s| s.id),
                    todo: m.todo.clone(),
                    p_dirty: m.p_dirty.clone(),
                    s_dirty: m.s_dirty.clone(),
                }
            })
            .collect();
        let mut groups: Vec<crate::format::GroupRec> = self
            .groups
            .read()
            .values()
            .filter(|g| !g.is_gone())
            .map(|g| g.rec.lock().clone())
            .collect();
        groups.sort_by_key(|g| g.uid);
        State {
            groups,
            pool_id: self.pool_id,
            epoch,
            extent_size: self.extent_size,
            next_id: *self.next_id.lock(),
            arrays,
            volumes,
            snapshots,
            pairs,
            partials: self.partials.entries(),
        }
    }

    /// A fresh id for a volume or snapshot. Call with `meta` held.
    pub(crate) fn take_id(&self) -> u64 {
        let mut next = self.next_id.lock();
        let id = *next;
        *next += 1;
        id
    }

    /// Write a checkpoint and start a new log. Everything is synced first.
    pub fn checkpoint(&self) -> Result<(), PoolError> {
        self.sync()?;
        let mut log = self.meta.lock();
        let state = self.snapshot_state(log.epoch() + 1);
        log.rotate(&state.to_checkpoint())?;
        Ok(())
    }

    /// Checkpoint when the log has grown large (called by the daemon's flusher).
    pub fn maybe_checkpoint(&self) -> Result<bool, PoolError> {
        if self.meta.lock().len() < CHECKPOINT_LOG_BYTES {
            return Ok(false);
        }
        self.checkpoint()?;
        Ok(true)
    }

    pub fn lock_path(dir: &Path) -> PathBuf {
        dir.join(LOCK_FILE)
    }
}
