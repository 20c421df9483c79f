//! Volume and array administration: create, delete, resize, describe.

use std::sync::Arc;

use super::Volume;
use crate::control::protocol::{ArrayInfo, PoolInfo, VolumeInfo};
use crate::format::MetaRecord;
use crate::pool::{create, Pool, PoolError};
use crate::{names, units};

/// Largest volume: 1 PiB.
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;
const SECTOR: u64 = 512;

fn check_size(name: &str, size: u64) -> Result<(), PoolError> {
    if size == 0 || !size.is_multiple_of(SECTOR) || size > MAX_VOLUME_SIZE {
        return Err(PoolError::Invalid(format!(
            "volume '{name}': size {size} must be a positive multiple of {SECTOR} bytes, at most {}",
            units::format_size(MAX_VOLUME_SIZE)
        )));
    }
    Ok(())
}

impl Pool {
    fn default_tier(&self) -> String {
        let arrays = self.arrays();
        if arrays.iter().any(|a| a.tier == "fast") {
            "fast".into()
        } else {
            arrays
                .first()
                .map(|a| a.tier.clone())
                .unwrap_or_else(|| "fast".into())
        }
    }

    /// Create a volume. Warnings say when the pool (tier) is overcommitted.
    pub fn create_volume(
        &self,
        name: &str,
        size: u64,
        tier: Option<&str>,
    ) -> Result<(Arc<Volume>, Vec<String>), PoolError> {
        names::validate("volume", name).map_err(PoolError::Invalid)?;
        check_size(name, size)?;
        let tier = tier
            .map(str::to_string)
            .unwrap_or_else(|| self.default_tier());
        if !self.alloc.lock().has_tier(&tier) {
            return Err(PoolError::Invalid(format!(
                "volume '{name}': no array has tier '{tier}'"
            )));
        }
        let mut log = self.meta.lock();
        let mut vols = self.volumes.write();
        if vols.by_name.contains_key(name) {
            return Err(PoolError::Exists(format!("volume '{name}' already exists")));
        }
        let id = self.take_id();
        let created = create::now_secs();
        log.append(&MetaRecord::VolumeCreate {
            id,
            name: name.to_string(),
            size,
            tier: tier.clone(),
            created,
        })?;
        let vol = Arc::new(Volume::new(
            id,
            name.to_string(),
            tier.clone(),
            size,
            created,
        ));
        vols.by_name.insert(name.to_string(), id);
        vols.by_id.insert(id, vol.clone());
        let provisioned: u64 = vols
            .by_id
            .values()
            .filter(|v| v.tier == tier)
            .map(|v| v.size())
            .sum();
        drop(vols);
        drop(log);
        let capacity = self.alloc.lock().capacity_extents(Some(&tier)) * self.extent_size;
        let mut warnings = Vec::new();
        if provisioned > capacity {
            warnings.push(format!(
                "tier '{tier}' is overcommitted: volumes provision {} on {} of arrays; writes fail with ENOSPC when the arrays fill up",
                units::format_size(provisioned),
                units::format_size(capacity)
            ));
        }
        log::info!(
            "created volume '{name}' ({} on tier {tier})",
            units::format_size(size)
        );
        Ok((vol, warnings))
    }

    fn volume_or_err(&self, name: &str) -> Result<Arc<Volume>, PoolError> {
        self.volume(name)
            .ok_or_else(|| PoolError::NotFound(format!("volume '{name}' does not exist")))
    }

    /// Delete a volume and free its extents. Refused while the volume file is open, and
    /// while it has snapshots unless `recursive` (then they are deleted first).
    pub fn delete_volume(&self, name: &str, recursive: bool) -> Result<(), PoolError> {
        let vol = self.volume_or_err(name)?;
        Self::refuse_paired(&vol, "deleted")?;
        Self::refuse_grouped(&vol, "deleted")?;
        Self::wait_released(|| vol.open_handles());
        let snaps = self.snapshots.read().of_volume(vol.id);
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
            if Self::wait_released(|| vol.open_handles()) > 0 {
                return Err(Self::busy_open(name, vol.open_handles()));
            }
            for s in &snaps {
                self.delete_snapshot(name, &s.name)?;
            }
        }
        let mut log = self.meta.lock();
        let mut vols = self.volumes.write();
        if !vols.by_id.contains_key(&vol.id) {
            return Err(PoolError::NotFound(format!(
                "volume '{name}' does not exist"
            )));
        }
        if vol.open_handles() > 0 {
            return Err(Self::busy_open(name, vol.open_handles()));
        }
        if !self.snapshots.read().of_volume(vol.id).is_empty() {
            return Err(PoolError::Busy(format!(
                "volume '{name}' gained a snapshot while being deleted"
            )));
        }
        log.append(&MetaRecord::VolumeDelete { id: vol.id })?;
        vols.by_name.remove(name);
        vols.by_id.remove(&vol.id);
        // Extents nobody else holds are reusable only after the delete record is durable
        // and they are punched (Pool::sync).
        let table = std::mem::take(&mut *vol.map.write());
        table.release(&mut *self.alloc.lock());
        drop(vols);
        drop(log);
        self.notify(vol.id);
        log::info!("deleted volume '{name}'");
        Ok(())
    }

    pub(crate) fn refuse_grouped(vol: &Volume, what: &str) -> Result<(), PoolError> {
        if let Some(g) = vol.group() {
            return Err(PoolError::Busy(format!(
                "volume '{}' is in journal group '{}'; it cannot be {what} until `fusevol group remove {} {}` (or `group delete`)",
                vol.name, g.name, g.name, vol.name
            )));
        }
        Ok(())
    }

    pub(crate) fn refuse_paired(vol: &Volume, what: &str) -> Result<(), PoolError> {
        if let Some((pair, _)) = vol.pair() {
            return Err(PoolError::Busy(format!(
                "volume '{}' is in the pair {} → {}; it cannot be {what} until `fusevol pair delete {}`",
                vol.name, pair.pvol.name, pair.svol.name, pair.pvol.name
            )));
        }
        Ok(())
    }

    /// Wait briefly for `handles()` to reach zero. The kernel sends a file's RELEASE after
    /// `close()` has returned, so a delete issued right after closing could otherwise see the
    /// file still open.
    pub(crate) fn wait_released(handles: impl Fn() -> u64) -> u64 {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let n = handles();
            if n == 0 || std::time::Instant::now() >= end {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub(crate) fn busy_open(name: &str, handles: u64) -> PoolError {
        PoolError::Busy(format!(
            "volume '{name}' is open ({handles} handles); close it (umount, losetup -d) first"
        ))
    }

    /// Grow or shrink a volume. Shrinking frees the extents past the new end and zeroes the
    /// tail of the last one, so growing again shows zeros.
    pub fn resize_volume(&self, name: &str, size: u64) -> Result<Arc<Volume>, PoolError> {
        check_size(name, size)?;
        let vol = self.volume_or_err(name)?;
        Self::refuse_paired(&vol, "resized")?;
        let group = vol.group();
        if let Some(g) = &group {
            if g.is_stale() {
                return Err(PoolError::Busy(format!(
                    "volume '{name}' is in journal group '{}', which was taken over by another site; it is read-only here",
                    g.name
                )));
            }
            if !g.is_primary() {
                return Err(PoolError::Busy(format!(
                    "volume '{name}' is the secondary of journal group '{}'; it is resized by the primary",
                    g.name
                )));
            }
        }
        // The other site grows before any write can reach the new space, and shrinks after
        // the last write to the old space.
        let journal = |g: &crate::replication::group::Group| {
            g.journal()
                .append(
                    crate::format::journal::RecordKind::VolumeResize,
                    vol.id,
                    0,
                    size,
                    &[],
                )
                .map(|_| ())
                .map_err(|e| PoolError::Invalid(format!("volume '{name}': journal: {e}")))
        };
        let grow = size >= vol.size();
        if let (Some(g), true) = (&group, grow) {
            journal(g)?;
        }
        self.resize(&vol, size)?;
        if let (Some(g), false) = (&group, grow) {
            journal(g)?;
        }
        self.notify(vol.id);
        Ok(vol)
    }

    pub(crate) fn resize(&self, vol: &Volume, size: u64) -> Result<(), PoolError> {
        check_size(&vol.name, size)?;
        let es = self.extent_size;
        let keep = size.div_ceil(es);
        let _io = vol.io_lock.write();
        let old = vol.size();
        if size < old && !size.is_multiple_of(es) {
            // Zero the tail of the new last extent first, so that growing later shows zeros
            // (through copy-on-write if a snapshot shares it).
            self.discard_locked(vol, size, es - size % es)
                .map_err(|e| PoolError::Inconsistent(e.to_string()))?;
        }
        loop {
            let mut log = self.meta.lock();
            let mut map = vol.map.write();
            if vol.any_pending_from(keep.saturating_sub(1)) {
                drop(map);
                drop(log);
                vol.wait_pending();
                continue;
            }
            log.append(&MetaRecord::VolumeResize { id: vol.id, size })?;
            vol.set_size(size);
            if size < old {
                map.truncate(keep, &mut *self.alloc.lock());
            }
            break;
        }
        log::info!(
            "resized volume '{}' from {} to {}",
            vol.name,
            units::format_size(old),
            units::format_size(size)
        );
        Ok(())
    }

    pub fn volume_info(&self, vol: &Volume) -> VolumeInfo {
        let mut per_array: Vec<(u32, u64)> = Vec::new();
        let mapped = {
            let map = vol.map.read();
            for (_, p) in map.iter_mapped() {
                match per_array.iter_mut().find(|(a, _)| *a == p.array) {
                    Some(e) => e.1 += 1,
                    None => per_array.push((p.array, 1)),
                }
            }
            map.mapped()
        };
        per_array.sort();
        VolumeInfo {
            id: vol.id,
            name: vol.name.clone(),
            size: vol.size(),
            tier: vol.tier.clone(),
            allocated: mapped * self.extent_size,
            created: vol.created,
            open_handles: vol.open_handles(),
            extents_per_array: per_array
                .into_iter()
                .map(|(id, n)| {
                    let name = self.array(id).map(|a| a.name.clone()).unwrap_or_default();
                    (name, n)
                })
                .collect(),
        }
    }

    pub fn volume_info_by_name(&self, name: &str) -> Result<VolumeInfo, PoolError> {
        let v = self.volume_or_err(name)?;
        Ok(self.volume_info(&v))
    }

    pub fn array_infos(&self) -> Vec<ArrayInfo> {
        let al = self.alloc.lock();
        self.arrays()
            .iter()
            .map(|a| {
                let (used, free) = al.usage(a.id);
                ArrayInfo {
                    id: a.id,
                    name: a.name.clone(),
                    tier: a.tier.clone(),
                    path: a.path.display().to_string(),
                    capacity: a.capacity_extents * a.extent_size,
                    used: used * a.extent_size,
                    free: free * a.extent_size,
                    on_disk: a.on_disk(),
                }
            })
            .collect()
    }

    /// Add an array file to the live pool.
    pub fn add_array(&self, name: &str, size: u64, tier: &str) -> Result<ArrayInfo, PoolError> {
        let mut log = self.meta.lock();
        if self.arrays().iter().any(|a| a.name == name) {
            return Err(PoolError::Exists(format!("array '{name}' already exists")));
        }
        let id = self.arrays.read().len().max(1) as u32;
        let spec = create::ArraySpec {
            name: name.to_string(),
            size,
            tier: tier.to_string(),
        };
        // The file and its header are durable before the record that adds it.
        let rec = create::new_array(&self.dir, self.pool_id, id, self.extent_size, &spec)?;
        crate::meta::sync_dir(&self.dir.join(crate::pool::ARRAYS_DIR))?;
        log.append(&MetaRecord::ArrayAdd(rec.clone()))?;
        let path = self.dir.join(&rec.file);
        let (file, h) = crate::pool::array::read_header(&path)?;
        let refs = self
            .alloc
            .lock()
            .add_array(id, tier, h.capacity / h.extent_size);
        let array = Arc::new(crate::pool::Array::new(file, path, &h, refs));
        {
            let mut arrays = self.arrays.write();
            if arrays.len() <= id as usize {
                arrays.resize(id as usize + 1, None);
            }
            arrays[id as usize] = Some(array);
        }
        drop(log);
        log::info!(
            "added array '{name}' ({} on tier {tier})",
            units::format_size(size)
        );
        Ok(self
            .array_infos()
            .into_iter()
            .find(|a| a.id == id)
            .expect("just added"))
    }

    pub fn pool_info(&self, mountpoint: &str) -> PoolInfo {
        let arrays = self.array_infos();
        let vols = self.volume_list();
        PoolInfo {
            pool_id: format!("{:016x}", self.pool_id),
            path: self.dir.display().to_string(),
            mountpoint: mountpoint.to_string(),
            extent_size: self.extent_size,
            capacity: arrays.iter().map(|a| a.capacity).sum(),
            used: arrays.iter().map(|a| a.used).sum(),
            free: arrays.iter().map(|a| a.free).sum(),
            provisioned: vols.iter().map(|v| v.size()).sum(),
            volumes: vols.len() as u64,
            arrays,
        }
    }
}
