//! The backup catalog: every backup generation in the pool — snapshots (also those a group
//! snapshot or a schedule took), split S-VOLs, clones, imported and replicated volumes —
//! with its source, time, label, host, kind, size and the space it holds, oldest first.
//!
//! The catalog is built from the volumes' and snapshots' own records (volume information in
//! the pool's metadata), so it can always be rebuilt: losing it loses nothing. The daemon
//! keeps a copy as an index file, `<POOL>/catalog.json` (written with tmp + rename), for
//! tools that read it without asking the daemon; `catalog rebuild` rewrites it from the
//! records and says what differed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::info::InfoState;
use crate::mirror::Role;
use crate::pool::PoolError;
use crate::storage::Storage;

/// The index file in the pool directory.
pub const INDEX_FILE: &str = "catalog.json";

/// One backup generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// `VOL@SNAP` for a snapshot, the volume name for a volume.
    pub name: String,
    /// snapshot, group-snapshot, clone, split, split-quick, replica, import (from the
    /// record's origin; without a record: snapshot or s-vol, from what the pool knows).
    pub kind: String,
    /// The volume it is a copy of (empty when unknown).
    pub source: String,
    /// When the copy was made (seconds since the Unix epoch).
    pub time: u64,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub host: String,
    pub size: u64,
    /// Bytes only this copy holds (freed when it is deleted).
    pub held: u64,
    /// valid, missing or invalid: the state of its volume information.
    pub info: String,
    /// Why the record is invalid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The source pool's id (hex), when the record names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pool: String,
}

/// What `catalog rebuild` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    pub entries: Vec<CatalogEntry>,
    /// Entries the old index had that the records do not (or that changed).
    pub removed: Vec<String>,
    /// Entries the records have that the old index did not (or that changed).
    pub added: Vec<String>,
    /// The old index was missing or unreadable.
    pub index_was_missing: bool,
}

#[allow(clippy::too_many_arguments)]
fn entry(
    name: String,
    fallback_kind: &str,
    fallback_source: String,
    fallback_time: u64,
    size: u64,
    held: u64,
    info: InfoState,
) -> CatalogEntry {
    let mut e = CatalogEntry {
        name,
        kind: fallback_kind.to_string(),
        source: fallback_source,
        time: fallback_time,
        label: String::new(),
        host: String::new(),
        size,
        held,
        info: String::new(),
        error: String::new(),
        pool: String::new(),
    };
    match info {
        InfoState::Missing => e.info = "missing".into(),
        InfoState::Invalid(why) => {
            e.info = "invalid".into();
            e.error = why;
        }
        InfoState::Valid(r) => {
            e.info = "valid".into();
            e.label = r.label.clone();
            e.host = r.host.clone();
            if let Some(o) = &r.origin {
                e.kind = o.kind.clone();
                e.source = o.volume.clone();
                e.time = o.time;
                e.pool = format!("{:016x}", o.pool_id);
            } else if r.time != 0 {
                e.time = r.time;
            }
        }
    }
    e
}

/// Bytes of extents held by `table` alone (not shared with another table).
fn held_bytes(st: &Storage, table: &crate::extent_map::ExtentTable) -> u64 {
    let mut n = 0u64;
    for (_, ch) in table.chunks() {
        if Arc::strong_count(ch) > 1 {
            continue;
        }
        for &raw in ch.iter().filter(|&&r| r != 0) {
            let p = crate::format::Phys::unpack(raw - 1);
            if st.pool.array(p.array).map_or(0, |a| a.refs.get(p.index)) == 1 {
                n += 1;
            }
        }
    }
    n * st.pool.extent_size
}

/// The catalog from the records, oldest first; only the copies of `volume` if given.
pub fn build(st: &Storage, volume: Option<&str>) -> Result<Vec<CatalogEntry>, PoolError> {
    if let Some(v) = volume {
        st.volumes.volume_or_err(v)?;
    }
    let mut out = Vec::new();
    for s in st.snapshots.all() {
        if s.name.starts_with(crate::snapshot::SPLIT_SNAPSHOT_PREFIX) {
            continue;
        }
        let vol = st
            .volumes
            .volume_by_id(s.volume)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let held = held_bytes(st, &s.table.read());
        out.push(entry(
            format!("{vol}@{}", s.name),
            "snapshot",
            vol,
            s.created,
            s.size,
            held,
            st.infos.get(s.id),
        ));
    }
    for v in st.volumes.volume_list() {
        let info = st.infos.get(v.id);
        let is_svol = matches!(st.mirror.pair_of_volume(v.id), Some((_, Role::Secondary)));
        let has_origin = matches!(&info, InfoState::Valid(r) if r.origin.is_some());
        if !is_svol && !has_origin && v.origin == 0 {
            continue; // a volume of its own, not a copy
        }
        let fallback_source = if is_svol {
            st.mirror
                .pair_of_volume(v.id)
                .map(|(p, _)| p.pvol.name.clone())
                .unwrap_or_default()
        } else {
            st.volumes
                .volume_by_id(v.origin)
                .map(|o| o.name.clone())
                .unwrap_or_default()
        };
        let kind = if is_svol { "s-vol" } else { "clone" };
        let held = held_bytes(st, &v.map.read());
        out.push(entry(
            v.name.clone(),
            kind,
            fallback_source,
            v.created,
            v.size(),
            held,
            info,
        ));
    }
    if let Some(v) = volume {
        out.retain(|e| e.source == v);
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

pub fn index_path(pool_dir: &Path) -> PathBuf {
    pool_dir.join(INDEX_FILE)
}

/// Write the index (tmp + fsync + rename).
pub fn write_index(pool_dir: &Path, entries: &[CatalogEntry]) -> Result<(), PoolError> {
    use std::io::Write;
    let path = index_path(pool_dir);
    let tmp = pool_dir.join(format!("{INDEX_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(entries).expect("catalog entries serialize");
    let mut f = std::fs::File::create(&tmp).map_err(|e| PoolError::io("create", &tmp, e))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| PoolError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| PoolError::io("rename", &path, e))?;
    Ok(())
}

/// Read the index; None when it is missing or unreadable.
pub fn read_index(pool_dir: &Path) -> Option<Vec<CatalogEntry>> {
    let b = std::fs::read(index_path(pool_dir)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The catalog (all of it) from the records, written to the index; then filtered.
pub fn list(st: &Storage, volume: Option<&str>) -> Result<Vec<CatalogEntry>, PoolError> {
    let all = build(st, None)?;
    if st.pool.read_only().is_none() {
        if let Err(e) = write_index(&st.pool.dir, &all) {
            log::warn!("catalog index not written: {e}");
        }
    }
    match volume {
        None => Ok(all),
        Some(v) => build(st, Some(v)),
    }
}

/// Rebuild the index from the records and report what differed from the old one.
pub fn rebuild(st: &Storage) -> Result<RebuildReport, PoolError> {
    let old = read_index(&st.pool.dir);
    let entries = build(st, None)?;
    write_index(&st.pool.dir, &entries)?;
    let old_list = old.clone().unwrap_or_default();
    let removed = old_list
        .iter()
        .filter(|e| !entries.contains(e))
        .map(|e| e.name.clone())
        .collect();
    let added = entries
        .iter()
        .filter(|e| !old_list.contains(e))
        .map(|e| e.name.clone())
        .collect();
    Ok(RebuildReport {
        entries,
        removed,
        added,
        index_was_missing: old.is_none(),
    })
}
