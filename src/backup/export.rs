//! Export and import (`fusevol volume export` / `volume import`): the daemon's part.
//!
//! The CLI moves the data (it reads the volume or snapshot file in the mount and writes the
//! stream, or reads a stream and writes the new volume's file), so a stream can go to a
//! pipe; the daemon says *what* to send and records what arrived:
//! - `plan`: the stream header's fields and the extents to send — every mapped extent for a
//!   full stream (holes are not sent), or for an incremental `--from BASE` the extents whose
//!   mapping differs between the two snapshots' extent maps (a chunk both tables share is
//!   skipped whole; no data is read or compared), and those that became holes;
//! - `commit`: after the data of an import is written and synced, take the snapshot the
//!   stream describes and write the volume information (the source's, with origin `import`):
//!   the information follows the data, as for every copy.

use serde::{Deserialize, Serialize};

use crate::extent_map::{ExtentTable, CHUNK};
use crate::format::volinfo::{InfoRecord, Origin};
use crate::pool::create::now_secs;
use crate::pool::PoolError;
use crate::storage::Storage;

/// What the CLI needs to write an export stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPlan {
    pub size: u64,
    pub extent_size: u64,
    pub pool_id: u64,
    pub volume: String,
    /// The snapshot exported (empty: the live volume).
    pub snapshot: String,
    /// The base snapshot of an incremental (empty: a full stream).
    pub base: String,
    /// The encoded volume information of what is exported (empty: none).
    pub info: Vec<u8>,
    /// The file to read, in the mount.
    pub path: String,
    /// Extents to send, as runs (first index, count).
    pub extents: Vec<(u64, u64)>,
    /// Extents that became holes since the base, as runs.
    pub holes: Vec<(u64, u64)>,
}

fn push_run(runs: &mut Vec<(u64, u64)>, i: u64) {
    match runs.last_mut() {
        Some((a, n)) if *a + *n == i => *n += 1,
        _ => runs.push((i, 1)),
    }
}

/// Runs of extents (first index, count).
pub type Runs = Vec<(u64, u64)>;

/// Extents to send and holes: `base` None sends every mapped extent below `extents`.
pub fn diff(target: &ExtentTable, base: Option<&ExtentTable>, extents: u64) -> (Runs, Runs) {
    let (mut send, mut holes) = (Vec::new(), Vec::new());
    let nchunks = (extents as usize).div_ceil(CHUNK);
    for c in 0..nchunks {
        if let Some(b) = base {
            if target.same_chunk(b, c) {
                continue;
            }
        }
        for slot in 0..CHUNK {
            let l = (c * CHUNK + slot) as u64;
            if l >= extents {
                break;
            }
            let t = target.get(l);
            match base {
                None => {
                    if t.is_some() {
                        push_run(&mut send, l);
                    }
                }
                Some(b) => {
                    let old = b.get(l);
                    if t == old {
                        continue;
                    }
                    if t.is_some() {
                        push_run(&mut send, l);
                    } else {
                        push_run(&mut holes, l);
                    }
                }
            }
        }
    }
    (send, holes)
}

/// The plan for exporting `name` (`VOL` or `VOL@SNAP`), incremental from snapshot `from`.
pub fn plan(
    st: &Storage,
    mountpoint: &str,
    name: &str,
    from: Option<&str>,
) -> Result<ExportPlan, PoolError> {
    let (vname, sname) = match name.split_once('@') {
        Some((v, s)) => (v, Some(s)),
        None => (name, None),
    };
    let vol = st.volumes.volume_or_err(vname)?;
    let es = st.pool.extent_size;
    let (table, size, id, path) = match sname {
        Some(s) => {
            let snap = st.snapshots.snapshot(vname, s)?;
            let t = snap.table.read().clone();
            (
                t,
                snap.size,
                snap.id,
                format!("{mountpoint}/.snapshots/{vname}/{s}"),
            )
        }
        None => {
            if from.is_some() {
                return Err(PoolError::Invalid(format!(
                    "an incremental export is between two snapshots: give '{vname}@SNAP --from BASE'"
                )));
            }
            let t = vol.map.read().clone();
            (t, vol.size(), vol.id, format!("{mountpoint}/{vname}"))
        }
    };
    let base = match from {
        Some(b) => {
            let bs = st.snapshots.snapshot(vname, b).map_err(|_| {
                PoolError::NotFound(format!(
                    "volume '{vname}' has no snapshot '{b}' (the base of the incremental)"
                ))
            })?;
            if Some(b) == sname {
                return Err(PoolError::Invalid(format!(
                    "the base '{b}' and the exported snapshot are the same"
                )));
            }
            if bs.id > id {
                return Err(PoolError::Invalid(format!(
                    "the base '{b}' of volume '{vname}' is newer than '{}'",
                    sname.unwrap_or_default()
                )));
            }
            let t = bs.table.read().clone();
            Some(t)
        }
        None => None,
    };
    let (extents, holes) = diff(&table, base.as_ref(), size.div_ceil(es));
    let info = match st.infos.get(id) {
        crate::info::InfoState::Valid(r) => r.encode(),
        _ => Vec::new(),
    };
    Ok(ExportPlan {
        size,
        extent_size: es,
        pool_id: st.pool.pool_id,
        volume: vname.to_string(),
        snapshot: sname.unwrap_or_default().to_string(),
        base: from.unwrap_or_default().to_string(),
        info,
        path,
        extents,
        holes,
    })
}

/// After an import's data is written and synced: take snapshot `snapshot` of `volume` (if
/// not empty) and write the volume information of both: the stream's record with origin
/// `import` (source volume, snapshot and pool from the stream).
#[allow(clippy::too_many_arguments)]
pub fn commit(
    st: &Storage,
    volume: &str,
    snapshot: &str,
    info: &[u8],
    src_volume: &str,
    src_snapshot: &str,
    src_pool: u64,
) -> Result<(), PoolError> {
    let vol = st.volumes.volume_or_err(volume)?;
    let rec = if info.is_empty() {
        InfoRecord::default()
    } else {
        InfoRecord::decode(info).map_err(|e| {
            PoolError::Invalid(format!("the stream's volume information is invalid: {e}"))
        })?
    };
    let rec = rec.for_copy(Origin {
        kind: "import".into(),
        volume: src_volume.to_string(),
        snapshot: src_snapshot.to_string(),
        volume_id: 0,
        pool_id: src_pool,
        time: now_secs(),
        ..Default::default()
    });
    st.sync()?;
    if !snapshot.is_empty() {
        let snap = st.snapshots.create_snapshot(volume, snapshot)?;
        st.infos.put(snap.id, &rec)?;
    }
    st.infos.put(vol.id, &rec)?;
    Ok(())
}
