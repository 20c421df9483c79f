//! The journal limit of a primary group: the high-water warning, the two journal-full
//! policies (`block` and `suspend`), the suspension bitmap and `group resync`; and at the
//! secondary, the snapshot kept while a resync is applied.
//!
//! **What counts.** The limit is on the bytes of journal segments the primary holds
//! (`journal_bytes`: what is not yet acknowledged and purged). Every journaled host write or
//! discard is *admitted* before it takes its stripe locks: the record's size (plus one
//! segment header and one seal, the most a record can add besides itself) is reserved
//! against the limit, so concurrent writers never take the journal past it.
//!
//! **High-water mark** (80 % of the limit): `group status` carries a warning, the daemon logs
//! once per crossing (and once when the journal drops below 72 % again).
//!
//! **`block`** (default): above the high-water mark each write is slowed by up to 10 ms (in
//! proportion to how close the journal is to the limit); a write that does not fit waits for
//! space — the shipper purges what the secondary acknowledged — polling every 10 ms, holding
//! no stripe lock and no journal lock, up to the block timeout (default 30 s). Then it fails
//! with ENOSPC (`IoError::JournalFull`) and nothing of it was journaled or written. Nothing
//! acknowledged is ever dropped. ENOSPC because that is what a writer sees from a full
//! device and what applications handle (retry later or stop), unlike EIO which means damage.
//!
//! **`suspend`**: the write that does not fit suspends the group: state `suspended` is logged,
//! journaling stops, and every later write or discard goes straight to the volume after
//! marking its regions (extents) in a per-volume bitmap (`FullRec.dirty`). A bit is made
//! durable in the metadata log (`GroupDirty`, then an fdatasync of the log) *before* the
//! write it covers can reach the arrays — write-intent, like the mirror bitmaps — so a crash
//! can only make a resync send more, never less. The shipper goes on shipping what is
//! already journaled. The journal is a prefix of the write history up to the suspension
//! (a write that waits for one that bypassed the journal starts after the switch and
//! bypasses too), so the secondary stays a consistent image of that moment.
//!
//! **`group resync`** (`resync.rs`; explicit, like `pair resync` after PSUE: an operator
//! decides the remote is back): it waits (up to 20 s) for the shipper to drain the journal
//! below half its limit; then under the metadata, record and admission locks the state becomes
//! `resync` and a `ResyncStart` record is journaled before any new write can be; new writes
//! are journaled again. A copier waits for the writers still bypassing, waits until the
//! records before the start are in durable volume data (so a redo after a crash never
//! replays an old record over a region written while suspended), then journals each dirty
//! region from the current volume content as a `Base` record (a `Zero` record for a hole)
//! under the region's stripe lock, the way the base copy and the failback delta do; a host
//! write to the region is wholly before or after the copy. A batch of bits is cleared
//! (`GroupClean`) only after its records are durable in the journal; a write that bypasses
//! again (a new suspension) after a region was copied keeps its bit. Then `ResyncDone` and
//! state `journaling`. The copier (like the initial copy) fills at most 60 % of the
//! limit, leaving the rest (and the high-water mark) to host writes.
//! After a restart in state `resync` the copier continues by itself.
//!
//! **Redo after a crash** skips the parts of journal records that fall in dirty regions:
//! their current content is what the resync sends.
//!
//! **Secondary**: applying `ResyncStart` it snapshots every group volume as
//! `resync-<seq>` (the last consistent image) — only when it was consistent, and keeping an
//! older resync snapshot if one is still there — and is `resync`, inconsistent, until it
//! applies `ResyncDone`, which deletes the snapshot. A takeover is refused meanwhile; the
//! README says how to use the snapshot instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::ReplicationError;
use super::group::Group;
use super::options::{GroupOptions, GroupSetOptions};
pub(crate) use super::resync::{
    refuse_takeover, resync_done_applied, resync_start_applied, wait_space,
};
use super::Replication;
use crate::bitmap::Bitmap;
use crate::format::group::full::{FullPolicy, FullState};
use crate::format::journal::{RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::format::MetaRecord;
use crate::journal::now_ns;
use crate::pool::PoolError;
use crate::volume::{IoError, Volume};

/// High-water mark: per mille of the limit.
const HIGH_WATER_PM: u64 = 800;
/// The warning is re-armed below this (hysteresis).
const LOW_WATER_PM: u64 = 720;
/// Most a write is slowed by just below the limit.
const MAX_SLOW: Duration = Duration::from_millis(10);
pub(super) const POLL: Duration = Duration::from_millis(10);
/// Background copies (resync, initial copy) use at most this per mille of the limit; the
/// rest is left to host writes.
pub(super) const COPY_SHARE: u64 = 600;
/// Smallest journal limit accepted.
pub const MIN_JOURNAL_LIMIT: u64 = 256 << 10;

/// Run-time state of the journal limit (not persistent; `FullRec` is).
pub struct FullRuntime {
    pub(super) st: Mutex<Rt>,
}

pub(super) struct Rt {
    /// Mirrors `FullRec.state`; admission decides on this copy, under this lock.
    pub(super) state: FullState,
    /// Bytes admitted and not yet appended.
    pub(super) reserved: u64,
    /// Writes that decided to bypass the journal and have not finished.
    pub(super) bypass: u64,
    /// Regions whose resync record is journaled and whose bit is not cleared yet.
    pub(super) copied: BTreeMap<u64, Bitmap>,
    /// Above the high-water mark (logged once per crossing).
    pub(super) warned: bool,
    /// Block policy: since when (ns) writers find the journal full; the last failure.
    pub(super) full_since: u64,
    pub(super) failed: Option<String>,
    /// A resync copier runs.
    pub(super) copier: bool,
}

impl FullRuntime {
    pub(crate) fn new(rec: &crate::format::group::FullRec) -> FullRuntime {
        FullRuntime {
            st: Mutex::new(Rt {
                state: rec.state,
                reserved: 0,
                bypass: 0,
                copied: BTreeMap::new(),
                warned: false,
                full_since: 0,
                failed: None,
                copier: false,
            }),
        }
    }

    /// The state admission decides on (mirrors `FullRec.state`).
    pub(crate) fn state(&self) -> FullState {
        self.st.lock().state
    }

    /// Block policy: since when (ns) writers find the journal full (0: they do not), and the
    /// last failure.
    pub(crate) fn full_since(&self) -> (u64, Option<String>) {
        let rt = self.st.lock();
        (rt.full_since, rt.failed.clone())
    }
}

/// The decision for one write: journal it (space reserved) or bypass the journal (the group
/// is suspended). Dropping it releases the reservation or the bypass count. It owns its
/// group, so a bypassing write's admission can be held until its completion.
pub(crate) enum Admit {
    Journal(Arc<Group>, u64),
    Bypass(Arc<Group>),
    /// Not subject to the limit (no journal).
    Free,
}

impl Admit {
    pub(crate) fn bypass(&self) -> bool {
        matches!(self, Admit::Bypass(_))
    }
}

impl Drop for Admit {
    fn drop(&mut self) {
        match self {
            Admit::Journal(g, n) => g.full.st.lock().reserved -= *n,
            Admit::Bypass(g) => g.full.st.lock().bypass -= 1,
            Admit::Free => {}
        }
    }
}

/// Journal bytes one record of `payload` bytes may add (itself, a new segment's header, the
/// seal of its segment).
pub(crate) fn need_for(payload: u64) -> u64 {
    payload + 2 * RECORD_HEADER_SIZE as u64 + SEGMENT_HEADER_SIZE as u64
}

/// The high-water mark of a journal limit: the warning starts there.
pub(crate) fn high_water(limit: u64) -> u64 {
    limit / 1000 * HIGH_WATER_PM
}

/// How long a write is slowed at `used` bytes of `limit`.
pub fn slow_down(used: u64, limit: u64) -> Duration {
    let hw = high_water(limit);
    if limit == 0 || used <= hw || limit <= hw {
        return Duration::ZERO;
    }
    let frac = ((used - hw) as f64 / (limit - hw) as f64).min(1.0);
    MAX_SLOW.mul_f64(frac)
}

fn journal_full_err(vol: &Volume, g: &Group, used: u64, limit: u64, secs: f64) -> IoError {
    IoError::JournalFull {
        volume: vol.name.clone(),
        detail: format!(
            "journal group '{}' holds {used} of its {limit} bytes of journal and no space came within {secs:.1} s (policy block; the remote directory or the secondary is not taking segments); nothing of this write was journaled or written",
            g.name
        ),
    }
}

impl Replication {
    /// Decide how a write of `payload` journal bytes to `vol` of primary group `g` goes:
    /// journaled (space reserved), or around the journal (suspended). Waits (block policy)
    /// holding no group lock, up to the block timeout counted from `since` (when the writer
    /// began to wait, see `wait_room`). Call before taking the stripe locks.
    pub(crate) fn full_admit(
        &self,
        g: &Arc<Group>,
        vol: &Volume,
        payload: u64,
        since: Option<Instant>,
    ) -> Result<Admit, IoError> {
        let t0 = since.unwrap_or_else(Instant::now);
        Ok(self
            .admit_loop(g, vol, payload, t0, true)?
            .expect("a reserving admission decides"))
    }

    /// The admission loop. With `reserve` false it only waits: Ok(None) once there is room
    /// (or the group is suspended), reserving nothing.
    pub(super) fn admit_loop(
        &self,
        g: &Arc<Group>,
        vol: &Volume,
        payload: u64,
        t0: Instant,
        reserve: bool,
    ) -> Result<Option<Admit>, IoError> {
        if g.journal.is_none() {
            return Ok(Some(Admit::Free));
        }
        let need = need_for(payload);
        let mut slowed = false;
        loop {
            let (policy, limit, timeout) = {
                let r = g.rec.lock();
                (
                    r.ext.full.policy,
                    r.journal_limit,
                    r.ext.full.block_timeout_ms,
                )
            };
            let limit = if limit == 0 { u64::MAX } else { limit };
            let used = g.journal().stats().bytes;
            self.note_high_water(g, used, limit);
            {
                let mut rt = g.full.st.lock();
                if rt.state == FullState::Suspended {
                    if !reserve {
                        return Ok(None);
                    }
                    rt.bypass += 1;
                    return Ok(Some(Admit::Bypass(g.clone())));
                }
                if used.saturating_add(rt.reserved).saturating_add(need) <= limit {
                    if !reserve {
                        return Ok(None);
                    }
                    let pause = slow_down(used + rt.reserved, limit);
                    if !slowed && !pause.is_zero() {
                        drop(rt);
                        slowed = true;
                        std::thread::sleep(pause);
                        continue;
                    }
                    rt.reserved += need;
                    if rt.full_since != 0 {
                        rt.full_since = 0;
                        log::info!("group '{}': journal space again; writes go on", g.name);
                        g.publish(
                            "journal-space",
                            serde_json::json!({"used": used, "limit": limit}),
                        );
                    }
                    return Ok(Some(Admit::Journal(g.clone(), need)));
                }
                if policy == FullPolicy::Block {
                    if rt.full_since == 0 {
                        rt.full_since = now_ns();
                        log::warn!(
                            "group '{}': journal full ({used} of {limit} bytes): writers wait up to {} ms for the secondary to take segments",
                            g.name,
                            timeout
                        );
                        g.publish(
                            "journal-full",
                            serde_json::json!({"used": used, "limit": limit, "policy": "block", "block_timeout_ms": timeout}),
                        );
                    }
                    let waited = t0.elapsed();
                    if need > limit || waited >= Duration::from_millis(timeout) {
                        let e = journal_full_err(vol, g, used, limit, waited.as_secs_f64());
                        if rt.failed.is_none() {
                            log::error!("group '{}': {e} (ENOSPC)", g.name);
                        }
                        rt.failed = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            if policy == FullPolicy::Suspend {
                self.full_suspend(g, used, limit);
                continue;
            }
            std::thread::sleep(POLL);
        }
    }

    fn note_high_water(&self, g: &Group, used: u64, limit: u64) {
        if limit == u64::MAX {
            return;
        }
        let mut rt = g.full.st.lock();
        if !rt.warned && used >= high_water(limit) {
            rt.warned = true;
            drop(rt);
            log::warn!(
                "group '{}': journal above its high-water mark: {used} of {limit} bytes ({} %)",
                g.name,
                used * 100 / limit.max(1)
            );
            g.publish(
                "journal-high-water",
                serde_json::json!({"used": used, "limit": limit, "high_water": high_water(limit)}),
            );
        } else if rt.warned && used < limit / 1000 * LOW_WATER_PM {
            rt.warned = false;
            rt.failed = None;
            drop(rt);
            log::info!(
                "group '{}': journal below its high-water mark again ({used} of {limit} bytes)",
                g.name
            );
            g.publish(
                "journal-below-high-water",
                serde_json::json!({"used": used, "limit": limit}),
            );
        }
    }

    /// Suspend the group (journal full, policy suspend): logged before any write bypasses.
    fn full_suspend(&self, g: &Group, used: u64, limit: u64) {
        let mut log = self.pool.meta.lock();
        let mut r = g.rec.lock();
        let mut rt = g.full.st.lock();
        if rt.state == FullState::Suspended {
            return;
        }
        let was = rt.state;
        r.ext.full.state = FullState::Suspended;
        if was == FullState::Journaling {
            r.ext.full.suspended_since = now_ns();
        }
        r.ext.full.suspended_seq = g.journal().stats().written;
        if let Err(e) = log.append(&MetaRecord::GroupPut(Box::new(r.clone()))) {
            // The bypassing writes log their bits and fail the same way: nothing is lost.
            log::error!("group '{}': recording the suspension: {e}", g.name);
        }
        rt.state = FullState::Suspended;
        g.publish(
            "suspended",
            serde_json::json!({"reason": "journal full", "used": used, "limit": limit, "after_seq": r.ext.full.suspended_seq}),
        );
        log::error!(
            "group '{}': journal full ({used} of {limit} bytes){}: SUSPENDED after sequence {}; journaling stopped, changed regions are kept in a bitmap; run `fusevol group resync {}` once the remote directory takes segments again",
            g.name,
            if was == FullState::Resync { " during a resync" } else { "" },
            r.ext.full.suspended_seq,
            g.name
        );
    }

    /// A write that bypasses the journal: mark its regions, durably, before it is made.
    /// Call with the stripe locks of the range held.
    pub(crate) fn full_mark(
        &self,
        g: &Group,
        vol: &Volume,
        offset: u64,
        len: u64,
    ) -> Result<(), IoError> {
        let regions = self
            .pool
            .regions(offset, len.min(vol.size().saturating_sub(offset)));
        let err = |source| IoError::Meta {
            volume: vol.name.clone(),
            source,
        };
        {
            let mut log = self.pool.meta.lock();
            let mut r = g.rec.lock();
            let mut rt = g.full.st.lock();
            if let Some(c) = rt.copied.get_mut(&vol.id) {
                // Copied by a resync before this write: the copy is old now.
                for &x in &regions {
                    c.clear(x);
                }
            }
            let b = r.ext.full.dirty.entry(vol.id).or_default();
            let new: Vec<u64> = regions
                .iter()
                .copied()
                .filter(|&x| !b.contains(x))
                .collect();
            if !new.is_empty() {
                log.append(&MetaRecord::GroupDirty {
                    uid: g.uid,
                    volume: vol.id,
                    regions: new.clone(),
                })
                .map_err(err)?;
                for x in new {
                    b.set(x);
                }
            } else if b.is_empty() {
                r.ext.full.dirty.remove(&vol.id);
            }
        }
        // Write-intent: the bit (ours, or another writer's not yet synced) is durable
        // before the data it covers can be.
        self.pool.sync_log().map_err(err)
    }

    /// `group set`: change the limit, the policy or the block timeout of a primary group.
    pub fn group_set(&self, name: &str, o: &GroupSetOptions) -> Result<(), PoolError> {
        let g = self.full_primary(name)?;
        let policy = o.journal_full.as_deref().map(parse_policy).transpose()?;
        if let Some(l) = o.journal_limit {
            check_limit(name, l)?;
        }
        {
            let mut r = g.rec.lock();
            if let Some(l) = o.journal_limit {
                r.journal_limit = l;
            }
            if let Some(p) = policy {
                r.ext.full.policy = p;
            }
            if let Some(t) = o.block_timeout_ms {
                r.ext.full.block_timeout_ms = t;
            }
        }
        self.put_group(&g)?;
        let r = g.rec.lock();
        log::info!(
            "group '{name}': journal limit {} bytes, policy {}, block timeout {} ms",
            r.journal_limit,
            r.ext.full.policy.name(),
            r.ext.full.block_timeout_ms
        );
        Ok(())
    }

    pub(super) fn full_primary(&self, name: &str) -> Result<Arc<Group>, PoolError> {
        let g = self
            .group_by_name(name)
            .ok_or_else(|| ReplicationError::NoGroup(name.to_string()).into_pool())?;
        if !g.is_primary() {
            return Err(PoolError::Invalid(format!(
                "journal group '{name}' is a secondary here; do this on the primary"
            )));
        }
        if g.is_stale() {
            return Err(PoolError::Busy(format!(
                "journal group '{name}' was taken over by another site; it is read-only here"
            )));
        }
        Ok(g)
    }
}

fn parse_policy(s: &str) -> Result<FullPolicy, PoolError> {
    FullPolicy::parse(s).ok_or_else(|| {
        PoolError::Invalid(format!(
            "journal-full policy '{s}' is not one of: block, suspend"
        ))
    })
}

fn check_limit(name: &str, l: u64) -> Result<(), PoolError> {
    if l < MIN_JOURNAL_LIMIT {
        return Err(PoolError::Invalid(format!(
            "group '{name}': journal limit {l} is below the minimum {MIN_JOURNAL_LIMIT} bytes"
        )));
    }
    Ok(())
}

/// `group create`: the section of a new group from its options.
pub(crate) fn new_full_rec(
    name: &str,
    o: &GroupOptions,
) -> Result<crate::format::group::FullRec, PoolError> {
    let mut f = crate::format::group::FullRec::default();
    if let Some(p) = &o.journal_full {
        f.policy = parse_policy(p)?;
    }
    if let Some(t) = o.block_timeout_ms {
        f.block_timeout_ms = t;
    }
    if let Some(l) = o.journal_limit {
        check_limit(name, l)?;
    }
    Ok(f)
}

/// Refuse an operation that would put a wrong image at the secondary while the group is
/// suspended or resyncing (a group snapshot, a new volume).
pub(crate) fn refuse_while_suspended(g: &Group, what: &str) -> Result<(), PoolError> {
    let st = g.full.st.lock().state;
    if st != FullState::Journaling {
        return Err(PoolError::Busy(format!(
            "journal group '{}' is {}: cannot {what} until `fusevol group resync {}` has completed",
            g.name,
            st.name(),
            g.name
        )));
    }
    Ok(())
}

/// Redo after a crash: the parts of `[offset, offset+len)` of volume `vol` outside dirty
/// regions (inside them the volume holds newer data than the journal, which a resync
/// sends). Absolute (offset, length) pieces in order.
pub(crate) fn clean_pieces(g: &Group, es: u64, vol: u64, offset: u64, len: u64) -> Vec<(u64, u64)> {
    let r = g.rec.lock();
    let Some(b) = r.ext.full.dirty.get(&vol).filter(|b| !b.is_empty()) else {
        return vec![(offset, len)];
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let ext = pos / es;
        let n = ((ext + 1) * es).min(end) - pos;
        if !b.contains(ext) {
            match out.last_mut() {
                Some((o, l)) if *o + *l == pos => *l += n,
                _ => out.push((pos, n)),
            }
        }
        pos += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::GroupRec;

    #[test]
    fn slow_down_grows_from_the_high_water_mark_to_the_limit() {
        let l = 1_000_000;
        assert_eq!(slow_down(0, l), Duration::ZERO);
        assert_eq!(slow_down(800_000, l), Duration::ZERO);
        let a = slow_down(850_000, l);
        let b = slow_down(950_000, l);
        assert!(a > Duration::ZERO && a < b && b <= MAX_SLOW, "{a:?} {b:?}");
        assert_eq!(slow_down(2_000_000, l), MAX_SLOW);
        assert_eq!(slow_down(5, 0), Duration::ZERO);
        assert_eq!(high_water(1000), 800);
    }

    #[test]
    fn redo_skips_exactly_the_dirty_extents() {
        let mut rec = GroupRec {
            uid: 1,
            name: "g".into(),
            role: super::super::group::ROLE_PRIMARY,
            ..Default::default()
        };
        rec.ext
            .full
            .dirty
            .insert(7, Bitmap::from_runs(&[(1, 1), (3, 2)]));
        let g = Group::new(rec, None, Arc::new(crate::events::EventLog::in_memory()));
        let es = 100;
        // Another volume, or no overlap: whole.
        assert_eq!(clean_pieces(&g, es, 8, 150, 300), vec![(150, 300)]);
        assert_eq!(clean_pieces(&g, es, 7, 10, 50), vec![(10, 50)]);
        // Extents 0..=5 touched; 1, 3 and 4 are dirty.
        assert_eq!(
            clean_pieces(&g, es, 7, 50, 520),
            vec![(50, 50), (200, 100), (500, 70)]
        );
        assert!(clean_pieces(&g, es, 7, 300, 200).is_empty());
    }

    proptest::proptest! {
        /// The redo pieces are exactly the bytes of the range in clean extents, in order,
        /// maximal (no two pieces touch).
        #[test]
        fn redo_pieces_match_a_byte_oracle(
            dirty in proptest::collection::vec(0u64..40, 0..20),
            off in 0u64..3000,
            len in 1u64..1500,
        ) {
            let es = 100;
            let mut rec = GroupRec { uid: 1, name: "g".into(), role: 1, ..Default::default() };
            let mut b = Bitmap::new();
            for d in &dirty {
                b.set(*d);
            }
            rec.ext.full.dirty.insert(3, b.clone());
            let g = Group::new(rec, None, Arc::new(crate::events::EventLog::in_memory()));
            let pieces = clean_pieces(&g, es, 3, off, len);
            let want: Vec<u64> = (off..off + len).filter(|x| !b.contains(x / es)).collect();
            let got: Vec<u64> = pieces.iter().flat_map(|&(o, n)| o..o + n).collect();
            proptest::prop_assert_eq!(got, want);
            for w in pieces.windows(2) {
                proptest::prop_assert!(w[0].0 + w[0].1 < w[1].0);
            }
        }
    }

    #[test]
    fn replayed_bitmap_records_set_and_clear_and_ignore_a_deleted_group() {
        use crate::meta::{apply, State};
        let mut st = State {
            extent_size: 4096,
            next_id: 1,
            ..Default::default()
        };
        st.groups.push(GroupRec {
            uid: 5,
            name: "g".into(),
            role: 1,
            ..Default::default()
        });
        let dirty = MetaRecord::GroupDirty {
            uid: 5,
            volume: 2,
            regions: vec![1, 2, 9],
        };
        apply(&mut st, &dirty).unwrap();
        apply(
            &mut st,
            &MetaRecord::GroupClean {
                uid: 5,
                volume: 2,
                regions: vec![2],
            },
        )
        .unwrap();
        let b = &st.groups[0].ext.full.dirty[&2];
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![1, 9]);
        apply(
            &mut st,
            &MetaRecord::GroupClean {
                uid: 5,
                volume: 2,
                regions: vec![1, 9],
            },
        )
        .unwrap();
        assert!(st.groups[0].ext.full.dirty.is_empty());
        let gone = MetaRecord::GroupDirty {
            uid: 6,
            volume: 2,
            regions: vec![1],
        };
        apply(&mut st, &gone).unwrap();
    }

    #[test]
    fn a_record_needs_its_bytes_a_header_and_a_seal() {
        assert_eq!(need_for(0), 2 * 72 + 64);
        assert_eq!(need_for(4096), 4096 + 2 * 72 + 64);
    }
}
