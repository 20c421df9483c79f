//! Moving the primary role of a journal group between sites: epochs in the remote
//! directory, takeover at the secondary, split-brain refusal at an old primary, and failback
//! (the old primary becomes the new secondary with a delta, not a full copy).
//!
//! The remote directory's `manifest` names the group's current epoch, the pool that is its
//! primary, and the sequence number the epoch's journal continues after. A takeover writes
//! a manifest with a higher epoch; a primary that reads a higher epoch than its own stops
//! (read-only volumes, no shipping). Segments of epoch 2 and later are published as
//! `<first>.e<epoch>.jseg`, so two epochs never share a file name; an applier moves
//! segments of older epochs aside into `stale/`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apply::{apply_available, start_applier};
use super::error::ReplicationError;
use super::group::{Group, ROLE_PRIMARY, ROLE_SECONDARY};
use super::remote;
use super::ship::start_shipper;
use super::Replication;
use crate::format::group::handover::{FailbackRec, StaleRec};
use crate::format::group::HandoverRec;
use crate::format::journal::{
    FailbackRegion, FailbackRequest, JournalRecord, JournalSettings, Manifest, RecordKind,
};
use crate::format::{GroupRec, MetaRecord};
use crate::journal::{now_ns, read_sealed, JournalConfig, SEGMENT_SUFFIX};
use crate::pool::PoolError;

/// Where an applier puts segments of older epochs.
pub const STALE_DIR: &str = "stale";
/// How often a primary reads the manifest (split-brain check) and looks for a failback
/// request.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The name a local segment (`<first>.jseg`) is published under in epoch `epoch`.
pub(crate) fn published_name(local: &str, epoch: u64) -> String {
    match (epoch, local.strip_suffix(SEGMENT_SUFFIX)) {
        (1, _) | (_, None) => local.to_string(),
        (e, Some(stem)) => format!("{stem}.e{e}{SEGMENT_SUFFIX}"),
    }
}

/// (first sequence number, epoch) of a published segment's file name.
pub(crate) fn parse_published(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    match stem.split_once(".e") {
        None => Some((stem.parse().ok()?, 1)),
        Some((first, epoch)) => Some((first.parse().ok()?, epoch.parse().ok()?)),
    }
}

/// Before applying: move published segments of older epochs into `stale/` (an old primary
/// may have published after the takeover), and refuse to go on when a newer epoch is here.
pub(crate) fn sweep_other_epochs(
    group: &str,
    dir: &Path,
    epoch: u64,
) -> Result<(), ReplicationError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ReplicationError::remote(group, "listing", dir, e)),
    };
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let Some((_, e)) = parse_published(&name) else {
            continue;
        };
        if e > epoch {
            return Err(ReplicationError::Conflict {
                group: group.to_string(),
                detail: format!(
                    "{}: a segment of the newer epoch {e} (this site applies epoch {epoch}); the group was taken over elsewhere, nothing more is applied",
                    ent.path().display()
                ),
            });
        }
        if e < epoch {
            let stale = dir.join(STALE_DIR);
            std::fs::create_dir_all(&stale)
                .and_then(|_| std::fs::rename(ent.path(), stale.join(&name)))
                .map_err(|err| {
                    ReplicationError::remote(group, "moving aside (older epoch)", ent.path(), err)
                })?;
            log::warn!(
                "{}: a segment of the older epoch {e} moved to {}/ unapplied",
                ent.path().display(),
                STALE_DIR
            );
        }
    }
    Ok(())
}

/// The shipper's view of the manifest: read every second, written when ours is not there.
pub(crate) struct ManifestWatch {
    next: Instant,
    written: bool,
}

impl ManifestWatch {
    pub(crate) fn new() -> ManifestWatch {
        ManifestWatch {
            next: Instant::now(),
            written: false,
        }
    }
}

fn our_manifest(r: &Replication, g: &Group) -> Manifest {
    let rec = g.rec.lock().clone();
    let mut volumes: Vec<(u64, String)> = rec
        .volumes
        .iter()
        // The group's names: a renamed site that took over publishes the names its
        // secondary (the old primary) knows the volumes by (rename.rs).
        .filter_map(|(l, _)| {
            r.volumes
                .volume_by_id(*l)
                .map(|v| (v.id, rec.ext.rename.group_name(&v.name)))
        })
        .collect();
    volumes.sort();
    Manifest {
        group: g.uid,
        epoch: rec.epoch,
        pool: r.pool.pool_id,
        created: now_ns(),
        name: g.name.clone(),
        start_seq: rec.ext.handover.start_seq,
        volumes,
        settings: Some(settings_of(&rec)),
    }
}

/// The journal settings a takeover gives the new primary (published in the manifest).
pub(crate) fn settings_of(r: &GroupRec) -> JournalSettings {
    JournalSettings {
        segment_bytes: r.segment_bytes,
        seal_age_ms: r.seal_age_ms,
        rate: r.rate,
        journal_limit: r.journal_limit,
        policy: r.ext.full.policy,
        block_timeout_ms: r.ext.full.block_timeout_ms,
    }
}

/// Primary, before shipping: make sure the remote directory names this site's epoch; a
/// newer epoch there makes this primary stale (an error: nothing is shipped any more).
/// Also serves a failback request of the old primary when one is waiting.
pub(crate) fn watch(
    r: &Replication,
    g: &Group,
    dir: &Path,
    w: &mut ManifestWatch,
) -> Result<(), ReplicationError> {
    if w.written && Instant::now() < w.next {
        return Ok(());
    }
    w.next = Instant::now() + WATCH_EVERY;
    let epoch = g.rec.lock().epoch;
    let write = match remote::read_manifest(dir) {
        Ok(m) if m.group != g.uid => {
            return Err(ReplicationError::Conflict {
                group: g.name.clone(),
                detail: format!(
                    "{} belongs to another group of that name (id {:016x}); not shipping there",
                    dir.display(),
                    m.group
                ),
            })
        }
        Ok(m) if m.epoch > epoch => {
            mark_stale(r, g, &m);
            return Err(ReplicationError::Conflict {
                group: g.name.clone(),
                detail: stale_message(&g.name, &m),
            });
        }
        Ok(m) if m.epoch == epoch && m.pool != r.pool.pool_id => {
            return Err(ReplicationError::Conflict {
                group: g.name.clone(),
                detail: format!(
                    "{}: pool {:016x} is the primary of epoch {epoch} too; not shipping",
                    dir.display(),
                    m.pool
                ),
            })
        }
        // Older epoch, or this epoch's manifest with other settings (`group set` changed
        // them): write ours.
        Ok(m) => m.epoch < epoch || m.settings != Some(settings_of(&g.rec.lock())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(ReplicationError::remote(
                &g.name,
                "reading the manifest in",
                dir,
                e,
            ))
        }
    };
    if write {
        remote::write_manifest(dir, &our_manifest(r, g))
            .map_err(|e| ReplicationError::remote(&g.name, "writing the manifest in", dir, e))?;
        log::info!(
            "group '{}': epoch {epoch} published in {}",
            g.name,
            dir.display()
        );
    }
    w.written = true;
    serve_failback(r, g, dir)
}

fn stale_message(name: &str, m: &Manifest) -> String {
    format!(
        "taken over: epoch {} of group '{name}' belongs to pool {:016x} (its journal continues after sequence {}); this site refuses to go on as primary, its volumes are read-only; `fusevol group failback {name}` makes it the secondary",
        m.epoch, m.pool, m.start_seq
    )
}

fn mark_stale(r: &Replication, g: &Group, m: &Manifest) {
    {
        let mut rec = g.rec.lock();
        if rec.ext.handover.stale.is_some() {
            return;
        }
        rec.ext.handover.stale = Some(StaleRec {
            epoch: m.epoch,
            start_seq: m.start_seq,
            pool: m.pool,
        });
    }
    g.stale.store(true, Ordering::Release);
    if let Err(e) = r.put_group(g) {
        log::error!("group '{}': recording the newer epoch: {e}", g.name);
    }
    log::error!("group '{}': {}", g.name, stale_message(&g.name, m));
}

/// Primary: journal, as `Base` records, every region a failback request asks for, then a
/// `FailbackDone` record; each region extent by extent under its stripe lock (a host write
/// to it is wholly before or after the copy).
fn serve_failback(r: &Replication, g: &Group, dir: &Path) -> Result<(), ReplicationError> {
    let epoch = g.rec.lock().epoch;
    let path = dir.join(FailbackRequest::file_name(epoch));
    let req = match std::fs::read(&path) {
        Ok(b) => FailbackRequest::decode(&b).map_err(|source| ReplicationError::Damaged {
            path: path.clone(),
            source,
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ReplicationError::remote(&g.name, "reading", &path, e)),
    };
    if req.group != g.uid
        || req.epoch != epoch
        || req.created == g.rec.lock().ext.handover.served_created
    {
        return Ok(());
    }
    let es = r.pool.extent_size;
    let mut sent = 0u64;
    let mut buf = vec![0u8; es as usize];
    for reg in &req.regions {
        // A region names the volume by the group's name; this pool's may differ.
        let Some(vol) = r
            .volumes
            .volume(&g.local_name(&reg.volume))
            .filter(|v| r.group_of(v.id).is_some_and(|x| x.uid == g.uid))
        else {
            log::warn!(
                "group '{}': failback region of unknown volume '{}' skipped",
                g.name,
                reg.volume
            );
            continue;
        };
        let end = reg.offset.saturating_add(reg.len).min(vol.size());
        let mut pos = reg.offset;
        while pos < end {
            let lext = pos / es;
            let n = ((lext + 1) * es).min(end) - pos;
            let _st = g.lock_range(lext, lext);
            r.volumes
                .read_plain(&vol, pos, &mut buf[..n as usize])
                .map_err(|e| failback_copy(g, e.into()))?;
            g.journal()
                .append(RecordKind::Base, vol.id, pos, n, &buf[..n as usize])
                .map_err(|e| failback_copy(g, ReplicationError::journal(&g.name, e)))?;
            sent += n;
            pos += n;
        }
    }
    g.journal()
        .append(RecordKind::FailbackDone, 0, req.pool, sent, &[])
        .map_err(|e| failback_copy(g, ReplicationError::journal(&g.name, e)))?;
    {
        let mut rec = g.rec.lock();
        rec.ext.handover.served_created = req.created;
        rec.ext.handover.failback_bytes = sent;
    }
    r.put_group(g)?;
    log::info!(
        "group '{}': failback delta for pool {:016x} journaled: {} regions, {sent} bytes",
        g.name,
        req.pool,
        req.regions.len()
    );
    Ok(())
}

fn failback_copy(g: &Group, e: ReplicationError) -> ReplicationError {
    ReplicationError::FailbackCopy {
        group: g.name.clone(),
        source: Box::new(e),
    }
}

/// Secondary: the delta asked for by this site's failback is complete.
pub(crate) fn failback_done(
    r: &Replication,
    g: &Group,
    rec: &JournalRecord,
) -> Result<(), ReplicationError> {
    if rec.head.offset != r.pool.pool_id {
        return Ok(());
    }
    let done = {
        let mut gr = g.rec.lock();
        let f = gr.ext.handover.failback.take();
        gr.ext.handover.failback_bytes = rec.head.length;
        if f.is_some() {
            gr.consistent_since = now_ns() / 1_000_000_000;
        }
        f
    };
    r.put_group(g)?;
    let Some(f) = done else { return Ok(()) };
    g.publish(
        "failback-finished",
        serde_json::json!({"seq": rec.head.seq, "bytes": rec.head.length, "state": "consistent"}),
    );
    log::info!(
        "group '{}': failback complete at sequence {} ({} bytes of delta); consistent",
        g.name,
        rec.head.seq,
        rec.head.length
    );
    if !f.keep {
        let vols: Vec<u64> = g.rec.lock().volumes.iter().map(|(l, _)| *l).collect();
        for id in vols {
            let Some(v) = r.volumes.volume_by_id(id) else {
                continue;
            };
            let snap = r.snapshots.reg.read().get(v.id, &f.snapshot).cloned();
            if let Some(s) = snap {
                let mut log = r.pool.meta.lock();
                r.snapshots.delete_snapshot_logged(&mut log, &s)?;
            }
        }
    }
    Ok(())
}

/// Regions of `[offset, offset+len)` per volume id, merged.
#[derive(Default)]
struct Regions(BTreeMap<u64, Vec<(u64, u64)>>);

impl Regions {
    fn add(&mut self, vol: u64, off: u64, len: u64) {
        if len > 0 {
            self.0
                .entry(vol)
                .or_default()
                .push((off, off.saturating_add(len)));
        }
    }

    /// Merged (volume id, offset, len), overlapping and touching ranges joined.
    fn merged(mut self) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        for (vol, rs) in self.0.iter_mut() {
            rs.sort_unstable();
            let mut cur: Option<(u64, u64)> = None;
            for &(a, b) in rs.iter() {
                cur = match cur {
                    Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
                    Some((ca, cb)) => {
                        out.push((*vol, ca, cb - ca));
                        Some((a, b))
                    }
                    None => Some((a, b)),
                };
            }
            if let Some((a, b)) = cur {
                out.push((*vol, a, b - a));
            }
        }
        out
    }
}

impl Replication {
    fn group_named(&self, name: &str) -> Result<Arc<Group>, PoolError> {
        self.group_by_name(name)
            .ok_or_else(|| ReplicationError::NoGroup(name.to_string()).into_pool())
    }

    /// Replace a group's run-time object (its role changed): the old one's workers are
    /// stopped, the volumes point at the new one (each under its exclusive io lock, so no
    /// write is half on either side).
    fn swap_group(&self, old: &Group, new: &Arc<Group>, keep: &[u64]) {
        old.gone.store(true, Ordering::Release);
        for h in [old.worker.lock().take(), old.base_worker.lock().take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
        self.groups.write().insert(new.uid, new.clone());
        for v in self.volumes.volume_list() {
            if self.group_of(v.id).is_some_and(|x| x.uid == old.uid) {
                let _io = v.io_lock.write();
                self.set_member(v.id, keep.contains(&v.id).then(|| new.clone()));
            }
        }
    }

    /// Make the secondary of `name` its primary under a new epoch: apply every complete
    /// record in the remote directory (or up to the marker `at_marker`), make the volumes
    /// writable, start a journal that continues the sequence numbers, and publish the new
    /// epoch in the remote directory (later, by the shipper, when it is not reachable now).
    /// Returns what it did: where it stopped and why, what was asked for.
    pub fn group_takeover(
        self: &Arc<Self>,
        name: &str,
        at_marker: Option<&str>,
    ) -> Result<String, PoolError> {
        let g = self.group_named(name)?;
        if g.is_primary() {
            return Err(PoolError::Invalid(format!(
                "journal group '{name}' is already the primary here"
            )));
        }
        {
            let r = g.rec.lock();
            super::full::refuse_takeover(&r)?;
            if r.consistent_since == 0 || !r.base_pending.is_empty() {
                return Err(PoolError::Busy(format!(
                    "the secondary of journal group '{name}' is not consistent yet ({}); its volumes are no usable image to take over",
                    if r.ext.handover.failback.is_some() {
                        "the failback delta is not in"
                    } else {
                        "the initial copy is not complete"
                    }
                )));
            }
        }
        // Stop the applier; this thread applies what is left.
        g.halt.store(true, Ordering::Release);
        if let Some(h) = g.worker.lock().take() {
            let _ = h.join();
        }
        let restart = |e: PoolError| {
            g.rt.lock().apply_upto = None;
            g.halt.store(false, Ordering::Release);
            start_applier(self, &g);
            e
        };
        let dir = remote::group_dir(&g.remote, name);
        let mut detail = String::new();
        let marker_seq = match at_marker {
            Some(marker) => {
                let seq =
                    find_marker(self, &g, &dir, marker).map_err(|e| restart(e.into_pool()))?;
                g.rt.lock().apply_upto = Some(seq);
                Some(seq)
            }
            None => None,
        };
        let stopped = loop {
            match apply_available(self, &g) {
                Ok(true) => continue,
                Ok(false) => break None,
                Err(e) => break Some(e),
            }
        };
        g.rt.lock().apply_upto = None;
        let applied = g.rec.lock().synced;
        if let (Some(marker), Some(seq)) = (at_marker, marker_seq) {
            if applied != seq {
                let text = format!(
                    "group '{name}': could not apply up to marker '{marker}' (applied up to sequence {applied}{})",
                    stopped.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                );
                return Err(restart(match stopped {
                    Some(e) => e.into_pool_saying(text),
                    None => PoolError::Invalid(text),
                }));
            }
            detail.push_str(&format!("stopped at marker '{marker}'; "));
        } else if let Some(e) = &stopped {
            detail.push_str(&format!("records after {applied} not applied: {e}; "));
        }
        let manifest = remote::read_manifest(&dir).ok();
        let manifest_epoch = manifest.as_ref().map(|m| m.epoch).unwrap_or(0);
        let mut rec: GroupRec = g.rec.lock().clone();
        // The old primary's journal settings carry over (the defaults below fill what an
        // older manifest did not publish).
        if let Some(st) = manifest.and_then(|m| m.settings) {
            rec.segment_bytes = st.segment_bytes;
            rec.seal_age_ms = st.seal_age_ms;
            rec.rate = st.rate;
            rec.journal_limit = st.journal_limit;
            rec.ext.full.policy = st.policy;
            rec.ext.full.block_timeout_ms = st.block_timeout_ms;
        }
        let epoch = rec.epoch.max(manifest_epoch) + 1;
        rec.role = ROLE_PRIMARY;
        rec.epoch = epoch;
        rec.volumes = rec.volumes.iter().map(|&(l, _)| (l, l)).collect();
        rec.acked = applied;
        rec.synced_time = 0;
        rec.consistent_since = 0;
        let dflt = JournalConfig::default();
        if rec.segment_bytes == 0 {
            rec.segment_bytes = dflt.segment_bytes;
        }
        if rec.seal_age_ms == 0 {
            rec.seal_age_ms = dflt.seal_age.as_millis() as u64;
        }
        if rec.journal_limit == 0 {
            rec.journal_limit = super::ops::DEFAULT_JOURNAL_LIMIT;
        }
        rec.ext.handover = HandoverRec {
            start_seq: applied,
            ..Default::default()
        };
        // A journal directory left from an earlier time as primary is of an older epoch.
        let jdir = self.journal_dir(name);
        if jdir.exists() {
            std::fs::remove_dir_all(&jdir).map_err(|e| {
                let text = format!(
                    "group '{name}': removing the old journal {}: {e}",
                    jdir.display()
                );
                let e = ReplicationError::File {
                    op: "removing the old journal",
                    path: jdir.clone(),
                    source: e,
                };
                restart(e.into_pool_saying(text))
            })?;
        }
        let journal = self.open_journal(&rec).map_err(restart)?;
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::GroupPut(Box::new(rec.clone())))?;
        let keep: Vec<u64> = rec.volumes.iter().map(|(l, _)| *l).collect();
        let ng = Arc::new(Group::new(rec, Some(journal), self.pool.events.clone()));
        self.swap_group(&g, &ng, &keep);
        self.pool.sync()?;
        let published = remote::ensure_group_dir(&ng.remote, name)
            .and_then(|d| remote::write_manifest(&d, &our_manifest(self, &ng)));
        match published {
            Ok(()) => detail.push_str(&format!("epoch {epoch} published in {}", dir.display())),
            Err(e) => {
                log::warn!("group '{name}': epoch {epoch} not published yet: {e}");
                detail.push_str(&format!(
                    "epoch {epoch} not published yet ({e}); the shipper publishes it when the remote directory is back"
                ));
            }
        }
        start_shipper(self, &ng);
        ng.publish(
            "takeover",
            serde_json::json!({"seq": applied, "epoch": epoch, "state": "primary"}),
        );
        ng.publish(
            "epoch",
            serde_json::json!({"epoch": epoch, "by": "takeover", "role": "primary"}),
        );
        log::warn!(
            "group '{name}': TAKEOVER at sequence {applied}: this site is the primary of epoch {epoch}; volumes writable"
        );
        Ok(detail)
    }

    /// Make an old primary (taken over by the other site) the secondary of the new epoch:
    /// ask the new primary for the regions this site wrote after the takeover point (known
    /// from its own journal), keep a snapshot of its volumes until that delta is applied,
    /// and apply the new primary's journal from the takeover point. Returns what it did:
    /// the regions asked for and the snapshot that holds this site's last image.
    pub fn group_failback(
        self: &Arc<Self>,
        name: &str,
        keep_snapshot: bool,
    ) -> Result<String, PoolError> {
        let g = self.group_named(name)?;
        if !g.is_primary() {
            return Err(PoolError::Invalid(format!(
                "journal group '{name}' is a secondary here; failback runs on the old primary"
            )));
        }
        let dir = remote::group_dir(&g.remote, name);
        let m = remote::read_manifest(&dir).map_err(|e| {
            let text = format!("group '{name}': failback needs the remote directory: {e}");
            ReplicationError::remote(name, "reading the manifest in", &dir, e)
                .into_pool_saying(text)
        })?;
        let (epoch, uid) = (g.rec.lock().epoch, g.uid);
        if m.group != uid || m.epoch <= epoch {
            return Err(PoolError::Invalid(format!(
                "journal group '{name}' has not been taken over: {} names epoch {} and this site is the primary of epoch {epoch}",
                dir.display(),
                m.epoch
            )));
        }
        mark_stale(self, &g, &m);
        // The shipper sees the stale flag and ends; the base copier ends with `gone`.
        g.gone.store(true, Ordering::Release);
        for h in [g.worker.lock().take(), g.base_worker.lock().take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
        let since = g
            .rec
            .lock()
            .ext
            .handover
            .stale
            .as_ref()
            .map_or(m.start_seq, |s| s.start_seq.min(m.start_seq));
        let regions = self
            .diverged_regions(&g, since)
            .map_err(|e| ReplicationError::in_group(name, e).into_pool())?;
        // Volumes by name: the new primary's ids.
        let theirs: BTreeMap<&str, u64> = m.volumes.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let ours: Vec<_> = g
            .rec
            .lock()
            .volumes
            .iter()
            .filter_map(|(l, _)| self.volumes.volume_by_id(*l))
            .collect();
        let mut req = FailbackRequest {
            group: uid,
            epoch: m.epoch,
            pool: self.pool.pool_id,
            created: now_ns(),
            regions: Vec::new(),
        };
        // The manifest and the request name volumes by the group's names (rename.rs).
        for (vid, off, len) in regions {
            if let Some(v) = ours.iter().find(|v| v.id == vid) {
                let gname = g.group_name(&v.name);
                if theirs.contains_key(gname.as_str()) {
                    req.regions.push(FailbackRegion {
                        volume: gname,
                        offset: off,
                        len,
                    });
                }
            }
        }
        let requested: u64 = req.regions.iter().map(|r| r.len).sum();
        remote::write_whole(&dir, &FailbackRequest::file_name(m.epoch), &req.encode()).map_err(
            |e| {
                let text = format!(
                    "group '{name}': writing the failback request in {}: {e}",
                    dir.display()
                );
                ReplicationError::remote(name, "writing the failback request in", &dir, e)
                    .into_pool_saying(text)
            },
        )?;
        // This site's image as primary, kept until the delta is applied.
        let snap = format!("failback-e{}", m.epoch);
        for v in &ours {
            if self.snapshots.reg.read().get(v.id, &snap).is_some() {
                continue;
            }
            let _io = v.io_lock.write();
            let mut log = self.pool.meta.lock();
            self.snapshots.snapshot_locked(&mut log, v, &snap)?;
        }
        let mut rec = g.rec.lock().clone();
        rec.role = ROLE_SECONDARY;
        rec.epoch = m.epoch;
        rec.volumes = ours
            .iter()
            .filter_map(|v| {
                let gname = rec.ext.rename.group_name(&v.name);
                theirs.get(gname.as_str()).map(|&p| (v.id, p))
            })
            .collect();
        rec.synced = m.start_seq;
        rec.acked = m.start_seq;
        rec.synced_time = 0;
        rec.base_pending.clear();
        rec.consistent_since = 0;
        // The suspension bitmap went into the failback request; a secondary has none.
        rec.ext.full = crate::format::group::FullRec {
            policy: rec.ext.full.policy,
            block_timeout_ms: rec.ext.full.block_timeout_ms,
            ..Default::default()
        };
        rec.ext.handover = HandoverRec {
            start_seq: m.start_seq,
            failback: Some(FailbackRec {
                snapshot: snap.clone(),
                keep: keep_snapshot,
                requested,
                regions: req.regions.len() as u64,
            }),
            ..Default::default()
        };
        let keep: Vec<u64> = rec.volumes.iter().map(|(l, _)| *l).collect();
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::GroupPut(Box::new(rec.clone())))?;
        let ng = Arc::new(Group::new(rec, None, self.pool.events.clone()));
        self.swap_group(&g, &ng, &keep);
        self.pool.sync()?;
        let jdir = self.journal_dir(name);
        if let Err(e) = std::fs::remove_dir_all(&jdir) {
            log::warn!("group '{name}': removing {}: {e}", jdir.display());
        }
        for v in &ours {
            self.pool.notify(v.id);
        }
        start_applier(self, &ng);
        ng.publish(
            "failback",
            serde_json::json!({"epoch": m.epoch, "from_seq": m.start_seq, "regions": req.regions.len(), "snapshot": snap}),
        );
        ng.publish(
            "epoch",
            serde_json::json!({"epoch": m.epoch, "by": "failback", "role": "secondary"}),
        );
        log::warn!(
            "group '{name}': FAILBACK: this site is now the secondary of epoch {} from sequence {}; asked for {} regions ({requested} bytes); snapshot '{snap}' holds its last image as primary",
            m.epoch,
            m.start_seq,
            req.regions.len()
        );
        Ok(format!(
            "asked the new primary for {} regions ({requested} bytes) written here after sequence {}; snapshot '{snap}' holds this site's last image as primary{}",
            req.regions.len(),
            m.start_seq,
            if keep_snapshot { " (kept)" } else { " until the delta is applied" }
        ))
    }

    /// The regions this (old primary) site's journal wrote after sequence `since`.
    fn diverged_regions(
        &self,
        g: &Group,
        since: u64,
    ) -> Result<Vec<(u64, u64, u64)>, ReplicationError> {
        let j = g.journal();
        j.seal()
            .map_err(|e| ReplicationError::journal(&g.name, e))?;
        let epoch = g.rec.lock().epoch;
        let mut regions = Regions::default();
        // Regions written while suspended (journal full) are in no journal record.
        for (vol, b) in g.rec.lock().ext.full.dirty.iter() {
            for x in b.iter() {
                regions.add(*vol, x * self.pool.extent_size, self.pool.extent_size);
            }
        }
        for seg in j.sealed_after(since) {
            let s = read_sealed(&seg.path, (g.uid, epoch))
                .map_err(|e| ReplicationError::journal(&g.name, e))?;
            for r in s.records.iter().filter(|r| r.head.seq > since) {
                let h = &r.head;
                match h.kind {
                    RecordKind::Write | RecordKind::Base | RecordKind::Zero => {
                        regions.add(h.volume, h.offset, h.length)
                    }
                    RecordKind::VolumeResize => {
                        let size = self.volumes.volume_by_id(h.volume).map_or(0, |v| v.size());
                        regions.add(h.volume, 0, size.max(h.length));
                    }
                    _ => {}
                }
            }
        }
        Ok(regions.merged())
    }
}

/// The sequence number of the marker `name` in the published segments after what is applied.
fn find_marker(
    r: &Replication,
    g: &Group,
    dir: &Path,
    name: &str,
) -> Result<u64, ReplicationError> {
    let (applied, epoch, vols) = {
        let rec = g.rec.lock();
        (rec.synced, rec.epoch, rec.volumes.clone())
    };
    let taken = vols
        .iter()
        .any(|(l, _)| r.snapshots.reg.read().get(*l, name).is_some());
    if taken {
        return Err(ReplicationError::BadRequest(format!(
            "group '{}': marker '{name}' is already applied here; the volumes are past it (its snapshots hold that image)",
            g.name
        )));
    }
    let list: Vec<(u64, PathBuf)> = remote::list_published(dir)
        .map_err(|e| ReplicationError::remote(&g.name, "listing", dir, e))?;
    for (_, path) in list {
        let Some((_, e)) = path
            .file_name()
            .and_then(|n| parse_published(&n.to_string_lossy()))
        else {
            continue;
        };
        if e != epoch {
            continue;
        }
        let seg = read_sealed(&path, (g.uid, epoch))
            .map_err(|e| ReplicationError::journal(&g.name, e))?;
        for rec in seg.records.iter().filter(|x| x.head.seq > applied) {
            if rec.head.kind == RecordKind::Marker && rec.name().ok().as_deref() == Some(name) {
                return Ok(rec.head.seq);
            }
        }
    }
    Err(ReplicationError::NotFound(format!(
        "group '{}': no marker '{name}' in {} after sequence {applied}",
        g.name,
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_epoch_from_2_on() {
        assert_eq!(
            published_name("00000000000000000007.jseg", 1),
            "00000000000000000007.jseg"
        );
        let n = published_name("00000000000000000007.jseg", 3);
        assert_eq!(n, "00000000000000000007.e3.jseg");
        assert_eq!(parse_published(&n), Some((7, 3)));
        assert_eq!(parse_published("00000000000000000007.jseg"), Some((7, 1)));
        assert_eq!(parse_published(".00000000000000000007.jseg.tmp"), None);
        assert_eq!(parse_published("x.e2.jseg"), None);
        assert_eq!(parse_published("manifest"), None);
    }

    #[test]
    fn regions_merge_overlaps_and_neighbours() {
        let mut r = Regions::default();
        r.add(1, 8192, 4096);
        r.add(1, 0, 4096);
        r.add(1, 4096, 100);
        r.add(1, 100_000, 10);
        r.add(2, 5, 5);
        r.add(2, 0, 0);
        assert_eq!(
            r.merged(),
            vec![(1, 0, 4196), (1, 8192, 4096), (1, 100_000, 10), (2, 5, 5)]
        );
    }

    #[test]
    fn sweep_moves_older_epochs_aside_and_refuses_newer() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("00000000000000000001.jseg"), b"a").unwrap();
        std::fs::write(d.join("00000000000000000005.e2.jseg"), b"b").unwrap();
        std::fs::write(d.join("manifest"), b"m").unwrap();
        sweep_other_epochs("g", d, 2).unwrap();
        assert!(d.join(STALE_DIR).join("00000000000000000001.jseg").exists());
        assert!(d.join("00000000000000000005.e2.jseg").exists());
        assert!(d.join("manifest").exists());
        let e = sweep_other_epochs("g", d, 1).unwrap_err().to_string();
        assert!(e.contains("newer epoch 2"), "{e}");
    }
}
