//! Volume and array administration: create, delete, resize, describe.

use std::sync::Arc;

use super::{Volume, Volumes};
use crate::format::MetaRecord;
use crate::pool::{create, PoolError};
use crate::{names, units};

/// Largest volume: 1 PiB.
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;
const SECTOR: u64 = 512;

pub(crate) fn check_size(name: &str, size: u64) -> Result<(), PoolError> {
    if size == 0 || !size.is_multiple_of(SECTOR) || size > MAX_VOLUME_SIZE {
        return Err(PoolError::Invalid(format!(
            "volume '{name}': size {size} must be a positive multiple of {SECTOR} bytes, at most {}",
            units::format_size(MAX_VOLUME_SIZE)
        )));
    }
    Ok(())
}

impl Volumes {
    fn default_tier(&self) -> String {
        let arrays = self.pool.arrays();
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
        if !self.pool.alloc.lock().has_tier(&tier) {
            return Err(PoolError::Invalid(format!(
                "volume '{name}': no array has tier '{tier}'"
            )));
        }
        let mut log = self.pool.meta.lock();
        let mut vols = self.reg.write();
        if vols.by_name.contains_key(name) {
            return Err(PoolError::Exists(format!("volume '{name}' already exists")));
        }
        let id = self.pool.take_id();
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
        let capacity = self.pool.alloc.lock().capacity_extents(Some(&tier)) * self.pool.extent_size;
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
        self.pool.events.publish(
            "volume",
            name,
            "created",
            serde_json::json!({"size": size, "tier": tier}),
        );
        Ok((vol, warnings))
    }

    pub fn volume_or_err(&self, name: &str) -> Result<Arc<Volume>, PoolError> {
        self.volume(name)
            .ok_or_else(|| PoolError::NotFound(format!("volume '{name}' does not exist")))
    }

    /// Delete a volume and free its extents. Refused while the volume file is open, and
    /// while `has_snapshots(volume id)` says it has snapshots (looked at again under the
    /// locks the delete holds, so a snapshot taken meanwhile stops it).
    pub fn delete_volume(
        &self,
        vol: &Arc<Volume>,
        has_snapshots: &dyn Fn(u64) -> bool,
    ) -> Result<(), PoolError> {
        let name = vol.name.as_str();
        // A volume moved to another node refuses every request (`moving`): the handles still
        // open on it (forwarding nodes' NBD connections) hold nothing of its data.
        let handles = || {
            if vol.moving.fenced() {
                0
            } else {
                vol.open_handles()
            }
        };
        if Self::wait_released(handles) > 0 {
            return Err(Self::busy_open(name, vol.open_handles()));
        }
        let mut log = self.pool.meta.lock();
        let mut vols = self.reg.write();
        if !vols.by_id.contains_key(&vol.id) {
            return Err(PoolError::NotFound(format!(
                "volume '{name}' does not exist"
            )));
        }
        if handles() > 0 {
            return Err(Self::busy_open(name, vol.open_handles()));
        }
        if has_snapshots(vol.id) {
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
        table.release(&mut *self.pool.alloc.lock());
        drop(vols);
        drop(log);
        self.pool.notify(vol.id);
        log::info!("deleted volume '{name}'");
        self.pool
            .events
            .publish("volume", name, "deleted", serde_json::Value::Null);
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

    pub(crate) fn resize(&self, vol: &Volume, size: u64) -> Result<(), PoolError> {
        check_size(&vol.name, size)?;
        let es = self.pool.extent_size;
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
            let mut log = self.pool.meta.lock();
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
                map.truncate(keep, &mut *self.pool.alloc.lock());
            }
            break;
        }
        log::info!(
            "resized volume '{}' from {} to {}",
            vol.name,
            units::format_size(old),
            units::format_size(size)
        );
        self.pool.events.publish(
            "volume",
            &vol.name,
            "resized",
            serde_json::json!({"old_size": old, "size": size}),
        );
        Ok(())
    }
}
