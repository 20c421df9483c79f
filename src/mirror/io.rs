//! The data path of paired volumes: dual writes, difference tracking, copy-before-access.

use std::sync::Arc;

use parking_lot::{ArcMutexGuard, RawMutex};

use super::{Mirror, Pair, PairState, Role};
use crate::extent_map::pieces;
use crate::format::MetaRecord;
use crate::pool::Access;
use crate::volume::{IoError, Volume};

/// Which bitmap a change goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    P = 0,
    S = 1,
}

/// What a paired volume's write was admitted with: the pair, the side, the state at
/// admission, the regions it touches and their owned stripe guards (held until `complete`).
pub struct MirrorAdmission {
    pair: Arc<Pair>,
    role: Role,
    state: PairState,
    regions: Vec<u64>,
    /// Whether `regions` are counted in the pair's `inflight` (a dual write).
    inflight: bool,
    /// Released when the admission is completed (or dropped, when the data write failed).
    #[allow(dead_code)]
    guards: Vec<ArcMutexGuard<RawMutex, ()>>,
}

impl MirrorAdmission {
    /// Count this dual write's regions as in flight until it is dropped.
    fn count_inflight(mut self) -> Self {
        let mut m = self.pair.st.lock();
        for &r in &self.regions {
            *m.inflight.entry(r).or_insert(0) += 1;
        }
        drop(m);
        self.inflight = true;
        self
    }
}

impl Drop for MirrorAdmission {
    fn drop(&mut self) {
        if !self.inflight {
            return;
        }
        let mut m = self.pair.st.lock();
        for r in &self.regions {
            if let Some(n) = m.inflight.get_mut(r) {
                *n -= 1;
                if *n == 0 {
                    m.inflight.remove(r);
                }
            }
        }
    }
}

/// The write-intent candidates of one pair, taken before a pool sync (see
/// [`Mirror::intent_candidates`]).
pub struct IntentPass {
    pairs: Vec<(Arc<Pair>, Vec<u64>)>,
}

impl Mirror {
    /// Record that `regions` change on one side, durably, before the change is made.
    pub(crate) fn mark_dirty(
        &self,
        pair: &Pair,
        side: Side,
        regions: &[u64],
    ) -> Result<(), IoError> {
        let new: Vec<u64> = {
            let m = pair.st.lock();
            let b = if side == Side::P {
                &m.p_dirty
            } else {
                &m.s_dirty
            };
            regions
                .iter()
                .copied()
                .filter(|&r| !b.contains(r))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let vol = if side == Side::P {
            &pair.pvol
        } else {
            &pair.svol
        };
        let err = |source| IoError::Meta {
            volume: vol.name.clone(),
            source,
        };
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::PairDirty {
                id: pair.id,
                side: side as u8,
                regions: new.clone(),
            })
            .map_err(err)?;
        // Write-intent: the bit is durable before the data it covers can be.
        self.pool.sync_log().map_err(err)?;
        let mut m = pair.st.lock();
        let b = if side == Side::P {
            &mut m.p_dirty
        } else {
            &mut m.s_dirty
        };
        for r in new {
            b.set(r);
        }
        Ok(())
    }

    /// Dual-write states: record the write intent of the units around `regions` durably
    /// before the write (one log sync for the first write to a unit), and note the regions
    /// as touched so the cleaning pass leaves them set.
    fn mark_intent(&self, pair: &Pair, regions: &[u64]) -> Result<(), IoError> {
        let es = self.pool.extent_size;
        let per_unit = (super::INTENT_UNIT / es).max(1);
        let last = pair.pvol.size().max(pair.svol.size()).div_ceil(es);
        let mut units: Vec<u64> = Vec::new();
        {
            let mut m = pair.st.lock();
            for &r in regions {
                m.touched.set(r);
                if !m.p_dirty.contains(r) {
                    units.push(r / per_unit);
                }
            }
        }
        if units.is_empty() {
            return Ok(());
        }
        units.dedup();
        let all: Vec<u64> = units
            .iter()
            .flat_map(|u| u * per_unit..((u + 1) * per_unit).min(last.max(u * per_unit + 1)))
            .collect();
        self.mark_dirty(pair, Side::P, &all)
    }

    /// Before a pool sync: for every pair in a dual-write state, the intent bits no write
    /// touched since the last pass and none has in flight. The touched marks start afresh.
    pub fn intent_candidates(&self) -> IntentPass {
        let mut pairs = Vec::new();
        for pair in self.pair_list() {
            let mut m = pair.st.lock();
            if !m.state.dual_writes() || m.p_dirty.is_empty() {
                m.touched.clear_all();
                continue;
            }
            let cand: Vec<u64> = m
                .p_dirty
                .iter()
                .filter(|r| !m.touched.contains(*r) && !m.inflight.contains_key(r))
                .collect();
            m.touched.clear_all();
            if !cand.is_empty() {
                pairs.push((pair.clone(), cand));
            }
        }
        IntentPass { pairs }
    }

    /// After the pool sync that followed `pass` succeeded: clear the candidates no write
    /// touched meanwhile (their writes are durable on both sides). The clearing record is
    /// not synced: losing it only makes a recovery copy more.
    pub fn clean_intents(&self, pass: IntentPass) {
        for (pair, cand) in pass.pairs {
            let mut log = self.pool.meta.lock();
            let mut m = pair.st.lock();
            if !m.state.dual_writes() {
                continue;
            }
            let clear: Vec<u64> = cand
                .into_iter()
                .filter(|r| {
                    m.p_dirty.contains(*r) && !m.touched.contains(*r) && !m.inflight.contains_key(r)
                })
                .collect();
            if clear.is_empty() {
                continue;
            }
            // Appended under both locks: an admission that finds a bit clear appends its
            // intent after this record, so a replay never ends with an intent cleared
            // under a write in flight.
            if let Err(e) = log.append(&MetaRecord::PairDirty {
                id: pair.id,
                side: 2,
                regions: clear.clone(),
            }) {
                log::warn!("pair {}: clearing write intents: {e}", pair.pvol.name);
                continue;
            }
            for r in clear {
                m.p_dirty.clear(r);
            }
        }
    }

    /// Move a pair to PSUE (dual write or copy failed); the P-VOL goes on.
    pub(crate) fn suspend(&self, pair: &Pair, reason: String) {
        {
            let mut m = pair.st.lock();
            if m.state == PairState::Psue || !(m.state.dual_writes()) {
                return;
            }
            log::error!(
                "pair {} → {}: suspended (PSUE): {reason}",
                pair.pvol.name,
                pair.svol.name
            );
            m.error = Some(reason.clone());
            pair.set_state(&mut m, PairState::Psue);
        }
        if let Err(e) = self.pool.meta.lock().append(&MetaRecord::PairState {
            id: pair.id,
            state: PairState::Psue as u8,
            error: reason,
        }) {
            log::error!("pair {}: recording PSUE: {e}", pair.pvol.name);
        }
    }

    /// Before the data write of a host write/discard/allocate of `[offset, offset+len)` on
    /// `vol` (the caller holds `vol.io_lock` shared and has clipped `len` to the volume's
    /// size). `None`: the volume is not paired. Everything the pair's rules require before
    /// the data write happens here; the admission holds the region locks until `complete`.
    pub(crate) fn admit(
        &self,
        vol: &Volume,
        offset: u64,
        len: u64,
    ) -> Result<Option<MirrorAdmission>, IoError> {
        let Some((pair, role)) = self.pair_of_volume(vol.id) else {
            return Ok(None);
        };
        let regions = self
            .pool
            .regions(offset, len.min(vol.size().saturating_sub(offset)));
        let state = pair.state();
        let mut dual = false;
        let guards = match role {
            Role::Secondary => {
                if state != PairState::Psus {
                    return Err(IoError::ReadOnly {
                        volume: vol.name.clone(),
                        why: format!(
                            "it is the S-VOL of a pair in state {} (writable once split)",
                            state.name()
                        ),
                    });
                }
                let g = pair.lock_regions(regions.iter().copied());
                self.fill_from_split(&pair, &regions)?;
                self.mark_dirty(&pair, Side::S, &regions)?;
                g
            }
            Role::Primary => match state {
                PairState::Psus | PairState::Psue => {
                    self.mark_dirty(&pair, Side::P, &regions)?;
                    Vec::new()
                }
                _ => {
                    let g = pair.lock_regions(regions.iter().copied());
                    self.mark_intent(&pair, &regions)?;
                    dual = true;
                    if state == PairState::CopyRsR {
                        self.restore_first(&pair, &regions)?;
                    }
                    g
                }
            },
        };
        let adm = MirrorAdmission {
            pair,
            role,
            state,
            regions,
            inflight: false,
            guards,
        };
        Ok(Some(if dual { adm.count_inflight() } else { adm }))
    }

    /// After the data write on the volume succeeded: the S-VOL the same operation must also
    /// be applied to (dual write), if any (failpoint `mirror::dual_target::svol_write` fails it).
    pub(crate) fn dual_target(
        &self,
        adm: &MirrorAdmission,
    ) -> Option<Result<Arc<Volume>, IoError>> {
        if adm.role != Role::Primary || !adm.state.dual_writes() {
            return None;
        }
        let pair = &adm.pair;
        // COPY / COPY(RS): a region the copy has not reached yet is copied from the
        // P-VOL later, under this same region lock, so writing it to the S-VOL now
        // would only allocate there for nothing. (After a crash it is still in
        // `todo`, because only recorded copies leave it.)
        if matches!(adm.state, PairState::Copy | PairState::CopyRs) {
            let m = pair.st.lock();
            if adm
                .regions
                .iter()
                .all(|&x| m.todo.contains(x) && !m.copied_unrecorded.contains(x))
            {
                return None;
            }
        }
        // The S-VOL leg lost, as a machine crash between the two legs loses it.
        fail::fail_point!("mirror::dual_target::lost", |_| None);
        fail::fail_point!("mirror::dual_target::svol_write", |_| Some(Err(
            IoError::Invalid {
                volume: pair.svol.name.clone(),
                detail: "failpoint mirror::dual_target::svol_write".into(),
            }
        )));
        Some(Ok(pair.svol.clone()))
    }

    /// After the dual write (its result; `None` if there was none): a failed dual write
    /// suspends the pair (PSUE) and marks the regions dirty on the P-VOL. Releases the
    /// admission's region locks.
    pub(crate) fn complete(
        &self,
        adm: MirrorAdmission,
        dual: Option<Result<usize, IoError>>,
    ) -> Result<(), IoError> {
        let pair = &adm.pair;
        if let Some(Err(e)) = dual {
            self.suspend(
                pair,
                format!("write to S-VOL '{}' failed: {e}", pair.svol.name),
            );
            self.mark_dirty(pair, Side::P, &adm.regions)?;
        }
        // The region locks (`adm.guards`) are released here, after everything above.
        drop(adm);
        Ok(())
    }

    /// COPY(RS-R): before the P-VOL's region changes, bring the S-VOL's data back into it.
    fn restore_first(&self, pair: &Pair, regions: &[u64]) -> Result<(), IoError> {
        for &r in regions {
            if pair.st.lock().todo.contains(r) {
                self.copy_region(pair, &pair.svol, None, &pair.pvol, r)?;
                // Writes go to both sides from here, so copying this region again after a
                // crash gives the same bytes: no record is needed before the write.
                pair.st.lock().todo.clear(r);
            }
        }
        Ok(())
    }

    /// Quick split, S-VOL side: a region still to be copied is filled from the split image
    /// before the host changes it, and that is recorded durably (a later copy must not
    /// overwrite the host's change).
    fn fill_from_split(&self, pair: &Pair, regions: &[u64]) -> Result<(), IoError> {
        let (snap, todo): (_, Vec<u64>) = {
            let m = pair.st.lock();
            match &m.split_snap {
                Some(s) => (
                    s.clone(),
                    regions
                        .iter()
                        .copied()
                        .filter(|&r| m.todo.contains(r))
                        .collect(),
                ),
                None => return Ok(()),
            }
        };
        if todo.is_empty() {
            return Ok(());
        }
        for &r in &todo {
            self.copy_region(pair, &pair.pvol, Some(&snap), &pair.svol, r)?;
        }
        let err = |source| IoError::Sync {
            volume: pair.svol.name.clone(),
            source,
        };
        self.pool.sync().map_err(err)?;
        self.pool
            .meta
            .lock()
            .append(&MetaRecord::PairCopied {
                id: pair.id,
                regions: todo.clone(),
            })
            .map_err(|source| IoError::Meta {
                volume: pair.svol.name.clone(),
                source,
            })?;
        self.pool.sync_log().map_err(|source| IoError::Meta {
            volume: pair.svol.name.clone(),
            source,
        })?;
        let mut m = pair.st.lock();
        for r in todo {
            m.todo.clear(r);
        }
        Ok(())
    }

    /// Copy one region from `src` (or from snapshot `snap` of it) to `dst`: the bytes where
    /// the source has data, a discard where it has a hole.
    pub(crate) fn copy_region(
        &self,
        pair: &Pair,
        src: &Volume,
        snap: Option<&Arc<crate::snapshot::Snapshot>>,
        dst: &Volume,
        region: u64,
    ) -> Result<(), IoError> {
        let es = self.pool.extent_size;
        let start = region * es;
        let (table, size) = match snap {
            Some(s) => (&s.table, s.size),
            None => (&src.map, src.size()),
        };
        let end = (start + es).min(size).min(dst.size());
        if start >= end {
            return Ok(());
        }
        let len = (end - start) as usize;
        let src_mapped = table.read().get(region).is_some();
        if !src_mapped {
            if dst.map.read().get(region).is_some() {
                self.volumes.discard_locked(dst, start, len as u64)?;
            }
            return Ok(());
        }
        let mut buf = vec![0u8; len];
        self.pool
            .read_table(table, size, &src.name, start, &mut buf, Access::Sequential)?;
        self.volumes.write_plain(dst, start, &buf)?;
        pair.st.lock().count_copied(len as u64);
        Ok(())
    }

    /// Host read of a volume: `Some(result)` when it is paired (by the pair's rules), `None`
    /// otherwise.
    pub(crate) fn read(
        &self,
        vol: &Volume,
        offset: u64,
        buf: &mut [u8],
    ) -> Option<Result<usize, IoError>> {
        let (pair, role) = self.pair_of_volume(vol.id)?;
        Some(self.mirror_read(&pair, role, vol, offset, buf))
    }

    /// Reads of a paired volume.
    fn mirror_read(
        &self,
        pair: &Arc<Pair>,
        role: Role,
        vol: &Volume,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, IoError> {
        let size = vol.size();
        if offset >= size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset);
        let (state, snap) = {
            let m = pair.st.lock();
            (m.state, m.split_snap.clone())
        };
        let redirect = match (role, state) {
            (Role::Primary, PairState::CopyRsR) => true,
            (Role::Secondary, PairState::Psus) => snap.is_some(),
            (Role::Primary, PairState::Pair) => {
                // Served from the S-VOL when the P-VOL's array fails.
                return match self.volumes.read_plain(vol, offset, buf) {
                    Err(e @ IoError::Array { .. }) => {
                        log::warn!("{e}; reading from S-VOL '{}' instead", pair.svol.name);
                        self.volumes
                            .read_plain(&pair.svol, offset, &mut buf[..len as usize])
                    }
                    r => r,
                };
            }
            _ => false,
        };
        if !redirect {
            return self.volumes.read_plain(vol, offset, buf);
        }
        for pc in pieces(offset, len, self.pool.extent_size) {
            let dst = &mut buf[pc.buf_offset..pc.buf_offset + pc.len as usize];
            dst.fill(0);
            let at = pc.lext * self.pool.extent_size + pc.offset;
            let from_other = pair.st.lock().todo.contains(pc.lext);
            match (role, from_other) {
                (Role::Primary, true) => {
                    self.volumes.read_plain(&pair.svol, at, dst)?;
                }
                (Role::Secondary, true) => {
                    let s = snap.as_ref().expect("redirect implies a split snapshot");
                    let access = vol.streams.classify(at, dst.len() as u64);
                    self.pool
                        .read_table(&s.table, s.size, &vol.name, at, dst, access)?;
                }
                _ => {
                    self.volumes.read_plain(vol, at, dst)?;
                }
            }
        }
        Ok(len as usize)
    }
}
