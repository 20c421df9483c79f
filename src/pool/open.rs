//! Opening a pool: recovery, array headers, reference counts, scrubbing free extents.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::array::{read_header, Array};
use super::{Allocator, Pool, PoolError, Volumes};
use crate::format::{ArrayHeader, Checkpoint, Phys};
use crate::meta::{recover, MetaLog, Recovered};
use crate::volume::Volume;

/// The pool's state after recovery, checked against the array files.
pub(crate) struct Loaded {
    pub recovered: Recovered,
    pub arrays: Vec<(File, ArrayHeader, std::path::PathBuf)>,
    pub alloc: Allocator,
    /// Problems found; `Pool::open` refuses to serve when there are any.
    pub problems: Vec<String>,
}

/// Recover the metadata, read every array header, and rebuild reference counts from the
/// maps. Shared by the daemon and the offline checker. Nothing on disk is changed.
pub(crate) fn load(dir: &Path) -> Result<Loaded, PoolError> {
    let recovered = recover(dir)?;
    let st: &Checkpoint = &recovered.state;
    let mut problems = Vec::new();
    let mut arrays = Vec::new();
    let mut alloc = Allocator::default();
    for rec in &st.arrays {
        let path = dir.join(&rec.file);
        let (file, h) = read_header(&path)?;
        let mismatch = |what: &str, want: String, got: String| {
            PoolError::Inconsistent(format!(
                "array file {} header at offset 0: {what} is {got}, the metadata says {want}",
                path.display()
            ))
        };
        if h.pool_id != st.pool_id {
            return Err(mismatch(
                "pool id",
                format!("{:016x}", st.pool_id),
                format!("{:016x}", h.pool_id),
            ));
        }
        if h.array_id != rec.id {
            return Err(mismatch(
                "array id",
                rec.id.to_string(),
                h.array_id.to_string(),
            ));
        }
        if h.capacity != rec.capacity || h.extent_size != st.extent_size {
            return Err(mismatch(
                "capacity/extent size",
                format!("{}/{}", rec.capacity, st.extent_size),
                format!("{}/{}", h.capacity, h.extent_size),
            ));
        }
        alloc.add_array(rec.id, &rec.tier, h.capacity / h.extent_size);
        arrays.push((file, h, path));
    }
    // Every physical extent is owned by exactly one volume slot (snapshots will share later).
    let mut owner: HashMap<u64, (u64, u64)> = HashMap::new();
    for v in &st.volumes {
        let limit = v.size.div_ceil(st.extent_size);
        for (&l, &packed) in &v.map {
            let p = Phys::unpack(packed);
            if !alloc.contains(p) {
                problems.push(format!(
                    "volume '{}' logical extent {l} points to array {} extent {}, which does not exist",
                    v.name, p.array, p.index
                ));
                continue;
            }
            if l >= limit {
                problems.push(format!(
                    "volume '{}' maps logical extent {l} beyond its size {}",
                    v.name, v.size
                ));
            }
            if let Some((ov, ol)) = owner.insert(packed, (v.id, l)) {
                problems.push(format!(
                    "array {} extent {} is mapped twice: volume id {ov} extent {ol} and volume '{}' extent {l}",
                    p.array, p.index, v.name
                ));
            }
            alloc.incref(p);
        }
    }
    Ok(Loaded {
        recovered,
        arrays,
        alloc,
        problems,
    })
}

impl Pool {
    /// Open a pool for serving: recover, verify, scrub free extents, open the log.
    pub fn open(dir: &Path) -> Result<Arc<Pool>, PoolError> {
        let Loaded {
            recovered,
            arrays,
            mut alloc,
            problems,
        } = load(dir)?;
        for w in &recovered.warnings {
            log::warn!("{w}");
        }
        if !problems.is_empty() {
            return Err(PoolError::Inconsistent(format!(
                "pool {} metadata is inconsistent:\n  {}",
                dir.display(),
                problems.join("\n  ")
            )));
        }
        let st = recovered.state;
        let arrays: Vec<Arc<Array>> = arrays
            .into_iter()
            .map(|(f, h, path)| Arc::new(Array::new(f, path, &h)))
            .collect();
        // Scrub: a free extent may still hold bytes (an allocation that crashed before its
        // record, or a free whose punch did not happen). Punch them before anything reuses it.
        let mut scrubbed = 0;
        for a in &arrays {
            let with_data = a
                .extents_with_data()
                .map_err(|e| PoolError::io("scan array file", &a.path, e))?;
            for idx in with_data {
                if alloc.refcount(Phys {
                    array: a.id,
                    index: idx,
                }) == 0
                {
                    a.punch(idx, 0, a.extent_size)
                        .map_err(|e| PoolError::io("punch free extent in", &a.path, e))?;
                    scrubbed += 1;
                }
            }
            a.sync()
                .map_err(|e| PoolError::io("fdatasync array file", &a.path, e))?;
        }
        if scrubbed > 0 {
            log::info!("scrubbed {scrubbed} free extents that still held data");
        }
        alloc.rebuild_free_lists();
        let log = if recovered.log_usable {
            if recovered.log_valid_len
                < std::fs::metadata(dir.join(crate::meta::LOG_FILE))
                    .map(|m| m.len())
                    .unwrap_or(0)
            {
                log::warn!(
                    "{}: cutting the torn tail at offset {}",
                    dir.join(crate::meta::LOG_FILE).display(),
                    recovered.log_valid_len
                );
            }
            MetaLog::open(dir, st.pool_id, st.epoch, recovered.log_valid_len)?
        } else {
            MetaLog::create(dir, st.pool_id, st.epoch)?
        };
        let mut vols = Volumes::default();
        for v in &st.volumes {
            let vol = Arc::new(Volume::from_rec(v));
            vols.by_name.insert(v.name.clone(), v.id);
            vols.by_id.insert(v.id, vol);
        }
        let mut slots: Vec<Option<Arc<Array>>> = Vec::new();
        for a in arrays {
            let i = a.id as usize;
            if slots.len() <= i {
                slots.resize(i + 1, None);
            }
            slots[i] = Some(a);
        }
        log::info!(
            "pool {} (id {:016x}) open: {} arrays, {} volumes, {} log records replayed",
            dir.display(),
            st.pool_id,
            st.arrays.len(),
            st.volumes.len(),
            recovered.replayed
        );
        Ok(Arc::new(Pool {
            dir: dir.to_path_buf(),
            pool_id: st.pool_id,
            extent_size: st.extent_size,
            io_gate: RwLock::new(()),
            meta: Mutex::new(log),
            volumes: RwLock::new(vols),
            alloc: Mutex::new(alloc),
            arrays: RwLock::new(slots),
            next_volume_id: Mutex::new(st.next_volume_id),
            sync_lock: Mutex::new(()),
            listener: RwLock::new(None),
        }))
    }
}
