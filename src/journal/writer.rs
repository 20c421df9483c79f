//! Appending to the journal: sequence numbers, segments sealed by size and by age, sync,
//! recovery of a torn tail at open, and purge of segments the secondary has acknowledged.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::reader::{read_segment, record_size};
use super::{now_ns, JournalError, SEGMENT_SUFFIX};
use crate::format::journal::{RecordHead, RecordKind, SegmentHeader, SEGMENT_HEADER_SIZE};

/// When a segment is sealed.
#[derive(Debug, Clone, Copy)]
pub struct JournalConfig {
    /// Seal once a segment holds this many bytes.
    pub segment_bytes: u64,
    /// Seal a non-empty segment this long after its first record (bounds the lag).
    pub seal_age: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: 16 << 20,
            seal_age: Duration::from_millis(200),
        }
    }
}

/// A closed segment, ready to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub path: PathBuf,
    pub name: String,
    pub first: u64,
    pub last: u64,
    pub bytes: u64,
    /// Primary time of the first record (ns).
    pub first_time: u64,
}

/// Counters for `group status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Last sequence number handed out (0: none yet).
    pub written: u64,
    /// Last sequence number in a sealed segment.
    pub sealed: u64,
    /// Bytes held in segment files (sealed and open).
    pub bytes: u64,
    pub segments: u64,
    /// Primary time of the oldest record still held (ns; 0 when none).
    pub oldest_time: u64,
    /// Bytes of spare (purged, reusable) segment files.
    pub spare_bytes: u64,
}

struct OpenSegment {
    file: File,
    /// Made from a spare file: bytes of its earlier life may follow `len` until the seal
    /// truncates them away.
    recycled: bool,
    path: PathBuf,
    name: String,
    first: u64,
    len: u64,
    opened: Instant,
    first_time: u64,
}

struct Inner {
    cur: Option<OpenSegment>,
    next_seq: u64,
    sealed: VecDeque<SealedSegment>,
    /// Sealed segment files not yet fdatasynced, with their last sequence numbers.
    unsynced: Vec<(PathBuf, File, u64)>,
    sealed_upto: u64,
    bytes: u64,
    /// Purged segment files kept for reuse (see `SPARE_SUFFIX`), with their sizes.
    spares: Vec<(PathBuf, u64)>,
    spare_bytes: u64,
    /// Records appended whose data write is still running (`append_tracked`).
    inflight: std::collections::BTreeSet<u64>,
}

impl Inner {
    /// Keep a spare of `len` bytes? Within both bounds, or it is removed.
    fn room_for_spare(&self, len: u64) -> bool {
        self.spares.len() < MAX_SPARES && self.spare_bytes + len <= SPARE_BYTES
    }
}

/// Purged segment files are kept, up to this many and this many bytes, and reused for new
/// segments: overwriting the blocks and cached pages of a file costs much less CPU than
/// filling a new one, whose pages the kernel must allocate (measured on the 2-CPU VMs: the
/// journal's copy of a 1 MiB record took 3.7 times the array write of the same bytes with 4
/// spares, 0.8 times with 64 at full rate). Named `<n>.jspare`, they are never read.
/// They are disk space the journal keeps beyond what `group status` counts as used.
const MAX_SPARES: usize = 64;
const SPARE_BYTES: u64 = 1 << 30;
const SPARE_SUFFIX: &str = ".jspare";

/// The writer of one group's journal. Appends are serialized: the sequence order is the
/// order of the bytes in the files.
pub struct Journal {
    dir: PathBuf,
    group: u64,
    epoch: u64,
    cfg: Mutex<JournalConfig>,
    inner: Mutex<Inner>,
    /// fdatasync calls made (for tests).
    fdatasyncs: std::sync::atomic::AtomicU64,
}

/// The file name of the segment starting at `first`.
pub fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// Spare (purged, reusable) segment files in `dir`.
fn list_spares(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| JournalError::io("list", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| JournalError::io("list", dir, e))?;
        if ent.file_name().to_string_lossy().ends_with(SPARE_SUFFIX) {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Segment files in `dir` as (first seq, path), in sequence order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| JournalError::io("list", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| JournalError::io("list", dir, e))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
            if let Ok(first) = stem.parse::<u64>() {
                out.push((first, ent.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Journal {
    /// Open (or start) the journal in `dir`. Segments wholly before `keep_from` are leftovers
    /// of an interrupted purge and are removed. Sequence numbers continue after the last
    /// valid record found, and never go below `next_at_least` (records before it may have
    /// been purged, or shipped from a segment a machine crash lost).
    /// A torn tail of the last segment is cut off with a warning naming file and offset, and
    /// that segment is sealed. Damage in an earlier segment is an error, unless every record
    /// it can hold is at or before `tolerate_upto` (acknowledged by the other site, so
    /// `sync_after` may have left it to the kernel before a machine crash): that segment is
    /// removed with a warning.
    pub fn open(
        dir: &Path,
        group: u64,
        epoch: u64,
        keep_from: u64,
        next_at_least: u64,
        tolerate_upto: u64,
        cfg: JournalConfig,
    ) -> Result<Journal, JournalError> {
        let min_next = keep_from.max(1);
        fs::create_dir_all(dir).map_err(|e| JournalError::io("create directory", dir, e))?;
        let segs = list_segments(dir)?;
        let mut inner = Inner {
            cur: None,
            next_seq: min_next,
            sealed: VecDeque::new(),
            unsynced: Vec::new(),
            sealed_upto: min_next - 1,
            bytes: 0,
            spares: Vec::new(),
            spare_bytes: 0,
            inflight: Default::default(),
        };
        for p in list_spares(dir)? {
            let len = fs::metadata(&p)
                .map_err(|e| JournalError::io("stat", &p, e))?
                .len();
            if inner.room_for_spare(len) {
                inner.spares.push((p, len));
                inner.spare_bytes += len;
            } else {
                crate::fsio::remove(&p).map_err(|e| JournalError::io("remove", &p, e))?;
            }
        }
        let n = segs.len();
        let firsts: Vec<u64> = segs.iter().map(|(f, _)| *f).collect();
        for (i, (first, path)) in segs.into_iter().enumerate() {
            // The newest segment may have been created just before a machine crash, its
            // header never written (a file shorter than a header): it holds nothing.
            let len = fs::metadata(&path)
                .map_err(|e| JournalError::io("stat", &path, e))?
                .len();
            if i + 1 == n && len < crate::format::journal::SEGMENT_HEADER_SIZE as u64 {
                log::warn!(
                    "journal segment {}: created but its header never written ({len} bytes, a crash right after its creation); removed",
                    path.display()
                );
                crate::fsio::remove(&path).map_err(|e| JournalError::io("remove", &path, e))?;
                continue;
            }
            let seg = read_segment(&path, Some((group, epoch)))?;
            if seg.header.first_seq != first {
                return Err(JournalError::Invalid {
                    path,
                    offset: 0,
                    detail: format!("header says first sequence {}", seg.header.first_seq),
                });
            }
            let last_one = i + 1 == n;
            if let Some(d) = &seg.damage {
                if !last_one && firsts[i + 1] - 1 <= tolerate_upto {
                    log::warn!(
                        "journal segment {}: damaged at offset {} ({}) after a machine crash; its records (up to {}) are acknowledged by the other site and it is removed; the volumes here may lack the last unsynced writes the other site holds",
                        path.display(),
                        d.offset,
                        d.error,
                        firsts[i + 1] - 1
                    );
                    crate::fsio::remove(&path).map_err(|e| JournalError::io("remove", &path, e))?;
                    continue;
                }
                if !last_one || seg.sealed {
                    return Err(JournalError::Damaged {
                        path,
                        offset: d.offset,
                        source: d.error.clone(),
                    });
                }
                log::warn!(
                    "journal segment {}: torn tail at offset {} cut off ({})",
                    path.display(),
                    d.offset,
                    d.error
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| JournalError::io("open", &path, e))?;
                crate::fsio::set_len(&f, seg.valid_len)
                    .map_err(|e| JournalError::io("truncate", &path, e))?;
            }
            let Some(last) = seg.last_seq() else {
                // Created but never written: nothing to keep.
                crate::fsio::remove(&path).map_err(|e| JournalError::io("remove", &path, e))?;
                continue;
            };
            if last + 1 < inner.next_seq && !last_one {
                // Older than what the caller says is kept: a purge was interrupted.
                crate::fsio::remove(&path).map_err(|e| JournalError::io("remove", &path, e))?;
                continue;
            }
            let name = segment_name(first);
            let mut bytes = seg.valid_len;
            if !seg.sealed {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| JournalError::io("open", &path, e))?;
                // A recycled file may hold old bytes after the last record.
                crate::fsio::set_len(&f, bytes)
                    .map_err(|e| JournalError::io("truncate", &path, e))?;
                bytes += write_seal(
                    &f,
                    &path,
                    group,
                    epoch,
                    last,
                    seg.records.len() as u64,
                    bytes,
                )?;
                inner.unsynced.push((path.clone(), f, last));
            }
            inner.next_seq = inner.next_seq.max(last + 1);
            inner.sealed_upto = inner.sealed_upto.max(last);
            inner.bytes += bytes;
            inner.sealed.push_back(SealedSegment {
                path,
                name,
                first,
                last,
                bytes,
                first_time: seg.records[0].head.time,
            });
        }
        inner.next_seq = inner.next_seq.max(next_at_least);
        inner.sealed_upto = inner.sealed_upto.max(inner.next_seq - 1);
        Ok(Journal {
            dir: dir.to_path_buf(),
            group,
            epoch,
            cfg: Mutex::new(cfg),
            inner: Mutex::new(inner),
            fdatasyncs: Default::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn group(&self) -> u64 {
        self.group
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn config(&self) -> JournalConfig {
        *self.cfg.lock()
    }

    pub fn set_config(&self, cfg: JournalConfig) {
        *self.cfg.lock() = cfg;
    }

    /// Append one record; returns its sequence number. The bytes are in the page cache when
    /// this returns (a daemon crash loses nothing); `sync` makes them durable.
    pub fn append(
        &self,
        kind: RecordKind,
        volume: u64,
        offset: u64,
        length: u64,
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        self.append_as(kind, volume, offset, length, payload, false)
    }

    /// Like `append` for a record whose data write is still to come: the record counts as in
    /// flight (`completed` stays before it) until `done` is called with its number.
    pub fn append_tracked(
        &self,
        kind: RecordKind,
        volume: u64,
        offset: u64,
        length: u64,
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        self.append_as(kind, volume, offset, length, payload, true)
    }

    fn append_as(
        &self,
        kind: RecordKind,
        volume: u64,
        offset: u64,
        length: u64,
        payload: &[u8],
        tracked: bool,
    ) -> Result<u64, JournalError> {
        let crc = payload_crc(payload);
        let mut g = self.inner.lock();
        let (seq, hbytes) = self.begin(&mut g, kind, volume, offset, length, (payload, crc))?;
        let cur = g.cur.as_mut().expect("open segment");
        let write = || -> std::io::Result<()> {
            fail::fail_point!("journal::append::write", |_| Err(
                std::io::Error::from_raw_os_error(libc::EIO)
            ));
            write_vectored_at(&cur.file, &[&hbytes, payload], cur.len)
        };
        write().map_err(|e| JournalError::io("append to journal segment", &cur.path, e))?;
        if tracked {
            g.inflight.insert(seq);
        }
        if let Err(e) = self.finish(&mut g, payload.len()) {
            g.inflight.remove(&seq);
            return Err(e);
        }
        Ok(seq)
    }

    /// The data write of record `seq` (from `append_tracked`) is over.
    pub fn done(&self, seq: u64) {
        self.inner.lock().inflight.remove(&seq);
    }

    /// Every record up to the returned number has finished its data write.
    pub fn completed(&self) -> u64 {
        let g = self.inner.lock();
        match g.inflight.first() {
            Some(&s) => s - 1,
            None => g.next_seq - 1,
        }
    }

    /// Open a segment if none is, and make the header of the next record (not written yet)
    /// for `payload`, whose CRC may be computed already.
    fn begin(
        &self,
        g: &mut Inner,
        kind: RecordKind,
        volume: u64,
        offset: u64,
        length: u64,
        (payload, payload_crc): (&[u8], Option<u32>),
    ) -> Result<(u64, [u8; crate::format::journal::RECORD_HEADER_SIZE]), JournalError> {
        debug_assert!(kind != RecordKind::Seal);
        let seq = g.next_seq;
        let time = now_ns();
        if g.cur.is_none() {
            let name = segment_name(seq);
            let path = self.dir.join(&name);
            let hdr = SegmentHeader {
                group: self.group,
                epoch: self.epoch,
                first_seq: seq,
                created: time,
            };
            let spare = g.spares.pop().map(|(p, len)| {
                g.spare_bytes -= len;
                p
            });
            let (file, recycled) = match spare {
                Some(spare) => match reuse_spare(&spare, &path, &hdr) {
                    Ok(f) => (f, true),
                    Err(e) => {
                        log::warn!(
                            "journal: spare segment file {} not reused ({e})",
                            spare.display()
                        );
                        let _ = crate::fsio::remove(&spare);
                        (new_segment_file(&path, &hdr)?, false)
                    }
                },
                None => (new_segment_file(&path, &hdr)?, false),
            };
            g.bytes += SEGMENT_HEADER_SIZE as u64;
            g.cur = Some(OpenSegment {
                file,
                recycled,
                path,
                name,
                first: seq,
                len: SEGMENT_HEADER_SIZE as u64,
                opened: Instant::now(),
                first_time: time,
            });
        }
        let head = RecordHead {
            kind,
            group: self.group,
            epoch: self.epoch,
            seq,
            time,
            volume,
            offset,
            length,
        };
        let hbytes = match payload_crc {
            Some(crc) => head.encode_with_crc(payload.len(), crc),
            None => head.encode(payload),
        };
        Ok((seq, hbytes))
    }

    /// The record `begin` made is in the file: count it, and seal the segment when full.
    fn finish(&self, g: &mut Inner, payload: usize) -> Result<(), JournalError> {
        let size = record_size(payload);
        let cur = g.cur.as_mut().expect("open segment");
        cur.len += size;
        let full = cur.len >= self.config().segment_bytes;
        g.bytes += size;
        g.next_seq += 1;
        if full {
            self.seal_locked(g)?;
        }
        Ok(())
    }

    fn seal_locked(&self, g: &mut Inner) -> Result<(), JournalError> {
        let Some(cur) = g.cur.take() else {
            return Ok(());
        };
        let last = g.next_seq - 1;
        let count = last + 1 - cur.first;
        let added = write_seal(
            &cur.file, &cur.path, self.group, self.epoch, last, count, cur.len,
        )?;
        if cur.recycled {
            // A sealed segment ends at its seal (it is shipped whole, as it is on disk).
            crate::fsio::set_len(&cur.file, cur.len + added)
                .map_err(|e| JournalError::io("truncate journal segment", &cur.path, e))?;
        }
        g.bytes += added;
        g.sealed_upto = last;
        g.sealed.push_back(SealedSegment {
            path: cur.path.clone(),
            name: cur.name,
            first: cur.first,
            last,
            bytes: cur.len + added,
            first_time: cur.first_time,
        });
        g.unsynced.push((cur.path, cur.file, last));
        Ok(())
    }

    /// Seal the open segment now, whatever its size or age.
    pub fn seal(&self) -> Result<(), JournalError> {
        let mut g = self.inner.lock();
        self.seal_locked(&mut g)
    }

    /// Seal the open segment if its first record is older than the seal age.
    pub fn seal_if_old(&self) -> Result<bool, JournalError> {
        let age = self.config().seal_age;
        let mut g = self.inner.lock();
        match &g.cur {
            Some(c) if c.opened.elapsed() >= age => {
                self.seal_locked(&mut g)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Make every record appended so far durable (fdatasync of the segments written).
    pub fn sync(&self) -> Result<(), JournalError> {
        self.sync_after(0)
    }

    /// Make every record after `held_elsewhere` durable. Sealed segments wholly at or before
    /// it are not synced: their records are durable at the other site (acknowledged), so
    /// they are purged as soon as the volumes' data is synced, and a segment deleted before
    /// the kernel writes it back never costs a disk write. A machine crash may tear such a
    /// segment; `open` drops it then (see `tolerate_upto`).
    pub fn sync_after(&self, held_elsewhere: u64) -> Result<(), JournalError> {
        let (unsynced, cur) = {
            let mut g = self.inner.lock();
            let cur = match &g.cur {
                Some(c) => Some((
                    c.path.clone(),
                    c.file
                        .try_clone()
                        .map_err(|e| JournalError::io("dup", &c.path, e))?,
                    u64::MAX,
                )),
                None => None,
            };
            let mut unsynced = std::mem::take(&mut g.unsynced);
            unsynced.retain(|(_, _, last)| *last > held_elsewhere);
            (unsynced, cur)
        };
        for (path, f, _) in unsynced.iter().chain(cur.iter()) {
            self.fdatasyncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::fsio::fdatasync(f)
                .map_err(|e| JournalError::io("fdatasync journal segment", path, e))?;
        }
        Ok(())
    }

    /// Sealed segments holding records after `seq`, oldest first.
    pub fn sealed_after(&self, seq: u64) -> Vec<SealedSegment> {
        let g = self.inner.lock();
        g.sealed.iter().filter(|s| s.last > seq).cloned().collect()
    }

    /// Delete the sealed segments whose every record is at or before `seq`. Returns the
    /// number of bytes freed.
    pub fn purge_upto(&self, seq: u64) -> Result<u64, JournalError> {
        let mut freed = 0;
        loop {
            let seg = {
                let mut g = self.inner.lock();
                match g.sealed.front() {
                    Some(s) if s.last <= seq => {
                        let s = g.sealed.pop_front().expect("front");
                        g.bytes -= s.bytes;
                        g.unsynced.retain(|(p, _, _)| p != &s.path);
                        s
                    }
                    _ => break,
                }
            };
            // Crash point: the segment is acknowledged and durable at the other site, and
            // still here (a restarted primary purges it again).
            fail::fail_point!("journal::purge::before_remove", |_| {
                super::crash_point("journal::purge::before_remove")
            });
            self.retire(&seg)?;
            freed += seg.bytes;
        }
        Ok(freed)
    }

    /// A purged segment becomes a spare file, or is removed when there are enough spares.
    /// Its records are acknowledged and durable at the other site: it is never read again.
    fn retire(&self, seg: &SealedSegment) -> Result<(), JournalError> {
        let keep = self.inner.lock().room_for_spare(seg.bytes);
        if keep {
            let spare = self.dir.join(format!("{}{SPARE_SUFFIX}", seg.first));
            match crate::fsio::rename(&seg.path, &spare) {
                Ok(()) => {
                    let mut g = self.inner.lock();
                    g.spares.push((spare, seg.bytes));
                    g.spare_bytes += seg.bytes;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(_) => {}
            }
        }
        match crate::fsio::remove(&seg.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(JournalError::io("remove journal segment", &seg.path, e)),
        }
    }

    pub fn stats(&self) -> JournalStats {
        let g = self.inner.lock();
        let oldest_time = g
            .sealed
            .front()
            .map(|s| s.first_time)
            .or(g.cur.as_ref().map(|c| c.first_time))
            .unwrap_or(0);
        JournalStats {
            written: g.next_seq - 1,
            sealed: g.sealed_upto,
            bytes: g.bytes,
            segments: g.sealed.len() as u64 + g.cur.is_some() as u64,
            oldest_time,
            spare_bytes: g.spare_bytes,
        }
    }
}

/// Payloads from this size on have their CRC computed before the journal lock is taken, so
/// concurrent large writers compute theirs in parallel (1 MiB takes ~90 µs here).
const CRC_OUTSIDE_LOCK: usize = 64 << 10;

fn payload_crc(payload: &[u8]) -> Option<u32> {
    (payload.len() >= CRC_OUTSIDE_LOCK).then(|| crate::format::journal::crc32c_of(payload))
}

/// Create the file of a new segment with its header.
fn new_segment_file(path: &Path, hdr: &SegmentHeader) -> Result<File, JournalError> {
    let file = crate::fsio::create_rw(path)
        .map_err(|e| JournalError::io("create journal segment", path, e))?;
    crate::fsio::pwrite(&file, &hdr.encode(), 0)
        .map_err(|e| JournalError::io("write journal segment", path, e))?;
    Ok(file)
}

/// Make the spare file `spare` the segment `path`: the new header is written under the
/// spare's name first, so a file with a segment's name always has its own header. What
/// follows the header is the old life's bytes until records overwrite them; a reader stops
/// there (an old record has an earlier sequence number), and the seal truncates them.
fn reuse_spare(spare: &Path, path: &Path, hdr: &SegmentHeader) -> std::io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open(spare)?;
    crate::fsio::pwrite(&file, &hdr.encode(), 0)?;
    crate::fsio::rename(spare, path)?;
    Ok(file)
}

/// Write the seal record at `at`; returns its size.
fn write_seal(
    f: &File,
    path: &Path,
    group: u64,
    epoch: u64,
    last: u64,
    count: u64,
    at: u64,
) -> Result<u64, JournalError> {
    let head = RecordHead {
        kind: RecordKind::Seal,
        group,
        epoch,
        seq: last,
        time: now_ns(),
        volume: 0,
        offset: count,
        length: 0,
    };
    crate::fsio::pwrite(f, &head.encode(&[]), at)
        .map_err(|e| JournalError::io("seal journal segment", path, e))?;
    Ok(record_size(0))
}

/// pwritev of all `parts` at `offset` (`fsio::pwritev`).
fn write_vectored_at(f: &File, parts: &[&[u8]], offset: u64) -> std::io::Result<()> {
    crate::fsio::pwritev(f, parts, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{read_sealed, read_segment, JournalError};

    const G: u64 = 0xabc;

    fn cfg(bytes: u64) -> JournalConfig {
        JournalConfig {
            segment_bytes: bytes,
            seal_age: Duration::from_millis(50),
        }
    }

    /// A new journal in `dir` with segments of `seg` bytes and six 100-byte writes of 7s
    /// (one sealed segment each at `seg` 200).
    fn six_writes(dir: &Path, seg: u64) -> Journal {
        let j = Journal::open(dir, G, 1, 1, 1, 0, cfg(seg)).unwrap();
        for i in 0..6u64 {
            j.append(RecordKind::Write, 1, i, 100, &[7; 100]).unwrap();
        }
        j
    }

    #[test]
    fn appends_seal_by_size_and_read_back_in_order() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(1000)).unwrap();
        for i in 0..20u64 {
            let data = vec![i as u8; 100];
            assert_eq!(
                j.append(RecordKind::Write, 5, i * 100, 100, &data).unwrap(),
                i + 1
            );
        }
        let st = j.stats();
        assert_eq!(st.written, 20);
        assert!(st.sealed >= 5 && st.sealed < 20, "{st:?}");
        let sealed = j.sealed_after(0);
        assert!(sealed.len() >= 2);
        let mut next = 1;
        for s in &sealed {
            let seg = read_sealed(&s.path, (G, 1)).unwrap();
            assert_eq!(seg.header.first_seq, s.first);
            for r in &seg.records {
                assert_eq!(r.head.seq, next);
                assert_eq!(r.payload, vec![(next - 1) as u8; 100]);
                next += 1;
            }
            assert_eq!(seg.last_seq(), Some(s.last));
        }
        // A foreign group or epoch is refused by name.
        assert!(matches!(
            read_sealed(&sealed[0].path, (G, 2)),
            Err(JournalError::Foreign { .. })
        ));
        assert!(matches!(
            read_sealed(&sealed[0].path, (G + 1, 1)),
            Err(JournalError::Foreign { .. })
        ));
    }

    #[test]
    fn seal_by_age_only_when_old_and_not_empty() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(1 << 30)).unwrap();
        assert!(!j.seal_if_old().unwrap());
        j.append(RecordKind::Zero, 1, 0, 4096, &[]).unwrap();
        assert!(!j.seal_if_old().unwrap());
        std::thread::sleep(Duration::from_millis(60));
        assert!(j.seal_if_old().unwrap());
        assert_eq!(j.stats().sealed, 1);
        assert_eq!(j.sealed_after(0).len(), 1);
        assert!(j.sealed_after(1).is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_sequence_continues() {
        let t = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(1 << 30)).unwrap();
            for i in 0..5u64 {
                j.append(RecordKind::Write, 1, i * 8, 8, &[i as u8; 8])
                    .unwrap();
            }
            // The daemon dies with segment 1 open.
        }
        let path = t.path().join(segment_name(1));
        let len = fs::metadata(&path).unwrap().len();
        // Tear the last record in half.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(1 << 30)).unwrap();
        assert_eq!(j.stats().written, 4);
        let seg = read_sealed(&path, (G, 1)).unwrap();
        assert_eq!(seg.last_seq(), Some(4));
        assert_eq!(j.append(RecordKind::Write, 1, 0, 1, &[9]).unwrap(), 5);
        j.seal().unwrap();
        let s2 = read_sealed(&t.path().join(segment_name(5)), (G, 1)).unwrap();
        assert_eq!(s2.records.len(), 1);
    }

    #[test]
    fn damage_in_a_sealed_segment_is_an_error_naming_the_offset() {
        let t = tempfile::tempdir().unwrap();
        drop(six_writes(t.path(), 200));
        let first = t.path().join(segment_name(1));
        let mut b = fs::read(&first).unwrap();
        let at = SEGMENT_HEADER_SIZE + 80;
        b[at] ^= 0xff;
        fs::write(&first, &b).unwrap();
        let err = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(200))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains(&first.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("offset {SEGMENT_HEADER_SIZE}")),
            "{msg}"
        );
        let r = read_segment(&first, None).unwrap();
        assert!(r.records.is_empty() && r.damage.is_some());
        assert!(read_sealed(&first, (G, 1)).is_err());
    }

    #[test]
    fn completed_stays_before_a_record_whose_data_write_runs() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(1 << 20)).unwrap();
        let a = j
            .append_tracked(RecordKind::Write, 1, 0, 4, &[1; 4])
            .unwrap();
        let b = j
            .append_tracked(RecordKind::Write, 1, 8, 4, &[2; 4])
            .unwrap();
        j.append(RecordKind::Zero, 1, 0, 4, &[]).unwrap();
        assert_eq!(j.completed(), a - 1);
        j.done(b);
        assert_eq!(j.completed(), a - 1, "a is still running");
        j.done(a);
        assert_eq!(j.completed(), j.stats().written);
    }

    #[test]
    fn sync_after_leaves_segments_held_elsewhere_to_the_kernel() {
        use std::sync::atomic::Ordering::Relaxed;
        let t = tempfile::tempdir().unwrap();
        let j = six_writes(t.path(), 200);
        j.seal().unwrap();
        let sealed = j.sealed_after(0);
        assert_eq!(sealed.len(), 6);
        // Every record acknowledged: nothing to fdatasync.
        j.sync_after(sealed[5].last).unwrap();
        assert_eq!(j.fdatasyncs.load(Relaxed), 0);
        // New records after the acknowledged number are synced (two sealed, one open).
        for i in 0..3u64 {
            j.append(RecordKind::Write, 1, i, 100, &[8; 100]).unwrap();
        }
        j.append(RecordKind::Zero, 1, 0, 100, &[]).unwrap();
        let before = j.fdatasyncs.load(Relaxed);
        j.sync_after(sealed[5].last).unwrap();
        assert_eq!(
            j.fdatasyncs.load(Relaxed) - before,
            4,
            "3 sealed + the open one"
        );
        // Once synced, a segment is not synced again; `sync` syncs what was held elsewhere.
        let before = j.fdatasyncs.load(Relaxed);
        j.sync().unwrap();
        assert_eq!(
            j.fdatasyncs.load(Relaxed) - before,
            1,
            "only the open segment"
        );
    }

    #[test]
    fn a_damaged_segment_the_other_site_acknowledged_is_dropped_at_open() {
        let t = tempfile::tempdir().unwrap();
        drop(six_writes(t.path(), 200));
        let segs = list_segments(t.path()).unwrap();
        assert!(segs.len() >= 3, "{segs:?}");
        let (first, path) = segs[0].clone();
        let upto = segs[1].0 - 1;
        let mut b = fs::read(&path).unwrap();
        b[SEGMENT_HEADER_SIZE + 80] ^= 0xff;
        fs::write(&path, &b).unwrap();
        // Acknowledged only up to a record before its end: still an error.
        assert!(Journal::open(t.path(), G, 1, first, first, upto - 1, cfg(200)).is_err());
        assert!(path.exists());
        // Every record it can hold acknowledged: dropped, the rest kept and numbering goes on.
        let j = Journal::open(t.path(), G, 1, first, first, upto, cfg(200)).unwrap();
        assert!(!path.exists());
        assert_eq!(j.stats().written, 6);
        assert_eq!(j.sealed_after(0).first().map(|s| s.first), Some(upto + 1));
        assert_eq!(j.append(RecordKind::Write, 1, 0, 1, &[1]).unwrap(), 7);
    }

    #[test]
    fn purge_frees_only_acknowledged_segments_and_reopen_keeps_numbers() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(300)).unwrap();
        for i in 0..10u64 {
            j.append(RecordKind::Write, 1, i, 100, &[1; 100]).unwrap();
        }
        j.seal().unwrap();
        let before = j.stats();
        let segs = j.sealed_after(0);
        let cut = segs[1].last;
        let freed = j.purge_upto(cut).unwrap();
        assert_eq!(freed, segs[0].bytes + segs[1].bytes);
        assert_eq!(j.stats().bytes, before.bytes - freed);
        assert!(!segs[0].path.exists() && segs[2].path.exists());
        assert_eq!(j.sealed_after(0)[0].first, cut + 1);
        drop(j);
        let j = Journal::open(t.path(), G, 1, cut + 1, cut + 1, 0, cfg(300)).unwrap();
        assert_eq!(j.stats().written, 10);
        assert_eq!(j.append(RecordKind::Zero, 1, 0, 1, &[]).unwrap(), 11);
        // All purged: numbering still continues from the caller's floor.
        let t2 = tempfile::tempdir().unwrap();
        let j2 = Journal::open(t2.path(), G, 1, 500, 500, 0, cfg(300)).unwrap();
        assert_eq!(j2.append(RecordKind::Zero, 1, 0, 1, &[]).unwrap(), 500);
        j.sync().unwrap();
    }

    #[test]
    fn purged_segments_are_reused_and_their_old_bytes_never_read() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::open(t.path(), G, 1, 1, 1, 0, cfg(4000)).unwrap();
        // Large records first, so the spare files are longer than what later fills them.
        for i in 0..12u64 {
            j.append(RecordKind::Write, 1, i, 1000, &[i as u8; 1000])
                .unwrap();
        }
        j.seal().unwrap();
        let last = j.stats().written;
        j.purge_upto(last).unwrap();
        let spares = list_spares(t.path()).unwrap();
        assert!(
            !spares.is_empty() && spares.len() <= MAX_SPARES,
            "{spares:?}"
        );
        let on_disk: u64 = spares.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert_eq!(j.stats().spare_bytes, on_disk);
        assert!(list_segments(t.path()).unwrap().is_empty());
        // Small records into recycled files: every sealed one ends at its seal and reads
        // back exactly what was written.
        for i in 0..30u64 {
            j.append(RecordKind::Write, 2, i, 100, &[0x40 + i as u8; 100])
                .unwrap();
        }
        j.seal().unwrap();
        let mut next = last + 1;
        for seg in j.sealed_after(last) {
            assert_eq!(std::fs::metadata(&seg.path).unwrap().len(), seg.bytes);
            let r = read_sealed(&seg.path, (G, 1)).unwrap();
            for rec in &r.records {
                assert_eq!(rec.head.seq, next);
                assert_eq!(rec.payload, vec![0x40 + (next - last - 1) as u8; 100]);
                next += 1;
            }
        }
        assert_eq!(next, last + 31);
        // A crash with a recycled segment open: its old bytes are not records, the reopened
        // journal keeps exactly the new ones and numbering continues after them.
        let upto = j.stats().written;
        j.purge_upto(upto).unwrap();
        let big = j.append(RecordKind::Write, 3, 0, 100, &[7; 100]).unwrap();
        assert_eq!(big, upto + 1);
        let open = list_segments(t.path()).unwrap();
        assert_eq!(open.len(), 1);
        let new_len = SEGMENT_HEADER_SIZE as u64 + record_size(100);
        assert!(
            std::fs::metadata(&open[0].1).unwrap().len() > new_len,
            "a recycled file, longer than its new contents"
        );
        drop(j);
        let j = Journal::open(t.path(), G, 1, upto + 1, upto + 1, 0, cfg(4000)).unwrap();
        assert_eq!(j.stats().written, big);
        let segs = j.sealed_after(upto);
        assert_eq!(segs.len(), 1);
        let r = read_sealed(&segs[0].path, (G, 1)).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].payload, vec![7; 100]);
        assert_eq!(j.append(RecordKind::Zero, 1, 0, 1, &[]).unwrap(), big + 1);
    }
}
