//! Status structs of the control protocol, built at the daemon's edge from a `Storage`.
//!
//! The domain modules know nothing of the protocol: these free functions read the services'
//! public state (arrays and allocator of the core, the volume and snapshot registries, the
//! pairs of the mirror, the journal groups of replication) and turn it into
//! `control::protocol` types.

use std::sync::Arc;

use crate::control::protocol::{
    ArrayInfo, BaseCopyInfo, FullInfo, GroupInfo, HandoverReport, MarkerInfo, PairInfo, PitrInfo,
    PoolInfo, SnapshotInfo, VolumeInfo,
};
use crate::format::group::full::FullState;
use crate::format::group::PitrRec;
use crate::mirror::{Pair, PairState};
use crate::pool::PoolError;
use crate::replication::full::{high_water, need_for};
use crate::replication::group::{Group, ROLE_SECONDARY};
use crate::replication::pitr::marker_usable;
use crate::snapshot::Snapshot;
use crate::storage::Storage;
use crate::volume::Volume;

/// A volume's description: size, allocation, and its extents per array.
pub fn volume_info(st: &Storage, vol: &Volume) -> VolumeInfo {
    let mut per_array: Vec<(u32, u64)> = Vec::new();
    let mapped = {
        let map = vol.map.read();
        for (_, p) in map.iter_mapped() {
            match per_array.iter_mut().find(|(a, _)| *a == p.array) {
                Some(e) => e.1 += 1,
                None => per_array.push((p.array, 1)),
            }
        }
        map.mapped()
    };
    per_array.sort();
    VolumeInfo {
        id: vol.id,
        name: vol.name.clone(),
        size: vol.size(),
        tier: vol.tier.clone(),
        allocated: mapped * st.pool.extent_size,
        created: vol.created,
        open_handles: vol.open_handles(),
        extents_per_array: per_array
            .into_iter()
            .map(|(id, n)| {
                let name = st
                    .pool
                    .array(id)
                    .map(|a| a.name.clone())
                    .unwrap_or_default();
                (name, n)
            })
            .collect(),
        info: crate::info::InfoView::of(&st.infos.get(vol.id)),
        node: None,
        lock: None,
    }
}

/// The description of the volume called `name`, or not found naming it.
pub fn volume_info_by_name(st: &Storage, name: &str) -> Result<VolumeInfo, PoolError> {
    let v = st.volumes.volume_or_err(name)?;
    Ok(volume_info(st, &v))
}

/// Every array of the pool with its capacity, use and bytes on disk.
pub fn array_infos(st: &Storage) -> Vec<ArrayInfo> {
    let al = st.pool.alloc.lock();
    st.pool
        .arrays()
        .iter()
        .map(|a| {
            let (used, free) = al.usage(a.id);
            ArrayInfo {
                id: a.id,
                name: a.name.clone(),
                tier: a.tier.clone(),
                path: a.path.display().to_string(),
                capacity: a.capacity_extents * a.extent_size,
                used: used * a.extent_size,
                free: free * a.extent_size,
                on_disk: a.on_disk(),
                missing: a.missing.clone(),
            }
        })
        .collect()
}

/// The pool summary (`pool info`, and the answer to a ping).
pub fn pool_info(st: &Storage, mountpoint: &str) -> PoolInfo {
    let arrays = array_infos(st);
    let vols = st.volumes.volume_list();
    PoolInfo {
        pool_id: format!("{:016x}", st.pool.pool_id),
        path: st.pool.dir.display().to_string(),
        mountpoint: mountpoint.to_string(),
        extent_size: st.pool.extent_size,
        capacity: arrays.iter().map(|a| a.capacity).sum(),
        used: arrays.iter().map(|a| a.used).sum(),
        free: arrays.iter().map(|a| a.free).sum(),
        provisioned: vols.iter().map(|v| v.size()).sum(),
        volumes: vols.len() as u64,
        arrays,
        read_only: st.pool.read_only(),
    }
}

/// Info of a snapshot just taken: it shares everything with its volume, so no scan.
pub fn fresh_snapshot_info(st: &Storage, snap: &Snapshot, mountpoint: &str) -> SnapshotInfo {
    let shared = snap.mapped_extents() * st.pool.extent_size;
    describe_snapshot(st, snap, mountpoint, 0, shared)
}

/// A snapshot's description, with the bytes it holds alone and those it shares.
pub fn snapshot_info(st: &Storage, snap: &Snapshot, mountpoint: &str) -> SnapshotInfo {
    let (mut exclusive, mut shared) = (0u64, 0u64);
    {
        let table = snap.table.read();
        for (_, ch) in table.chunks() {
            let chunk_shared = Arc::strong_count(ch) > 1;
            for &raw in ch.iter().filter(|&&r| r != 0) {
                let p = crate::format::Phys::unpack(raw - 1);
                let refs = st.pool.array(p.array).map_or(0, |a| a.refs.get(p.index));
                if chunk_shared || refs > 1 {
                    shared += 1;
                } else {
                    exclusive += 1;
                }
            }
        }
    }
    let es = st.pool.extent_size;
    describe_snapshot(st, snap, mountpoint, exclusive * es, shared * es)
}

fn describe_snapshot(
    st: &Storage,
    snap: &Snapshot,
    mountpoint: &str,
    exclusive: u64,
    shared: u64,
) -> SnapshotInfo {
    let vol_name = st
        .volumes
        .volume_by_id(snap.volume)
        .map(|v| v.name.clone())
        .unwrap_or_default();
    SnapshotInfo {
        id: snap.id,
        volume: vol_name.clone(),
        name: snap.name.clone(),
        created: snap.created,
        size: snap.size,
        exclusive,
        shared,
        path: format!("{mountpoint}/.snapshots/{vol_name}/{}", snap.name),
        info: crate::info::InfoView::of(&st.infos.get(snap.id)),
    }
}

/// Snapshot descriptions, oldest first; of one volume or all.
pub fn snapshot_infos(
    st: &Storage,
    volume: Option<&str>,
    mountpoint: &str,
) -> Result<Vec<SnapshotInfo>, PoolError> {
    let list = match volume {
        Some(v) => {
            let vol = st.snapshots.volume_named(v)?;
            st.snapshots.snapshots_of(vol.id)
        }
        None => st.snapshots.all(),
    };
    Ok(list
        .iter()
        .map(|s| snapshot_info(st, s, mountpoint))
        .collect())
}

/// A pair's state, the progress of its running copy and the bytes changed since its split.
pub fn pair_info(st: &Storage, pair: &Pair) -> PairInfo {
    let m = pair.st.lock();
    let es = st.pool.extent_size;
    let left = m.todo.count();
    let copying = matches!(
        m.state,
        PairState::Copy | PairState::CopyRs | PairState::CopyRsR
    ) || m.split_snap.is_some();
    let progress = if !copying || m.copy_total == 0 {
        100.0
    } else {
        100.0 * (m.copy_total.saturating_sub(left)) as f64 / m.copy_total as f64
    };
    // In a dual-write state `p_dirty` holds write intents, not differences.
    let mut diff = if m.state.dual_writes() {
        crate::bitmap::Bitmap::new()
    } else {
        m.p_dirty.clone()
    };
    diff.union_with(&m.s_dirty);
    PairInfo {
        id: pair.id,
        pvol: pair.pvol.name.clone(),
        svol: pair.svol.name.clone(),
        group: (!pair.group.is_empty()).then(|| pair.group.clone()),
        state: m.state.name().to_string(),
        progress: (progress * 10.0).round() / 10.0,
        bytes_left: if copying { left * es } else { 0 },
        rate: if copying { m.rate } else { 0 },
        rate_limit: m.rate_limit,
        diff_bytes: diff.count() * es,
        quick_split_copying: m.split_snap.is_some(),
        separate_arrays: pair.separate_arrays,
        error: m.error.clone(),
        lock: None,
    }
}

/// The pair of P-VOL `pvol` (not found naming it), or all pairs by id.
pub fn pair_infos(st: &Storage, pvol: Option<&str>) -> Result<Vec<PairInfo>, PoolError> {
    match pvol {
        Some(pv) => {
            let p = st.mirror.pair_of(pv)?;
            Ok(vec![pair_info(st, &p)])
        }
        None => Ok(st
            .mirror
            .pair_list()
            .iter()
            .map(|p| pair_info(st, p))
            .collect()),
    }
}

/// The journal group called `name` (not found naming it), or all of them; sorted by name.
pub fn group_info(st: &Storage, name: Option<&str>) -> Result<Vec<GroupInfo>, PoolError> {
    Ok(st
        .replication
        .group_list(name)?
        .iter()
        .map(|g| full_info(st, g, group_base_info(st, g)))
        .collect())
}

/// The answer to a takeover or failback of group `name`: its status now, and what was done.
pub fn handover_report(
    st: &Storage,
    name: &str,
    detail: String,
) -> Result<HandoverReport, PoolError> {
    Ok(HandoverReport {
        info: group_info(st, Some(name))?.remove(0),
        detail,
    })
}

/// A group's status without the journal-limit part (`full_info` adds it).
fn group_base_info(st: &Storage, g: &Group) -> GroupInfo {
    let r = g.rec.lock().clone();
    let rt = g.rt.lock().clone();
    let mut volumes: Vec<String> = r
        .volumes
        .iter()
        .filter_map(|(l, _)| st.volumes.volume_by_id(*l).map(|v| v.name.clone()))
        .collect();
    volumes.sort();
    // Local name → the group's name, for the volumes this pool names otherwise.
    let renamed: std::collections::BTreeMap<String, String> = volumes
        .iter()
        .map(|v| (v.clone(), r.ext.rename.group_name(v)))
        .filter(|(l, g)| l != g)
        .collect();
    let (lag_alert_secs, lag_above) = (g.lag_alert_secs(), g.lag_above());
    if g.is_primary() {
        let js = g.journal().stats();
        let lag_records = js.written.saturating_sub(r.acked);
        // Segments still held although acknowledged (the redo floor keeps them).
        let acked_bytes: u64 = g
            .journal()
            .sealed_after(0)
            .iter()
            .filter(|s| s.last <= r.acked)
            .map(|s| s.bytes)
            .sum();
        let lag_seconds = g.lag_now().0;
        let state = if g.is_stale() {
            "stale"
        } else if rt.last_error.is_some() {
            "remote-error"
        } else if !r.base_pending.is_empty() {
            "initial-copy"
        } else {
            "replicating"
        };
        GroupInfo {
            name: g.name.clone(),
            role: "primary".into(),
            state: state.into(),
            epoch: r.epoch,
            volumes,
            remote: r.remote.clone(),
            written: js.written,
            sealed: js.sealed,
            shipped: rt.shipped,
            applied: r.acked,
            acknowledged: r.acked,
            lag_records,
            lag_bytes: js.bytes.saturating_sub(acked_bytes),
            lag_seconds,
            journal_bytes: js.bytes,
            journal_limit: r.journal_limit,
            journal_free: r.journal_limit.saturating_sub(js.bytes),
            journal_spare_bytes: js.spare_bytes,
            consistent: r.base_pending.is_empty(),
            consistent_since: None,
            last_error: rt.last_error,
            start_seq: r.ext.handover.start_seq,
            stale: r.ext.handover.stale.as_ref().map(|s| {
                format!(
                    "taken over: epoch {} belongs to pool {:016x} (from sequence {}); read-only here, run `fusevol group failback {}`",
                    s.epoch,
                    s.pool,
                    s.start_seq + 1,
                    g.name
                )
            }),
            failback: None,
            failback_bytes: r.ext.handover.failback_bytes,
            full: Default::default(),
            pitr: pitr_info(st, g),
            base_copy: r.base_pending.first().and_then(|&vid| {
                let v = st.volumes.volume_by_id(vid)?;
                let total = v.size().div_ceil(st.pool.extent_size);
                Some(BaseCopyInfo {
                    volume: v.name.clone(),
                    extents_done: g
                        .base_at
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .max(r.ext.base.start_of(vid))
                        .min(total),
                    extents_total: total,
                    volumes_after: r.base_pending.len() as u64 - 1,
                })
            }),
            lock: None,
            renamed,
            lag_alert_secs,
            lag_above,
        }
    } else {
        let written = rt.remote_written.max(r.synced);
        let lag_records = written - r.synced;
        let lag_seconds = g.lag_now().0;
        let consistent = r.consistent_since != 0 && r.base_pending.is_empty();
        let state = if rt.last_error.is_some() {
            "error"
        } else if consistent {
            "consistent"
        } else if r.ext.handover.failback.is_some() {
            "failback"
        } else {
            "initial-copy"
        };
        GroupInfo {
            name: g.name.clone(),
            role: "secondary".into(),
            state: state.into(),
            epoch: r.epoch,
            volumes,
            remote: r.remote.clone(),
            written,
            sealed: written,
            shipped: written,
            applied: r.synced,
            acknowledged: r.acked,
            lag_records,
            lag_bytes: rt.remote_bytes,
            lag_seconds,
            journal_bytes: 0,
            journal_limit: 0,
            journal_free: 0,
            journal_spare_bytes: 0,
            consistent,
            consistent_since: consistent.then_some(r.consistent_since),
            last_error: rt.last_error,
            start_seq: r.ext.handover.start_seq,
            stale: None,
            failback: r.ext.handover.failback.as_ref().map(|f| {
                format!(
                    "waiting for the delta of {} regions ({} bytes) from the new primary; inconsistent until it is applied; snapshot '{}' holds this site's last image as primary",
                    f.regions, f.requested, f.snapshot
                )
            }),
            failback_bytes: r.ext.handover.failback_bytes,
            full: Default::default(),
            pitr: pitr_info(st, g),
            base_copy: None,
            lock: None,
            renamed,
            lag_alert_secs,
            lag_above,
        }
    }
}

/// The status fields of the journal limit, suspension and resync.
fn full_info(st: &Storage, g: &Group, mut info: GroupInfo) -> GroupInfo {
    let r = g.rec.lock().clone();
    let f = &r.ext.full;
    let rt_state = g.full.state();
    let mut out = FullInfo {
        policy: f.policy.name().into(),
        state: f.state.name().into(),
        block_timeout_ms: f.block_timeout_ms,
        suspended_seq: f.suspended_seq,
        dirty_regions: f.dirty_regions(),
        dirty_bytes: f.dirty_regions() * st.pool.extent_size,
        resync_seq: f.resync_seq,
        resync_total: f.resync_total,
        resync_done: f.resync_done,
        resyncs: f.resyncs,
        ..Default::default()
    };
    if g.is_primary() {
        out.state = rt_state.name().into();
        let limit = r.journal_limit;
        out.high_water = high_water(limit);
        out.suspended_since = (f.state != FullState::Journaling && f.suspended_since != 0)
            .then_some(f.suspended_since / 1_000_000_000);
        let used = info.journal_bytes;
        let (full_since, failed) = g.full.full_since();
        out.warning = if rt_state == FullState::Suspended {
            Some(format!(
                "journal full: suspended since sequence {}; {} bytes of regions changed since; run `fusevol group resync {}` once the remote directory is back",
                f.suspended_seq, out.dirty_bytes, g.name
            ))
        } else if full_since != 0 || (limit > 0 && used + need_for(0) >= limit) {
            Some(format!(
                "journal full: {used} of {limit} bytes; writers wait up to {} ms, then fail with ENOSPC{}",
                f.block_timeout_ms,
                failed.map(|e| format!(" (last: {e})")).unwrap_or_default()
            ))
        } else if limit > 0 && used >= out.high_water {
            Some(format!(
                "journal above its high-water mark: {used} of {limit} bytes ({} %)",
                used * 100 / limit
            ))
        } else {
            None
        };
        if info.state != "stale" {
            match rt_state {
                FullState::Suspended => info.state = "suspended".into(),
                FullState::Resync => info.state = "resync".into(),
                FullState::Journaling => {}
            }
        }
    } else if f.state == FullState::Resync {
        info.state = "resync".into();
        info.consistent = false;
        info.consistent_since = None;
        out.resync_snapshot = (!f.resync_snapshot.is_empty()).then(|| f.resync_snapshot.clone());
        out.warning = Some(match &out.resync_snapshot {
            Some(s) => format!(
                "resync from sequence {} in progress: inconsistent until it completes; snapshot '{s}' of each volume holds the last consistent image",
                f.resync_seq
            ),
            None => format!(
                "resync from sequence {} in progress: inconsistent until it completes",
                f.resync_seq
            ),
        });
    }
    info.full = out;
    info
}

/// The `pitr` part of a group's status: retention, apply delay and the restore bases.
fn pitr_info(st: &Storage, g: &Group) -> Option<PitrInfo> {
    let rec = g.rec.lock().ext.pitr.clone();
    let rt = g.rt.lock().pitr.clone();
    if g.role != ROLE_SECONDARY && rec == PitrRec::default() && rt.retained_segments == 0 {
        return None;
    }
    Some(PitrInfo {
        retain_secs: rec.retain_secs,
        retain_bytes: rec.retain_bytes,
        retained_segments: rt.retained_segments,
        retained_bytes: rt.retained_bytes,
        retained_oldest_seq: rt.retained_first,
        retained_oldest_time_ns: rt.oldest_time,
        apply_delay: rec.apply_delay,
        markers: rec
            .markers
            .iter()
            .map(|m| MarkerInfo {
                name: m.name.clone(),
                seq: m.seq,
                time_ns: m.time,
                usable: m.consistent && marker_usable(&st.replication, m),
            })
            .collect(),
    })
}

/// I/O of every array file (by name).
pub fn array_stats(
    st: &Storage,
    started: std::time::Instant,
) -> Result<Vec<crate::control::ArrayStatsInfo>, PoolError> {
    if !crate::stats::array_stats_on() {
        return Err(PoolError::Invalid(
            "array I/O statistics are off in this daemon (started with --no-stats); restart fusevold without it to count them".into(),
        ));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut arrays = st.pool.arrays();
    arrays.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(arrays
        .iter()
        .map(|a| crate::control::ArrayStatsInfo {
            array: a.name.clone(),
            tier: a.tier.clone(),
            seconds,
            io: a.stats.counts(),
        })
        .collect())
}

/// Host I/O statistics of `volume`, or of every volume (by name).
pub fn volume_stats(
    st: &Storage,
    volume: Option<&str>,
    started: std::time::Instant,
) -> Result<Vec<crate::control::VolumeStats>, PoolError> {
    if !st.io_stats_on() {
        return Err(PoolError::Invalid(
            "per-volume I/O statistics are off in this daemon (started with --no-stats); restart fusevold without it to count them".into(),
        ));
    }
    let vols = match volume {
        Some(name) => vec![st.volumes.volume_or_err(name)?],
        None => {
            let mut v = st.volumes.volume_list();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(vols
        .iter()
        .map(|v| crate::control::VolumeStats {
            volume: v.name.clone(),
            seconds,
            io: v.stats.counts(),
        })
        .collect())
}
