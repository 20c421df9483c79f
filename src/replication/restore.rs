//! `group restore-to`: rebuild a journal group's volumes as of a sequence number or a time.
//!
//! The base is the latest group snapshot applied here (its marker is remembered in the group
//! record, `PitrRec`) at or before the target, or the empty initial image when the segments go
//! back to the group's first record. A first pass reads and verifies (CRC, sequence numbers,
//! no gap) every record from the base to the target without writing anything; only then are
//! the base's snapshots cloned into new volumes `<prefix><volume>` (or copied into image files
//! `DIR/<volume>.img`) and the records applied to them strictly in order. Records are taken
//! from `retained/` (see `pitr.rs`) and from the published segments not yet applied, which are
//! only read. Any failure removes what the restore created. The group's own volumes are not
//! touched and the applier keeps running (pruning pauses while a restore runs). A restore
//! uses the records of one epoch, its base's: volume ids are an epoch's own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::ReplicationError;
use super::group::Group;
use super::handover::parse_published;
use super::pitr::{list_retained, marker_usable, RETAINED_DIR};
use super::remote;
use super::Replication;
use crate::format::group::pitr::MarkerSeen;
use crate::format::journal::{JournalRecord, RecordKind};
use crate::journal::{read_sealed, JournalError, SegmentRead};
use crate::pool::PoolError;
use crate::volume::Volume;

/// What a restore is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The image after this sequence number.
    Seq(u64),
    /// The image after the last record whose primary time is at or before this (ns).
    Time(u64),
}

/// What `group restore-to` built (the control protocol's answer as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub group: String,
    /// The image is the group's image after this sequence number ...
    pub seq: u64,
    /// ... whose record has this primary time (ns; 0 for the initial image).
    pub time_ns: u64,
    /// The base: `snapshot NAME (sequence N)` or `initial image`.
    pub base: String,
    /// Records applied after the base.
    pub records: u64,
    /// What was written: volume names in this pool, or image file paths.
    pub outputs: Vec<String>,
}

/// Where a restore starts.
#[derive(Debug, Clone)]
struct Base {
    marker: Option<MarkerSeen>,
    seq: u64,
    epoch: u64,
}

/// Segments of `epoch` that a restore may read, by first sequence number: the retained ones
/// and the published ones not yet applied (read only).
fn sources(
    group: &str,
    dir: &Path,
    epoch: u64,
) -> Result<BTreeMap<u64, PathBuf>, ReplicationError> {
    let mut out = BTreeMap::new();
    for (first, path) in remote::list_published(dir)
        .map_err(|e| ReplicationError::remote(group, "listing", dir, e))?
    {
        let e = path
            .file_name()
            .and_then(|n| parse_published(&n.to_string_lossy()))
            .map(|x| x.1);
        if e == Some(epoch) {
            out.insert(first, path);
        }
    }
    for r in list_retained(dir)
        .map_err(|e| ReplicationError::remote(group, "listing", dir.join(RETAINED_DIR), e))?
    {
        if r.epoch == epoch {
            out.insert(r.first, r.path);
        }
    }
    Ok(out)
}

/// Read a whole segment; a published one that the applier moved into `retained/` meanwhile
/// is read there.
fn read_source(
    group: &str,
    path: &Path,
    dir: &Path,
    expect: (u64, u64),
) -> Result<SegmentRead, ReplicationError> {
    match read_sealed(path, expect) {
        Err(JournalError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let moved = path
                .file_name()
                .map(|n| dir.join(RETAINED_DIR).join(n))
                .unwrap_or_default();
            read_sealed(&moved, expect).map_err(|e| ReplicationError::journal(group, e))
        }
        r => r.map_err(|e| ReplicationError::journal(group, e)),
    }
}

/// Walk the records after `from - 1` in sequence order, at most up to `upto`, stopping
/// before the first for which `stop` says so; every record read is verified. Returns the
/// last record handed to `each` (seq, time), or (from - 1, 0) when none was.
#[allow(clippy::too_many_arguments)]
fn walk(
    group: &str,
    srcs: &BTreeMap<u64, PathBuf>,
    dir: &Path,
    expect: (u64, u64),
    from: u64,
    upto: u64,
    mut stop: impl FnMut(&JournalRecord) -> bool,
    mut each: impl FnMut(&JournalRecord) -> Result<(), ReplicationError>,
) -> Result<(u64, u64), ReplicationError> {
    let mut next = from;
    let mut last = (from - 1, 0);
    'segs: while next <= upto {
        let Some((&first, path)) = srcs.range(..=next).next_back() else {
            if let Some((&f, p)) = srcs.iter().next() {
                return Err(ReplicationError::BadRequest(format!(
                    "sequence number {next} is not retained: the oldest segment, {}, starts at {f}",
                    p.display()
                )));
            }
            break;
        };
        let seg = read_source(group, path, dir, expect)?;
        let seg_last = seg.last_seq().unwrap_or(first.saturating_sub(1));
        if seg_last < next {
            if let Some((&f, p)) = srcs.range(next + 1..).next() {
                return Err(ReplicationError::Segment {
                    path: path.clone(),
                    detail: format!(
                        "a gap: sequence numbers {next}..{} are in no segment ({} ends at {seg_last}, {} starts at {f}); nothing after it is restored",
                        f - 1,
                        path.display(),
                        p.display()
                    ),
                });
            }
            break;
        }
        let from_here = next;
        for r in seg.records.iter().filter(|r| r.head.seq >= from_here) {
            if r.head.seq > upto || stop(r) {
                break 'segs;
            }
            each(r).map_err(|e| ReplicationError::Record {
                path: path.clone(),
                seq: r.head.seq,
                source: Box::new(e),
            })?;
            last = (r.head.seq, r.head.time);
            next = r.head.seq + 1;
        }
    }
    Ok(last)
}

fn target_text(t: RestoreTarget) -> String {
    match t {
        RestoreTarget::Seq(n) => format!("sequence number {n}"),
        RestoreTarget::Time(t) => format!("time {}", time_text(t)),
    }
}

fn time_text(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000_000, ns / 1_000_000 % 1000)
}

/// A restored volume: a new pool volume or an image file.
enum Dest {
    Vol(Arc<Volume>),
    File(File),
}

struct Restorer<'a> {
    repl: &'a Replication,
    prefix: String,
    into: Option<PathBuf>,
    dests: HashMap<u64, Dest>,
    /// What to remove when the restore fails: volume names or file paths.
    made_vols: Vec<String>,
    made_files: Vec<PathBuf>,
    /// How this pool names the group's volumes (`group attach --rename`): a volume the
    /// records add is named after its local name.
    rename: crate::format::group::RenameRec,
}

impl Restorer<'_> {
    fn file_path(&self, name: &str) -> PathBuf {
        self.into
            .as_ref()
            .expect("file mode")
            .join(format!("{name}.img"))
    }

    fn new_file(&mut self, name: &str, size: u64) -> Result<File, ReplicationError> {
        let path = self.file_path(name);
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| ReplicationError::File {
                op: "creating",
                path: path.clone(),
                source,
            })?;
        self.made_files.push(path.clone());
        f.set_len(size).map_err(|source| ReplicationError::File {
            op: "sizing",
            path,
            source,
        })?;
        Ok(f)
    }

    /// Start volume `primary` as the snapshot `snap` of local volume `local`.
    fn start_from_snapshot(
        &mut self,
        primary: u64,
        local: u64,
        sid: u64,
        snap: &str,
    ) -> Result<(), ReplicationError> {
        let repl = self.repl;
        let v = repl.volumes.volume_by_id(local).ok_or_else(|| {
            ReplicationError::NotFound(format!("volume #{local} of snapshot '{snap}' is gone"))
        })?;
        let s = repl
            .snapshots
            .snapshot_by_id(sid)
            .filter(|s| s.volume == local && s.name == snap)
            .ok_or_else(|| {
                ReplicationError::NotFound(format!(
                    "snapshot '{snap}' of volume '{}' is gone",
                    v.name
                ))
            })?;
        let dest = if self.into.is_some() {
            let f = self.new_file(&v.name, s.size)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0;
            while pos < s.size {
                let n = ((s.size - pos) as usize).min(buf.len());
                repl.snapshots.read_snapshot(&s, pos, &mut buf[..n])?;
                if buf[..n].iter().any(|&b| b != 0) {
                    f.write_all_at(&buf[..n], pos)
                        .map_err(|source| ReplicationError::File {
                            op: "writing",
                            path: self.file_path(&v.name),
                            source,
                        })?;
                }
                pos += n as u64;
            }
            Dest::File(f)
        } else {
            let name = format!("{}{}", self.prefix, v.name);
            let c = repl.snapshots.clone_snapshot(&v.name, snap, &name)?;
            self.made_vols.push(name);
            Dest::Vol(c)
        };
        self.dests.insert(primary, dest);
        Ok(())
    }

    fn apply(&mut self, rec: &JournalRecord) -> Result<(), ReplicationError> {
        let h = &rec.head;
        let repl = self.repl;
        match h.kind {
            RecordKind::VolumeAdd => {
                if let Some(d) = self.dests.get(&h.volume) {
                    return resize(repl, d, h.length);
                }
                let name = rec
                    .name()
                    .map_err(|source| ReplicationError::BadRecord { seq: h.seq, source })?;
                let name = self.rename.local_name(&name);
                let dest = if self.into.is_some() {
                    Dest::File(self.new_file(&name, h.length)?)
                } else {
                    let full = format!("{}{name}", self.prefix);
                    let (v, _) = repl.volumes.create_volume(&full, h.length, None)?;
                    self.made_vols.push(full);
                    Dest::Vol(v)
                };
                self.dests.insert(h.volume, dest);
            }
            RecordKind::VolumeRemove => {
                // It stays as it was when it left the group.
                self.dests.remove(&h.volume);
            }
            RecordKind::VolumeResize => {
                if let Some(d) = self.dests.get(&h.volume) {
                    resize(repl, d, h.length)?;
                }
            }
            RecordKind::Write | RecordKind::Base => match self.dests.get(&h.volume) {
                Some(Dest::Vol(v)) => {
                    let _io = v.io_lock.read_recursive();
                    repl.volumes.write_plain(v, h.offset, &rec.payload)?;
                }
                Some(Dest::File(f)) => {
                    f.write_all_at(&rec.payload, h.offset).map_err(|source| {
                        ReplicationError::ImageFile {
                            op: "writing an image file",
                            source,
                        }
                    })?
                }
                None => return Err(unknown(h.volume)),
            },
            RecordKind::Zero => match self.dests.get(&h.volume) {
                Some(Dest::Vol(v)) => {
                    let _io = v.io_lock.read_recursive();
                    repl.volumes.discard_locked(v, h.offset, h.length)?;
                }
                Some(Dest::File(f)) => {
                    let size = f
                        .metadata()
                        .map_err(|source| ReplicationError::ImageFile {
                            op: "reading the size of an image file",
                            source,
                        })?
                        .len();
                    let end = h.offset.saturating_add(h.length).min(size);
                    let zeros = vec![0u8; 1 << 20];
                    let mut pos = h.offset;
                    while pos < end {
                        let n = ((end - pos) as usize).min(zeros.len());
                        f.write_all_at(&zeros[..n], pos).map_err(|source| {
                            ReplicationError::ImageFile {
                                op: "writing an image file",
                                source,
                            }
                        })?;
                        pos += n as u64;
                    }
                }
                None => return Err(unknown(h.volume)),
            },
            RecordKind::Marker
            | RecordKind::Info
            | RecordKind::BaseDone
            | RecordKind::FailbackDone
            | RecordKind::ResyncStart
            | RecordKind::ResyncDone
            | RecordKind::Seal => {}
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), ReplicationError> {
        for d in self.dests.values() {
            if let Dest::File(f) = d {
                f.sync_all().map_err(|source| ReplicationError::ImageFile {
                    op: "syncing an image file",
                    source,
                })?;
            }
        }
        Ok(self.repl.pool.sync()?)
    }

    /// Remove what the failed restore made.
    fn undo(&mut self) {
        self.dests.clear();
        for v in self.made_vols.drain(..) {
            if let Err(e) = delete_volume_recursive(self.repl, &v) {
                log::warn!("restore: removing the partial volume '{v}': {e}");
            }
        }
        for f in self.made_files.drain(..) {
            let _ = fs::remove_file(f);
        }
    }
}

fn unknown(volume: u64) -> ReplicationError {
    ReplicationError::NotInImage { volume }
}

/// Delete a volume the failed restore made, and its snapshots: what `fusevol volume delete
/// --recursive` does (the volume service alone refuses a volume that has snapshots).
fn delete_volume_recursive(r: &Replication, name: &str) -> Result<(), PoolError> {
    let vol = r.volumes.volume_or_err(name)?;
    r.mirror.refuse_paired(&vol, "deleted")?;
    r.refuse_grouped(&vol, "deleted")?;
    r.snapshots.delete_volume(&vol, true)
}

fn resize(r: &Replication, d: &Dest, size: u64) -> Result<(), ReplicationError> {
    match d {
        Dest::Vol(v) => Ok(r.volumes.resize(v, size)?),
        Dest::File(f) => f
            .set_len(size)
            .map_err(|source| ReplicationError::ImageFile {
                op: "sizing an image file",
                source,
            }),
    }
}

impl Replication {
    /// `group restore-to`: rebuild the group's volumes as of `target` into new volumes
    /// `<prefix><volume>` (default prefix `<group>-<seq>-`) or image files in `into`.
    pub fn group_restore(
        &self,
        name: &str,
        target: RestoreTarget,
        prefix: Option<&str>,
        into: Option<&Path>,
    ) -> Result<RestoreReport, PoolError> {
        let g = self
            .group_by_name(name)
            .ok_or_else(|| ReplicationError::NoGroup(name.to_string()).into_pool())?;
        if let Some(d) = into {
            if !d.is_absolute() || !d.is_dir() {
                return Err(PoolError::Invalid(format!(
                    "group '{name}': {} is not an existing absolute directory",
                    d.display()
                )));
            }
        }
        let fail = |e: ReplicationError| {
            ReplicationError::Restore {
                group: name.to_string(),
                source: Box::new(e),
            }
            .into_pool()
        };
        let lock = g.rt.lock().pitr.restore_lock.clone();
        let _held = lock.lock();
        let dir = remote::group_dir(&g.remote, name);
        let base = self.choose_base(&g, &dir, target).map_err(fail)?;
        let srcs = sources(name, &dir, base.epoch).map_err(fail)?;
        let expect = (g.uid, base.epoch);
        let (upto, until) = match target {
            RestoreTarget::Seq(n) => (n, u64::MAX),
            RestoreTarget::Time(t) => (u64::MAX, t),
        };
        // Pass 1: read and verify everything from the base to the target; write nothing.
        let mut known: BTreeSet<u64> = base
            .marker
            .as_ref()
            .map(|m| m.volumes.iter().map(|v| v.0).collect())
            .unwrap_or_default();
        let mut pending: BTreeSet<u64> = BTreeSet::new();
        // A resync (journal-full suspension) sends regions in no write order: the image
        // between its start and done records is not a consistent group image.
        let mut resync: Option<u64> = None;
        let mut count = 0u64;
        let (seq, time) = walk(
            name,
            &srcs,
            &dir,
            expect,
            base.seq + 1,
            upto,
            |r| r.head.time > until,
            |r| {
                match r.head.kind {
                    RecordKind::VolumeAdd if known.insert(r.head.volume) => {
                        pending.insert(r.head.volume);
                    }
                    RecordKind::BaseDone => {
                        pending.remove(&r.head.volume);
                    }
                    RecordKind::ResyncStart => resync = Some(r.head.seq),
                    RecordKind::ResyncDone => resync = None,
                    _ => {}
                }
                count += 1;
                Ok(())
            },
        )
        .map_err(fail)?;
        let time = if seq == base.seq {
            base.marker.as_ref().map_or(0, |m| m.time)
        } else {
            time
        };
        if let RestoreTarget::Seq(n) = target {
            if seq < n {
                return Err(fail(ReplicationError::BadRequest(format!(
                    "the records of epoch {} in {} go up to sequence number {seq} only; {n} is not there (yet)",
                    base.epoch,
                    dir.display()
                ))));
            }
        }
        if base.marker.is_none() && seq == 0 {
            return Err(fail(ReplicationError::BadRequest(format!(
                "{} is older than anything retained: it is before the group's first record",
                target_text(target)
            ))));
        }
        if !pending.is_empty() || (base.marker.is_none() && known.is_empty()) {
            return Err(fail(ReplicationError::BadRequest(format!(
                "the image at sequence number {seq} is not a consistent group image: the initial copy of {} volume(s) is not complete there",
                pending.len().max(1)
            ))));
        }
        if let Some(start) = resync {
            return Err(fail(ReplicationError::BadRequest(format!(
                "the image at sequence number {seq} is not a consistent group image: it is inside the resync that started at sequence number {start} (restore to a moment before it or after its end)"
            ))));
        }
        // Pass 2: build it.
        let prefix = prefix
            .map(str::to_string)
            .unwrap_or_else(|| format!("{name}-{seq}-"));
        let mut r = Restorer {
            repl: self,
            prefix,
            into: into.map(Path::to_path_buf),
            dests: HashMap::new(),
            made_vols: Vec::new(),
            made_files: Vec::new(),
            rename: g.rec.lock().ext.rename.clone(),
        };
        let built = (|| {
            if let Some(m) = &base.marker {
                for &(p, l, sid) in &m.volumes {
                    r.start_from_snapshot(p, l, sid, &m.name)?;
                }
            }
            walk(
                name,
                &srcs,
                &dir,
                expect,
                base.seq + 1,
                seq,
                |_| false,
                |rec| r.apply(rec),
            )?;
            r.finish()
        })();
        if let Err(e) = built {
            r.undo();
            return Err(fail(ReplicationError::RestoreUndone(Box::new(e))));
        }
        let mut outputs: Vec<String> = if r.into.is_some() {
            r.made_files
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        } else {
            r.made_vols.clone()
        };
        outputs.sort();
        let base_text = match &base.marker {
            Some(m) => format!("snapshot '{}' (sequence {})", m.name, m.seq),
            None => "initial image".to_string(),
        };
        log::info!(
            "group '{name}': restored to sequence {seq} (time {}) from the {base_text} and {count} records: {}",
            time_text(time),
            outputs.join(", ")
        );
        Ok(RestoreReport {
            group: name.to_string(),
            seq,
            time_ns: time,
            base: base_text,
            records: count,
            outputs,
        })
    }

    /// The latest usable base at or before `target`.
    fn choose_base(
        &self,
        g: &Group,
        dir: &Path,
        target: RestoreTarget,
    ) -> Result<Base, ReplicationError> {
        let markers = g.rec.lock().ext.pitr.markers.clone();
        let fits = |seq: u64, time: u64| match target {
            RestoreTarget::Seq(n) => seq <= n,
            RestoreTarget::Time(t) => time <= t,
        };
        let best = markers
            .iter()
            .filter(|m| m.consistent && fits(m.seq, m.time) && marker_usable(self, m))
            .max_by_key(|m| m.seq);
        if let Some(m) = best {
            return Ok(Base {
                marker: Some(m.clone()),
                seq: m.seq,
                epoch: m.epoch,
            });
        }
        // The initial image: the segments of epoch 1 start at the group's first record.
        let first = sources(&g.name, dir, 1)?;
        if first.keys().next() == Some(&1) {
            return Ok(Base {
                marker: None,
                seq: 0,
                epoch: 1,
            });
        }
        let what = target_text(target);
        let epoch = g.rec.lock().epoch;
        let oldest = sources(&g.name, dir, epoch)?
            .into_iter()
            .next()
            .map(|(f, p)| {
                format!(
                    "the oldest segment, {}, starts at sequence {f}",
                    p.display()
                )
            })
            .unwrap_or_else(|| "no segments are retained".into());
        let known: Vec<String> = markers
            .iter()
            .filter(|m| m.consistent && marker_usable(self, m))
            .map(|m| {
                format!(
                    "'{}' at sequence {} (time {})",
                    m.name,
                    m.seq,
                    time_text(m.time)
                )
            })
            .collect();
        Err(ReplicationError::BadRequest(format!(
            "{what} is older than anything retained: {oldest}, and no group snapshot at or before it is here (group snapshots: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )))
    }
}
