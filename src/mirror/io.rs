//! The data path of paired volumes: dual writes, difference tracking, copy-before-access.

use std::sync::Arc;

use super::{Pair, PairState, Role};
use crate::extent_map::pieces;
use crate::format::MetaRecord;
use crate::pool::Pool;
use crate::volume::{IoError, Volume};

/// Which bitmap a change goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    P = 0,
    S = 1,
}

impl Pool {
    pub(crate) fn regions(&self, offset: u64, len: u64) -> Vec<u64> {
        if len == 0 {
            return Vec::new();
        }
        let es = self.extent_size;
        (offset / es..=(offset + len - 1) / es).collect()
    }

    /// fdatasync of the metadata log alone (no array sync, no recycling).
    pub(crate) fn sync_log(&self) -> Result<(), crate::meta::MetaError> {
        let (handle, unsynced) = {
            let log = self.meta.lock();
            log.check_healthy()?;
            (log.sync_handle()?, log.unsynced())
        };
        if unsynced == 0 {
            return Ok(());
        }
        let res = handle.sync_data();
        self.meta.lock().mark_synced(unsynced, res)
    }

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
        self.meta
            .lock()
            .append(&MetaRecord::PairDirty {
                id: pair.id,
                side: side as u8,
                regions: new.clone(),
            })
            .map_err(err)?;
        // Write-intent: the bit is durable before the data it covers can be.
        self.sync_log().map_err(err)?;
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
        if let Err(e) = self.meta.lock().append(&MetaRecord::PairState {
            id: pair.id,
            state: PairState::Psue as u8,
            error: reason,
        }) {
            log::error!("pair {}: recording PSUE: {e}", pair.pvol.name);
        }
    }

    /// Run a data operation (`op`) on a paired volume with the pair's rules.
    pub(crate) fn mirrored<T>(
        &self,
        pair: &Arc<Pair>,
        role: Role,
        vol: &Volume,
        offset: u64,
        len: u64,
        op: impl Fn(&Volume) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        let regions = self.regions(offset, len.min(vol.size().saturating_sub(offset)));
        let state = pair.state();
        match role {
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
                let _g = pair.lock_regions(regions.iter().copied());
                self.fill_from_split(pair, &regions)?;
                self.mark_dirty(pair, Side::S, &regions)?;
                op(vol)
            }
            Role::Primary => match state {
                PairState::Psus | PairState::Psue => {
                    self.mark_dirty(pair, Side::P, &regions)?;
                    op(vol)
                }
                _ => {
                    let _g = pair.lock_regions(regions.iter().copied());
                    if state == PairState::CopyRsR {
                        self.restore_first(pair, &regions)?;
                    }
                    let r = op(vol)?;
                    // COPY / COPY(RS): a region the copy has not reached yet is copied from the
                    // P-VOL later, under this same region lock, so writing it to the S-VOL now
                    // would only allocate there for nothing. (After a crash it is still in
                    // `todo`, because only recorded copies leave it.)
                    if matches!(state, PairState::Copy | PairState::CopyRs) {
                        let m = pair.st.lock();
                        if regions
                            .iter()
                            .all(|&x| m.todo.contains(x) && !m.copied_unrecorded.contains(x))
                        {
                            return Ok(r);
                        }
                    }
                    let dual = self.svol_op(pair, &op);
                    if let Err(e) = dual {
                        self.suspend(
                            pair,
                            format!("write to S-VOL '{}' failed: {e}", pair.svol.name),
                        );
                        self.mark_dirty(pair, Side::P, &regions)?;
                    }
                    Ok(r)
                }
            },
        }
    }

    /// The S-VOL half of a dual write (failpoint `mirror::svol_write` fails it).
    fn svol_op<T>(
        &self,
        pair: &Pair,
        op: &impl Fn(&Volume) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        fail::fail_point!("mirror::svol_write", |_| Err(IoError::Invalid {
            volume: pair.svol.name.clone(),
            detail: "failpoint mirror::svol_write".into(),
        }));
        op(&pair.svol)
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
        self.sync().map_err(err)?;
        self.meta
            .lock()
            .append(&MetaRecord::PairCopied {
                id: pair.id,
                regions: todo.clone(),
            })
            .map_err(|source| IoError::Meta {
                volume: pair.svol.name.clone(),
                source,
            })?;
        self.sync_log().map_err(|source| IoError::Meta {
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
        let es = self.extent_size;
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
                self.discard_locked(dst, start, len as u64)?;
            }
            return Ok(());
        }
        let mut buf = vec![0u8; len];
        self.read_table(table, size, &src.name, start, &mut buf)?;
        self.write_plain(dst, start, &buf)?;
        pair.st.lock().count_copied(len as u64);
        Ok(())
    }

    /// Reads of a paired volume.
    pub(crate) fn mirror_read(
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
                return match self.read_plain(vol, offset, buf) {
                    Err(e @ IoError::Array { .. }) => {
                        log::warn!("{e}; reading from S-VOL '{}' instead", pair.svol.name);
                        self.read_plain(&pair.svol, offset, &mut buf[..len as usize])
                    }
                    r => r,
                };
            }
            _ => false,
        };
        if !redirect {
            return self.read_plain(vol, offset, buf);
        }
        for pc in pieces(offset, len, self.extent_size) {
            let dst = &mut buf[pc.buf_offset..pc.buf_offset + pc.len as usize];
            dst.fill(0);
            let at = pc.lext * self.extent_size + pc.offset;
            let from_other = pair.st.lock().todo.contains(pc.lext);
            match (role, from_other) {
                (Role::Primary, true) => {
                    self.read_plain(&pair.svol, at, dst)?;
                }
                (Role::Secondary, true) => {
                    let s = snap.as_ref().expect("redirect implies a split snapshot");
                    self.read_table(&s.table, s.size, &vol.name, at, dst)?;
                }
                _ => {
                    self.read_plain(vol, at, dst)?;
                }
            }
        }
        Ok(len as usize)
    }
}
