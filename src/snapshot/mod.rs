//! In-line copy-on-write snapshots: instant, many generations, read-only, rollback, clones.
//!
//! A snapshot is a copy of its volume's extent table made by sharing the table's chunks
//! (`ExtentTable::clone`): no data moves and no reference count changes, so taking one costs
//! a few microseconds whatever the volume's size. The volume's first write to a shared extent
//! after that goes to a new extent holding only the 4 KiB blocks written, which reads its
//! other blocks from the old one until the filler has copied them (`pool/subcow.rs`,
//! `extent_map/partial.rs`); the snapshot keeps the old extent. Deleting a
//! snapshot drops its chunk pointers; extents no other table holds are freed.
//!
//! Consistency: `create` takes the volume's `io_lock` exclusively, so no write is half done
//! at the moment of the copy — the snapshot holds exactly the writes acknowledged before the
//! command returned, and none after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use std::collections::HashMap;

use crate::extent_map::ExtentTable;
use crate::format::MetaRecord;
use crate::meta::{SnapState, State};
use crate::names;
use crate::pool::{create::now_secs, IoError, Pool, PoolError, StateSource};
use crate::volume::{Volume, Volumes};

/// Prefix of the internal snapshots a quick split of a pair takes: not valid as a user's
/// snapshot name, and not deletable by a user (the split's copy reads from it).
pub const SPLIT_SNAPSHOT_PREFIX: &str = ".split-";

/// Snapshots by id; names are unique per volume.
#[derive(Default)]
pub struct SnapshotReg {
    pub by_id: HashMap<u64, Arc<Snapshot>>,
}

impl SnapshotReg {
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

/// The snapshot service: snapshots of the volumes, their rollback and clones.
pub struct Snapshots {
    pub pool: Arc<Pool>,
    pub volumes: Arc<Volumes>,
    pub(crate) reg: RwLock<SnapshotReg>,
}

impl StateSource for Snapshots {
    fn save(&self, state: &mut State) {
        let mut snaps: Vec<Arc<Snapshot>> = self.reg.read().by_id.values().cloned().collect();
        snaps.sort_by_key(|s| s.id);
        state.snapshots = snaps
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
    }
}

pub struct Snapshot {
    pub id: u64,
    /// Id of the volume it was taken of.
    pub volume: u64,
    pub name: String,
    pub created: u64,
    /// The volume's size when the snapshot was taken.
    pub size: u64,
    pub(crate) table: RwLock<ExtentTable>,
    open_handles: AtomicU64,
    /// Recent reads' ends (read-ahead for streams only, `pool::streams`).
    streams: crate::pool::ReadStreams,
}

impl Snapshot {
    pub(crate) fn from_state(s: SnapState) -> Snapshot {
        Snapshot {
            id: s.id,
            volume: s.volume,
            name: s.name,
            created: s.created,
            size: s.size,
            table: RwLock::new(s.table),
            open_handles: AtomicU64::new(0),
            streams: crate::pool::ReadStreams::default(),
        }
    }

    pub fn opened(&self) {
        self.open_handles.fetch_add(1, Ordering::AcqRel);
    }

    pub fn closed(&self) {
        self.open_handles.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn open_handles(&self) -> u64 {
        self.open_handles.load(Ordering::Acquire)
    }

    pub fn mapped_extents(&self) -> u64 {
        self.table.read().mapped()
    }
}

impl Snapshots {
    /// The service over `volumes`, with the snapshots of the recovered state.
    pub fn new(volumes: Arc<Volumes>, snaps: Vec<SnapState>) -> Arc<Snapshots> {
        let mut reg = SnapshotReg::default();
        for s in snaps {
            reg.by_id.insert(s.id, Arc::new(Snapshot::from_state(s)));
        }
        let me = Arc::new(Snapshots {
            pool: volumes.pool.clone(),
            volumes,
            reg: RwLock::new(reg),
        });
        let weak: std::sync::Weak<dyn StateSource> = Arc::downgrade(&me) as _;
        me.pool.add_state_source(weak);
        me
    }

    /// Every snapshot, oldest first.
    pub fn all(&self) -> Vec<Arc<Snapshot>> {
        let mut all: Vec<Arc<Snapshot>> = self.reg.read().by_id.values().cloned().collect();
        all.sort_by_key(|s| s.id);
        all
    }

    pub(crate) fn snapshot_of(&self, vol: &Volume, name: &str) -> Result<Arc<Snapshot>, PoolError> {
        self.reg.read().get(vol.id, name).cloned().ok_or_else(|| {
            PoolError::NotFound(format!("volume '{}' has no snapshot '{name}'", vol.name))
        })
    }

    pub(crate) fn volume_named(&self, name: &str) -> Result<Arc<Volume>, PoolError> {
        self.volumes
            .volume(name)
            .ok_or_else(|| PoolError::NotFound(format!("volume '{name}' does not exist")))
    }

    /// Look a snapshot up by volume name and snapshot name.
    pub fn snapshot(&self, volume: &str, name: &str) -> Result<Arc<Snapshot>, PoolError> {
        let vol = self.volume_named(volume)?;
        self.snapshot_of(&vol, name)
    }

    pub fn snapshot_by_id(&self, id: u64) -> Option<Arc<Snapshot>> {
        self.reg.read().by_id.get(&id).cloned()
    }

    /// Snapshots of a volume, oldest first.
    pub fn snapshots_of(&self, volume_id: u64) -> Vec<Arc<Snapshot>> {
        self.reg.read().of_volume(volume_id)
    }

    /// Take a snapshot of `volume` now.
    pub fn create_snapshot(&self, volume: &str, name: &str) -> Result<Arc<Snapshot>, PoolError> {
        names::validate("snapshot", name).map_err(PoolError::Invalid)?;
        let vol = self.volume_named(volume)?;
        // Drain the writes in flight and hold new ones for the few microseconds of the copy.
        let _io = vol.io_lock.write();
        let mut log = self.pool.meta.lock();
        let snap = self.snapshot_locked(&mut log, &vol, name)?;
        drop(log);
        log::info!("snapshot '{name}' of volume '{volume}' taken");
        Ok(snap)
    }

    /// Take a snapshot; the caller holds the volume's `io_lock` exclusively and the metadata
    /// lock (`log`).
    pub(crate) fn snapshot_locked(
        &self,
        log: &mut crate::meta::MetaLog,
        vol: &Volume,
        name: &str,
    ) -> Result<Arc<Snapshot>, PoolError> {
        let mut snaps = self.reg.write();
        if snaps.get(vol.id, name).is_some() {
            return Err(PoolError::Exists(format!(
                "volume '{}' already has a snapshot '{name}'",
                vol.name
            )));
        }
        let id = self.pool.take_id();
        let created = now_secs();
        log.append(&MetaRecord::SnapshotCreate {
            id,
            volume: vol.id,
            name: name.to_string(),
            created,
        })?;
        let snap = Arc::new(Snapshot {
            id,
            volume: vol.id,
            name: name.to_string(),
            created,
            size: vol.size(),
            table: RwLock::new(vol.map.read().clone()),
            open_handles: AtomicU64::new(0),
            streams: crate::pool::ReadStreams::default(),
        });
        snaps.by_id.insert(id, snap.clone());
        self.pool.events.publish(
            "snapshot",
            &format!("{}@{name}", vol.name),
            "created",
            serde_json::json!({"size": snap.size}),
        );
        Ok(snap)
    }

    /// Delete a snapshot; the caller holds the metadata lock (`log`).
    pub(crate) fn delete_snapshot_logged(
        &self,
        log: &mut crate::meta::MetaLog,
        snap: &Snapshot,
    ) -> Result<(), PoolError> {
        let mut snaps = self.reg.write();
        if !snaps.by_id.contains_key(&snap.id) {
            return Err(PoolError::NotFound(format!(
                "snapshot '{}' is gone",
                snap.name
            )));
        }
        log.append(&MetaRecord::SnapshotDelete { id: snap.id })?;
        snaps.by_id.remove(&snap.id);
        // Freed extents become reusable only after this record is durable (Pool::sync).
        let table = std::mem::take(&mut *snap.table.write());
        table.release(&mut *self.pool.alloc.lock());
        drop(snaps);
        self.pool.notify(snap.id);
        let volume = self
            .volumes
            .volume_by_id(snap.volume)
            .map_or_else(|| format!("#{}", snap.volume), |v| v.name.clone());
        self.pool.events.publish(
            "snapshot",
            &format!("{volume}@{}", snap.name),
            "deleted",
            serde_json::Value::Null,
        );
        Ok(())
    }

    /// Delete a snapshot; extents only it held are freed. Refused while its file is open,
    /// and for the snapshot a quick split's copy still reads from.
    pub fn delete_snapshot(&self, volume: &str, name: &str) -> Result<(), PoolError> {
        let snap = self.snapshot(volume, name)?;
        if Volumes::wait_released(|| snap.open_handles()) > 0 {
            return Err(PoolError::Busy(format!(
                "snapshot '{name}' of volume '{volume}' is open ({} handles); close it first",
                snap.open_handles()
            )));
        }
        if name.starts_with(SPLIT_SNAPSHOT_PREFIX) {
            return Err(PoolError::Busy(format!(
                "snapshot '{name}' of volume '{volume}' belongs to a quick split of its pair; it goes when the split's copy completes"
            )));
        }
        let mut log = self.pool.meta.lock();
        self.delete_snapshot_logged(&mut log, &snap)?;
        drop(log);
        log::info!("snapshot '{name}' of volume '{volume}' deleted");
        Ok(())
    }

    /// Return `volume` to the content and size of its snapshot `name`. Refused while the
    /// volume file is open: a file system mounted on it would see its blocks change under it.
    pub fn rollback_snapshot(&self, volume: &str, name: &str) -> Result<Arc<Volume>, PoolError> {
        let vol = self.volume_named(volume)?;
        let snap = self.snapshot_of(&vol, name)?;
        if Volumes::wait_released(|| vol.open_handles()) > 0 {
            return Err(PoolError::Busy(format!(
                "volume '{volume}' is open ({} handles); close it (umount, losetup -d) before a rollback",
                vol.open_handles()
            )));
        }
        {
            let _io = vol.io_lock.write();
            let mut log = self.pool.meta.lock();
            log.append(&MetaRecord::SnapshotRollback {
                volume: vol.id,
                snapshot: snap.id,
            })?;
            let new_table = snap.table.read().clone();
            let old = std::mem::replace(&mut *vol.map.write(), new_table);
            vol.set_size(snap.size);
            old.release(&mut *self.pool.alloc.lock());
        }
        self.pool.notify(vol.id);
        log::info!("volume '{volume}' rolled back to snapshot '{name}'");
        self.pool.events.publish(
            "snapshot",
            &format!("{volume}@{name}"),
            "rolled-back",
            serde_json::json!({"size": snap.size}),
        );
        Ok(vol)
    }

    /// A new writable volume that starts as the snapshot and shares its extents.
    pub fn clone_snapshot(
        &self,
        volume: &str,
        name: &str,
        new_volume: &str,
    ) -> Result<Arc<Volume>, PoolError> {
        names::validate("volume", new_volume).map_err(PoolError::Invalid)?;
        let vol = self.volume_named(volume)?;
        let snap = self.snapshot_of(&vol, name)?;
        let mut log = self.pool.meta.lock();
        let mut vols = self.volumes.reg.write();
        if vols.by_name.contains_key(new_volume) {
            return Err(PoolError::Exists(format!(
                "volume '{new_volume}' already exists"
            )));
        }
        let id = self.pool.take_id();
        let created = now_secs();
        log.append(&MetaRecord::VolumeClone {
            id,
            name: new_volume.to_string(),
            snapshot: snap.id,
            created,
        })?;
        let mut clone = Volume::new(
            id,
            new_volume.to_string(),
            vol.tier.clone(),
            snap.size,
            created,
        );
        clone.origin = vol.id;
        *clone.map.get_mut() = snap.table.read().clone();
        let clone = Arc::new(clone);
        vols.by_name.insert(new_volume.to_string(), id);
        vols.by_id.insert(id, clone.clone());
        drop(vols);
        drop(log);
        log::info!("volume '{new_volume}' cloned from snapshot '{name}' of '{volume}'");
        self.pool.events.publish(
            "volume",
            new_volume,
            "created",
            serde_json::json!({"size": snap.size, "clone_of": format!("{volume}@{name}")}),
        );
        Ok(clone)
    }

    /// Delete a volume and free its extents (the volume service's delete), first deleting its
    /// snapshots when `recursive`, else refusing while it has any. Pairs and groups are the
    /// caller's to refuse.
    pub fn delete_volume(&self, vol: &Arc<Volume>, recursive: bool) -> Result<(), PoolError> {
        let name = vol.name.as_str();
        Volumes::wait_released(|| vol.open_handles());
        let snaps = self.snapshots_of(vol.id);
        if !snaps.is_empty() {
            if !recursive {
                return Err(PoolError::Busy(format!(
                    "volume '{name}' has {} snapshots ({}); delete them first or use --recursive",
                    snaps.len(),
                    snaps
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if Volumes::wait_released(|| vol.open_handles()) > 0 {
                return Err(Volumes::busy_open(name, vol.open_handles()));
            }
            for s in &snaps {
                self.delete_snapshot(name, &s.name)?;
            }
        }
        self.volumes
            .delete_volume(vol, &|id| !self.snapshots_of(id).is_empty())
    }

    /// Read from a snapshot.
    /// Which parts of `[offset, offset+len)` of a snapshot are mapped (see
    /// `Volumes::allocation`).
    pub fn allocation(&self, snap: &Snapshot, offset: u64, len: u64) -> Vec<(u64, bool)> {
        let len = len.min(snap.size.saturating_sub(offset));
        crate::extent_map::allocation(&snap.table.read(), offset, len, self.pool.extent_size)
    }

    pub fn read_snapshot(
        &self,
        snap: &Snapshot,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, IoError> {
        let access = snap.streams.classify(offset, buf.len() as u64);
        self.pool
            .read_table(&snap.table, snap.size, &snap.name, offset, buf, access)
    }
}
