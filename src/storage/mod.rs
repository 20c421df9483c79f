//! The top-level owner: the storage core and the services over it, wired once for the daemon,
//! the control handler and the tests.
//!
//! `Pool` (arrays, allocator, metadata log, partial extents, sync) is at the bottom;
//! `Volumes`, `Snapshots`, `Mirror` and `Replication` each hold what they need below them.
//! What involves several services lives here: the write pipeline (`io.rs`), and the
//! administration that must ask a copy function first (a paired or grouped volume cannot be
//! deleted, rolled back or resized as if it were alone).

mod copies;
mod destage;
mod io;
// Holes seen by tools (lseek SEEK_DATA/SEEK_HOLE), issue 18.
mod holes;
// Copies inside the mount (copy_file_range), issue 18.
mod copy;
pub use copy::CopyFrom;

pub use destage::{destaging_after_reply, Destaging};

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::meta::RecoveryMode;
use crate::mirror::{Mirror, Pair};
use crate::pool::{Pool, PoolError};
use crate::replication::Replication;
use crate::snapshot::Snapshots;
use crate::volume::{Volume, Volumes};

pub struct Storage {
    pub pool: Arc<Pool>,
    pub volumes: Arc<Volumes>,
    pub snapshots: Arc<Snapshots>,
    pub mirror: Arc<Mirror>,
    pub replication: Arc<Replication>,
    /// Volume information (backups, issue 14): registered last, so its checkpoint part
    /// sees which volumes and snapshots exist.
    pub infos: Arc<crate::info::Infos>,
    /// Backup schedules (issue 14): the durable registry; the daemon runs them.
    pub schedules: Arc<crate::schedule::Schedules>,
    /// Journaled writes acknowledged before their data write finished (`destage.rs`).
    pub destaging: Destaging,
    /// Per-volume I/O statistics are counted (default); `fusevold --no-stats` turns them
    /// off, and then the I/O path neither reads the clock nor touches a counter (io.rs).
    io_stats: std::sync::atomic::AtomicBool,
}

impl Storage {
    /// Open a pool for serving: the core first (recovery, checks, scrub), then each service
    /// with its part of the recovered state, bottom to top.
    pub fn open(dir: &Path) -> Result<Arc<Storage>, PoolError> {
        Self::open_with(dir, RecoveryMode::Strict)
    }

    /// `open` with a recovery mode. After a salvage that lost log records the pool is
    /// read-only: volumes and snapshots are served for reading, pairs and journal groups are
    /// not started (their copiers and redo would write), nothing is checkpointed, until an
    /// operator confirms (`Pool::commit_salvage`) and the daemon starts again.
    pub fn open_with(dir: &Path, mode: RecoveryMode) -> Result<Arc<Storage>, PoolError> {
        let (pool, mut st) = Pool::open_with(dir, mode)?;
        let read_only = pool.read_only().is_some();
        let volumes = Volumes::new(pool.clone(), std::mem::take(&mut st.volumes));
        volumes.set_links(std::mem::take(&mut st.links));
        let snapshots = Snapshots::new(volumes.clone(), std::mem::take(&mut st.snapshots));
        let mirror = Mirror::new(snapshots.clone());
        let replication = Replication::new(mirror.clone());
        let infos = crate::info::Infos::new(replication.clone(), std::mem::take(&mut st.infos));
        let schedules =
            crate::schedule::Schedules::new(pool.clone(), std::mem::take(&mut st.schedules));
        if read_only {
            if !st.pairs.is_empty() || !st.groups.is_empty() {
                log::warn!(
                    "read-only salvage: {} pairs and {} journal groups are not started until the salvage is confirmed",
                    st.pairs.len(),
                    st.groups.len()
                );
            }
        } else {
            mirror.attach_pairs(std::mem::take(&mut st.pairs))?;
            replication.attach_groups(std::mem::take(&mut st.groups))?;
        }
        let storage = Arc::new(Storage {
            pool,
            volumes,
            snapshots,
            mirror,
            replication,
            infos,
            schedules,
            destaging: Destaging::default(),
            io_stats: std::sync::atomic::AtomicBool::new(true),
        });
        Ok(storage)
    }

    /// Count per-volume I/O statistics (`true`, the default) or not (`fusevold --no-stats`).
    /// The arrays' counters follow the same switch (process-wide).
    pub fn set_io_stats(&self, on: bool) {
        self.io_stats
            .store(on, std::sync::atomic::Ordering::Relaxed);
        crate::stats::set_array_stats(on);
    }

    /// Whether per-volume I/O statistics are counted.
    pub fn io_stats_on(&self) -> bool {
        self.io_stats.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Recovery leaves the pool clean (the daemon calls this after `open`, before it
    /// mounts; library users may). After a start that replayed log records (a crash), write
    /// a checkpoint once every service holds its recovered state and the groups' redo is
    /// done: otherwise the log to replay grows with every crash. The same checkpoint
    /// rewrites a damaged, missing or stale copy of the checkpoint (both slots are written)
    /// or of the log header (a new log). Crash ordering is `MetaLog::rotate`'s: both slots
    /// are durable before the log is cut. Nothing while a salvage is unconfirmed.
    pub fn finish_recovery(&self) -> Result<(), PoolError> {
        let replayed = self.pool.replayed_at_open;
        if (replayed > 0 || self.pool.rewrite_at_open) && self.pool.read_only().is_none() {
            self.checkpoint()?;
            if replayed > 0 {
                log::info!(
                    "checkpoint written after replaying {replayed} log records: the next start replays none of them"
                );
            }
            if self.pool.rewrite_at_open {
                log::info!("damaged or missing metadata copies rewritten (both checkpoint slots and the log)");
            }
        }
        Ok(())
    }

    /// Start the background work: the filler of partial extents and the groups' shippers,
    /// appliers and base copiers. (Pair copiers start with their pairs.)
    pub fn start(&self) {
        self.pool.start_filler();
        self.replication.start_groups();
    }

    /// Stop every background thread: pair copiers, the filler, the groups.
    pub fn shutdown(&self) {
        self.pool.stopping.store(true, Ordering::Release);
        self.mirror.stop();
        self.pool.stop_filler();
        self.replication.stop_groups();
    }

    /// Make everything acknowledged so far durable (`Pool::sync`, journals first).
    pub fn sync(&self) -> Result<(), PoolError> {
        // Pairs' write intents that no write touched since the last sync are cleared once
        // this sync has made their writes durable on both sides.
        let pass = self.mirror.intent_candidates();
        self.pool.sync()?;
        self.mirror.clean_intents(pass);
        Ok(())
    }

    /// Write a checkpoint of the whole state and start a new metadata log.
    pub fn checkpoint(&self) -> Result<(), PoolError> {
        self.pool.checkpoint()
    }

    /// Delete a volume and free its extents. Refused for a paired or grouped volume, while
    /// the volume file is open, and while it has snapshots unless `recursive` (then they are
    /// deleted first).
    pub fn delete_volume(&self, name: &str, recursive: bool) -> Result<(), PoolError> {
        let vol = self.volumes.volume_or_err(name)?;
        self.mirror.refuse_paired(&vol, "deleted")?;
        self.replication.refuse_grouped(&vol, "deleted")?;
        self.snapshots.delete_volume(&vol, recursive)
    }

    /// Grow or shrink a volume (`fusevol volume resize`); the kernel drops what it cached.
    /// A shrink destroys the data past the new end, so it needs `allow_shrink` (the CLI's
    /// `--allow-shrink`: a typo must not cut a file system's tail) and is refused while the
    /// volume file is open (a file system mounted on it would lose its tail), as a rollback.
    pub fn resize_volume(
        &self,
        name: &str,
        size: u64,
        allow_shrink: bool,
    ) -> Result<Arc<Volume>, PoolError> {
        crate::volume::check_size(name, size)?;
        let vol = self.volumes.volume_or_err(name)?;
        if size < vol.size() {
            if !allow_shrink {
                return Err(PoolError::Invalid(format!(
                    "volume '{name}' is {} bytes; shrinking it to {size} destroys the data past the new end: repeat with --allow-shrink",
                    vol.size()
                )));
            }
            if Volumes::wait_released(|| vol.open_handles()) > 0 {
                return Err(PoolError::Busy(format!(
                    "volume '{name}' is open ({} handles); close it (umount, losetup -d) before shrinking it",
                    vol.open_handles()
                )));
            }
        }
        self.resize(&vol, size)?;
        self.pool.notify(vol.id);
        Ok(vol)
    }

    /// Resize a volume: refused for a pair; a primary group's volume journals the change
    /// so the other site follows; a secondary's is refused.
    pub fn resize(&self, vol: &Arc<Volume>, size: u64) -> Result<(), PoolError> {
        self.mirror.refuse_paired(vol, "resized")?;
        match self.replication.group_of(vol.id) {
            Some(g) => self.replication.resize_volume(&g, vol, size),
            None => self.volumes.resize(vol, size),
        }
    }

    /// Return a volume to the content and size of its snapshot. Refused for a paired or
    /// grouped volume and while the volume file is open.
    pub fn rollback_snapshot(&self, volume: &str, name: &str) -> Result<Arc<Volume>, PoolError> {
        let vol = self.snapshots.volume_named(volume)?;
        self.snapshots.snapshot_of(&vol, name)?;
        self.mirror.refuse_paired(&vol, "rolled back")?;
        self.replication.refuse_grouped(&vol, "rolled back")?;
        if vol.moving.active() {
            return Err(PoolError::Busy(format!(
                "volume '{volume}' is being moved to another node; roll it back after the move"
            )));
        }
        self.snapshots.rollback_snapshot(volume, name)
    }

    /// Pair `pvol` with `svol` and start the initial copy. A volume of a journal group
    /// cannot be paired.
    #[allow(clippy::too_many_arguments)]
    pub fn create_pair(
        &self,
        pvol: &str,
        svol: &str,
        create_svol: bool,
        svol_tier: Option<&str>,
        group: Option<&str>,
        rate: Option<u64>,
    ) -> Result<Arc<Pair>, PoolError> {
        for name in [pvol, svol] {
            if let Some(v) = self.volumes.volume(name) {
                self.replication.refuse_grouped(&v, "paired")?;
            }
        }
        self.mirror
            .create_pair(pvol, svol, create_svol, svol_tier, group, rate)
    }
}
