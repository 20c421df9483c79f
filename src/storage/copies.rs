//! Copies that carry volume information (seed 001): a snapshot, clone, split S-VOL or group
//! snapshot gets its source's record plus where it came from. The seed's rule holds: the
//! record is written only after the copy's data is in place — after the snapshot's (or
//! clone's) metadata record, after the split (the S-VOL then shows the split-time image).
//! A crash between the two leaves a copy without a record, which the catalog shows as
//! "missing"; never a record describing data that is not there.

use std::sync::Arc;

use super::Storage;
use crate::format::volinfo::{InfoRecord, Origin};
use crate::mirror::Pair;
use crate::pool::create::now_secs;
use crate::pool::PoolError;
use crate::snapshot::Snapshot;
use crate::volume::Volume;

impl Storage {
    /// The origin of a copy of `vol` (from its snapshot `snapshot`, if not empty) made now.
    pub fn origin_of(&self, kind: &str, vol: &Volume, snapshot: &str) -> Origin {
        Origin {
            kind: kind.to_string(),
            volume: vol.name.clone(),
            snapshot: snapshot.to_string(),
            volume_id: vol.id,
            pool_id: self.pool.pool_id,
            time: now_secs(),
            ..Default::default()
        }
    }

    /// Write the record of a fresh copy `id`; a failure is logged, not returned: the copy
    /// itself succeeded, and the catalog shows it without a record.
    fn stamp(&self, id: u64, what: &str, rec: &InfoRecord) {
        if let Err(e) = self.infos.put(id, rec) {
            log::warn!("{what}: its volume information was not written: {e}");
        }
    }

    /// Take a snapshot; it carries the volume's record (with `extra` fields set on top:
    /// a schedule's label) and origin kind `snapshot`.
    pub fn snapshot_with_info(
        &self,
        volume: &str,
        name: &str,
        extra: &[(String, String)],
    ) -> Result<Arc<Snapshot>, PoolError> {
        let mut rec = self
            .infos
            .get(self.volumes.volume_or_err(volume)?.id)
            .record();
        let now = now_secs();
        for (k, v) in extra {
            rec.set(k, v, now).map_err(PoolError::Invalid)?;
        }
        let snap = self.snapshots.create_snapshot(volume, name)?;
        if let Some(vol) = self.volumes.volume(volume) {
            let mut origin = self.origin_of("snapshot", &vol, "");
            origin.time = snap.created;
            self.stamp(
                snap.id,
                &format!("snapshot '{name}' of '{volume}'"),
                &rec.for_copy(origin),
            );
        }
        Ok(snap)
    }

    /// Clone a snapshot; the clone carries the snapshot's record, origin kind `clone`.
    pub fn clone_with_info(
        &self,
        volume: &str,
        name: &str,
        new_volume: &str,
    ) -> Result<Arc<Volume>, PoolError> {
        let snap = self.snapshots.snapshot(volume, name)?;
        let rec = self.infos.get(snap.id).record();
        let clone = self.snapshots.clone_snapshot(volume, name, new_volume)?;
        if let Some(vol) = self.volumes.volume(volume) {
            let origin = self.origin_of("clone", &vol, name);
            self.stamp(
                clone.id,
                &format!("clone '{new_volume}'"),
                &rec.for_copy(origin),
            );
        }
        Ok(clone)
    }

    /// Split pairs; each S-VOL carries its P-VOL's record, origin kind `split`, written
    /// after the split returned (a steady split waited for the copy to complete; a quick
    /// split's S-VOL already shows only the split-time image).
    pub fn split_with_info(
        &self,
        pvols: &[String],
        group: Option<&str>,
        quick: bool,
    ) -> Result<Vec<Arc<Pair>>, PoolError> {
        let before: Vec<(u64, InfoRecord)> = self
            .volumes
            .volume_list()
            .iter()
            .map(|v| (v.id, self.infos.get(v.id).record()))
            .collect();
        let pairs = self.mirror.split_pairs(pvols, group, quick)?;
        for p in &pairs {
            let rec = before
                .iter()
                .find(|(id, _)| *id == p.pvol.id)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            let origin = self.origin_of(if quick { "split-quick" } else { "split" }, &p.pvol, "");
            self.stamp(
                p.svol.id,
                &format!("S-VOL '{}' of pair '{}'", p.svol.name, p.pvol.name),
                &rec.for_copy(origin),
            );
        }
        Ok(pairs)
    }

    /// A group snapshot (primary); each snapshot carries its volume's record, origin kind
    /// `group-snapshot`.
    pub fn group_snapshot_with_info(&self, group: &str, snap: &str) -> Result<(), PoolError> {
        let recs: Vec<(u64, InfoRecord)> = self
            .volumes
            .volume_list()
            .iter()
            .map(|v| (v.id, self.infos.get(v.id).record()))
            .collect();
        self.replication.group_snapshot(group, snap)?;
        for (vid, rec) in recs {
            let Some(vol) = self.volumes.volume_by_id(vid) else {
                continue;
            };
            let Some(s) = self.snapshots.reg.read().get(vid, snap).cloned() else {
                continue;
            };
            if self.infos.get(s.id) != crate::info::InfoState::Missing {
                continue;
            }
            let mut origin = self.origin_of("group-snapshot", &vol, "");
            origin.time = s.created;
            self.stamp(
                s.id,
                &format!("snapshot '{snap}' of '{}' (group '{group}')", vol.name),
                &rec.for_copy(origin),
            );
        }
        Ok(())
    }
}

impl Storage {
    /// Send the records of group `name`'s volumes to its secondary (after they joined it:
    /// `group create`, `group add`); each travels as an `Info` journal record.
    pub fn journal_group_infos(&self, name: &str) {
        let Ok(gs) = self.replication.group_list(Some(name)) else {
            return;
        };
        let ids: Vec<u64> = gs[0].rec.lock().volumes.iter().map(|(l, _)| *l).collect();
        for id in ids {
            if self.infos.get(id) != crate::info::InfoState::Missing {
                self.infos.replicate(id);
            }
        }
    }
}
