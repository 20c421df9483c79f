//! Pair operations: create, split (steady, quick, group), resync, restore, delete, status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{copier, Mirror, Pair, PairMut, PairState, DEFAULT_COPY_RATE, SPLIT_SNAPSHOT_PREFIX};
use crate::bitmap::Bitmap;
use crate::format::MetaRecord;
use crate::meta::PairSt;
use crate::pool::PoolError;
use crate::volume::Volume;

/// How long a steady split waits for the copy before giving up.
const STEADY_SPLIT_WAIT: Duration = Duration::from_secs(24 * 3600);

impl Mirror {
    fn vol_or_err(&self, name: &str) -> Result<Arc<Volume>, PoolError> {
        self.volumes
            .volume(name)
            .ok_or_else(|| PoolError::NotFound(format!("volume '{name}' does not exist")))
    }

    /// The pair whose P-VOL is `pvol`.
    pub fn pair_of(&self, pvol: &str) -> Result<Arc<Pair>, PoolError> {
        let v = self.vol_or_err(pvol)?;
        self.pairs.read().of_pvol(v.id).cloned().ok_or_else(|| {
            PoolError::NotFound(format!("volume '{pvol}' is not the P-VOL of a pair"))
        })
    }

    /// Placement: the S-VOL keeps to arrays of its tier that hold none of the P-VOL's
    /// extents, and the P-VOL keeps off those. Returns whether such arrays exist.
    fn place_pair(&self, p: &Volume, s: &Volume) -> bool {
        let p_arrays: std::collections::HashSet<u32> =
            p.map.read().iter_mapped().map(|(_, ph)| ph.array).collect();
        let al = self.pool.alloc.lock();
        let s_set: Vec<u32> = al
            .tier_arrays(&s.tier)
            .into_iter()
            .filter(|a| !p_arrays.contains(a))
            .collect();
        if s_set.is_empty() {
            return false;
        }
        let p_set: Vec<u32> = al
            .tier_arrays(&p.tier)
            .into_iter()
            .filter(|a| !s_set.contains(a))
            .collect();
        *s.allowed_arrays.write() = Some(s_set);
        if !p_set.is_empty() {
            *p.allowed_arrays.write() = Some(p_set);
        }
        true
    }

    fn attach(&self, pair: &Arc<Pair>) {
        self.pairs.write().insert(pair.clone());
    }

    /// Refuse an operation on a paired volume (delete, resize, rollback, grouping).
    pub(crate) fn refuse_paired(&self, vol: &Volume, what: &str) -> Result<(), PoolError> {
        if let Some((pair, _)) = self.pair_of_volume(vol.id) {
            return Err(PoolError::Busy(format!(
                "volume '{}' is in the pair {} → {}; it cannot be {what} until `fusevol pair delete {}`",
                vol.name, pair.pvol.name, pair.svol.name, pair.pvol.name
            )));
        }
        Ok(())
    }

    /// Pair `pvol` with `svol` and start the initial copy.
    #[allow(clippy::too_many_arguments)]
    pub fn create_pair(
        self: &Arc<Self>,
        pvol: &str,
        svol: &str,
        create_svol: bool,
        svol_tier: Option<&str>,
        group: Option<&str>,
        rate: Option<u64>,
    ) -> Result<Arc<Pair>, PoolError> {
        let p = self.vol_or_err(pvol)?;
        if let Some(g) = group {
            crate::names::validate("group", g).map_err(PoolError::Invalid)?;
        }
        let s = match self.volumes.volume(svol) {
            Some(s) => s,
            None if create_svol => {
                let tier = svol_tier.unwrap_or(&p.tier);
                self.volumes.create_volume(svol, p.size(), Some(tier))?.0
            }
            None => {
                return Err(PoolError::NotFound(format!(
                    "volume '{svol}' does not exist (use --create-svol to create it)"
                )))
            }
        };
        // Journal-group membership is checked by the top-level owner before this is called.
        if p.id == s.id {
            return Err(PoolError::Invalid(
                "a volume cannot be paired with itself".into(),
            ));
        }
        for v in [&p, &s] {
            if self.pair_of_volume(v.id).is_some() {
                return Err(PoolError::Busy(format!(
                    "volume '{}' is already in a pair",
                    v.name
                )));
            }
        }
        if s.size() < p.size() {
            return Err(PoolError::Invalid(format!(
                "S-VOL '{svol}' ({} bytes) is smaller than P-VOL '{pvol}' ({} bytes)",
                s.size(),
                p.size()
            )));
        }
        let separate = self.place_pair(&p, &s);
        // Writes to the P-VOL are drained while the pair comes into being: every write
        // after this point is mirrored.
        let _pio = p.io_lock.write();
        let _sio = s.io_lock.write();
        let mut log = self.pool.meta.lock();
        let id = self.pool.take_id();
        let rate = rate.filter(|&r| r > 0).unwrap_or(DEFAULT_COPY_RATE);
        let group = group.unwrap_or("").to_string();
        log.append(&MetaRecord::PairCreate {
            id,
            pvol: p.id,
            svol: s.id,
            group: group.clone(),
            rate,
        })?;
        let mut todo = Bitmap::new();
        for v in [&p, &s] {
            for (l, _) in v.map.read().iter_mapped() {
                todo.set(l);
            }
        }
        let pair = Arc::new(Pair::new(
            id,
            p.clone(),
            s.clone(),
            group,
            separate,
            PairMut {
                state: PairState::Copy,
                copy_total: todo.count(),
                todo,
                p_dirty: Bitmap::new(),
                s_dirty: Bitmap::new(),
                split_snap: None,
                error: None,
                rate_limit: rate,
                rate: 0,
                rate_window: (Instant::now(), 0),
                copied_unrecorded: Bitmap::new(),
                touched: Bitmap::new(),
                inflight: Default::default(),
            },
            &self.pool,
        ));
        self.attach(&pair);
        drop(log);
        self.pool.events.publish(
            "pair",
            pvol,
            "created",
            serde_json::json!({"svol": svol, "state": "COPY", "group": pair.group}),
        );
        pair.publish_copy_started(&pair.st.lock());
        copier::ensure(self, &pair);
        log::info!(
            "pair {pvol} → {svol} created (COPY){}",
            if separate {
                ""
            } else {
                "; the S-VOL shares arrays with the P-VOL"
            }
        );
        Ok(pair)
    }

    /// Split pairs at one instant (see `Request::PairSplit`).
    pub fn split_pairs(
        self: &Arc<Self>,
        pvols: &[String],
        group: Option<&str>,
        quick: bool,
    ) -> Result<Vec<Arc<Pair>>, PoolError> {
        let mut pairs: Vec<Arc<Pair>> = Vec::new();
        for pv in pvols {
            pairs.push(self.pair_of(pv)?);
        }
        if let Some(g) = group {
            let members: Vec<Arc<Pair>> = self
                .pairs
                .read()
                .by_id
                .values()
                .filter(|p| p.group == g)
                .cloned()
                .collect();
            if members.is_empty() {
                return Err(PoolError::NotFound(format!("no pair is in group '{g}'")));
            }
            pairs.extend(members);
        }
        if pairs.is_empty() {
            return Err(PoolError::Invalid("name P-VOLs or a group to split".into()));
        }
        pairs.sort_by_key(|p| p.id);
        pairs.dedup_by_key(|p| p.id);
        let deadline = Instant::now() + STEADY_SPLIT_WAIT;
        loop {
            if !quick {
                // Steady: wait until every pair is in sync.
                for p in &pairs {
                    let mut m = p.st.lock();
                    while m.state == PairState::Copy
                        || m.state == PairState::CopyRs
                        || m.state == PairState::CopyRsR
                    {
                        if p.changed.wait_until(&mut m, deadline).timed_out() {
                            return Err(PoolError::Busy(format!(
                                "pair {} is still {} after waiting",
                                p.pvol.name,
                                m.state.name()
                            )));
                        }
                    }
                }
            }
            // All P-VOLs stop writing at one instant.
            let guards: Vec<_> = pairs.iter().map(|p| p.pvol.io_lock.write()).collect();
            let ok = |s: PairState| {
                if quick {
                    matches!(s, PairState::Copy | PairState::Pair | PairState::CopyRs)
                } else {
                    s == PairState::Pair
                }
            };
            if let Some(bad) = pairs.iter().find(|p| !ok(p.state())) {
                let s = bad.state();
                if !quick && matches!(s, PairState::Copy | PairState::CopyRs | PairState::CopyRsR) {
                    drop(guards);
                    continue; // went back to copying meanwhile: wait again
                }
                return Err(PoolError::Busy(format!(
                    "pair {} is {}; it can be split from {}",
                    bad.pvol.name,
                    s.name(),
                    if quick {
                        "COPY, PAIR or COPY(RS)"
                    } else {
                        "PAIR (or COPY with --quick)"
                    }
                )));
            }
            // With the writes stopped, make every dual write so far durable on both sides:
            // the split image is then on disk, and the write intents can go with the split.
            if pairs.iter().any(|p| !p.st.lock().p_dirty.is_empty()) {
                self.pool.sync()?;
            }
            let mut log = self.pool.meta.lock();
            let mut snaps = Vec::new();
            for p in &pairs {
                let needs_copy = !p.st.lock().todo.is_empty();
                if needs_copy {
                    let name = format!("{SPLIT_SNAPSHOT_PREFIX}{}", p.id);
                    let s = self.snapshots.snapshot_locked(&mut log, &p.pvol, &name)?;
                    snaps.push((p.id, s));
                }
            }
            log.append(&MetaRecord::PairSplit {
                pairs: pairs.iter().map(|p| p.id).collect(),
                snaps: snaps.iter().map(|(p, s)| (*p, s.id)).collect(),
            })?;
            for p in &pairs {
                let mut m = p.st.lock();
                // The write intents of the dual-write state are void: the sync above made
                // every dual write durable on both sides.
                m.p_dirty.clear_all();
                m.s_dirty.clear_all();
                m.touched.clear_all();
                m.error = None;
                m.split_snap = snaps
                    .iter()
                    .find(|(id, _)| *id == p.id)
                    .map(|(_, s)| s.clone());
                p.set_state(&mut m, PairState::Psus);
            }
            drop(log);
            drop(guards);
            for p in &pairs {
                copier::ensure(self, p);
                log::info!(
                    "pair {} → {} split ({})",
                    p.pvol.name,
                    p.svol.name,
                    if quick { "quick" } else { "steady" }
                );
            }
            return Ok(pairs);
        }
    }

    /// Resync (P→S) or restore (S→P) a split or suspended pair.
    pub fn resync_pair(
        self: &Arc<Self>,
        pvol: &str,
        restore: bool,
        rate: Option<u64>,
    ) -> Result<Arc<Pair>, PoolError> {
        let pair = self.pair_of(pvol)?;
        self.resync_locked(&pair, restore, rate)?;
        if restore {
            // P-VOL reads of regions not yet restored come from the S-VOL from now on.
            self.pool.notify(pair.pvol.id);
        }
        copier::ensure(self, &pair);
        log::info!(
            "pair {pvol}: {}",
            if restore {
                "restore (COPY(RS-R))"
            } else {
                "resync (COPY(RS))"
            }
        );
        Ok(pair)
    }

    fn resync_locked(
        &self,
        pair: &Arc<Pair>,
        restore: bool,
        rate: Option<u64>,
    ) -> Result<(), PoolError> {
        let pvol = &pair.pvol.name;
        let _pio = pair.pvol.io_lock.write();
        let _sio = pair.svol.io_lock.write();
        let mut log = self.pool.meta.lock();
        let mut m = pair.st.lock();
        if !matches!(m.state, PairState::Psus | PairState::Psue) {
            return Err(PoolError::Busy(format!(
                "pair {pvol} is {}; resync needs PSUS or PSUE",
                m.state.name()
            )));
        }
        if restore && m.split_snap.is_some() {
            return Err(PoolError::Busy(format!(
                "pair {pvol}: the quick split's copy is still filling the S-VOL; restore once it completes"
            )));
        }
        let rate = rate.filter(|&r| r > 0).unwrap_or(m.rate_limit);
        log.append(&MetaRecord::PairResync {
            id: pair.id,
            restore,
            rate,
        })?;
        let (pd, sd) = (
            std::mem::take(&mut m.p_dirty),
            std::mem::take(&mut m.s_dirty),
        );
        m.todo.union_with(&pd);
        m.todo.union_with(&sd);
        m.copy_total = m.todo.count();
        m.rate_limit = rate;
        m.error = None;
        let snap = m.split_snap.take();
        pair.set_state(
            &mut m,
            if restore {
                PairState::CopyRsR
            } else {
                PairState::CopyRs
            },
        );
        drop(m);
        if let Some(s) = snap {
            self.snapshots.delete_snapshot_logged(&mut log, &s)?;
        }
        Ok(())
    }

    /// Dissolve a pair; both volumes keep their data.
    pub fn delete_pair(&self, pvol: &str) -> Result<(), PoolError> {
        let pair = self.pair_of(pvol)?;
        pair.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(h) = pair.worker.lock().take() {
            let _ = h.join();
        }
        let _pio = pair.pvol.io_lock.write();
        let _sio = pair.svol.io_lock.write();
        let mut log = self.pool.meta.lock();
        log.append(&MetaRecord::PairDelete { id: pair.id })?;
        let snap = pair.st.lock().split_snap.take();
        if let Some(s) = snap {
            self.snapshots.delete_snapshot_logged(&mut log, &s)?;
        }
        drop(log);
        self.pairs.write().remove(pair.id);
        *pair.pvol.allowed_arrays.write() = None;
        *pair.svol.allowed_arrays.write() = None;
        self.pool.notify(pair.pvol.id);
        self.pool.notify(pair.svol.id);
        self.pool.events.publish(
            "pair",
            &pair.pvol.name,
            "deleted",
            serde_json::json!({"svol": pair.svol.name, "state": "SMPL"}),
        );
        log::info!(
            "pair {} → {} deleted (SMPL)",
            pair.pvol.name,
            pair.svol.name
        );
        Ok(())
    }

    /// After recovery: rebuild the pairs, attach them to their volumes, restart copies.
    pub(crate) fn attach_pairs(self: &Arc<Self>, pairs: Vec<PairSt>) -> Result<(), PoolError> {
        let mut split_snaps = Vec::new();
        for ps in pairs {
            let (Some(p), Some(s)) = (
                self.volumes.volume_by_id(ps.pvol),
                self.volumes.volume_by_id(ps.svol),
            ) else {
                return Err(PoolError::Inconsistent(format!(
                    "pair id {} names a missing volume",
                    ps.id
                )));
            };
            let state = PairState::from_u8(ps.state).ok_or_else(|| {
                PoolError::Inconsistent(format!("pair id {} has state {}", ps.id, ps.state))
            })?;
            let split_snap = match ps.split_snap {
                0 => None,
                id => Some(self.snapshots.snapshot_by_id(id).ok_or_else(|| {
                    PoolError::Inconsistent(format!(
                        "pair id {} names missing snapshot {id}",
                        ps.id
                    ))
                })?),
            };
            if let Some(s) = &split_snap {
                split_snaps.push(s.id);
            }
            let separate = self.place_pair(&p, &s);
            let mut ps = ps;
            let mut state = state;
            if state.dual_writes() && !ps.p_dirty.is_empty() && self.pool.read_only().is_none() {
                // Write intents left by a crash: the two legs of those dual writes may differ.
                // Copy those regions again (P→S; S→P for a restore) before PAIR.
                let restore = state == PairState::CopyRsR;
                log::warn!(
                    "pair {} → {}: {} region(s) had dual writes in flight or not yet synced at the last stop; copying them again ({})",
                    p.name,
                    s.name,
                    ps.p_dirty.count(),
                    if restore { "S-VOL → P-VOL" } else { "P-VOL → S-VOL" }
                );
                let mut log = self.pool.meta.lock();
                log.append(&MetaRecord::PairResync {
                    id: ps.id,
                    restore,
                    rate: ps.rate,
                })?;
                if state == PairState::Copy {
                    // The initial copy goes on as such (only its to-do list grew).
                    log.append(&MetaRecord::PairState {
                        id: ps.id,
                        state: PairState::Copy as u8,
                        error: String::new(),
                    })?;
                }
                drop(log);
                let (pd, sd) = (
                    std::mem::take(&mut ps.p_dirty),
                    std::mem::take(&mut ps.s_dirty),
                );
                ps.todo.union_with(&pd);
                ps.todo.union_with(&sd);
                state = match state {
                    PairState::CopyRsR | PairState::Copy => state,
                    _ => PairState::CopyRs,
                };
            }
            let pair = Arc::new(Pair::new(
                ps.id,
                p,
                s,
                ps.group,
                separate,
                PairMut {
                    state,
                    copy_total: ps.todo.count(),
                    todo: ps.todo,
                    p_dirty: ps.p_dirty,
                    s_dirty: ps.s_dirty,
                    split_snap,
                    error: (!ps.error.is_empty()).then_some(ps.error),
                    rate_limit: ps.rate,
                    rate: 0,
                    rate_window: (Instant::now(), 0),
                    copied_unrecorded: Bitmap::new(),
                    touched: Bitmap::new(),
                    inflight: Default::default(),
                },
                &self.pool,
            ));
            self.attach(&pair);
            copier::ensure(self, &pair);
        }
        // A quick split cut off by a crash between its snapshot and its split record leaves
        // a snapshot nobody reads from: remove it.
        let orphans: Vec<_> = self
            .snapshots
            .reg
            .read()
            .by_id
            .values()
            .filter(|s| s.name.starts_with(SPLIT_SNAPSHOT_PREFIX) && !split_snaps.contains(&s.id))
            .cloned()
            .collect();
        for s in orphans {
            log::warn!("removing orphaned split snapshot '{}'", s.name);
            let mut log = self.pool.meta.lock();
            self.snapshots.delete_snapshot_logged(&mut log, &s)?;
        }
        Ok(())
    }

    /// Stop the background copiers (daemon shutdown; the caller has set `pool.stopping`,
    /// which is what makes them stop). Their progress is recorded.
    pub fn stop(&self) {
        let pairs: Vec<Arc<Pair>> = self.pairs.read().by_id.values().cloned().collect();
        for p in pairs {
            if let Some(h) = p.worker.lock().take() {
                let _ = h.join();
            }
        }
    }
}
