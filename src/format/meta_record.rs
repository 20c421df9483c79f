//! Metadata log: file header and the records appended after it.

use super::checkpoint::{dec_words, enc_words, PartialRec};
use super::codec::{Dec, Enc};
use super::{verify_crc, ArrayRec, FormatError, GroupRec};

// Format: metadata log header, LOG_HEADER_SIZE (64) bytes.
//   0  magic    8  b"FVMLOG\0\0"
//   8  version  u32 (2; 1 is still read)
//  12  reserved u32 (0)
//  16  pool_id  u64
//  24  epoch    u64   the checkpoint epoch this log continues
//  32  zero padding up to 60
//  60  crc32c   u32   over bytes 0..60
// Version 2 (`meta.log` since issue 19) keeps the header twice, in different 4 KiB blocks:
// copy 1 at offset 0, copy 2 at LOG_HEADER_COPY (4096), zeros between and after; records
// start at LOG_RECORDS_V2 (8192). Version 1 had one copy and records from offset 64.
pub const LOG_HEADER_SIZE: usize = 64;
/// Where the second copy of a version 2 log header starts.
pub const LOG_HEADER_COPY: usize = 4096;
/// Where the records of a version 2 log start.
pub const LOG_RECORDS_V2: usize = 8192;
const LOG_MAGIC: &[u8; 8] = b"FVMLOG\0\0";
const LOG_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    pub pool_id: u64,
    pub epoch: u64,
    /// 2 for new logs; 1 for a log written before the header was kept twice.
    pub version: u32,
}

impl LogHeader {
    /// A header of the current version.
    pub fn new(pool_id: u64, epoch: u64) -> LogHeader {
        LogHeader {
            pool_id,
            epoch,
            version: LOG_VERSION,
        }
    }

    /// Where the records start in a log with this header.
    pub fn records_offset(&self) -> usize {
        if self.version == 1 {
            LOG_HEADER_SIZE
        } else {
            LOG_RECORDS_V2
        }
    }

    /// One copy of the header (LOG_HEADER_SIZE bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(LOG_HEADER_SIZE);
        e.bytes(LOG_MAGIC)
            .u32(self.version)
            .u32(0)
            .u64(self.pool_id)
            .u64(self.epoch);
        let mut buf = e.buf;
        buf.resize(LOG_HEADER_SIZE - 4, 0);
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// The start of a new log: every copy of the header, up to where the records begin.
    pub fn encode_start(&self) -> Vec<u8> {
        let one = self.encode();
        if self.version == 1 {
            return one;
        }
        let mut buf = vec![0u8; LOG_RECORDS_V2];
        buf[..LOG_HEADER_SIZE].copy_from_slice(&one);
        buf[LOG_HEADER_COPY..LOG_HEADER_COPY + LOG_HEADER_SIZE].copy_from_slice(&one);
        buf
    }

    /// Decode and verify one copy of the header.
    pub fn decode(buf: &[u8]) -> Result<LogHeader, FormatError> {
        const WHAT: &str = "metadata log header";
        if buf.len() < LOG_HEADER_SIZE {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: LOG_HEADER_SIZE,
                have: buf.len(),
            });
        }
        if &buf[..8] != LOG_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let stored = u32::from_le_bytes(buf[60..64].try_into().unwrap());
        verify_crc(WHAT, &buf[..60], stored)?;
        let mut d = Dec::new(&buf[8..60], WHAT);
        let version = d.u32()?;
        if version != 1 && version != LOG_VERSION {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        d.reserved_u32()?;
        let h = LogHeader {
            pool_id: d.u64()?,
            epoch: d.u64()?,
            version,
        };
        d.zero_padding()?;
        Ok(h)
    }
}

// Format: metadata log record frame, appended back to back after the header.
//   0  len      u32   payload length in bytes (≤ MAX_RECORD)
//   4  crc32c   u32   over bytes 0..4 (len) and 8..9+len (type and payload)
//   8  type     u8    MetaRecord kind
//   9  payload  len bytes, kind-specific (see MetaRecord::encode)
pub const FRAME_HEADER: usize = 9;
/// The largest payload a record may carry (sanity bound when reading a damaged log).
pub const MAX_RECORD: usize = 64 << 20;

/// One change to the pool's metadata. Replaying all records after a checkpoint in order
/// rebuilds the state at the moment the last record was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaRecord {
    /// A new array file joined the pool (its file and header are durable before this record).
    ArrayAdd(ArrayRec),
    VolumeCreate {
        id: u64,
        name: String,
        size: u64,
        tier: String,
        created: u64,
    },
    VolumeDelete {
        id: u64,
    },
    VolumeResize {
        id: u64,
        size: u64,
    },
    /// Logical extent → physical extent (packed `Phys`) for one volume. The data of every
    /// newly mapped extent was written before this record (data before pointer).
    MapSet {
        volume: u64,
        entries: Vec<(u64, u64)>,
    },
    /// Logical extents of one volume become holes; their physical extents lose a reference.
    Unmap {
        volume: u64,
        lexts: Vec<u64>,
    },
    /// A snapshot of `volume` as it is at this point of the log.
    SnapshotCreate {
        id: u64,
        volume: u64,
        name: String,
        created: u64,
    },
    SnapshotDelete {
        id: u64,
    },
    /// `volume` takes the content (and size) of snapshot `snapshot`.
    SnapshotRollback {
        volume: u64,
        snapshot: u64,
    },
    /// A new volume starting as snapshot `snapshot`.
    VolumeClone {
        id: u64,
        name: String,
        snapshot: u64,
        created: u64,
    },
    /// Pair `pvol` → `svol`; state COPY. The regions to copy are those mapped in either
    /// volume at this point of the log.
    PairCreate {
        id: u64,
        pvol: u64,
        svol: u64,
        group: String,
        rate: u64,
    },
    /// These pairs split at one instant (PSUS); difference bitmaps start empty. For a quick
    /// split, `snaps` names the snapshot of each P-VOL taken at the split that the rest of
    /// the copy reads from.
    PairSplit {
        pairs: Vec<u64>,
        snaps: Vec<(u64, u64)>,
    },
    /// Resync (P→S) or restore (S→P): the changed regions join the regions to copy.
    PairResync {
        id: u64,
        restore: bool,
        rate: u64,
    },
    /// A state change decided by the daemon (copy complete → PAIR, error → PSUE).
    PairState {
        id: u64,
        state: u8,
        error: String,
    },
    /// Regions copied (their data was synced before this record).
    PairCopied {
        id: u64,
        regions: Vec<u64>,
    },
    /// Regions changed on one side (0 = P-VOL, 1 = S-VOL) since the split; made durable
    /// before the write that changes them. In a dual-write state side 0 is the write-intent
    /// bitmap of the dual writes, and side 2 clears intent bits (after a sync made their
    /// writes durable on both sides).
    PairDirty {
        id: u64,
        side: u8,
        regions: Vec<u64>,
    },
    PairDelete {
        id: u64,
    },
    /// A journal group was created or attached, or its state changed (the whole record).
    GroupPut(Box<GroupRec>),
    /// The group with this uid is gone (its volumes stay).
    GroupDelete {
        uid: u64,
    },
    /// Like `MapSet`, and the extents in `partials` start *partial* (sub-extent copy-on-write):
    /// only their `valid` 4 KiB blocks hold data, the others read from `src`, which gains a
    /// reference. The data of every valid block was written before this record.
    MapSetPartial {
        volume: u64,
        entries: Vec<(u64, u64)>,
        partials: Vec<PartialRec>,
    },
    /// More blocks of partial extent `ext` (packed `Phys`) hold their own data (written before
    /// this record). When every block is valid the extent is complete and drops its source.
    PartialValid {
        ext: u64,
        valid: Vec<u64>,
    },
    /// The filler copied every missing block of these partial extents and synced the arrays
    /// before this record: they are complete and drop the reference on their sources.
    PartialDone {
        exts: Vec<u64>,
    },
    /// Extents of another volume or snapshot mapped into `volume` copy-on-write by a copy
    /// (`copy_file_range`): each `entries` pair (logical extent, packed `Phys`) points at an
    /// extent some table maps already, whose data an earlier record published; the extent
    /// gains this table's reference (a partial one stays partial). The logical extents in
    /// `holes` become holes (the source is a hole there). `from` is the volume the extents
    /// come from (for a snapshot, its volume): the two are one family from now on (the
    /// checker's test for extents mapped by unrelated volumes).
    MapShare {
        volume: u64,
        from: u64,
        entries: Vec<(u64, u64)>,
        holes: Vec<u64>,
    },
    /// Regions (extents) of a primary volume written while its journal group is suspended
    /// (journal full); made durable before the write that changes them (write-intent).
    GroupDirty {
        uid: u64,
        volume: u64,
        regions: Vec<u64>,
    },
    /// Regions of the suspension bitmap journaled again by a resync (their `Base` records
    /// were durable in the journal before this record).
    GroupClean {
        uid: u64,
        volume: u64,
        regions: Vec<u64>,
    },
    /// The volume information of volume or snapshot `id` is now `info` (an encoded
    /// `volinfo::InfoRecord`; empty: none). Kept as bytes so that a damaged or newer record
    /// is reported, not lost.
    InfoPut {
        id: u64,
        info: Vec<u8>,
    },
    /// Backup schedule `id` is now `rec` (an encoded `schedule::ScheduleRec`): added, or its
    /// next run and last result changed. Kept as bytes like `InfoPut`.
    SchedulePut {
        id: u64,
        rec: Vec<u8>,
    },
    /// Backup schedule `id` was removed (the snapshots it took stay).
    ScheduleDelete {
        id: u64,
    },
}

impl MetaRecord {
    fn kind(&self) -> u8 {
        match self {
            MetaRecord::ArrayAdd(_) => 1,
            MetaRecord::VolumeCreate { .. } => 2,
            MetaRecord::VolumeDelete { .. } => 3,
            MetaRecord::VolumeResize { .. } => 4,
            MetaRecord::MapSet { .. } => 5,
            MetaRecord::Unmap { .. } => 6,
            MetaRecord::SnapshotCreate { .. } => 7,
            MetaRecord::SnapshotDelete { .. } => 8,
            MetaRecord::SnapshotRollback { .. } => 9,
            MetaRecord::VolumeClone { .. } => 10,
            MetaRecord::PairCreate { .. } => 11,
            MetaRecord::PairSplit { .. } => 12,
            MetaRecord::PairResync { .. } => 13,
            MetaRecord::PairState { .. } => 14,
            MetaRecord::PairCopied { .. } => 15,
            MetaRecord::PairDirty { .. } => 16,
            MetaRecord::PairDelete { .. } => 17,
            MetaRecord::GroupPut(_) => 18,
            MetaRecord::GroupDelete { .. } => 19,
            // Kinds 20–39 are reserved for more journal/replication records.
            MetaRecord::MapSetPartial { .. } => 40,
            MetaRecord::PartialValid { .. } => 41,
            MetaRecord::PartialDone { .. } => 42,
            MetaRecord::MapShare { .. } => 43,
            MetaRecord::GroupDirty { .. } => 30,
            MetaRecord::GroupClean { .. } => 31,
            // Kind 50: volume information (backups, issue 14).
            MetaRecord::InfoPut { .. } => 50,
            // Kinds 60–61: backup schedules (issue 14).
            MetaRecord::SchedulePut { .. } => 60,
            MetaRecord::ScheduleDelete { .. } => 61,
        }
    }

    /// Append the framed record to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; 8]);
        out.push(self.kind());
        let mut e = Enc::new();
        match self {
            MetaRecord::ArrayAdd(a) => a.encode(&mut e),
            MetaRecord::VolumeCreate {
                id,
                name,
                size,
                tier,
                created,
            } => {
                e.u64(*id).str(name).u64(*size).str(tier).u64(*created);
            }
            MetaRecord::VolumeDelete { id } => {
                e.u64(*id);
            }
            MetaRecord::VolumeResize { id, size } => {
                e.u64(*id).u64(*size);
            }
            MetaRecord::MapSet { volume, entries } => {
                e.u64(*volume).u64(entries.len() as u64);
                for (l, p) in entries {
                    e.u64(*l).u64(*p);
                }
            }
            MetaRecord::Unmap { volume, lexts } => {
                e.u64(*volume).u64(lexts.len() as u64);
                for l in lexts {
                    e.u64(*l);
                }
            }
            MetaRecord::SnapshotCreate {
                id,
                volume,
                name,
                created,
            } => {
                e.u64(*id).u64(*volume).str(name).u64(*created);
            }
            MetaRecord::SnapshotDelete { id } => {
                e.u64(*id);
            }
            MetaRecord::SnapshotRollback { volume, snapshot } => {
                e.u64(*volume).u64(*snapshot);
            }
            MetaRecord::VolumeClone {
                id,
                name,
                snapshot,
                created,
            } => {
                e.u64(*id).str(name).u64(*snapshot).u64(*created);
            }
            MetaRecord::PairCreate {
                id,
                pvol,
                svol,
                group,
                rate,
            } => {
                e.u64(*id).u64(*pvol).u64(*svol).str(group).u64(*rate);
            }
            MetaRecord::PairSplit { pairs, snaps } => {
                e.u64(pairs.len() as u64);
                for p in pairs {
                    e.u64(*p);
                }
                e.u64(snaps.len() as u64);
                for (p, s) in snaps {
                    e.u64(*p).u64(*s);
                }
            }
            MetaRecord::PairResync { id, restore, rate } => {
                e.u64(*id).u8(*restore as u8).u64(*rate);
            }
            MetaRecord::PairState { id, state, error } => {
                e.u64(*id).u8(*state).str(error);
            }
            MetaRecord::PairCopied { id, regions } => {
                e.u64(*id).u64(regions.len() as u64);
                for r in regions {
                    e.u64(*r);
                }
            }
            MetaRecord::PairDirty { id, side, regions } => {
                e.u64(*id).u8(*side).u64(regions.len() as u64);
                for r in regions {
                    e.u64(*r);
                }
            }
            MetaRecord::PairDelete { id } => {
                e.u64(*id);
            }
            MetaRecord::GroupPut(g) => g.encode(&mut e),
            MetaRecord::GroupDelete { uid } => {
                e.u64(*uid);
            }
            MetaRecord::MapSetPartial {
                volume,
                entries,
                partials,
            } => {
                e.u64(*volume).u64(entries.len() as u64);
                for (l, p) in entries {
                    e.u64(*l).u64(*p);
                }
                e.u64(partials.len() as u64);
                for p in partials {
                    p.encode(&mut e);
                }
            }
            MetaRecord::PartialValid { ext, valid } => {
                e.u64(*ext);
                enc_words(&mut e, valid);
            }
            MetaRecord::PartialDone { exts } => {
                e.u64(exts.len() as u64);
                for x in exts {
                    e.u64(*x);
                }
            }
            MetaRecord::MapShare {
                volume,
                from,
                entries,
                holes,
            } => {
                e.u64(*volume).u64(*from).u64(entries.len() as u64);
                for (l, p) in entries {
                    e.u64(*l).u64(*p);
                }
                e.u64(holes.len() as u64);
                for l in holes {
                    e.u64(*l);
                }
            }
            MetaRecord::GroupDirty {
                uid,
                volume,
                regions,
            }
            | MetaRecord::GroupClean {
                uid,
                volume,
                regions,
            } => {
                e.u64(*uid).u64(*volume).u64(regions.len() as u64);
                for r in regions {
                    e.u64(*r);
                }
            }
            MetaRecord::InfoPut { id, info } => {
                e.u64(*id).u32(info.len() as u32).bytes(info);
            }
            MetaRecord::SchedulePut { id, rec } => {
                e.u64(*id).u32(rec.len() as u32).bytes(rec);
            }
            MetaRecord::ScheduleDelete { id } => {
                e.u64(*id);
            }
        }
        out.extend_from_slice(&e.buf);
        let len = (out.len() - start - FRAME_HEADER) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let mut h = crc32c::crc32c(&out[start..start + 4]);
        h = crc32c::crc32c_append(h, &out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&h.to_le_bytes());
    }

    /// Decode the record payload of the given kind.
    pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<MetaRecord, FormatError> {
        const WHAT: &str = "metadata record";
        let mut d = Dec::new(payload, WHAT);
        let rec = match kind {
            1 => MetaRecord::ArrayAdd(ArrayRec::decode(&mut d)?),
            2 => MetaRecord::VolumeCreate {
                id: d.u64()?,
                name: d.str()?,
                size: d.u64()?,
                tier: d.str()?,
                created: d.u64()?,
            },
            3 => MetaRecord::VolumeDelete { id: d.u64()? },
            4 => MetaRecord::VolumeResize {
                id: d.u64()?,
                size: d.u64()?,
            },
            5 => {
                let volume = d.u64()?;
                let n = d.count(16)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((d.u64()?, d.u64()?));
                }
                MetaRecord::MapSet { volume, entries }
            }
            6 => {
                let volume = d.u64()?;
                let n = d.count(8)?;
                let mut lexts = Vec::with_capacity(n);
                for _ in 0..n {
                    lexts.push(d.u64()?);
                }
                MetaRecord::Unmap { volume, lexts }
            }
            7 => MetaRecord::SnapshotCreate {
                id: d.u64()?,
                volume: d.u64()?,
                name: d.str()?,
                created: d.u64()?,
            },
            8 => MetaRecord::SnapshotDelete { id: d.u64()? },
            9 => MetaRecord::SnapshotRollback {
                volume: d.u64()?,
                snapshot: d.u64()?,
            },
            10 => MetaRecord::VolumeClone {
                id: d.u64()?,
                name: d.str()?,
                snapshot: d.u64()?,
                created: d.u64()?,
            },
            11 => MetaRecord::PairCreate {
                id: d.u64()?,
                pvol: d.u64()?,
                svol: d.u64()?,
                group: d.str()?,
                rate: d.u64()?,
            },
            12 => {
                let n = d.count(8)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push(d.u64()?);
                }
                let n = d.count(16)?;
                let mut snaps = Vec::with_capacity(n);
                for _ in 0..n {
                    snaps.push((d.u64()?, d.u64()?));
                }
                MetaRecord::PairSplit { pairs, snaps }
            }
            13 => MetaRecord::PairResync {
                id: d.u64()?,
                restore: d.flag()?,
                rate: d.u64()?,
            },
            14 => MetaRecord::PairState {
                id: d.u64()?,
                state: d.u8()?,
                error: d.str()?,
            },
            15 => {
                let id = d.u64()?;
                let n = d.count(8)?;
                let mut regions = Vec::with_capacity(n);
                for _ in 0..n {
                    regions.push(d.u64()?);
                }
                MetaRecord::PairCopied { id, regions }
            }
            16 => {
                let id = d.u64()?;
                let side = d.u8()?;
                let n = d.count(8)?;
                let mut regions = Vec::with_capacity(n);
                for _ in 0..n {
                    regions.push(d.u64()?);
                }
                MetaRecord::PairDirty { id, side, regions }
            }
            17 => MetaRecord::PairDelete { id: d.u64()? },
            18 => MetaRecord::GroupPut(Box::new(GroupRec::decode(&mut d, None)?)),
            19 => MetaRecord::GroupDelete { uid: d.u64()? },
            40 => {
                let volume = d.u64()?;
                let n = d.count(16)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((d.u64()?, d.u64()?));
                }
                let n = d.count(24)?;
                let mut partials = Vec::with_capacity(n);
                for _ in 0..n {
                    partials.push(PartialRec::decode(&mut d)?);
                }
                MetaRecord::MapSetPartial {
                    volume,
                    entries,
                    partials,
                }
            }
            41 => MetaRecord::PartialValid {
                ext: d.u64()?,
                valid: dec_words(&mut d)?,
            },
            42 => {
                let n = d.count(8)?;
                let mut exts = Vec::with_capacity(n);
                for _ in 0..n {
                    exts.push(d.u64()?);
                }
                MetaRecord::PartialDone { exts }
            }
            43 => {
                let (volume, from) = (d.u64()?, d.u64()?);
                let n = d.count(16)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((d.u64()?, d.u64()?));
                }
                let n = d.count(8)?;
                let mut holes = Vec::with_capacity(n);
                for _ in 0..n {
                    holes.push(d.u64()?);
                }
                MetaRecord::MapShare {
                    volume,
                    from,
                    entries,
                    holes,
                }
            }
            30 | 31 => {
                let (uid, volume) = (d.u64()?, d.u64()?);
                let n = d.count(8)?;
                let mut regions = Vec::with_capacity(n);
                for _ in 0..n {
                    regions.push(d.u64()?);
                }
                if kind == 30 {
                    MetaRecord::GroupDirty {
                        uid,
                        volume,
                        regions,
                    }
                } else {
                    MetaRecord::GroupClean {
                        uid,
                        volume,
                        regions,
                    }
                }
            }
            50 => {
                let id = d.u64()?;
                let n = d.u32()? as usize;
                if n > super::volinfo::INFO_MAX {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("volume information of {n} bytes"),
                    });
                }
                MetaRecord::InfoPut {
                    id,
                    info: d.bytes(n)?.to_vec(),
                }
            }
            60 => {
                let id = d.u64()?;
                let n = d.u32()? as usize;
                if n > super::schedule::SCHEDULE_MAX {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("schedule of {n} bytes"),
                    });
                }
                MetaRecord::SchedulePut {
                    id,
                    rec: d.bytes(n)?.to_vec(),
                }
            }
            61 => MetaRecord::ScheduleDelete { id: d.u64()? },
            other => {
                return Err(FormatError::UnknownType {
                    what: WHAT,
                    kind: other,
                })
            }
        };
        if d.remaining() != 0 {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{} trailing bytes", d.remaining()),
            });
        }
        Ok(rec)
    }
}

/// What `RecordFrame::parse` found at one position of the log.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordFrame {
    /// A whole, checksummed record and the number of bytes it occupies.
    Record(MetaRecord, usize),
    /// Fewer bytes remain than the frame needs: a torn tail.
    Incomplete,
    /// The frame is complete but its checksum or content is wrong.
    Corrupt(FormatError),
}

impl RecordFrame {
    /// Parse one frame at the start of `buf`.
    pub fn parse(buf: &[u8]) -> RecordFrame {
        if buf.len() < FRAME_HEADER {
            return RecordFrame::Incomplete;
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len > MAX_RECORD {
            return RecordFrame::Corrupt(FormatError::Invalid {
                what: "metadata record",
                detail: format!("length {len} exceeds the maximum {MAX_RECORD}"),
            });
        }
        if buf.len() < FRAME_HEADER + len {
            return RecordFrame::Incomplete;
        }
        let stored = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        let mut h = crc32c::crc32c(&buf[0..4]);
        h = crc32c::crc32c_append(h, &buf[8..FRAME_HEADER + len]);
        if h != stored {
            return RecordFrame::Corrupt(FormatError::BadChecksum {
                what: "metadata record",
                stored,
                computed: h,
            });
        }
        match MetaRecord::decode_payload(buf[8], &buf[FRAME_HEADER..FRAME_HEADER + len]) {
            Ok(r) => RecordFrame::Record(r, FRAME_HEADER + len),
            Err(e) => RecordFrame::Corrupt(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<MetaRecord> {
        vec![
            MetaRecord::ArrayAdd(ArrayRec {
                id: 4,
                name: "slow0".into(),
                tier: "slow".into(),
                capacity: 1 << 30,
                file: "arrays/slow0.img".into(),
            }),
            MetaRecord::VolumeCreate {
                id: 7,
                name: "vol".into(),
                size: 1 << 30,
                tier: "fast".into(),
                created: 5,
            },
            MetaRecord::VolumeDelete { id: 7 },
            MetaRecord::VolumeResize { id: 7, size: 99 },
            MetaRecord::MapSet {
                volume: 7,
                entries: vec![(0, 1), (5, 1 << 41)],
            },
            MetaRecord::Unmap {
                volume: 7,
                lexts: vec![3, 4, 5],
            },
            MetaRecord::SnapshotCreate {
                id: 8,
                volume: 7,
                name: "s".into(),
                created: 9,
            },
            MetaRecord::SnapshotDelete { id: 8 },
            MetaRecord::SnapshotRollback {
                volume: 7,
                snapshot: 8,
            },
            MetaRecord::VolumeClone {
                id: 10,
                name: "c".into(),
                snapshot: 8,
                created: 11,
            },
            MetaRecord::PairCreate {
                id: 12,
                pvol: 7,
                svol: 10,
                group: "g".into(),
                rate: 1 << 20,
            },
            MetaRecord::PairSplit {
                pairs: vec![12, 13],
                snaps: vec![(12, 14)],
            },
            MetaRecord::PairResync {
                id: 12,
                restore: true,
                rate: 5,
            },
            MetaRecord::PairState {
                id: 12,
                state: 6,
                error: "disk".into(),
            },
            MetaRecord::PairCopied {
                id: 12,
                regions: vec![1, 2, 3],
            },
            MetaRecord::PairDirty {
                id: 12,
                side: 1,
                regions: vec![9],
            },
            MetaRecord::PairDelete { id: 12 },
            MetaRecord::MapSetPartial {
                volume: 7,
                entries: vec![(0, 1), (3, 9)],
                partials: vec![PartialRec {
                    ext: 9,
                    src: 1 << 41,
                    valid: vec![0x8001],
                }],
            },
            MetaRecord::PartialValid {
                ext: 9,
                valid: vec![0x10, 0],
            },
            MetaRecord::PartialDone { exts: vec![9, 10] },
            MetaRecord::MapShare {
                volume: 7,
                from: 10,
                entries: vec![(2, 9), (3, 1 << 41)],
                holes: vec![4, 7],
            },
            MetaRecord::GroupPut(Box::new(GroupRec {
                uid: 5,
                name: "g".into(),
                role: 1,
                epoch: 1,
                remote: "/r".into(),
                volumes: vec![(1, 1)],
                synced: 3,
                acked: 2,
                base_pending: vec![1],
                ..Default::default()
            })),
            MetaRecord::GroupDelete { uid: 5 },
            MetaRecord::GroupDirty {
                uid: 5,
                volume: 1,
                regions: vec![0, 7, 9],
            },
            MetaRecord::GroupClean {
                uid: 5,
                volume: 1,
                regions: vec![7],
            },
            MetaRecord::InfoPut {
                id: 9,
                info: vec![1, 2, 3],
            },
            MetaRecord::InfoPut {
                id: 9,
                info: vec![],
            },
            MetaRecord::SchedulePut {
                id: 2,
                rec: vec![4, 5],
            },
            MetaRecord::ScheduleDelete { id: 2 },
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for r in samples() {
            r.encode_frame(&mut buf);
        }
        let mut pos = 0;
        for r in samples() {
            match RecordFrame::parse(&buf[pos..]) {
                RecordFrame::Record(got, n) => {
                    assert_eq!(got, r);
                    pos += n;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(pos, buf.len());
        assert_eq!(RecordFrame::parse(&buf[pos..]), RecordFrame::Incomplete);
    }

    #[test]
    fn torn_and_corrupt_frames() {
        for i in [4, 17, 18, 19, 20, 21, 22, 23] {
            torn_and_corrupt(&samples()[i]);
        }
    }

    fn torn_and_corrupt(rec: &MetaRecord) {
        let mut buf = Vec::new();
        rec.encode_frame(&mut buf);
        for cut in 0..buf.len() {
            assert_eq!(RecordFrame::parse(&buf[..cut]), RecordFrame::Incomplete);
        }
        for i in 0..buf.len() {
            let mut c = buf.clone();
            c[i] ^= 1;
            if let RecordFrame::Record(..) = RecordFrame::parse(&c) {
                panic!("flip at {i} not detected")
            }
        }
    }

    #[test]
    fn header_round_trip_and_corruption() {
        let h = LogHeader::new(9, 3);
        let b = h.encode();
        assert_eq!(LogHeader::decode(&b).unwrap(), h);
        let mut c = b.clone();
        c[30] ^= 1;
        assert!(LogHeader::decode(&c).is_err());
        // Version 2: two copies in different 4 KiB blocks, records after them.
        let start = h.encode_start();
        assert_eq!(start.len(), LOG_RECORDS_V2);
        assert_eq!(h.records_offset(), LOG_RECORDS_V2);
        assert_eq!(LogHeader::decode(&start[LOG_HEADER_COPY..]).unwrap(), h);
        // Version 1 (one copy, records from 64) is still read.
        let old = LogHeader { version: 1, ..h };
        let b1 = old.encode_start();
        assert_eq!(b1.len(), LOG_HEADER_SIZE);
        let d = LogHeader::decode(&b1).unwrap();
        assert_eq!((d.version, d.records_offset()), (1, LOG_HEADER_SIZE));
        let mut bad = b1.clone();
        bad[8] = 3;
        assert!(LogHeader::decode(&bad).is_err());
    }
}
