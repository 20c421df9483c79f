//! Holes seen by tools: `lseek(SEEK_DATA)` / `lseek(SEEK_HOLE)` on volume and snapshot files,
//! answered from the extent map, so `cp --sparse`, `qemu-img map/convert`, `tar -S` and
//! `rsync --sparse` skip what was never written (or was discarded).
//!
//! A mapped extent is data as a whole, also when only part of it was written (the rest reads
//! as zeros) or `fallocate` mapped it without writing: the answer is what the pool allocated,
//! the same runs NBD's `base:allocation` reports. The end of the file is a hole.

use super::Storage;
use crate::extent_map;
use crate::snapshot::Snapshot;
use crate::volume::Volume;

impl Storage {
    /// The first data byte (`data`) or hole byte (`!data`) of a volume at or after `offset`;
    /// None when there is none (`ENXIO`: an offset at or past the end, or no data after it).
    /// A paired volume is data everywhere, as in `allocation`: a reverse resync serves
    /// regions not yet restored from its S-VOL, whatever its own map says.
    pub fn seek_volume(&self, vol: &Volume, offset: u64, data: bool) -> Option<u64> {
        let size = vol.size();
        if self.mirror.pair_of_volume(vol.id).is_some() {
            return match (offset < size, data) {
                (false, _) => None,
                (true, true) => Some(offset),
                (true, false) => Some(size),
            };
        }
        extent_map::seek(&vol.map.read(), size, self.pool.extent_size, offset, data)
    }

    /// `seek_volume` for a snapshot file.
    pub fn seek_snapshot(&self, snap: &Snapshot, offset: u64, data: bool) -> Option<u64> {
        extent_map::seek(
            &snap.table.read(),
            snap.size,
            self.pool.extent_size,
            offset,
            data,
        )
    }
}
