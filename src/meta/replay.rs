//! Applying one record to the plain state: the single definition of what a record means.

use crate::format::{Checkpoint, MetaRecord, VolumeRec};

fn volume_mut<'a>(state: &'a mut Checkpoint, id: u64) -> Result<&'a mut VolumeRec, String> {
    state
        .volumes
        .iter_mut()
        .find(|v| v.id == id)
        .ok_or_else(|| format!("volume id {id} does not exist"))
}

/// Apply `rec` to `state`. Errors describe why the record cannot follow the state.
pub fn apply(state: &mut Checkpoint, rec: &MetaRecord) -> Result<(), String> {
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
            if state.volumes.iter().any(|v| v.id == *id || v.name == *name) {
                return Err(format!("volume {name} (id {id}) already exists"));
            }
            state.volumes.push(VolumeRec {
                id: *id,
                name: name.clone(),
                size: *size,
                tier: tier.clone(),
                created: *created,
                map: Default::default(),
            });
            state.next_volume_id = state.next_volume_id.max(id + 1);
        }
        MetaRecord::VolumeDelete { id } => {
            let before = state.volumes.len();
            state.volumes.retain(|v| v.id != *id);
            if state.volumes.len() == before {
                return Err(format!("volume id {id} does not exist"));
            }
        }
        MetaRecord::VolumeResize { id, size } => {
            let es = state.extent_size;
            let v = volume_mut(state, *id)?;
            v.size = *size;
            let keep = size.div_ceil(es);
            v.map.retain(|&l, _| l < keep);
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
                v.map.insert(l, p);
            }
        }
        MetaRecord::Unmap { volume, lexts } => {
            let v = volume_mut(state, *volume)?;
            for l in lexts {
                v.map.remove(l);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Checkpoint {
        Checkpoint {
            extent_size: 4096,
            next_volume_id: 1,
            ..Default::default()
        }
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
        assert_eq!(s.next_volume_id, 2);
        apply(
            &mut s,
            &MetaRecord::MapSet {
                volume: 1,
                entries: vec![(0, 5), (9, 6)],
            },
        )
        .unwrap();
        assert!(apply(
            &mut s,
            &MetaRecord::MapSet {
                volume: 1,
                entries: vec![(10, 7)]
            }
        )
        .is_err());
        apply(&mut s, &MetaRecord::VolumeResize { id: 1, size: 8192 }).unwrap();
        assert_eq!(s.volumes[0].map.len(), 1);
        apply(
            &mut s,
            &MetaRecord::Unmap {
                volume: 1,
                lexts: vec![0],
            },
        )
        .unwrap();
        assert!(s.volumes[0].map.is_empty());
        apply(&mut s, &MetaRecord::VolumeDelete { id: 1 }).unwrap();
        assert!(apply(&mut s, &MetaRecord::VolumeDelete { id: 1 }).is_err());
    }
}
