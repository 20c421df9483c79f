//! Applying one record to the recovered state: the single definition of what a record means.

use super::state::{partial_from_rec, PairSt, SnapState, State, VolState};
use crate::bitmap::Bitmap;
use crate::extent_map::partial::{BlockBits, BLOCK};
use crate::extent_map::NoRefs;
use crate::format::PairState;
use crate::format::{MetaRecord, Phys};

fn volume_mut(state: &mut State, id: u64) -> Result<&mut VolState, String> {
    state
        .volumes
        .iter_mut()
        .find(|v| v.id == id)
        .ok_or_else(|| format!("volume id {id} does not exist"))
}

fn snapshot(state: &State, id: u64) -> Result<&SnapState, String> {
    state
        .snapshots
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| format!("snapshot id {id} does not exist"))
}

fn pair_mut(state: &mut State, id: u64) -> Result<&mut PairSt, String> {
    state
        .pairs
        .iter_mut()
        .find(|p| p.id == id)
        .ok_or_else(|| format!("pair id {id} does not exist"))
}

fn in_pair(state: &State, vol: u64) -> bool {
    state.pairs.iter().any(|p| p.pvol == vol || p.svol == vol)
}

fn check_new_id(state: &State, id: u64) -> Result<(), String> {
    if state.volumes.iter().any(|v| v.id == id) || state.snapshots.iter().any(|s| s.id == id) {
        return Err(format!("id {id} is already in use"));
    }
    Ok(())
}

/// Apply `rec` to `state`. Errors describe why the record cannot follow the state.
pub fn apply(state: &mut State, rec: &MetaRecord) -> Result<(), String> {
    match rec {
        MetaRecord::ArrayAdd(a) => {
            if state
                .arrays
                .iter()
                .any(|x| x.id == a.id || x.name == a.name)
            {
                return Err(format!("array {} (id {}) already exists", a.name, a.id));
            }
            state.arrays.push(a.clone());
        }
        MetaRecord::VolumeCreate {
            id,
            name,
            size,
            tier,
            created,
        } => {
            check_new_id(state, *id)?;
            if state.volumes.iter().any(|v| v.name == *name) {
                return Err(format!("volume {name} already exists"));
            }
            state.volumes.push(VolState {
                id: *id,
                name: name.clone(),
                size: *size,
                tier: tier.clone(),
                created: *created,
                origin: 0,
                table: Default::default(),
            });
            state.next_id = state.next_id.max(id + 1);
        }
        MetaRecord::VolumeDelete { id } => {
            if in_pair(state, *id) {
                return Err(format!("volume id {id} deleted while it is paired"));
            }
            if state.snapshots.iter().any(|s| s.volume == *id) {
                return Err(format!("volume id {id} deleted while it has snapshots"));
            }
            let before = state.volumes.len();
            state.volumes.retain(|v| v.id != *id);
            if state.volumes.len() == before {
                return Err(format!("volume id {id} does not exist"));
            }
            state.infos.remove(id);
        }
        MetaRecord::VolumeResize { id, size } => {
            let es = state.extent_size;
            let v = volume_mut(state, *id)?;
            v.size = *size;
            v.table.truncate(size.div_ceil(es), &mut NoRefs);
        }
        MetaRecord::MapSet { volume, entries } => {
            let es = state.extent_size;
            let v = volume_mut(state, *volume)?;
            let limit = v.size.div_ceil(es);
            for &(l, p) in entries {
                if l >= limit {
                    return Err(format!(
                        "volume id {volume}: logical extent {l} beyond the volume end"
                    ));
                }
                v.table.set(l, Some(Phys::unpack(p)), &mut NoRefs);
            }
            // Freshly allocated extents: any entry left for them is dead (see State).
            for &(_, p) in entries {
                state.partials.remove(&Phys::unpack(p));
            }
        }
        MetaRecord::MapSetPartial {
            volume,
            entries,
            partials,
        } => {
            apply(
                state,
                &MetaRecord::MapSet {
                    volume: *volume,
                    entries: entries.clone(),
                },
            )?;
            for r in partials {
                let (n, e) = partial_from_rec(state.extent_size, r)?;
                if e.src == n {
                    return Err(format!("partial extent {n:?} is its own source"));
                }
                if !entries.iter().any(|&(_, p)| p == r.ext) {
                    return Err(format!(
                        "partial extent {n:?} is not among the extents the record maps"
                    ));
                }
                if e.valid.all() || e.valid.is_empty() {
                    return Err(format!(
                        "partial extent {n:?} starts with {} of {} blocks valid",
                        e.valid.count(),
                        e.valid.nblocks()
                    ));
                }
                if state.partials.contains_key(&e.src) {
                    return Err(format!(
                        "partial extent {n:?} has a partial source {:?}",
                        e.src
                    ));
                }
                state.partials.insert(n, e);
            }
        }
        MetaRecord::PartialValid { ext, valid } => {
            let n = Phys::unpack(*ext);
            let bits = BlockBits::from_words((state.extent_size / BLOCK) as usize, valid.clone())?;
            let e = state
                .partials
                .get_mut(&n)
                .ok_or_else(|| format!("extent {n:?} is not partial"))?;
            e.valid.union_with(&bits);
            if e.valid.all() {
                state.partials.remove(&n);
            }
        }
        MetaRecord::PartialDone { exts } => {
            for &x in exts {
                let n = Phys::unpack(x);
                if state.partials.remove(&n).is_none() {
                    return Err(format!("extent {n:?} is not partial"));
                }
            }
        }
        MetaRecord::Unmap { volume, lexts } => {
            let v = volume_mut(state, *volume)?;
            for &l in lexts {
                v.table.set(l, None, &mut NoRefs);
            }
        }
        MetaRecord::MapShare {
            volume,
            from,
            entries,
            holes,
        } => {
            let es = state.extent_size;
            let v = volume_mut(state, *volume)?;
            let limit = v.size.div_ceil(es);
            if let Some(&(l, _)) = entries.iter().find(|&&(l, _)| l >= limit) {
                return Err(format!(
                    "volume id {volume}: shared logical extent {l} beyond the volume end"
                ));
            }
            // Unlike `MapSet`, the extents are not fresh: a partial one stays partial.
            for &(l, p) in entries {
                v.table.set(l, Some(Phys::unpack(p)), &mut NoRefs);
            }
            for &l in holes {
                v.table.set(l, None, &mut NoRefs);
            }
            State::add_link(&mut state.links, *volume, *from);
        }
        MetaRecord::SnapshotCreate {
            id,
            volume,
            name,
            created,
        } => {
            check_new_id(state, *id)?;
            if state
                .snapshots
                .iter()
                .any(|s| s.volume == *volume && s.name == *name)
            {
                return Err(format!(
                    "snapshot {name} of volume id {volume} already exists"
                ));
            }
            let v = volume_mut(state, *volume)?;
            let snap = SnapState {
                id: *id,
                volume: *volume,
                name: name.clone(),
                created: *created,
                size: v.size,
                table: v.table.clone(),
            };
            state.snapshots.push(snap);
            state.next_id = state.next_id.max(id + 1);
        }
        MetaRecord::SnapshotDelete { id } => {
            let before = state.snapshots.len();
            state.snapshots.retain(|s| s.id != *id);
            if state.snapshots.len() == before {
                return Err(format!("snapshot id {id} does not exist"));
            }
            state.infos.remove(id);
        }
        MetaRecord::SnapshotRollback {
            volume,
            snapshot: sid,
        } => {
            let s = snapshot(state, *sid)?;
            if s.volume != *volume {
                return Err(format!(
                    "snapshot id {sid} does not belong to volume id {volume}"
                ));
            }
            let (table, size) = (s.table.clone(), s.size);
            let v = volume_mut(state, *volume)?;
            v.table = table;
            v.size = size;
        }
        MetaRecord::VolumeClone {
            id,
            name,
            snapshot: sid,
            created,
        } => {
            check_new_id(state, *id)?;
            if state.volumes.iter().any(|v| v.name == *name) {
                return Err(format!("volume {name} already exists"));
            }
            let s = snapshot(state, *sid)?;
            let tier = state
                .volumes
                .iter()
                .find(|v| v.id == s.volume)
                .map(|v| v.tier.clone())
                .ok_or_else(|| format!("snapshot id {sid} has no volume"))?;
            let v = VolState {
                id: *id,
                name: name.clone(),
                size: s.size,
                tier,
                created: *created,
                origin: s.volume,
                table: s.table.clone(),
            };
            state.volumes.push(v);
            state.next_id = state.next_id.max(id + 1);
        }
        MetaRecord::PairCreate {
            id,
            pvol,
            svol,
            group,
            rate,
        } => {
            check_new_id(state, *id)?;
            if in_pair(state, *pvol) || in_pair(state, *svol) || pvol == svol {
                return Err(format!("volume id {pvol} or {svol} is already paired"));
            }
            let mut todo = Bitmap::new();
            for vid in [*pvol, *svol] {
                let v = state
                    .volumes
                    .iter()
                    .find(|v| v.id == vid)
                    .ok_or_else(|| format!("volume id {vid} does not exist"))?;
                for (l, _) in v.table.iter_mapped() {
                    todo.set(l);
                }
            }
            state.pairs.push(PairSt {
                id: *id,
                pvol: *pvol,
                svol: *svol,
                group: group.clone(),
                state: PairState::Copy as u8,
                rate: *rate,
                todo,
                ..Default::default()
            });
            state.next_id = state.next_id.max(id + 1);
        }
        MetaRecord::PairSplit { pairs, snaps } => {
            for id in pairs {
                let snap = snaps.iter().find(|(p, _)| p == id).map_or(0, |&(_, s)| s);
                if snap != 0 {
                    snapshot(state, snap)?;
                }
                let p = pair_mut(state, *id)?;
                if snap == 0 && !p.todo.is_empty() {
                    return Err(format!(
                        "pair id {id}: steady split with regions left to copy"
                    ));
                }
                p.state = PairState::Psus as u8;
                p.split_snap = snap;
                // The split synced the dual writes first: their intents go with it.
                p.p_dirty.clear_all();
                p.s_dirty.clear_all();
                p.error.clear();
            }
        }
        MetaRecord::PairResync { id, restore, rate } => {
            let p = pair_mut(state, *id)?;
            p.state = if *restore {
                PairState::CopyRsR as u8
            } else {
                PairState::CopyRs as u8
            };
            let (pd, sd) = (
                std::mem::take(&mut p.p_dirty),
                std::mem::take(&mut p.s_dirty),
            );
            p.todo.union_with(&pd);
            p.todo.union_with(&sd);
            p.split_snap = 0;
            p.rate = *rate;
            p.error.clear();
        }
        MetaRecord::PairState {
            id,
            state: st,
            error,
        } => {
            let p = pair_mut(state, *id)?;
            if PairState::from_u8(*st).is_none() {
                return Err(format!("pair id {id}: unknown state {st}"));
            }
            if *st == PairState::Pair as u8 && !p.todo.is_empty() {
                return Err(format!("pair id {id}: PAIR with regions left to copy"));
            }
            if *st == PairState::Psus as u8 {
                // A quick split's copy finished: it no longer reads from the snapshot.
                p.split_snap = 0;
            }
            p.state = *st;
            p.error = error.clone();
        }
        MetaRecord::PairCopied { id, regions } => {
            let p = pair_mut(state, *id)?;
            for &r in regions {
                p.todo.clear(r);
            }
        }
        MetaRecord::PairDirty { id, side, regions } => {
            let p = pair_mut(state, *id)?;
            match side {
                0 => regions.iter().for_each(|&r| {
                    p.p_dirty.set(r);
                }),
                1 => regions.iter().for_each(|&r| {
                    p.s_dirty.set(r);
                }),
                // Write intents of a dual-write state, cleared after a sync.
                2 => regions.iter().for_each(|&r| {
                    p.p_dirty.clear(r);
                }),
                s => return Err(format!("pair id {id}: unknown difference side {s}")),
            }
        }
        MetaRecord::GroupPut(g) => {
            if let Some(&(v, _)) = g
                .volumes
                .iter()
                .find(|(v, _)| !state.volumes.iter().any(|x| x.id == *v))
            {
                return Err(format!(
                    "group '{}' names volume {v}, which does not exist",
                    g.name
                ));
            }
            match state.groups.iter_mut().find(|x| x.uid == g.uid) {
                Some(x) => *x = (**g).clone(),
                None => state.groups.push((**g).clone()),
            }
        }
        MetaRecord::GroupDelete { uid } => {
            let before = state.groups.len();
            state.groups.retain(|g| g.uid != *uid);
            if state.groups.len() == before {
                return Err(format!("group {uid:#x} does not exist"));
            }
        }
        MetaRecord::InfoPut { id, info } => {
            if !state.volumes.iter().any(|v| v.id == *id)
                && !state.snapshots.iter().any(|s| s.id == *id)
            {
                return Err(format!(
                    "volume information for id {id}, which is neither a volume nor a snapshot"
                ));
            }
            if info.is_empty() {
                state.infos.remove(id);
            } else {
                state.infos.insert(*id, info.clone());
            }
        }
        MetaRecord::SchedulePut { id, rec } => {
            state.schedules.insert(*id, rec.clone());
        }
        MetaRecord::ScheduleDelete { id } => {
            if state.schedules.remove(id).is_none() {
                return Err(format!("schedule {id} does not exist"));
            }
        }
        MetaRecord::PairDelete { id } => {
            let before = state.pairs.len();
            state.pairs.retain(|p| p.id != *id);
            if state.pairs.len() == before {
                return Err(format!("pair id {id} does not exist"));
            }
        }
        MetaRecord::GroupDirty {
            uid,
            volume,
            regions,
        }
        | MetaRecord::GroupClean {
            uid,
            volume,
            regions,
        } => {
            // A write or a resync that raced with `group delete` may log after it: the
            // bits of a group that is gone mean nothing.
            let Some(g) = state.groups.iter_mut().find(|g| g.uid == *uid) else {
                return Ok(());
            };
            let b = g.ext.full.dirty.entry(*volume).or_default();
            let set = matches!(rec, MetaRecord::GroupDirty { .. });
            for &r in regions {
                if set {
                    b.set(r);
                } else {
                    b.clear(r);
                }
            }
            if b.is_empty() {
                g.ext.full.dirty.remove(volume);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> State {
        State {
            extent_size: 4096,
            next_id: 1,
            ..Default::default()
        }
    }

    fn p(i: u64) -> u64 {
        Phys { array: 1, index: i }.pack()
    }

    #[test]
    fn create_map_resize_delete() {
        let mut s = base();
        apply(
            &mut s,
            &MetaRecord::VolumeCreate {
                id: 1,
                name: "v".into(),
                size: 40960,
                tier: "fast".into(),
                created: 0,
            },
        )
        .unwrap();
        assert_eq!(s.next_id, 2);
        apply(
            &mut s,
            &MetaRecord::MapSet {
                volume: 1,
                entries: vec![(0, p(5)), (9, p(6))],
            },
        )
        .unwrap();
        assert!(apply(
            &mut s,
            &MetaRecord::MapSet {
                volume: 1,
                entries: vec![(10, p(7))]
            }
        )
        .is_err());
        apply(
            &mut s,
            &MetaRecord::SnapshotCreate {
                id: 2,
                volume: 1,
                name: "s".into(),
                created: 0,
            },
        )
        .unwrap();
        apply(&mut s, &MetaRecord::VolumeResize { id: 1, size: 8192 }).unwrap();
        assert_eq!(s.volumes[0].table.mapped(), 1);
        assert_eq!(
            s.snapshots[0].table.mapped(),
            2,
            "the snapshot keeps its extents"
        );
        apply(
            &mut s,
            &MetaRecord::Unmap {
                volume: 1,
                lexts: vec![0],
            },
        )
        .unwrap();
        assert_eq!(s.volumes[0].table.mapped(), 0);
        assert!(
            apply(&mut s, &MetaRecord::VolumeDelete { id: 1 }).is_err(),
            "snapshots first"
        );
        let mut s2 = s.clone();
        apply(
            &mut s2,
            &MetaRecord::SnapshotRollback {
                volume: 1,
                snapshot: 2,
            },
        )
        .unwrap();
        assert_eq!(s2.volumes[0].size, 40960);
        assert_eq!(s2.volumes[0].table.mapped(), 2);
        apply(
            &mut s,
            &MetaRecord::VolumeClone {
                id: 3,
                name: "c".into(),
                snapshot: 2,
                created: 0,
            },
        )
        .unwrap();
        assert_eq!(s.volumes[1].table.get(9), Some(Phys::unpack(p(6))));
        apply(&mut s, &MetaRecord::SnapshotDelete { id: 2 }).unwrap();
        apply(&mut s, &MetaRecord::VolumeDelete { id: 1 }).unwrap();
    }

    #[test]
    fn partial_extents_start_fill_and_end() {
        use crate::format::PartialRec;
        let mut s = base();
        s.extent_size = 64 << 10; // 16 blocks
        apply(
            &mut s,
            &MetaRecord::VolumeCreate {
                id: 1,
                name: "v".into(),
                size: 1 << 20,
                tier: "fast".into(),
                created: 0,
            },
        )
        .unwrap();
        let rec = |ext: u64, src: u64, valid: u64| MetaRecord::MapSetPartial {
            volume: 1,
            entries: vec![(0, p(ext))],
            partials: vec![PartialRec {
                ext: p(ext),
                src: p(src),
                valid: vec![valid],
            }],
        };
        assert!(apply(&mut s, &rec(5, 5, 1)).is_err(), "own source");
        assert!(apply(&mut s, &rec(5, 4, 0xffff)).is_err(), "complete");
        assert!(
            apply(&mut s, &rec(5, 4, 1 << 16)).is_err(),
            "bit past the end"
        );
        apply(&mut s, &rec(5, 4, 1)).unwrap();
        assert!(apply(&mut s, &rec(6, 5, 1)).is_err(), "a chain");
        let valid = |v: u64| MetaRecord::PartialValid {
            ext: p(5),
            valid: vec![v],
        };
        apply(&mut s, &valid(2)).unwrap();
        assert_eq!(s.partials[&Phys::unpack(p(5))].valid.count(), 2);
        apply(&mut s, &valid(0xfffc)).unwrap();
        assert!(s.partials.is_empty(), "every block valid: complete");
        assert!(apply(&mut s, &valid(1)).is_err());
        apply(&mut s, &rec(7, 4, 1)).unwrap();
        apply(&mut s, &MetaRecord::PartialDone { exts: vec![p(7)] }).unwrap();
        assert!(s.partials.is_empty());
        // A dead entry (its extent unmapped, never completed) goes when the extent is mapped
        // afresh.
        apply(&mut s, &rec(8, 4, 1)).unwrap();
        apply(
            &mut s,
            &MetaRecord::Unmap {
                volume: 1,
                lexts: vec![0],
            },
        )
        .unwrap();
        assert_eq!(s.partials.len(), 1);
        apply(
            &mut s,
            &MetaRecord::MapSet {
                volume: 1,
                entries: vec![(1, p(8))],
            },
        )
        .unwrap();
        assert!(s.partials.is_empty());
    }

    #[test]
    fn shared_extents_keep_their_partial_state_and_link_the_volumes() {
        use crate::format::PartialRec;
        let mut s = base();
        s.extent_size = 64 << 10;
        for (id, name) in [(1, "a"), (2, "b")] {
            apply(
                &mut s,
                &MetaRecord::VolumeCreate {
                    id,
                    name: name.into(),
                    size: 1 << 20,
                    tier: "fast".into(),
                    created: 0,
                },
            )
            .unwrap();
        }
        apply(
            &mut s,
            &MetaRecord::MapSetPartial {
                volume: 1,
                entries: vec![(0, p(5)), (1, p(4))],
                partials: vec![PartialRec {
                    ext: p(5),
                    src: p(3),
                    valid: vec![1],
                }],
            },
        )
        .unwrap();
        apply(
            &mut s,
            &MetaRecord::MapSet {
                volume: 2,
                entries: vec![(7, p(9))],
            },
        )
        .unwrap();
        let share = |entries: Vec<(u64, u64)>, holes: Vec<u64>| MetaRecord::MapShare {
            volume: 2,
            from: 1,
            entries,
            holes,
        };
        apply(&mut s, &share(vec![(3, p(5)), (4, p(4))], vec![7])).unwrap();
        assert_eq!(s.volumes[1].table.get(3), Some(Phys::unpack(p(5))));
        assert_eq!(s.volumes[1].table.get(7), None);
        assert_eq!(s.partials.len(), 1, "a shared partial extent stays partial");
        assert_eq!(s.links, vec![(2, 1)]);
        apply(&mut s, &share(vec![(5, p(4))], vec![])).unwrap();
        assert_eq!(s.links, vec![(2, 1)], "one link per pair of volumes");
        assert!(
            apply(&mut s, &share(vec![(16, p(4))], vec![])).is_err(),
            "beyond the end"
        );
    }
}
