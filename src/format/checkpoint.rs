//! Checkpoint: the whole metadata state at one moment, written as one file.

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

/// One array as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayRec {
    pub id: u32,
    pub name: String,
    pub tier: String,
    /// Data-area bytes.
    pub capacity: u64,
    /// File path relative to the pool directory.
    pub file: String,
}

impl ArrayRec {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u32(self.id)
            .str(&self.name)
            .str(&self.tier)
            .u64(self.capacity)
            .str(&self.file);
    }
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<ArrayRec, FormatError> {
        Ok(ArrayRec {
            id: d.u32()?,
            name: d.str()?,
            tier: d.str()?,
            capacity: d.u64()?,
            file: d.str()?,
        })
    }
}

/// One chunk of an extent table: its non-hole entries as (slot 0..512, packed `Phys` + 1).
/// Tables that share a chunk in memory share it here too (by chunk id = index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRec {
    /// The chunk's 512 slots as stored in memory: packed phys + 1, 0 for a hole. Shared with
    /// the in-memory table (no copy when a checkpoint is written or loaded).
    pub slots: std::sync::Arc<[u64; 512]>,
}

impl ChunkRec {
    /// Mapped slots.
    pub fn mapped(&self) -> usize {
        self.slots.iter().filter(|&&r| r != 0).count()
    }
}

/// A table as (chunk index in the table, chunk id in `Checkpoint::chunks`).
pub type TableRec = Vec<(u64, u64)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRec {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub tier: String,
    pub created: u64,
    /// The volume this one was cloned from (0: none); sharing extents is legal only inside
    /// such a family.
    pub origin: u64,
    pub table: TableRec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRec {
    pub id: u64,
    pub volume: u64,
    pub name: String,
    pub created: u64,
    pub size: u64,
    pub table: TableRec,
}

/// One pair (split mirror) with its bitmaps as runs (start region, count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PairRec {
    pub id: u64,
    pub pvol: u64,
    pub svol: u64,
    pub group: String,
    pub state: u8,
    pub rate: u64,
    pub error: String,
    /// Snapshot of the P-VOL a quick split's copy reads from (0: none).
    pub split_snap: u64,
    pub todo: Vec<(u64, u64)>,
    pub p_dirty: Vec<(u64, u64)>,
    pub s_dirty: Vec<(u64, u64)>,
}

/// A partial extent (sub-extent copy-on-write): `ext` (packed `Phys`) holds its own data only
/// in the 4 KiB blocks set in `valid` (bit b of word b/64); the others read from `src`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartialRec {
    pub ext: u64,
    pub src: u64,
    pub valid: Vec<u64>,
}

/// The most words a block bitmap may have (64 MiB extents / 4 KiB blocks / 64 bits).
pub const MAX_BITMAP_WORDS: usize = 256;

pub(crate) fn enc_words(e: &mut Enc, w: &[u64]) {
    e.u64(w.len() as u64);
    for &x in w {
        e.u64(x);
    }
}

pub(crate) fn dec_words(d: &mut Dec<'_>) -> Result<Vec<u64>, FormatError> {
    let n = d.count(8)?;
    if n == 0 || n > MAX_BITMAP_WORDS {
        return Err(FormatError::Invalid {
            what: "block bitmap",
            detail: format!("{n} words"),
        });
    }
    (0..n).map(|_| d.u64()).collect()
}

impl PartialRec {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.ext).u64(self.src);
        enc_words(e, &self.valid);
    }
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<PartialRec, FormatError> {
        let r = PartialRec {
            ext: d.u64()?,
            src: d.u64()?,
            valid: dec_words(d)?,
        };
        if r.ext == r.src {
            return Err(FormatError::Invalid {
                what: "partial extent",
                detail: format!("extent {:#x} is its own source", r.ext),
            });
        }
        Ok(r)
    }
}

/// The pool's metadata state. Recovery = the last checkpoint + the log records after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub pool_id: u64,
    /// Incremented by every checkpoint; the log that follows carries the same epoch.
    pub epoch: u64,
    pub extent_size: u64,
    /// Next id for a volume or snapshot (one id space).
    pub next_id: u64,
    pub arrays: Vec<ArrayRec>,
    pub chunks: Vec<ChunkRec>,
    pub volumes: Vec<VolumeRec>,
    pub snapshots: Vec<SnapshotRec>,
    pub pairs: Vec<PairRec>,
    /// Partial extents (version 2; a version-1 checkpoint has none).
    pub partials: Vec<PartialRec>,
    /// Journal groups (version 3; older checkpoints have none).
    pub groups: Vec<GroupRec>,
    /// Volumes made one family by copies that shared extents (version 5; older checkpoints
    /// have none): (volume, the volume its extents came from).
    pub links: Vec<(u64, u64)>,
    /// Volume information by volume or snapshot id, encoded `volinfo::InfoRecord`s
    /// (version 6; older checkpoints have none).
    pub infos: Vec<(u64, Vec<u8>)>,
    /// Backup schedules by id, encoded `schedule::ScheduleRec`s (version 7; older
    /// checkpoints have none).
    pub schedules: Vec<(u64, Vec<u8>)>,
}

/// A journal group as this pool knows it (either side).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRec {
    /// Unique id shared by both sites (also in every journal record).
    pub uid: u64,
    pub name: String,
    /// 1 = primary, 2 = secondary.
    pub role: u8,
    pub epoch: u64,
    pub remote: String,
    /// (local volume id, primary volume id); equal on the primary.
    pub volumes: Vec<(u64, u64)>,
    /// Primary: every record up to this one is in durable volume data (redo starts after it).
    /// Secondary: every record up to this one is applied and durable.
    pub synced: u64,
    /// The last acknowledged sequence number.
    pub acked: u64,
    /// Primary time (ns) of record `synced` on the secondary; 0 on the primary.
    pub synced_time: u64,
    /// Primary volume ids whose initial (base) copy is not complete.
    pub base_pending: Vec<u64>,
    /// When the secondary became consistent (seconds since the Unix epoch; 0: not yet).
    pub consistent_since: u64,
    pub segment_bytes: u64,
    pub seal_age_ms: u64,
    /// Shipping rate limit in bytes per second (0: none).
    pub rate: u64,
    pub journal_limit: u64,
    /// The optional sections (version 4 checkpoints; group records of newer logs).
    pub ext: super::group::GroupSections,
}

impl GroupRec {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.uid)
            .str(&self.name)
            .u8(self.role)
            .u64(self.epoch)
            .str(&self.remote)
            .u64(self.volumes.len() as u64);
        for &(l, p) in &self.volumes {
            e.u64(l).u64(p);
        }
        e.u64(self.synced)
            .u64(self.acked)
            .u64(self.synced_time)
            .u64(self.base_pending.len() as u64);
        for &v in &self.base_pending {
            e.u64(v);
        }
        e.u64(self.consistent_since)
            .u64(self.segment_bytes)
            .u64(self.seal_age_ms)
            .u64(self.rate)
            .u64(self.journal_limit);
        self.ext.encode(e);
    }

    /// `sections`: whether the optional sections follow (Some(false) for a version-3
    /// checkpoint); None: they do iff bytes remain (a metadata log record).
    pub(crate) fn decode(d: &mut Dec<'_>, sections: Option<bool>) -> Result<GroupRec, FormatError> {
        let uid = d.u64()?;
        let name = d.str()?;
        let role = d.u8()?;
        if role != 1 && role != 2 {
            return Err(FormatError::Invalid {
                what: "group record",
                detail: format!("role {role}"),
            });
        }
        let epoch = d.u64()?;
        let remote = d.str()?;
        let n = d.count(16)?;
        let mut volumes = Vec::with_capacity(n);
        for _ in 0..n {
            volumes.push((d.u64()?, d.u64()?));
        }
        let (synced, acked, synced_time) = (d.u64()?, d.u64()?, d.u64()?);
        let n = d.count(8)?;
        let mut base_pending = Vec::with_capacity(n);
        for _ in 0..n {
            base_pending.push(d.u64()?);
        }
        let (consistent_since, segment_bytes, seal_age_ms, rate, journal_limit) =
            (d.u64()?, d.u64()?, d.u64()?, d.u64()?, d.u64()?);
        let ext = if sections.unwrap_or(d.remaining() > 0) {
            super::group::GroupSections::decode(d)?
        } else {
            Default::default()
        };
        Ok(GroupRec {
            uid,
            name,
            role,
            epoch,
            remote,
            volumes,
            synced,
            acked,
            synced_time,
            base_pending,
            consistent_since,
            segment_bytes,
            seal_age_ms,
            rate,
            journal_limit,
            ext,
        })
    }
}

// Format: checkpoint file `checkpoint`, written whole (tmp + fsync + rename + fsync dir).
//   0  magic        8  b"FVCKPT\0\0"
//   8  version      u32 (7; versions 1 to 6 are read too: they end after the pairs,
//                   after the partials, have no group sections, have no links, have no
//                   infos, have no schedules)
//  12  reserved     u32 (0)
//  16  pool_id      u64
//  24  epoch        u64
//  32  extent_size  u64
//  40  next_id      u64
//  48  arrays       u64 count, then per array: id u32, name str, tier str, capacity u64, file str
//  ..  chunks       u64 count, then per chunk: u64 n (mapped slots), then n × (slot u16 as u64,
//                   packed phys+1 u64) when n < DENSE (sparse form), else (version 5) all 512
//                   slots as u64 (packed phys+1, 0 = hole; dense form: half the bytes of the
//                   sparse form for a full chunk, and decoded without a per-entry loop)
//  ..  volumes      u64 count, then per volume: id u64, name str, size u64, tier str,
//                   created u64, origin u64, table
//  ..  snapshots    u64 count, then per snapshot: id u64, volume u64, name str, created u64,
//                   size u64, table
//  ..  pairs        u64 count, then per pair: id u64, pvol u64, svol u64, group str, state u8,
//                   rate u64, error str, split_snap u64, todo runs, p_dirty runs, s_dirty runs
//                   (runs = u64 n, then n × (start u64, count u64))
//  ..  partials     (version 2) u64 count, then per partial extent: ext u64 (packed phys),
//                   src u64 (packed phys), valid words (u64 n, 1 ≤ n ≤ 256, then n × u64)
//  ..  groups       (version 3) u64 count, then per group (GroupRec::encode): uid u64,
//                   name str, role u8, epoch u64, remote str, volumes (u64 n, n × (local u64,
//                   primary u64)), synced u64, acked u64, synced_time u64, base_pending
//                   (u64 n, n × u64), consistent_since u64, segment_bytes u64,
//                   seal_age_ms u64, rate u64, journal_limit u64, then (version 4) the
//                   sections (format/group/mod.rs)
//  ..  links        (version 5) u64 count, then per link: volume u64, from u64 (volumes that
//                   share extents through a copy, `MetaRecord::MapShare`)
//  ..  infos        (version 6) u64 count, then per record: id u64 (volume or snapshot),
//                   u32 length (≤ 4096), the encoded volume information (format/volinfo.rs)
//  ..  schedules    (version 7) u64 count, then per schedule: id u64, u32 length (≤ 16384),
//                   the encoded schedule (format/schedule.rs)
//  end crc32c       u32 over every byte before it
// (str = u16 length + UTF-8 bytes; table = u64 n, then n × (chunk index u64, chunk id u64))
const MAGIC: &[u8; 8] = b"FVCKPT\0\0";
const VERSION: u32 = 7;
const SLOTS: u64 = 512;
/// From this many mapped slots on, a version-5 chunk is written dense (512 × u64).
const DENSE: usize = 256;

fn enc_table(e: &mut Enc, t: &TableRec) {
    e.u64(t.len() as u64);
    for &(i, c) in t {
        e.u64(i).u64(c);
    }
}

fn enc_runs(e: &mut Enc, r: &[(u64, u64)]) {
    e.u64(r.len() as u64);
    for &(a, n) in r {
        e.u64(a).u64(n);
    }
}

fn dec_runs(d: &mut Dec<'_>) -> Result<Vec<(u64, u64)>, FormatError> {
    let n = d.count(16)?;
    let mut r = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, len) = (d.u64()?, d.u64()?);
        if len > 1 << 40 || a.checked_add(len).is_none() {
            return Err(FormatError::Invalid {
                what: "checkpoint",
                detail: format!("bitmap run {a}+{len}"),
            });
        }
        r.push((a, len));
    }
    Ok(r)
}

fn dec_table(d: &mut Dec<'_>, nchunks: usize) -> Result<TableRec, FormatError> {
    let n = d.count(16)?;
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let (i, c) = (d.u64()?, d.u64()?);
        if c as usize >= nchunks {
            return Err(FormatError::Invalid {
                what: "checkpoint",
                detail: format!("table refers to chunk {c} of {nchunks}"),
            });
        }
        t.push((i, c));
    }
    Ok(t)
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(4096);
        e.bytes(MAGIC)
            .u32(VERSION)
            .u32(0)
            .u64(self.pool_id)
            .u64(self.epoch)
            .u64(self.extent_size)
            .u64(self.next_id)
            .u64(self.arrays.len() as u64);
        for a in &self.arrays {
            a.encode(&mut e);
        }
        e.u64(self.chunks.len() as u64);
        for c in &self.chunks {
            let n = c.mapped();
            e.u64(n as u64);
            if n >= DENSE {
                for &raw in c.slots.iter() {
                    e.u64(raw);
                }
            } else {
                for (slot, &raw) in c.slots.iter().enumerate().filter(|(_, &r)| r != 0) {
                    e.u64(slot as u64).u64(raw);
                }
            }
        }
        e.u64(self.volumes.len() as u64);
        for v in &self.volumes {
            e.u64(v.id)
                .str(&v.name)
                .u64(v.size)
                .str(&v.tier)
                .u64(v.created)
                .u64(v.origin);
            enc_table(&mut e, &v.table);
        }
        e.u64(self.snapshots.len() as u64);
        for s in &self.snapshots {
            e.u64(s.id)
                .u64(s.volume)
                .str(&s.name)
                .u64(s.created)
                .u64(s.size);
            enc_table(&mut e, &s.table);
        }
        e.u64(self.pairs.len() as u64);
        for p in &self.pairs {
            e.u64(p.id)
                .u64(p.pvol)
                .u64(p.svol)
                .str(&p.group)
                .u8(p.state)
                .u64(p.rate)
                .str(&p.error)
                .u64(p.split_snap);
            enc_runs(&mut e, &p.todo);
            enc_runs(&mut e, &p.p_dirty);
            enc_runs(&mut e, &p.s_dirty);
        }
        e.u64(self.partials.len() as u64);
        for p in &self.partials {
            p.encode(&mut e);
        }
        e.u64(self.groups.len() as u64);
        for g in &self.groups {
            g.encode(&mut e);
        }
        e.u64(self.links.len() as u64);
        for &(v, from) in &self.links {
            e.u64(v).u64(from);
        }
        e.u64(self.infos.len() as u64);
        for (id, info) in &self.infos {
            e.u64(*id).u32(info.len() as u32).bytes(info);
        }
        e.u64(self.schedules.len() as u64);
        for (id, rec) in &self.schedules {
            e.u64(*id).u32(rec.len() as u32).bytes(rec);
        }
        let crc = crc32c::crc32c(&e.buf);
        e.u32(crc);
        e.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Checkpoint, FormatError> {
        const WHAT: &str = "checkpoint";
        if buf.len() < 12 {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: 12,
                have: buf.len(),
            });
        }
        if &buf[..8] != MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let body = &buf[..buf.len() - 4];
        let stored = u32::from_le_bytes(buf[buf.len() - 4..].try_into().unwrap());
        verify_crc(WHAT, body, stored)?;
        let mut d = Dec::new(&body[8..], WHAT);
        let version = d.u32()?;
        if !(1..=VERSION).contains(&version) {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        d.reserved_u32()?;
        let mut c = Checkpoint {
            pool_id: d.u64()?,
            epoch: d.u64()?,
            extent_size: d.u64()?,
            next_id: d.u64()?,
            ..Default::default()
        };
        let na = d.count(16)?;
        for _ in 0..na {
            c.arrays.push(ArrayRec::decode(&mut d)?);
        }
        let nc = d.count(8)?;
        c.chunks.reserve(nc);
        for _ in 0..nc {
            let n = d.u64()? as usize;
            let mut arc = std::sync::Arc::new([0u64; SLOTS as usize]);
            let slots = std::sync::Arc::get_mut(&mut arc).expect("a new Arc is unique");
            if version >= 5 && n >= DENSE {
                if n > SLOTS as usize {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("chunk with {n} mapped slots"),
                    });
                }
                d.u64s(slots)?;
                let got = slots.iter().filter(|&&r| r != 0).count();
                if got != n {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("dense chunk says {n} mapped slots, holds {got}"),
                    });
                }
            } else {
                if n.saturating_mul(16) > d.remaining() || (version >= 5 && n >= DENSE) {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("chunk with {n} sparse entries"),
                    });
                }
                // Slots in increasing order, as every version writes them (one encoding).
                let mut next = 0;
                for _ in 0..n {
                    let (slot, raw) = (d.u64()?, d.u64()?);
                    if slot >= SLOTS || slot < next || raw == 0 {
                        return Err(FormatError::Invalid {
                            what: WHAT,
                            detail: format!("chunk entry slot {slot} value {raw}"),
                        });
                    }
                    slots[slot as usize] = raw;
                    next = slot + 1;
                }
            }
            c.chunks.push(ChunkRec { slots: arc });
        }
        let nv = d.count(32)?;
        for _ in 0..nv {
            c.volumes.push(VolumeRec {
                id: d.u64()?,
                name: d.str()?,
                size: d.u64()?,
                tier: d.str()?,
                created: d.u64()?,
                origin: d.u64()?,
                table: dec_table(&mut d, nc)?,
            });
        }
        let ns = d.count(32)?;
        for _ in 0..ns {
            c.snapshots.push(SnapshotRec {
                id: d.u64()?,
                volume: d.u64()?,
                name: d.str()?,
                created: d.u64()?,
                size: d.u64()?,
                table: dec_table(&mut d, nc)?,
            });
        }
        let np = d.count(40)?;
        for _ in 0..np {
            c.pairs.push(PairRec {
                id: d.u64()?,
                pvol: d.u64()?,
                svol: d.u64()?,
                group: d.str()?,
                state: d.u8()?,
                rate: d.u64()?,
                error: d.str()?,
                split_snap: d.u64()?,
                todo: dec_runs(&mut d)?,
                p_dirty: dec_runs(&mut d)?,
                s_dirty: dec_runs(&mut d)?,
            });
        }
        if version >= 2 {
            let n = d.count(32)?;
            for _ in 0..n {
                c.partials.push(PartialRec::decode(&mut d)?);
            }
        }
        if version >= 3 {
            let n = d.count(64)?;
            for _ in 0..n {
                c.groups.push(GroupRec::decode(&mut d, Some(version >= 4))?);
            }
        }
        if version >= 5 {
            let n = d.count(16)?;
            for _ in 0..n {
                c.links.push((d.u64()?, d.u64()?));
            }
        }
        if version >= 6 {
            let n = d.count(12)?;
            for _ in 0..n {
                let id = d.u64()?;
                let len = d.u32()? as usize;
                if len > super::volinfo::INFO_MAX {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("volume information of {len} bytes for id {id}"),
                    });
                }
                c.infos.push((id, d.bytes(len)?.to_vec()));
            }
        }
        if version >= 7 {
            let n = d.count(12)?;
            for _ in 0..n {
                let id = d.u64()?;
                let len = d.u32()? as usize;
                if len > super::schedule::SCHEDULE_MAX {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("schedule of {len} bytes for id {id}"),
                    });
                }
                c.schedules.push((id, d.bytes(len)?.to_vec()));
            }
        }
        if d.remaining() != 0 {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{} trailing bytes", d.remaining()),
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            pool_id: 42,
            epoch: 3,
            extent_size: 1 << 18,
            next_id: 9,
            arrays: vec![ArrayRec {
                id: 1,
                name: "a".into(),
                tier: "fast".into(),
                capacity: 1 << 30,
                file: "arrays/a.img".into(),
            }],
            chunks: vec![
                ChunkRec {
                    slots: {
                        let mut v = [0u64; 512];
                        v[0] = 5;
                        v[511] = (1 << 40) + 9;
                        std::sync::Arc::new(v)
                    },
                },
                ChunkRec {
                    slots: std::sync::Arc::new([0u64; 512]),
                },
                // A full chunk is written dense.
                ChunkRec {
                    slots: std::sync::Arc::new(std::array::from_fn(|i| i as u64 + 1)),
                },
            ],
            volumes: vec![VolumeRec {
                id: 8,
                name: "v".into(),
                size: 1 << 30,
                tier: "fast".into(),
                created: 1,
                origin: 0,
                table: vec![(0, 0), (3, 1)],
            }],
            snapshots: vec![SnapshotRec {
                id: 9,
                volume: 8,
                name: "s".into(),
                created: 2,
                size: 1 << 30,
                table: vec![(0, 0)],
            }],
            pairs: vec![PairRec {
                id: 10,
                pvol: 8,
                svol: 11,
                group: "g".into(),
                state: 3,
                rate: 100,
                error: String::new(),
                split_snap: 9,
                todo: vec![(0, 5)],
                p_dirty: vec![(7, 1), (9, 2)],
                s_dirty: vec![],
            }],
            partials: vec![PartialRec {
                ext: 77,
                src: (2 << 40) + 5,
                valid: vec![0x11, 1 << 63],
            }],
            groups: vec![GroupRec {
                uid: 0xdead,
                name: "db".into(),
                role: 2,
                epoch: 1,
                remote: "/mnt/dr".into(),
                volumes: vec![(8, 3)],
                synced: 100,
                acked: 90,
                synced_time: 5,
                base_pending: vec![3],
                consistent_since: 0,
                segment_bytes: 1 << 24,
                seal_age_ms: 200,
                rate: 0,
                journal_limit: 1 << 30,
                ext: Default::default(),
            }],
            links: vec![(8, 3), (9, 8)],
            infos: vec![(8, vec![1, 2, 3])],
            schedules: vec![(2, vec![4, 5])],
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn corruption_detected() {
        let b = sample().encode();
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(Checkpoint::decode(&c).is_err(), "flip at {i}");
        }
        assert!(Checkpoint::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn group_records_without_sections_still_decode() {
        let g = GroupRec {
            uid: 7,
            name: "g".into(),
            role: 1,
            journal_limit: 5,
            ..Default::default()
        };
        let mut e = Enc::new();
        g.encode(&mut e);
        let mut sec = Enc::new();
        g.ext.encode(&mut sec);
        let legacy = &e.buf[..e.buf.len() - sec.len()];
        // A metadata log record of the older layout: nothing after the fixed fields.
        let mut d = Dec::new(legacy, "t");
        assert_eq!(GroupRec::decode(&mut d, None).unwrap(), g);
        // A version-3 checkpoint: no sections even though more bytes follow.
        let mut more = legacy.to_vec();
        more.extend_from_slice(&[1, 2, 3]);
        let mut d = Dec::new(&more, "t");
        assert_eq!(GroupRec::decode(&mut d, Some(false)).unwrap(), g);
        assert_eq!(d.remaining(), 3);
        let mut d = Dec::new(&e.buf, "t");
        assert_eq!(GroupRec::decode(&mut d, None).unwrap(), g);
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn version_1_still_decodes() {
        let mut c = sample();
        c.partials.clear();
        c.groups.clear();
        c.links.clear();
        c.infos.clear();
        c.schedules.clear();
        c.chunks.truncate(2); // a dense chunk needs version 5
        let mut b = c.encode();
        // A version-1 file is the same without the (empty) partials, groups, links, infos
        // and schedules.
        b.truncate(b.len() - 44);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
    }

    #[test]
    fn versions_4_and_5_still_decode() {
        // A version-6 file is the same without the (empty) schedules section, a version-5
        // file also without the (empty) infos section, a version-4 file also without the
        // (empty) links section.
        for (version, cut) in [(6u32, 12), (5, 20), (4, 28)] {
            let mut c = sample();
            c.schedules.clear();
            if version < 6 {
                c.infos.clear();
            }
            if version < 5 {
                c.links.clear();
                c.chunks.truncate(2); // a dense chunk needs version 5
            }
            let mut b = c.encode();
            b.truncate(b.len() - cut);
            b[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = crc32c::crc32c(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(Checkpoint::decode(&b).unwrap(), c, "version {version}");
        }
    }

    #[test]
    fn partial_rec_is_validated() {
        let mut e = Enc::new();
        PartialRec {
            ext: 5,
            src: 5,
            valid: vec![1],
        }
        .encode(&mut e);
        assert!(PartialRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
        let mut e = Enc::new();
        PartialRec {
            ext: 5,
            src: 6,
            valid: vec![],
        }
        .encode(&mut e);
        assert!(PartialRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
    }
}
