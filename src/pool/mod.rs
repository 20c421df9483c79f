//! The pool: its arrays, the extent allocator, the metadata log and the volumes.
//!
//! Lock order (outermost first): a volume's `io_lock` (P-VOL before S-VOL) → a pair's region
//! stripes → `io_gate` → `meta` → `volumes` → a volume's `map` → `alloc` → `arrays`.
//! `io_gate` is taken shared (recursively) by every data access and exclusively only by
//! `Pool::recycle`, to drain I/O that may still use a freed extent; nobody waits for anything
//! else while holding it shared.

pub mod alloc;
pub mod array;
mod check;
pub(crate) mod create;
mod extent_io;
mod fill;
mod hooks;
pub(crate) mod open;
pub mod streams;
mod subcow;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use alloc::Allocator;
pub use array::Array;
pub use check::{check_pool, check_pool_with, repair_pool, CheckReport};
pub use create::{create_pool, default_pool_with_volume, ArraySpec, PoolSpec, DEFAULT_EXTENT_SIZE};
pub use extent_io::{Cow, IoError};
pub use fill::FILL_RATE;
pub use hooks::{StateSource, SyncHook};
pub use streams::{Access, ReadStreams};

use crate::format::{ArrayRec, FormatError, Phys};
use crate::meta::{MetaError, MetaLog, State};

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

type Listener = Box<dyn Fn(u64) + Send + Sync>;

/// The storage core: arrays, the extent allocator, the metadata log, partial extents, and
/// sync. It knows nothing of volumes, snapshots, pairs or journal groups; those are services
/// that hold an `Arc<Pool>` and take part in its checkpoints (`StateSource`) and syncs
/// (`SyncHook`).
pub struct Pool {
    pub dir: PathBuf,
    pub pool_id: u64,
    pub extent_size: u64,
    pub(crate) io_gate: RwLock<()>,
    pub(crate) meta: Mutex<MetaLog>,
    /// Set at shutdown: background copiers stop.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    pub(crate) alloc: Mutex<Allocator>,
    /// Partial extents (sub-extent copy-on-write); see `extent_map::partial`.
    pub(crate) partials: Arc<crate::extent_map::partial::Partials>,
    /// The background filler of partial extents (daemon only; tests call `fill_step`).
    pub(crate) filler: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) arrays: RwLock<Vec<Option<Arc<Array>>>>,
    /// Next id for a volume or snapshot (one id space, never reused).
    pub(crate) next_id: Mutex<u64>,
    /// Serializes `sync` callers so frees are promoted once per durable log prefix.
    sync_lock: Mutex<()>,
    /// Told the id of a volume or snapshot whose size or content changed outside its file
    /// (resize by CLI, rollback, delete), so the kernel drops what it cached.
    listener: RwLock<Option<Listener>>,
    /// The services whose state goes into a checkpoint, in registration order.
    sources: RwLock<Vec<std::sync::Weak<dyn StateSource>>>,
    /// The services that take part in a sync (a journal is durable before the arrays).
    sync_hooks: RwLock<Vec<std::sync::Weak<dyn SyncHook>>>,
    /// Log records that recovery replayed when this pool was opened (`Storage::open` writes
    /// a checkpoint when there were any, so the next start does not replay them again).
    pub replayed_at_open: u64,
    /// Recovery found a metadata copy (checkpoint slot, log header) damaged, missing or
    /// stale: `Storage::open` rewrites it with a fresh checkpoint and log.
    pub rewrite_at_open: bool,
    /// Opened by a salvage that lost log records: the report and the salvaged state, kept
    /// until an operator confirms (`commit_salvage`). While set, the pool is read-only.
    pub(crate) salvaged: Mutex<Option<(crate::meta::SalvageReport, State)>>,
    /// `salvaged` is set: checked without a lock on every write (the hot path).
    pub(crate) salvage_pending: std::sync::atomic::AtomicBool,
    /// The pool's events (`events.rs`): every service publishes its state changes here.
    pub events: Arc<crate::events::EventLog>,
    /// The pool ran out of space and said so (one `nospace` event until space is found).
    pub(crate) nospace_reported: std::sync::atomic::AtomicBool,
    /// When each array's last `io-error` event was published (they are rate-limited).
    pub(crate) array_error_events: Mutex<std::collections::HashMap<u32, std::time::Instant>>,
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

    /// Make everything acknowledged so far durable: array data first, then the metadata log
    /// (data before the pointer to it), then recycle extents whose free records are now
    /// durable. A failed fsync is reported, never retried as if it had worked.
    pub fn sync(&self) -> Result<(), PoolError> {
        let _one = self.sync_lock.lock();
        self.events.sync();
        // Journal before data: a service's journal is durable before the arrays are.
        let hooks = self.sync_hooks();
        let mut done = Vec::with_capacity(hooks.len());
        for h in &hooks {
            done.push(h.before_arrays(self)?);
        }
        self.sync_arrays()?;
        for (h, token) in hooks.iter().zip(done) {
            h.after_arrays(self, token)?;
        }
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
                fail::fail_point!("pool::sync::log_fsync", |_| Err(
                    io::Error::from_raw_os_error(libc::EIO)
                ));
                crate::fsio::fdatasync(&handle)
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

    /// The whole metadata state at the given epoch: the core's part, then each registered
    /// service's. Call with `meta` held. Tables are copied by sharing their chunks, so this
    /// is cheap.
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
        let mut state = State {
            groups: Vec::new(),
            links: Vec::new(),
            pool_id: self.pool_id,
            epoch,
            extent_size: self.extent_size,
            next_id: *self.next_id.lock(),
            arrays,
            volumes: Vec::new(),
            snapshots: Vec::new(),
            pairs: Vec::new(),
            partials: self.partials.entries(),
            infos: Default::default(),
            schedules: Default::default(),
        };
        for src in self.sources.read().iter().filter_map(|w| w.upgrade()) {
            src.save(&mut state);
        }
        state
    }

    /// A fresh id for a volume or snapshot. Call with `meta` held.
    pub(crate) fn take_id(&self) -> u64 {
        let mut next = self.next_id.lock();
        let id = *next;
        *next += 1;
        id
    }

    /// Why the pool is read-only (an unconfirmed salvage), or None.
    pub fn read_only(&self) -> Option<String> {
        if !self
            .salvage_pending
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return None;
        }
        self.salvaged.lock().as_ref().map(|(r, _)| {
            format!(
                "pool opened by a salvage that did not apply the metadata log from {} offset {}; review the loss report (POOL/salvage-report.json) and confirm with `fusevol pool salvage-confirm`",
                r.log, r.damaged_at
            )
        })
    }

    /// The loss report of an unconfirmed salvage.
    pub fn salvage_report(&self) -> Option<crate::meta::SalvageReport> {
        self.salvaged.lock().as_ref().map(|(r, _)| r.clone())
    }

    /// Confirm a salvage: the salvaged state becomes the pool's on-disk state (the damaged
    /// log is kept as `meta.log.damaged-<epoch>`, a checkpoint of the salvaged state goes to
    /// both slots, a fresh log follows). The running daemon stays read-only; the next start
    /// serves the pool read-write (and punches the extents only the lost records held).
    pub fn commit_salvage(&self) -> Result<(crate::meta::SalvageReport, u64), PoolError> {
        let _log = self.meta.lock();
        let guard = self.salvaged.lock();
        let Some((report, state)) = guard.as_ref() else {
            return Err(PoolError::Invalid(
                "the pool was not opened by a salvage; nothing to confirm".into(),
            ));
        };
        let epoch = crate::meta::commit_recovered(&self.dir, state, true)?;
        log::warn!(
            "salvage confirmed: checkpoint epoch {epoch} holds the salvaged state; the damaged log is kept as {}.damaged-{}",
            crate::meta::LOG_FILE,
            state.epoch
        );
        Ok((report.clone(), epoch))
    }

    /// Write a checkpoint and start a new log. Everything is synced first. A pool opened
    /// read-only by an unconfirmed salvage is left as it is (a checkpoint would confirm it).
    pub fn checkpoint(&self) -> Result<(), PoolError> {
        if self.salvaged.lock().is_some() {
            log::info!("no checkpoint: the salvage is not confirmed");
            return Ok(());
        }
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

    /// A service's state goes into every checkpoint from now on.
    pub fn add_state_source(&self, s: std::sync::Weak<dyn StateSource>) {
        self.sources.write().push(s);
    }

    /// A service takes part in every sync from now on.
    pub fn add_sync_hook(&self, h: std::sync::Weak<dyn SyncHook>) {
        self.sync_hooks.write().push(h);
    }

    fn sync_hooks(&self) -> Vec<Arc<dyn SyncHook>> {
        self.sync_hooks
            .read()
            .iter()
            .filter_map(|w| w.upgrade())
            .collect()
    }

    /// The logical extents (copy regions) that `[offset, offset+len)` touches.
    pub(crate) fn regions(&self, offset: u64, len: u64) -> Vec<u64> {
        if len == 0 {
            return Vec::new();
        }
        let es = self.extent_size;
        (offset / es..=(offset + len - 1) / es).collect()
    }

    /// fdatasync of the metadata log alone (no array sync, no recycling).
    pub(crate) fn sync_log(&self) -> Result<(), MetaError> {
        let (handle, unsynced) = {
            let log = self.meta.lock();
            log.check_healthy()?;
            (log.sync_handle()?, log.unsynced())
        };
        if unsynced == 0 {
            return Ok(());
        }
        let res = crate::fsio::fdatasync(&handle);
        self.meta.lock().mark_synced(unsynced, res)
    }
}
