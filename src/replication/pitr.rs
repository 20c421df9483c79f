//! Point-in-time recovery at the secondary: retention of applied segments, apply delay, and
//! `group restore-to`.
//!
//! **Retention** is set where segments are deleted today, at the secondary (`group attach
//! --retain-secs N --retain-size SIZE`, changed with `group set`). Instead of deleting a
//! segment it has applied and acknowledged, the applier renames it (atomic, same directory
//! tree) into `REMOTE/GROUP/retained/` under its published name and stamps its mtime with the
//! time it was applied. Once a second, and after each segment, the oldest retained segments
//! are deleted while one is older than `retain_secs` or the total is above `retain_bytes`
//! (oldest first only, so what is retained is always one contiguous run of sequence
//! numbers). The applier lists `retained/` at start and once a minute and tracks what it
//! retires and prunes in between (a retention of days is many thousands of files; status
//! reads that, never the directory). Both limits 0 means retention off: applied segments are deleted as before, and
//! what is already retained stays until removed by hand. The shipper, the applier's listing
//! and the epoch sweep only look at files directly in `REMOTE/GROUP/`, so the subdirectory
//! is invisible to them.
//!
//! **Apply delay** (`--apply-delay SECS`): the applier applies a record only once its
//! primary time plus the delay has passed, so the image stays that far behind and is still a
//! group-consistent prefix at every moment (records are applied in order; a segment can be
//! applied in parts). A takeover applies everything complete, regardless of the delay: the
//! point of the delay is to have an older image to go back to (`restore-to`, or a takeover
//! `--at-marker`), not to lose the newest data in a disaster.
//!
//! **Restore** (`group restore-to`) is in `restore.rs`; it reads what is retained here and the
//! markers remembered in the group record (`PitrRec`).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::error::ReplicationError;
use super::group::Group;
use super::handover::parse_published;
use super::options::PitrOptions;
use super::Replication;
use crate::format::group::pitr::MarkerSeen;
use crate::format::group::PitrRec;
use crate::format::journal::{JournalRecord, SegmentHeader, SEGMENT_HEADER_SIZE};
use crate::journal::{now_ns, SegmentRead};
use crate::pool::PoolError;

pub use super::restore::{RestoreReport, RestoreTarget};

/// Where applied segments are kept: `REMOTE/GROUP/retained/`.
pub const RETAINED_DIR: &str = "retained";
/// How often the applier prunes the retained segments when idle.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Longest apply delay accepted (a year).
const MAX_DELAY: u64 = 366 * 86_400;

/// One retained segment, as the last listing saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub first: u64,
    pub epoch: u64,
    pub bytes: u64,
    /// When it was applied (seconds since the Unix epoch; its mtime).
    pub at: u64,
    pub path: PathBuf,
}

/// The retained segments as the applier keeps track of them: listed from the directory at
/// start and every `RELIST_EVERY`, kept up to date in between by what it retires and prunes
/// (a retention of days holds many thousands of files; they are not listed per segment).
#[derive(Default)]
pub(crate) struct RetainedList {
    segs: VecDeque<Retained>,
    bytes: u64,
    listed_at: Option<Instant>,
}

impl RetainedList {
    /// Add (or replace, same name) a segment, keeping the list in sequence order.
    fn insert(&mut self, r: Retained) {
        let key = (r.first, r.epoch);
        if self.segs.back().is_none_or(|b| (b.first, b.epoch) < key) {
            self.bytes += r.bytes;
            self.segs.push_back(r);
            return;
        }
        match self.segs.binary_search_by_key(&key, |s| (s.first, s.epoch)) {
            Ok(i) => {
                self.bytes = self.bytes - self.segs[i].bytes + r.bytes;
                self.segs[i] = r;
            }
            Err(i) => {
                self.bytes += r.bytes;
                self.segs.insert(i, r);
            }
        }
    }
}

/// What the applier knows about retention and the delay (not persistent).
#[derive(Default, Clone)]
pub struct PitrRuntime {
    pruned_at: Option<Instant>,
    /// Shared: the group's run-time state is cloned for every status.
    list: Arc<Mutex<RetainedList>>,
    /// What status shows: retained segments, their bytes, the first sequence number of the
    /// oldest, and its primary time (ns, from its header).
    pub retained_segments: u64,
    pub retained_bytes: u64,
    pub retained_first: u64,
    pub oldest_time: u64,
    /// (sequence number, ns when due): the next record is not due before then.
    delay_wait: Option<(u64, u64)>,
    /// Held by a restore: pruning waits (skips) meanwhile.
    pub(crate) restore_lock: Arc<Mutex<()>>,
}

/// How many of the oldest retained segments (bytes, applied-at seconds; oldest first;
/// `total` bytes in all) the limits of `rec` drop at `now` (seconds). Oldest first only, so
/// the rest stays contiguous.
pub fn prune_count(
    segs: impl Iterator<Item = (u64, u64)>,
    total: u64,
    now: u64,
    rec: &PitrRec,
) -> usize {
    if !rec.retains() {
        return 0;
    }
    let mut total = total;
    let mut n = 0;
    for (bytes, at) in segs {
        let too_old = rec.retain_secs > 0 && now.saturating_sub(at) > rec.retain_secs;
        let too_big = rec.retain_bytes > 0 && total > rec.retain_bytes;
        if !(too_old || too_big) {
            break;
        }
        total -= bytes;
        n += 1;
    }
    n
}

fn secs_now() -> u64 {
    now_ns() / 1_000_000_000
}

pub(crate) fn list_retained(dir: &Path) -> io::Result<Vec<Retained>> {
    let rdir = dir.join(RETAINED_DIR);
    let rd = match fs::read_dir(&rdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let Some((first, epoch)) = parse_published(&name) else {
            continue;
        };
        let md = ent.metadata()?;
        let at = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(Retained {
            first,
            epoch,
            bytes: md.len(),
            at,
            path: ent.path(),
        });
    }
    out.sort_by_key(|r| (r.first, r.epoch));
    Ok(out)
}

fn header_time(path: &Path) -> u64 {
    let mut b = [0u8; SEGMENT_HEADER_SIZE];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .ok()
        .and_then(|_| SegmentHeader::decode(&b).ok())
        .map_or(0, |h| h.created)
}

/// Applier, for a segment it has applied whole and acknowledged: keep it in `retained/`
/// (retention on) or delete it.
pub(crate) fn retire_segment(g: &Group, dir: &Path, path: &Path) {
    if !g.rec.lock().ext.pitr.retains() {
        super::remote::retire_published(dir, path);
        return;
    }
    let Some(name) = path.file_name() else { return };
    let rdir = dir.join(RETAINED_DIR);
    let to = rdir.join(name);
    if let Err(e) = fs::create_dir_all(&rdir).and_then(|_| fs::rename(path, &to)) {
        // Not kept: deleted as without retention (left there, the applier would meet it
        // again and again); a restore across the hole reports the gap.
        log::warn!(
            "group '{}': keeping the applied segment {} in {}: {e}; deleted instead",
            g.name,
            path.display(),
            rdir.display()
        );
        let _ = fs::remove_file(path);
        return;
    }
    // The age counts from now (when it was applied), not from when it was published.
    let stamped = File::options()
        .write(true)
        .open(&to)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = stamped {
        log::warn!(
            "group '{}': {}: setting its time of retention: {e}",
            g.name,
            to.display()
        );
    }
    if let Some((first, epoch)) = parse_published(&name.to_string_lossy()) {
        let bytes = fs::metadata(&to).map_or(0, |m| m.len());
        let list = g.rt.lock().pitr.list.clone();
        let mut l = list.lock();
        if l.listed_at.is_some() {
            l.insert(Retained {
                first,
                epoch,
                bytes,
                at: secs_now(),
                path: to,
            });
        }
    }
    housekeeping(g, dir, true);
}

/// How often the applier lists `retained/` again (someone may have removed files by hand).
const RELIST_EVERY: Duration = Duration::from_secs(60);

/// Applier, on every pass: prune the retained segments (at most once a second unless
/// `force`) and refresh what status shows of them.
pub(crate) fn housekeeping(g: &Group, dir: &Path, force: bool) {
    let (list, lock) = {
        let mut rt = g.rt.lock();
        if !force && rt.pitr.pruned_at.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        rt.pitr.pruned_at = Some(Instant::now());
        (rt.pitr.list.clone(), rt.pitr.restore_lock.clone())
    };
    let rec = g.rec.lock().ext.pitr.clone();
    let relist = list
        .lock()
        .listed_at
        .is_none_or(|t| t.elapsed() >= RELIST_EVERY);
    if relist {
        match list_retained(dir) {
            Ok(v) => {
                let mut l = list.lock();
                l.bytes = v.iter().map(|s| s.bytes).sum();
                l.segs = v.into();
                l.listed_at = Some(Instant::now());
            }
            Err(e) => {
                log::warn!(
                    "group '{}': listing {}/{RETAINED_DIR}: {e}",
                    g.name,
                    dir.display()
                );
                return;
            }
        }
    }
    // Pruning waits while a restore reads the segments.
    if let Some(_held) = lock.try_lock() {
        let doomed: Vec<Retained> = {
            let mut l = list.lock();
            let n = prune_count(
                l.segs.iter().map(|s| (s.bytes, s.at)),
                l.bytes,
                secs_now(),
                &rec,
            );
            let d: Vec<Retained> = l.segs.drain(..n).collect();
            l.bytes -= d.iter().map(|s| s.bytes).sum::<u64>();
            d
        };
        for (i, s) in doomed.iter().enumerate() {
            match fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!("group '{}': pruning {}: {e}", g.name, s.path.display());
                    let mut l = list.lock();
                    for s in doomed[i..].iter().rev() {
                        l.bytes += s.bytes;
                        l.segs.push_front(s.clone());
                    }
                    break;
                }
            }
        }
    }
    let (count, bytes, oldest) = {
        let l = list.lock();
        (
            l.segs.len() as u64,
            l.bytes,
            l.segs.front().map(|s| (s.first, s.path.clone())),
        )
    };
    let need_time = {
        let mut rt = g.rt.lock();
        let first = oldest.as_ref().map_or(0, |o| o.0);
        if rt.pitr.retained_first != first {
            rt.pitr.oldest_time = 0;
        }
        rt.pitr.retained_segments = count;
        rt.pitr.retained_bytes = bytes;
        rt.pitr.retained_first = first;
        rt.pitr.oldest_time == 0
    };
    if let (true, Some((_, p))) = (need_time, oldest) {
        let t = header_time(&p);
        g.rt.lock().pitr.oldest_time = t;
    }
}

/// Applier: the last sequence number of `seg` (from `want` on) that is due under the apply
/// delay; below `want` when none is. A takeover (`halt`) ignores the delay.
pub(crate) fn due_upto(g: &Group, seg: &SegmentRead, want: u64) -> u64 {
    let delay = g.rec.lock().ext.pitr.apply_delay;
    if delay == 0 || g.halt.load(std::sync::atomic::Ordering::Acquire) {
        return u64::MAX;
    }
    let now = now_ns();
    let d = delay.saturating_mul(1_000_000_000);
    let mut upto = want - 1;
    for r in seg.records.iter().filter(|r| r.head.seq >= want) {
        if r.head.time.saturating_add(d) > now {
            g.rt.lock().pitr.delay_wait = Some((r.head.seq, r.head.time.saturating_add(d)));
            break;
        }
        upto = r.head.seq;
    }
    upto
}

/// Applier: the record `want` is known not to be due yet (skip reading its segment).
pub(crate) fn not_due(g: &Group, want: u64) -> bool {
    if g.halt.load(std::sync::atomic::Ordering::Acquire) {
        return false;
    }
    match g.rt.lock().pitr.delay_wait {
        Some((seq, due)) => seq == want && now_ns() < due,
        None => false,
    }
}

/// Applier: a marker record was applied (its snapshots taken); remember it as a base.
pub(crate) fn note_marker(r: &Replication, g: &Group, rec: &JournalRecord, name: &str) {
    let mut gr = g.rec.lock();
    let consistent = gr.consistent_since != 0 && gr.base_pending.is_empty();
    let snaps = r.snapshots.reg.read();
    let volumes = gr
        .volumes
        .iter()
        .map(|&(l, p)| (p, l, snaps.get(l, name).map_or(0, |s| s.id)))
        .collect();
    drop(snaps);
    // Markers whose snapshots are gone are no base any more: forget them (the record is
    // logged after every segment, keep it small).
    gr.ext.pitr.markers.retain(|m| marker_usable(r, m));
    gr.ext.pitr.note_marker(MarkerSeen {
        name: name.to_string(),
        seq: rec.head.seq,
        time: rec.head.time,
        epoch: rec.head.epoch,
        consistent,
        volumes,
    });
}

/// Primary: group snapshot `name` was taken at marker `seq` (its snapshots `volumes`:
/// (volume id, volume id, snapshot id)); remember it like an applied marker.
pub(crate) fn note_own_marker(
    r: &Replication,
    g: &Group,
    name: &str,
    seq: u64,
    time: u64,
    volumes: Vec<(u64, u64, u64)>,
) {
    let mut gr = g.rec.lock();
    gr.ext.pitr.markers.retain(|m| marker_usable(r, m));
    let epoch = gr.epoch;
    gr.ext.pitr.note_marker(MarkerSeen {
        name: name.to_string(),
        seq,
        time,
        epoch,
        // `group snapshot` waits for the initial copy: the secondary's image is whole.
        consistent: true,
        volumes,
    });
}

/// A group snapshot held here, by what makes it the same image at both sites of its group:
/// the group, the marker's epoch and sequence number, and the group's volume (its id at the
/// primary of that epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshotHere {
    pub uid: u64,
    pub group: String,
    pub epoch: u64,
    pub seq: u64,
    pub primary_volume: u64,
    /// The volume here and the snapshot's name.
    pub local_volume: u64,
    pub snapshot: String,
}

impl Replication {
    /// Every group snapshot of this pool that is a whole group image (taken here as the
    /// primary, or applied here from a marker after the initial copy) and still exists.
    pub fn group_snapshots_here(&self) -> Vec<GroupSnapshotHere> {
        let groups: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        let mut out = Vec::new();
        for g in groups {
            let markers = g.rec.lock().ext.pitr.markers.clone();
            for m in markers.iter().filter(|m| m.consistent) {
                for &(pid, lid, sid) in &m.volumes {
                    let ok = self
                        .snapshots
                        .snapshot_by_id(sid)
                        .is_some_and(|s| s.volume == lid && s.name == m.name);
                    if ok {
                        out.push(GroupSnapshotHere {
                            uid: g.uid,
                            group: g.name.clone(),
                            epoch: m.epoch,
                            seq: m.seq,
                            primary_volume: pid,
                            local_volume: lid,
                            snapshot: m.name.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

/// Apply `opts` to a group's settings (absent fields unchanged).
pub(crate) fn set_options(rec: &mut PitrRec, opts: &PitrOptions) -> Result<(), ReplicationError> {
    if let Some(d) = opts.apply_delay {
        if d > MAX_DELAY {
            return Err(ReplicationError::BadRequest(format!(
                "apply delay {d} s is longer than the limit of {MAX_DELAY} s"
            )));
        }
        rec.apply_delay = d;
    }
    if let Some(s) = opts.retain_secs {
        rec.retain_secs = s;
    }
    if let Some(b) = opts.retain_size {
        rec.retain_bytes = b;
    }
    Ok(())
}

/// A marker can be a base: its snapshots (by id) are all still there.
pub(crate) fn marker_usable(r: &Replication, m: &MarkerSeen) -> bool {
    !m.volumes.is_empty()
        && m.volumes.iter().all(|&(_, l, sid)| {
            r.snapshots
                .snapshot_by_id(sid)
                .is_some_and(|s| s.volume == l && s.name == m.name)
        })
}

impl Replication {
    /// Attach as the secondary with retention and apply delay set from the start.
    pub fn group_attach_pitr(
        self: &Arc<Self>,
        name: &str,
        remote_dir: &Path,
        opts: &PitrOptions,
    ) -> Result<(), PoolError> {
        let mut rec = PitrRec::default();
        set_options(&mut rec, opts).map_err(|e| ReplicationError::in_group(name, e).into_pool())?;
        self.group_attach_with(name, remote_dir, rec, Default::default())
    }

    /// `group set`: change retention and apply delay (absent fields unchanged).
    pub fn group_set_pitr(&self, name: &str, opts: &PitrOptions) -> Result<(), PoolError> {
        let g = self
            .group_by_name(name)
            .ok_or_else(|| ReplicationError::NoGroup(name.to_string()).into_pool())?;
        {
            let mut r = g.rec.lock();
            let mut p = r.ext.pitr.clone();
            set_options(&mut p, opts)
                .map_err(|e| ReplicationError::in_group(name, e).into_pool())?;
            r.ext.pitr = p;
        }
        g.rt.lock().pitr.delay_wait = None;
        self.put_group(&g)?;
        self.pool.sync_metadata()?;
        log::info!("group '{name}': point-in-time settings {opts:?}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(secs: u64, bytes: u64) -> PitrRec {
        PitrRec {
            retain_secs: secs,
            retain_bytes: bytes,
            ..Default::default()
        }
    }

    fn pc(segs: &[(u64, u64)], now: u64, rec: &PitrRec) -> usize {
        let total = segs.iter().map(|s| s.0).sum();
        prune_count(segs.iter().copied(), total, now, rec)
    }

    #[test]
    fn pruning_drops_the_oldest_by_age_and_size() {
        // (bytes, applied at)
        let segs = [(100, 10), (100, 20), (100, 30), (100, 40)];
        assert_eq!(pc(&segs, 1000, &rec(0, 0)), 0, "retention off");
        assert_eq!(pc(&segs, 45, &rec(1000, 0)), 0);
        // Older than 15 s at 45: those applied at 10 and 20.
        assert_eq!(pc(&segs, 45, &rec(15, 0)), 2);
        assert_eq!(pc(&segs, 45, &rec(0, 400)), 0);
        assert_eq!(pc(&segs, 45, &rec(0, 250)), 2);
        assert_eq!(pc(&segs, 45, &rec(0, 1)), 4);
        // Either limit drops.
        assert_eq!(pc(&segs, 45, &rec(30, 150)), 3);
        // Oldest first only: a young old one stops the age rule (the run stays contiguous).
        let odd = [(100, 40), (100, 10)];
        assert_eq!(pc(&odd, 45, &rec(15, 0)), 0);
        assert_eq!(pc(&[], 45, &rec(1, 1)), 0);
    }

    #[test]
    fn the_retained_list_stays_in_order_and_counts_bytes() {
        let seg = |first: u64, bytes: u64| Retained {
            first,
            epoch: 1,
            bytes,
            at: 0,
            path: PathBuf::from(format!("{first}")),
        };
        let mut l = RetainedList::default();
        l.insert(seg(10, 1));
        l.insert(seg(30, 2));
        l.insert(seg(20, 4)); // re-shipped out of order
        l.insert(seg(30, 8)); // the same name again replaces
        assert_eq!(
            l.segs.iter().map(|s| s.first).collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        assert_eq!(l.bytes, 1 + 4 + 8);
    }

    #[test]
    fn retained_listing_reads_names_sizes_and_times() {
        let t = tempfile::tempdir().unwrap();
        assert!(list_retained(t.path()).unwrap().is_empty());
        let r = t.path().join(RETAINED_DIR);
        fs::create_dir(&r).unwrap();
        fs::write(r.join("00000000000000000009.e2.jseg"), b"abc").unwrap();
        fs::write(r.join("00000000000000000003.jseg"), b"a").unwrap();
        fs::write(r.join(".00000000000000000004.jseg.tmp"), b"a").unwrap();
        let l = list_retained(t.path()).unwrap();
        assert_eq!(
            l.iter()
                .map(|s| (s.first, s.epoch, s.bytes))
                .collect::<Vec<_>>(),
            vec![(3, 1, 1), (9, 2, 3)]
        );
        assert!(l[0].at > 1_700_000_000);
    }

    #[test]
    fn options_change_only_what_is_given() {
        let mut r = rec(5, 6);
        set_options(
            &mut r,
            &PitrOptions {
                apply_delay: Some(30),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((r.retain_secs, r.retain_bytes, r.apply_delay), (5, 6, 30));
        set_options(
            &mut r,
            &PitrOptions {
                retain_secs: Some(0),
                retain_size: Some(0),
                apply_delay: None,
            },
        )
        .unwrap();
        assert!(!r.retains());
        assert_eq!(r.apply_delay, 30);
        assert!(set_options(
            &mut r,
            &PitrOptions {
                apply_delay: Some(MAX_DELAY + 1),
                ..Default::default()
            }
        )
        .is_err());
    }
}
