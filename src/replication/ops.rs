//! Pool-level group operations (what the control socket calls) and start-up.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::apply::{redo, start_applier};
use super::error::ReplicationError;
use super::group::{Group, JOURNALS_DIR, ROLE_PRIMARY, ROLE_SECONDARY};
use super::options::GroupOptions;
use super::remote;
use super::ship::{start_base_copy, start_shipper};
use super::Replication;
use crate::format::journal::{JournalRecord, RecordKind};
use crate::format::{GroupRec, MetaRecord};
use crate::journal::{now_ns, Journal, JournalConfig, JournalError};
use crate::names;
use crate::pool::PoolError;
use crate::volume::Volume;

/// Default limit of the journal a primary holds (status shows use against it).
pub const DEFAULT_JOURNAL_LIMIT: u64 = 4 << 30;
/// How long `group snapshot` waits for a running initial copy before it refuses.
const INITIAL_COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn new_uid(pool_id: u64, name: &str) -> u64 {
    let mut x = now_ns() ^ pool_id.rotate_left(17) ^ (std::process::id() as u64) << 32;
    for b in name.bytes() {
        x = (x ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    x | 1
}

fn not_found(name: &str) -> PoolError {
    ReplicationError::NoGroup(name.to_string()).into_pool()
}

/// A journal failure of a resize keeps its meaning: a full disk is ENOSPC (`NoSpace`), an
/// I/O error stays an I/O error (naming the volume), anything else is reported as
/// inconsistent (an I/O-class error too); never `Invalid` (EINVAL, a usage error).
fn resize_journal_err(volume: &str, e: JournalError) -> PoolError {
    if e.errno() == libc::ENOSPC {
        return PoolError::NoSpace(format!("volume '{volume}': journal: {e}"));
    }
    match e {
        JournalError::Io { op, path, source } => PoolError::Io {
            op,
            path,
            source: std::io::Error::new(
                source.kind(),
                format!("volume '{volume}': journal: {source}"),
            ),
        },
        other => PoolError::Inconsistent(format!("volume '{volume}': journal: {other}")),
    }
}

impl Replication {
    pub(crate) fn journal_dir(&self, name: &str) -> std::path::PathBuf {
        self.pool.dir.join(JOURNALS_DIR).join(name)
    }

    pub(crate) fn open_journal(&self, rec: &GroupRec) -> Result<Journal, PoolError> {
        let cfg = JournalConfig {
            segment_bytes: rec.segment_bytes,
            seal_age: std::time::Duration::from_millis(rec.seal_age_ms),
        };
        Journal::open(
            &self.journal_dir(&rec.name),
            rec.uid,
            rec.epoch,
            rec.synced.min(rec.acked) + 1,
            rec.synced.max(rec.acked) + 1,
            // `sync_after` leaves segments the secondary acknowledged to the kernel; the
            // acknowledged number read back from the metadata was durable before it did.
            rec.acked,
            cfg,
        )
        .map_err(|e| {
            ReplicationError::in_group(&rec.name, ReplicationError::journal(&rec.name, e))
                .into_pool()
        })
    }

    /// Refuse an operation on a volume in a journal group (delete, pair, rollback...).
    pub(crate) fn refuse_grouped(&self, vol: &Volume, what: &str) -> Result<(), PoolError> {
        if let Some(g) = self.group_of(vol.id) {
            return Err(PoolError::Busy(format!(
                "volume '{}' is in journal group '{}'; it cannot be {what} until `fusevol group remove {} {}` (or `group delete`)",
                vol.name, g.name, g.name, vol.name
            )));
        }
        Ok(())
    }

    /// Resize a volume of journal group `g` (the caller checked the size and that the volume
    /// is in no pair, and notifies after): refused at a secondary or a stale primary; the
    /// resize is journaled so the other site resizes at the same point of the write history.
    pub(crate) fn resize_volume(
        &self,
        g: &Arc<Group>,
        vol: &Arc<Volume>,
        size: u64,
    ) -> Result<(), PoolError> {
        let name = &vol.name;
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
        // The other site grows before any write can reach the new space, and shrinks after
        // the last write to the old space.
        let journal = || {
            g.journal()
                .append(RecordKind::VolumeResize, vol.id, 0, size, &[])
                .map(|_| ())
                .map_err(|e| resize_journal_err(name, e))
        };
        let grow = size >= vol.size();
        if grow {
            journal()?;
        }
        self.volumes.resize(vol, size)?;
        if !grow {
            journal()?;
        }
        Ok(())
    }

    fn grouped_volume(&self, name: &str) -> Result<Arc<Volume>, PoolError> {
        let v = self
            .volumes
            .volume(name)
            .ok_or_else(|| PoolError::NotFound(format!("volume '{name}' does not exist")))?;
        self.mirror.refuse_paired(&v, "put in a journal group")?;
        if let Some(g) = self.group_of(v.id) {
            return Err(PoolError::Busy(format!(
                "volume '{name}' is already in journal group '{}'",
                g.name
            )));
        }
        Ok(v)
    }

    /// Put `volumes` in a new journal group replicated to `<remote>/<name>/`.
    pub fn group_create(
        self: &Arc<Self>,
        name: &str,
        volumes: &[String],
        remote_dir: &Path,
        opts: &GroupOptions,
    ) -> Result<(), PoolError> {
        names::validate("group", name).map_err(PoolError::Invalid)?;
        let segment_bytes = opts
            .segment_size
            .unwrap_or(JournalConfig::default().segment_bytes);
        if !(64 << 10..=1 << 30).contains(&segment_bytes) {
            return Err(PoolError::Invalid(format!(
                "group '{name}': segment size {segment_bytes} is outside 64 KiB–1 GiB"
            )));
        }
        let seal_age_ms = opts
            .seal_ms
            .unwrap_or(JournalConfig::default().seal_age.as_millis() as u64);
        if !(1..=60_000).contains(&seal_age_ms) {
            return Err(PoolError::Invalid(format!(
                "group '{name}': seal age {seal_age_ms} ms is outside 1–60000 ms"
            )));
        }
        if volumes.is_empty() {
            return Err(PoolError::Invalid(format!(
                "group '{name}': name at least one volume"
            )));
        }
        if !remote_dir.is_absolute() || !remote_dir.is_dir() {
            return Err(PoolError::Invalid(format!(
                "group '{name}': remote directory {} is not an existing absolute directory",
                remote_dir.display()
            )));
        }
        if self.group_by_name(name).is_some() {
            return Err(PoolError::Exists(format!(
                "journal group '{name}' already exists"
            )));
        }
        let vols = volumes
            .iter()
            .map(|v| self.grouped_volume(v))
            .collect::<Result<Vec<_>, _>>()?;
        let rec = GroupRec {
            uid: new_uid(self.pool.pool_id, name),
            name: name.to_string(),
            role: ROLE_PRIMARY,
            epoch: 1,
            remote: remote_dir.to_string_lossy().into_owned(),
            volumes: vols.iter().map(|v| (v.id, v.id)).collect(),
            base_pending: vols.iter().map(|v| v.id).collect(),
            segment_bytes,
            seal_age_ms,
            rate: opts.rate.unwrap_or(0),
            journal_limit: opts.journal_limit.unwrap_or(DEFAULT_JOURNAL_LIMIT),
            ext: crate::format::group::GroupSections {
                full: super::full::new_full_rec(name, opts)?,
                ..Default::default()
            },
            ..Default::default()
        };
        // The manifest first: a secondary can attach as soon as this returns.
        let m = crate::format::journal::Manifest {
            group: rec.uid,
            epoch: rec.epoch,
            pool: self.pool.pool_id,
            created: now_ns(),
            name: name.to_string(),
            settings: Some(super::handover::settings_of(&rec)),
            // The group's volumes, so that `group attach` can refuse one that collides with
            // a volume of the secondary's pool before anything is applied.
            volumes: {
                let mut v: Vec<(u64, String)> =
                    vols.iter().map(|v| (v.id, v.name.clone())).collect();
                v.sort();
                v
            },
            ..Default::default()
        };
        remote::ensure_group_dir(remote_dir, name)
            .and_then(|d| remote::write_manifest(&d, &m))
            .map_err(|e| {
                let text = format!(
                    "group '{name}': cannot publish in {}: {e}",
                    remote_dir.display()
                );
                ReplicationError::remote(name, "publishing the manifest in", remote_dir, e)
                    .into_pool_saying(text)
            })?;
        let _ = std::fs::remove_dir_all(self.journal_dir(name));
        let journal = self.open_journal(&rec)?;
        let g = Arc::new(Group::new(
            rec.clone(),
            Some(journal),
            self.pool.events.clone(),
        ));
        // Every volume joins at one instant: its writes are journaled from here on.
        let guards: Vec<_> = vols.iter().map(|v| v.io_lock.write()).collect();
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::GroupPut(Box::new(rec)))?;
        self.groups.write().insert(g.uid, g.clone());
        for v in &vols {
            g.journal()
                .append(
                    RecordKind::VolumeAdd,
                    v.id,
                    0,
                    v.size(),
                    &JournalRecord::name_payload(&v.name),
                )
                .map_err(|e| ReplicationError::journal(name, e).into_pool())?;
            self.set_member(v.id, Some(g.clone()));
        }
        drop(guards);
        self.pool.sync()?;
        start_shipper(self, &g);
        start_base_copy(self, &g);
        g.publish(
            "created",
            serde_json::json!({
                "volumes": vols.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
                "remote": remote_dir.display().to_string(),
                "state": "initial-copy",
            }),
        );
        log::info!(
            "journal group '{name}' created with {} volumes, replicated to {}",
            vols.len(),
            remote_dir.display()
        );
        Ok(())
    }

    /// Attach this pool as the secondary of the group published in `<remote>/<name>/`.
    pub fn group_attach(self: &Arc<Self>, name: &str, remote_dir: &Path) -> Result<(), PoolError> {
        self.group_attach_with(name, remote_dir, Default::default(), Default::default())
    }

    /// `group_attach` with the point-in-time settings (retention, apply delay) given.
    pub(crate) fn group_attach_with(
        self: &Arc<Self>,
        name: &str,
        remote_dir: &Path,
        pitr: crate::format::group::PitrRec,
        rename: crate::format::group::RenameRec,
    ) -> Result<(), PoolError> {
        names::validate("group", name).map_err(PoolError::Invalid)?;
        if self.group_by_name(name).is_some() {
            return Err(PoolError::Exists(format!(
                "journal group '{name}' already exists in this pool"
            )));
        }
        let dir = remote::group_dir(remote_dir, name);
        let m = remote::read_manifest(&dir).map_err(|e| {
            let text = format!(
                "group '{name}': no primary has published it in {}: {e}",
                remote_dir.display()
            );
            match e.kind() {
                // No manifest (or no group directory): nothing to attach to.
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData => {
                    PoolError::NotFound(text)
                }
                _ => ReplicationError::remote(name, "reading the manifest in", &dir, e)
                    .into_pool_saying(text),
            }
        })?;
        if m.name != name {
            return Err(PoolError::Invalid(format!(
                "group '{name}': the manifest in {} is for group '{}'",
                dir.display(),
                m.name
            )));
        }
        if m.pool == self.pool.pool_id {
            return Err(PoolError::Invalid(format!(
                "group '{name}': this pool is the group's primary"
            )));
        }
        // The group's volumes come from the manifest (or the first segment): one whose
        // local name collides with a local volume would stop the applier later (state
        // error), so refuse now, naming it (rename.rs).
        self.check_attach_names(name, &dir, &m, &rename)?;
        // One remote directory feeds one secondary: the first one's acknowledgements let the
        // primary purge, so a second would never see the records it lacks (a gap).
        if let Ok(Some(ack)) = remote::read_ack(&dir) {
            if ack.group == m.group && ack.epoch == m.epoch && ack.applied > 0 {
                return Err(PoolError::Exists(format!(
                    "group '{name}' in {} is applied by another secondary already (it acknowledged up to sequence number {}), and the records before that may be purged; a group has one secondary. To start a new secondary, run `group delete {name}` and `group create` again on the primary (a new initial copy)",
                    dir.display(),
                    ack.applied
                )));
            }
        }
        let rec = GroupRec {
            uid: m.group,
            name: name.to_string(),
            role: ROLE_SECONDARY,
            epoch: m.epoch,
            remote: remote_dir.to_string_lossy().into_owned(),
            ext: crate::format::group::GroupSections {
                pitr,
                rename,
                ..Default::default()
            },
            ..Default::default()
        };
        let g = Arc::new(Group::new(rec.clone(), None, self.pool.events.clone()));
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::GroupPut(Box::new(rec)))?;
        self.groups.write().insert(g.uid, g.clone());
        self.pool.sync()?;
        start_applier(self, &g);
        g.publish(
            "attached",
            serde_json::json!({"remote": remote_dir.display().to_string(), "state": "initial-copy"}),
        );
        log::info!(
            "attached as secondary of journal group '{name}' in {}",
            remote_dir.display()
        );
        Ok(())
    }

    fn primary_group(&self, name: &str) -> Result<Arc<Group>, PoolError> {
        let g = self.group_by_name(name).ok_or_else(|| not_found(name))?;
        if !g.is_primary() {
            return Err(PoolError::Invalid(format!(
                "journal group '{name}' is a secondary here; do this on the primary"
            )));
        }
        Ok(g)
    }

    pub fn group_add_volume(self: &Arc<Self>, name: &str, volume: &str) -> Result<(), PoolError> {
        let g = self.primary_group(name)?;
        super::full::refuse_while_suspended(&g, "add a volume")?;
        let v = self.grouped_volume(volume)?;
        {
            let _io = v.io_lock.write();
            {
                let mut r = g.rec.lock();
                r.volumes.push((v.id, v.id));
                r.base_pending.push(v.id);
                g.clear_base_progress(&mut r, v.id);
            }
            self.put_group(&g)?;
            g.journal()
                .append(
                    RecordKind::VolumeAdd,
                    v.id,
                    0,
                    v.size(),
                    // The group's name (a renamed site that took over publishes the names
                    // its secondary knows; rename.rs).
                    &JournalRecord::name_payload(&g.group_name(&v.name)),
                )
                .map_err(|e| ReplicationError::journal(name, e).into_pool())?;
            self.set_member(v.id, Some(g.clone()));
        }
        let running = g
            .base_worker
            .lock()
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if !running {
            start_base_copy(self, &g);
        }
        Ok(())
    }

    pub fn group_remove_volume(&self, name: &str, volume: &str) -> Result<(), PoolError> {
        let g = self.primary_group(name)?;
        let v = self
            .volumes
            .volume(volume)
            .filter(|v| self.group_of(v.id).is_some_and(|x| x.uid == g.uid))
            .ok_or_else(|| {
                PoolError::NotFound(format!(
                    "volume '{volume}' is not in journal group '{name}'"
                ))
            })?;
        let _io = v.io_lock.write();
        g.journal()
            .append(RecordKind::VolumeRemove, v.id, 0, 0, &[])
            .map_err(|e| ReplicationError::journal(name, e).into_pool())?;
        {
            let mut r = g.rec.lock();
            r.volumes.retain(|(l, _)| *l != v.id);
            r.base_pending.retain(|x| *x != v.id);
            g.clear_base_progress(&mut r, v.id);
        }
        self.put_group(&g)?;
        self.set_member(v.id, None);
        Ok(())
    }

    /// Snapshot every volume of the group at one instant and put a marker in the journal.
    pub fn group_snapshot(&self, name: &str, snap: &str) -> Result<(), PoolError> {
        names::validate("snapshot", snap).map_err(PoolError::Invalid)?;
        let g = self.primary_group(name)?;
        super::full::refuse_while_suspended(&g, "take a group snapshot")?;
        let mut ids: Vec<u64> = g.rec.lock().volumes.iter().map(|(l, _)| *l).collect();
        ids.sort_unstable();
        let vols: Vec<Arc<Volume>> = ids
            .iter()
            .filter_map(|&i| self.volumes.volume_by_id(i))
            .collect();
        for v in &vols {
            if self.snapshots.reg.read().get(v.id, snap).is_some() {
                return Err(PoolError::Exists(format!(
                    "volume '{}' already has a snapshot '{snap}'",
                    v.name
                )));
            }
        }
        let guards = self.wait_initial_copy(&g, &vols)?;
        let seq = g
            .journal()
            .append(
                RecordKind::Marker,
                0,
                0,
                0,
                &JournalRecord::name_payload(snap),
            )
            .map_err(|e| ReplicationError::journal(name, e).into_pool())?;
        // (At or after the record's own time: a restore by time never takes it too early.)
        let time = crate::journal::now_ns();
        let mut log = self.pool.meta.lock();
        let mut taken = Vec::with_capacity(vols.len());
        for v in &vols {
            let s = self.snapshots.snapshot_locked(&mut log, v, snap)?;
            taken.push((v.id, v.id, s.id));
        }
        drop(log);
        drop(guards);
        // The primary remembers its group snapshots as the secondary does (name, sequence
        // number, epoch, snapshot ids): the same image at both sites, which a cluster lets
        // readers take from either site (`cluster::replicas`).
        super::pitr::note_own_marker(self, &g, snap, seq, time, taken);
        self.put_group(&g)?;
        log::info!(
            "group '{name}': snapshot '{snap}' of {} volumes",
            vols.len()
        );
        Ok(())
    }

    /// A group snapshot is the same image at both sites only once the initial copy has been
    /// journaled whole (a marker before a `Base` record would snapshot the secondary without
    /// that extent): wait for it, up to `INITIAL_COPY_WAIT`, and return the volumes' I/O locks
    /// taken with no initial copy pending.
    fn wait_initial_copy<'a>(
        &self,
        g: &Group,
        vols: &'a [Arc<Volume>],
    ) -> Result<Vec<parking_lot::RwLockWriteGuard<'a, ()>>, PoolError> {
        let t0 = std::time::Instant::now();
        loop {
            if g.rec.lock().base_pending.is_empty() {
                let guards: Vec<_> = vols.iter().map(|v| v.io_lock.write()).collect();
                if g.rec.lock().base_pending.is_empty() {
                    return Ok(guards);
                }
            }
            if t0.elapsed() >= INITIAL_COPY_WAIT {
                return Err(PoolError::Busy(format!(
                    "group '{}': the initial copy to the secondary is still running, so a group snapshot would not be the same image there; try again when `group status` no longer says initial-copy",
                    g.name
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stop journaling (primary) or applying (secondary); the volumes stay, writable.
    pub fn group_delete(&self, name: &str) -> Result<(), PoolError> {
        let g = self.group_by_name(name).ok_or_else(|| not_found(name))?;
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::GroupDelete { uid: g.uid })?;
        g.gone.store(true, Ordering::Release);
        self.groups.write().remove(&g.uid);
        for v in self.volumes.volume_list() {
            if self.group_of(v.id).is_some_and(|x| x.uid == g.uid) {
                let _io = v.io_lock.write();
                self.set_member(v.id, None);
            }
        }
        for h in [g.worker.lock().take(), g.base_worker.lock().take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
        self.pool.sync()?;
        if g.is_primary() {
            let _ = std::fs::remove_dir_all(self.journal_dir(name));
        }
        g.publish("deleted", serde_json::Value::Null);
        log::info!("journal group '{name}' deleted");
        Ok(())
    }

    /// The group called `name` (not found naming it), or all of them; sorted by name.
    pub fn group_list(&self, name: Option<&str>) -> Result<Vec<Arc<Group>>, PoolError> {
        let mut gs: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        gs.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(n) = name {
            gs.retain(|g| g.name == n);
            if gs.is_empty() {
                return Err(not_found(n));
            }
        }
        Ok(gs)
    }

    /// At open: rebuild the groups, redo the primary journals' tails, start the workers.
    pub(crate) fn attach_groups(self: &Arc<Self>, recs: Vec<GroupRec>) -> Result<(), PoolError> {
        for rec in recs {
            let journal = if rec.role == ROLE_PRIMARY {
                Some(self.open_journal(&rec)?)
            } else {
                None
            };
            let g = Arc::new(Group::new(rec.clone(), journal, self.pool.events.clone()));
            for (l, _) in &rec.volumes {
                let v = self.volumes.volume_by_id(*l).ok_or_else(|| {
                    PoolError::Inconsistent(format!(
                        "journal group '{}' names missing volume {l}",
                        rec.name
                    ))
                })?;
                self.set_member(v.id, Some(g.clone()));
            }
            self.groups.write().insert(g.uid, g.clone());
            if g.is_primary() {
                let n = redo(self, &g)?;
                if n > 0 {
                    log::warn!(
                        "group '{}': redid {n} journal records after sequence {} into the volumes",
                        g.name,
                        rec.synced
                    );
                }
            }
        }
        Ok(())
    }

    /// Start the groups' shippers, base copiers and appliers (the daemon calls this once
    /// the mount is ready; tests call it on a library pool).
    pub fn start_groups(self: &Arc<Self>) {
        let gs: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        for g in gs {
            if g.worker.lock().is_some() {
                continue;
            }
            if g.is_primary() {
                start_shipper(self, &g);
                if !g.rec.lock().base_pending.is_empty() {
                    start_base_copy(self, &g);
                }
                self.full_resume(&g);
            } else {
                start_applier(self, &g);
            }
        }
    }

    /// Stop the group workers (part of shutdown).
    pub(crate) fn stop_groups(&self) {
        let gs: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        for g in gs {
            for h in [g.worker.lock().take(), g.base_worker.lock().take()]
                .into_iter()
                .flatten()
            {
                let _ = h.join();
            }
        }
    }
}
