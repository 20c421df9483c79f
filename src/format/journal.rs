//! Write journal of a journal group: segment header, records, and the files the two sites
//! exchange in the remote directory (manifest, acknowledgement).

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

// Format: journal segment header, SEGMENT_HEADER_SIZE (64) bytes at offset 0 of a segment.
//   0  magic      8  b"FVJSEG\0\0"
//   8  version    u32 (1)
//  12  reserved   u32 (0)
//  16  group      u64   the group's unique id (not its name)
//  24  epoch      u64   the group's epoch (a takeover starts a new one)
//  32  first_seq  u64   sequence number of the first record in the segment
//  40  created    u64   nanoseconds since the Unix epoch
//  48  zero padding up to 60
//  60  crc32c     u32   over bytes 0..60
pub const SEGMENT_HEADER_SIZE: usize = 64;

/// A fixed-size header or file: `magic` (8 bytes), fields, zero padding, CRC32C over the
/// rest in its last 4 bytes.
fn seal_fixed(mut buf: Vec<u8>, size: usize) -> Vec<u8> {
    buf.resize(size - 4, 0);
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Check the size, magic, CRC and version of a `seal_fixed` buffer; returns a decoder over
/// the fields after the version and its reserved word.
fn open_fixed<'a>(
    buf: &'a [u8],
    size: usize,
    magic: &[u8; 8],
    version: u32,
    what: &'static str,
) -> Result<Dec<'a>, FormatError> {
    if buf.len() < size {
        return Err(FormatError::Truncated {
            what,
            need: size,
            have: buf.len(),
        });
    }
    if &buf[..8] != magic {
        return Err(FormatError::BadMagic { what });
    }
    let stored = u32::from_le_bytes(buf[size - 4..size].try_into().unwrap());
    verify_crc(what, &buf[..size - 4], stored)?;
    let mut d = Dec::new(&buf[8..size - 4], what);
    let v = d.u32()?;
    if v != version {
        return Err(FormatError::BadVersion { what, version: v });
    }
    d.reserved_u32()?;
    Ok(d)
}

const SEG_MAGIC: &[u8; 8] = b"FVJSEG\0\0";
const SEG_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub group: u64,
    pub epoch: u64,
    pub first_seq: u64,
    pub created: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(SEGMENT_HEADER_SIZE);
        e.bytes(SEG_MAGIC)
            .u32(SEG_VERSION)
            .u32(0)
            .u64(self.group)
            .u64(self.epoch)
            .u64(self.first_seq)
            .u64(self.created);
        seal_fixed(e.buf, SEGMENT_HEADER_SIZE)
    }

    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, FormatError> {
        let what = "journal segment header";
        let mut d = open_fixed(buf, SEGMENT_HEADER_SIZE, SEG_MAGIC, SEG_VERSION, what)?;
        let h = SegmentHeader {
            group: d.u64()?,
            epoch: d.u64()?,
            first_seq: d.u64()?,
            created: d.u64()?,
        };
        d.zero_padding()?;
        Ok(h)
    }
}

/// What a journal record does at the other site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Host write: the payload is the data of `[offset, offset+length)`.
    Write = 1,
    /// Discard: `[offset, offset+length)` reads as zeros.
    Zero = 2,
    /// Initial copy of one allocated extent: like `Write`.
    Base = 3,
    /// The initial copy of `volume` is complete.
    BaseDone = 4,
    /// `volume` joins the group; payload = its name, `length` = its size.
    VolumeAdd = 5,
    /// `volume` now has size `length`.
    VolumeResize = 6,
    /// `volume` leaves the group.
    VolumeRemove = 7,
    /// A group snapshot; payload = its name. Every volume is snapshotted at this point.
    Marker = 8,
    /// Closes a segment: `seq` = the last record's sequence number, `offset` = the number of
    /// records. It has no sequence number of its own.
    Seal = 9,
    /// The new primary has journaled (as `Base` records before it) every region of the
    /// failback request of the old primary `offset` (a pool id); `length` = bytes sent.
    FailbackDone = 12,
    /// A suspended primary resumes journaling and journals the regions written while it was
    /// suspended (as `Base` records after this one): the secondary snapshots its volumes
    /// here (their last consistent image) and is inconsistent until `ResyncDone`.
    ResyncStart = 20,
    /// Every region of the resync that began at `ResyncStart` sequence number `offset` has
    /// been journaled before this record; `length` = bytes sent.
    ResyncDone = 21,
    /// Volume information (backups, issue 14) of primary volume `volume`, or of its
    /// snapshot, as the primary holds it now; payload = `InfoPayload`. Kind 40: journal
    /// records up to 39 are the replication's own.
    Info = 40,
}

impl RecordKind {
    fn from_u8(v: u8) -> Result<RecordKind, FormatError> {
        use RecordKind::*;
        Ok(match v {
            1 => Write,
            2 => Zero,
            3 => Base,
            4 => BaseDone,
            5 => VolumeAdd,
            6 => VolumeResize,
            7 => VolumeRemove,
            8 => Marker,
            9 => Seal,
            12 => FailbackDone,
            20 => ResyncStart,
            21 => ResyncDone,
            40 => Info,
            kind => {
                return Err(FormatError::UnknownType {
                    what: "journal record",
                    kind,
                })
            }
        })
    }

    /// Does the payload carry volume data of `length` bytes?
    pub fn carries_data(self) -> bool {
        matches!(self, RecordKind::Write | RecordKind::Base)
    }
}

// Format: journal record, RECORD_HEADER_SIZE (72) bytes then the payload, back to back after
// the segment header.
//   0  magic        u32  0x4345524a (b"JREC")
//   4  kind         u8   RecordKind
//   5  reserved     3 bytes (0)
//   8  group        u64
//  16  epoch        u64
//  24  seq          u64
//  32  time         u64  nanoseconds since the Unix epoch, when the primary accepted it
//  40  volume       u64  the primary's volume id
//  48  offset       u64
//  56  length       u64  bytes of the volume the record covers (see RecordKind)
//  64  payload_len  u32
//  68  crc32c       u32  over bytes 0..68 and the payload
//  72  payload
pub const RECORD_HEADER_SIZE: usize = 72;
const REC_MAGIC: u32 = u32::from_le_bytes(*b"JREC");
/// Sanity bound on a payload (a FUSE write is at most 1 MiB; an extent at most 64 MiB).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// The fixed part of a journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub kind: RecordKind,
    pub group: u64,
    pub epoch: u64,
    pub seq: u64,
    pub time: u64,
    pub volume: u64,
    pub offset: u64,
    pub length: u64,
}

/// Payloads from this size on have their CRC32C computed by crc-fast, whose folding with
/// carry-less multiplies (AVX-512 VPCLMULQDQ where the CPU has it) ran at 64–73 GB/s on 1 MiB
/// on the 2-vCPU Xeon against 15–18 GB/s for the crc32c crate (45–55 vs 13–15 GB/s on 4 KiB).
/// Both compute the same CRC-32C (iSCSI); small buffers stay with crc32c.
const FAST_CRC_FROM: usize = 4096;

/// The CRC32C of `data`.
pub(crate) fn crc32c_of(data: &[u8]) -> u32 {
    if data.len() >= FAST_CRC_FROM {
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
    } else {
        crc32c::crc32c(data)
    }
}

/// The CRC32C of `a ++ payload` from `crc(a)` (what `crc32c::crc32c_append` computes).
fn crc_append(crc_a: u32, payload: &[u8]) -> u32 {
    if payload.len() >= FAST_CRC_FROM {
        crc_combine(crc_a, crc32c_of(payload), payload.len())
    } else {
        crc32c::crc32c_append(crc_a, payload)
    }
}

/// The CRC32C of `a ++ b` from `crc(a)`, `crc(b)` and `b`'s length: `crc(a)` carried over
/// `len_b` zero bytes, XOR `crc(b)`. Carrying over `n` zero bytes is a linear map of the 32-bit
/// CRC state; its matrix costs as much to build as one `crc32c::crc32c_combine` call (tens of
/// µs for 1 MiB, which profiles showed as 8 % of a journaled writer's CPU, under the journal
/// lock), so the matrices of the last few lengths are kept per thread and a combine is one
/// 32-step product.
pub(crate) fn crc_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    use std::cell::RefCell;
    thread_local! {
        static OPS: RefCell<Vec<(usize, [u32; 32])>> = const { RefCell::new(Vec::new()) };
    }
    if len_b == 0 {
        return crc_a;
    }
    OPS.with(|ops| {
        let mut ops = ops.borrow_mut();
        let i = match ops.iter().position(|(n, _)| *n == len_b) {
            Some(i) => i,
            None => {
                if ops.len() == 8 {
                    ops.remove(0);
                }
                ops.push((len_b, zeros_operator(len_b)));
                ops.len() - 1
            }
        };
        gf2_times(&ops[i].1, crc_a) ^ crc_b
    })
}

/// `m` applied to the vector `v` over GF(2): the XOR of the columns `m[i]` where bit `i` of
/// `v` is set.
fn gf2_times(m: &[u32; 32], mut v: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while v != 0 {
        if v & 1 == 1 {
            sum ^= m[i];
        }
        v >>= 1;
        i += 1;
    }
    sum
}

/// `a ∘ b`: the matrix of applying `b`, then `a`.
fn gf2_compose(a: &[u32; 32], b: &[u32; 32]) -> [u32; 32] {
    std::array::from_fn(|i| gf2_times(a, b[i]))
}

/// The matrix that carries a (reflected) CRC32C state over `n` zero bytes.
fn zeros_operator(mut n: usize) -> [u32; 32] {
    // One zero bit: shift right, folding in the reflected polynomial when bit 0 falls out.
    let mut step: [u32; 32] =
        std::array::from_fn(|i| if i == 0 { 0x82F6_3B78 } else { 1 << (i - 1) });
    for _ in 0..3 {
        step = gf2_compose(&step, &step); // 2, 4, then 8 zero bits: one zero byte
    }
    let mut out: [u32; 32] = std::array::from_fn(|i| 1 << i);
    while n != 0 {
        if n & 1 == 1 {
            out = gf2_compose(&step, &out);
        }
        n >>= 1;
        if n != 0 {
            step = gf2_compose(&step, &step);
        }
    }
    out
}

impl RecordHead {
    /// The header bytes for this record with `payload` (which is written right after it).
    pub fn encode(&self, payload: &[u8]) -> [u8; RECORD_HEADER_SIZE] {
        self.encode_parts(payload.len(), |prefix| crc_append(prefix, payload))
    }

    /// Like `encode`, from the payload's length and its CRC32C computed beforehand (the
    /// journal computes a large payload's CRC before it takes its lock, and combines it with
    /// the header's under the lock: see `crc_combine`).
    pub fn encode_with_crc(
        &self,
        payload_len: usize,
        payload_crc: u32,
    ) -> [u8; RECORD_HEADER_SIZE] {
        self.encode_parts(payload_len, |prefix| {
            crc_combine(prefix, payload_crc, payload_len)
        })
    }

    fn encode_parts(
        &self,
        payload_len: usize,
        crc: impl FnOnce(u32) -> u32,
    ) -> [u8; RECORD_HEADER_SIZE] {
        let mut e = Enc::with_capacity(RECORD_HEADER_SIZE);
        e.u32(REC_MAGIC)
            .u8(self.kind as u8)
            .bytes(&[0; 3])
            .u64(self.group)
            .u64(self.epoch)
            .u64(self.seq)
            .u64(self.time)
            .u64(self.volume)
            .u64(self.offset)
            .u64(self.length)
            .u32(payload_len as u32);
        let crc = crc(crc32c::crc32c(&e.buf));
        e.u32(crc);
        e.buf.try_into().expect("record header is 72 bytes")
    }
}

/// The sequence number, primary time and payload length of the record whose 72-byte header
/// is `buf`, checking only its magic (not its CRC, which covers the payload): enough to walk
/// a segment's records without reading their payloads (the stand-in secondary does).
pub fn peek_record(buf: &[u8]) -> Result<(u64, u64, usize), FormatError> {
    const WHAT: &str = "journal record header";
    if buf.len() < RECORD_HEADER_SIZE {
        return Err(FormatError::Truncated {
            what: WHAT,
            need: RECORD_HEADER_SIZE,
            have: buf.len(),
        });
    }
    let mut d = Dec::new(&buf[..RECORD_HEADER_SIZE], WHAT);
    if d.u32()? != REC_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    d.bytes(20)?;
    let (seq, time) = (d.u64()?, d.u64()?);
    d.bytes(24)?;
    let plen = d.u32()? as usize;
    if plen > MAX_PAYLOAD {
        return Err(FormatError::Invalid {
            what: WHAT,
            detail: format!("payload length {plen}"),
        });
    }
    Ok((seq, time, plen))
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub head: RecordHead,
    pub payload: Payload,
}

/// A record's payload: a range of the buffer its segment was read into (shared, so reading
/// a segment copies its bytes once, not once more per record), or bytes of its own.
#[derive(Clone)]
pub struct Payload {
    buf: std::sync::Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl Payload {
    /// `buf[range]`, without copying it.
    pub fn shared(buf: &std::sync::Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Payload {
        assert!(range.end <= buf.len(), "payload range outside its buffer");
        Payload {
            buf: buf.clone(),
            range,
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        let range = 0..v.len();
        Payload {
            buf: std::sync::Arc::new(v),
            range,
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, o: &Payload) -> bool {
        **self == **o
    }
}

impl Eq for Payload {}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, o: &Vec<u8>) -> bool {
        **self == o[..]
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

impl JournalRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_HEADER_SIZE + self.payload.len());
        v.extend_from_slice(&self.head.encode(&self.payload));
        v.extend_from_slice(&self.payload);
        v
    }

    /// Decode the record at the start of `buf`; returns it and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(JournalRecord, usize), FormatError> {
        let (head, used) = Self::decode_head(buf)?;
        let payload = buf[RECORD_HEADER_SIZE..used].to_vec().into();
        Ok((JournalRecord { head, payload }, used))
    }

    /// Decode the record at `buf[at..]`, its payload shared with `buf`.
    pub fn decode_shared(
        buf: &std::sync::Arc<Vec<u8>>,
        at: usize,
    ) -> Result<(JournalRecord, usize), FormatError> {
        let (head, used) = Self::decode_head(&buf[at..])?;
        let payload = Payload::shared(buf, at + RECORD_HEADER_SIZE..at + used);
        Ok((JournalRecord { head, payload }, used))
    }

    /// Check the record at the start of `buf` (CRC and all); returns its header and the
    /// bytes the record takes.
    fn decode_head(buf: &[u8]) -> Result<(RecordHead, usize), FormatError> {
        const WHAT: &str = "journal record";
        if buf.len() < RECORD_HEADER_SIZE {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: RECORD_HEADER_SIZE,
                have: buf.len(),
            });
        }
        let mut d = Dec::new(&buf[..RECORD_HEADER_SIZE], WHAT);
        if d.u32()? != REC_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let kind_raw = d.u8()?;
        if d.bytes(3)? != [0, 0, 0] {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: "reserved bytes 5..8 are not 0".into(),
            });
        }
        let (group, epoch, seq, time) = (d.u64()?, d.u64()?, d.u64()?, d.u64()?);
        let (volume, offset, length) = (d.u64()?, d.u64()?, d.u64()?);
        let plen = d.u32()? as usize;
        let stored = d.u32()?;
        if plen > MAX_PAYLOAD {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("payload length {plen}"),
            });
        }
        let end = RECORD_HEADER_SIZE + plen;
        if buf.len() < end {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: end,
                have: buf.len(),
            });
        }
        let payload = &buf[RECORD_HEADER_SIZE..end];
        let computed = crc_append(crc32c::crc32c(&buf[..68]), payload);
        if computed != stored {
            return Err(FormatError::BadChecksum {
                what: WHAT,
                stored,
                computed,
            });
        }
        let kind = RecordKind::from_u8(kind_raw)?;
        if kind.carries_data() && plen as u64 != length {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{kind:?} of {length} bytes carries {plen}"),
            });
        }
        let head = RecordHead {
            kind,
            group,
            epoch,
            seq,
            time,
            volume,
            offset,
            length,
        };
        Ok((head, end))
    }

    /// The name carried by a `VolumeAdd` or `Marker` record.
    pub fn name(&self) -> Result<String, FormatError> {
        let mut d = Dec::new(&self.payload, "journal record name");
        d.str()
    }

    /// The payload of an `Info` record.
    pub fn info_payload(&self) -> Result<InfoPayload, FormatError> {
        InfoPayload::decode(&self.payload)
    }

    /// A name payload for `VolumeAdd` / `Marker`.
    pub fn name_payload(name: &str) -> Vec<u8> {
        let mut e = Enc::new();
        e.str(name);
        e.buf
    }
}

// Format: remote acknowledgement file `ack` in the group's remote directory, written whole
// by the secondary (tmp + fsync + rename + fsync dir).
//   0  magic    8  b"FVJACK\0\0"
//   8  version  u32 (1)
//  12  reserved u32
//  16  group    u64
//  24  epoch    u64
//  32  applied  u64   every record up to this sequence number is applied and durable
//  40  time     u64   the applied record's primary time (ns since the Unix epoch)
//  48  acked_at u64   when the secondary wrote this file (ns)
//  56  pad to 60, crc32c u32 over bytes 0..60
pub const ACK_SIZE: usize = 64;
const ACK_MAGIC: &[u8; 8] = b"FVJACK\0\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    pub group: u64,
    pub epoch: u64,
    pub applied: u64,
    pub time: u64,
    pub acked_at: u64,
}

impl Ack {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(ACK_SIZE);
        e.bytes(ACK_MAGIC)
            .u32(1)
            .u32(0)
            .u64(self.group)
            .u64(self.epoch)
            .u64(self.applied)
            .u64(self.time)
            .u64(self.acked_at);
        seal_fixed(e.buf, ACK_SIZE)
    }

    pub fn decode(buf: &[u8]) -> Result<Ack, FormatError> {
        let what = "journal acknowledgement";
        if buf.len() != ACK_SIZE {
            return Err(FormatError::Truncated {
                what,
                need: ACK_SIZE,
                have: buf.len(),
            });
        }
        let mut d = open_fixed(buf, ACK_SIZE, ACK_MAGIC, 1, what)?;
        let a = Ack {
            group: d.u64()?,
            epoch: d.u64()?,
            applied: d.u64()?,
            time: d.u64()?,
            acked_at: d.u64()?,
        };
        d.zero_padding()?;
        Ok(a)
    }
}

// Format: group manifest file `manifest` in the group's remote directory, written whole by
// the primary (tmp + fsync + rename + fsync dir); the secondary attaches by reading it, and a
// takeover writes a new one with a higher epoch.
//   0  magic     8  b"FVJMAN\0\0"
//   8  version   u32 (3; version 1 ends after `name`: start_seq 0, no volumes; version 2
//                  after `volumes`: no settings)
//  12  reserved  u32
//  16  group     u64   unique id
//  24  epoch     u64
//  32  pool      u64   the primary pool's id
//  40  created   u64   ns since the Unix epoch
//  48  name      str   (u16 length + UTF-8)
//  ..  start_seq u64   the epoch's journal continues after this sequence number (0: epoch 1)
//  ..  volumes   u64 n, then n × (id u64, name str): the primary's volumes (set at takeover)
//  ..  settings  u8 (0: none, 1: these follow) the primary's journal settings, which a
//                  takeover gives the new primary: segment_bytes u64, seal_age_ms u64,
//                  rate u64, journal_limit u64, full policy u8 (FullPolicy), block_timeout_ms u64
//  ..  crc32c    u32   over every byte before it
const MAN_MAGIC: &[u8; 8] = b"FVJMAN\0\0";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub group: u64,
    pub epoch: u64,
    pub pool: u64,
    pub created: u64,
    pub name: String,
    pub start_seq: u64,
    pub volumes: Vec<(u64, String)>,
    pub settings: Option<JournalSettings>,
}

/// The journal settings of a primary group, published so that a takeover keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalSettings {
    pub segment_bytes: u64,
    pub seal_age_ms: u64,
    pub rate: u64,
    pub journal_limit: u64,
    pub policy: super::group::full::FullPolicy,
    pub block_timeout_ms: u64,
}

/// Check magic and CRC of a variable-size remote file; returns a decoder after the magic.
fn open_var<'a>(
    buf: &'a [u8],
    magic: &[u8; 8],
    what: &'static str,
) -> Result<Dec<'a>, FormatError> {
    if buf.len() < 12 {
        return Err(FormatError::Truncated {
            what,
            need: 12,
            have: buf.len(),
        });
    }
    if &buf[..8] != magic {
        return Err(FormatError::BadMagic { what });
    }
    let body = &buf[..buf.len() - 4];
    let stored = u32::from_le_bytes(buf[buf.len() - 4..].try_into().unwrap());
    verify_crc(what, body, stored)?;
    Ok(Dec::new(&body[8..], what))
}

fn close_var(mut e: Enc) -> Vec<u8> {
    let crc = crc32c::crc32c(&e.buf);
    e.u32(crc);
    e.buf
}

fn no_trailing(d: &Dec<'_>, what: &'static str) -> Result<(), FormatError> {
    if d.remaining() != 0 {
        return Err(FormatError::Invalid {
            what,
            detail: format!("{} trailing bytes", d.remaining()),
        });
    }
    Ok(())
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.bytes(MAN_MAGIC)
            .u32(3)
            .u32(0)
            .u64(self.group)
            .u64(self.epoch)
            .u64(self.pool)
            .u64(self.created)
            .str(&self.name)
            .u64(self.start_seq)
            .u64(self.volumes.len() as u64);
        for (id, name) in &self.volumes {
            e.u64(*id).str(name);
        }
        match &self.settings {
            None => {
                e.u8(0);
            }
            Some(st) => {
                e.u8(1)
                    .u64(st.segment_bytes)
                    .u64(st.seal_age_ms)
                    .u64(st.rate)
                    .u64(st.journal_limit)
                    .u8(st.policy as u8)
                    .u64(st.block_timeout_ms);
            }
        }
        close_var(e)
    }

    pub fn decode(buf: &[u8]) -> Result<Manifest, FormatError> {
        const WHAT: &str = "group manifest";
        let mut d = open_var(buf, MAN_MAGIC, WHAT)?;
        let version = d.u32()?;
        if !(1..=3).contains(&version) {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        d.reserved_u32()?;
        let mut m = Manifest {
            group: d.u64()?,
            epoch: d.u64()?,
            pool: d.u64()?,
            created: d.u64()?,
            name: d.str()?,
            ..Default::default()
        };
        if version >= 2 {
            m.start_seq = d.u64()?;
            let n = d.count(10)?;
            for _ in 0..n {
                m.volumes.push((d.u64()?, d.str()?));
            }
        }
        let has_settings = if version >= 3 {
            match d.u8()? {
                0 => false,
                1 => true,
                kind => return Err(FormatError::UnknownType { what: WHAT, kind }),
            }
        } else {
            false
        };
        if has_settings {
            let (segment_bytes, seal_age_ms, rate, journal_limit) =
                (d.u64()?, d.u64()?, d.u64()?, d.u64()?);
            let policy = match d.u8()? {
                0 => super::group::full::FullPolicy::Block,
                1 => super::group::full::FullPolicy::Suspend,
                kind => return Err(FormatError::UnknownType { what: WHAT, kind }),
            };
            m.settings = Some(JournalSettings {
                segment_bytes,
                seal_age_ms,
                rate,
                journal_limit,
                policy,
                block_timeout_ms: d.u64()?,
            });
        }
        no_trailing(&d, WHAT)?;
        Ok(m)
    }
}

/// One region of a failback request: `[offset, offset+len)` of the volume `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailbackRegion {
    pub volume: String,
    pub offset: u64,
    pub len: u64,
}

// Format: failback request file `failback.e<EPOCH>` in the group's remote directory, written
// whole by an old primary that becomes the secondary of epoch EPOCH. It names the regions the
// old primary wrote after the takeover point; the new primary journals them as `Base`
// records and then a `FailbackDone` record.
//   0  magic     8  b"FVJFBR\0\0"
//   8  version   u32 (1)
//  12  reserved  u32
//  16  group     u64
//  24  epoch     u64   the epoch it asks (the new primary's)
//  32  pool      u64   the asking (old primary's) pool id
//  40  created   u64   ns since the Unix epoch
//  48  regions   u64 n, then n × (volume name str, offset u64, len u64)
//  ..  crc32c    u32   over every byte before it
const FBR_MAGIC: &[u8; 8] = b"FVJFBR\0\0";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailbackRequest {
    pub group: u64,
    pub epoch: u64,
    pub pool: u64,
    pub created: u64,
    pub regions: Vec<FailbackRegion>,
}

impl FailbackRequest {
    pub fn file_name(epoch: u64) -> String {
        format!("failback.e{epoch}")
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.bytes(FBR_MAGIC)
            .u32(1)
            .u32(0)
            .u64(self.group)
            .u64(self.epoch)
            .u64(self.pool)
            .u64(self.created)
            .u64(self.regions.len() as u64);
        for r in &self.regions {
            e.str(&r.volume).u64(r.offset).u64(r.len);
        }
        close_var(e)
    }

    pub fn decode(buf: &[u8]) -> Result<FailbackRequest, FormatError> {
        const WHAT: &str = "failback request";
        let mut d = open_var(buf, FBR_MAGIC, WHAT)?;
        let version = d.u32()?;
        if version != 1 {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        d.reserved_u32()?;
        let mut f = FailbackRequest {
            group: d.u64()?,
            epoch: d.u64()?,
            pool: d.u64()?,
            created: d.u64()?,
            regions: Vec::new(),
        };
        let n = d.count(18)?;
        for _ in 0..n {
            f.regions.push(FailbackRegion {
                volume: d.str()?,
                offset: d.u64()?,
                len: d.u64()?,
            });
        }
        no_trailing(&d, WHAT)?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn crc_combine_equals_the_crc_of_the_concatenation(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..5000),
        ) {
            let whole = crc32c::crc32c_append(crc32c::crc32c(&a), &b);
            // Twice: the second call takes the cached operator.
            for _ in 0..2 {
                proptest::prop_assert_eq!(crc_combine(crc32c::crc32c(&a), crc32c::crc32c(&b), b.len()), whole);
            }
            proptest::prop_assert_eq!(
                crc_combine(crc32c::crc32c(&a), crc32c::crc32c(&b), b.len()),
                crc32c::crc32c_combine(crc32c::crc32c(&a), crc32c::crc32c(&b), b.len())
            );
        }
    }

    #[test]
    fn fast_crc_equals_crc32c_at_every_size_around_the_switch() {
        let data: Vec<u8> = (0..70_000usize).map(|i| (i * 131 % 253) as u8).collect();
        for len in (0..200).chain(4000..4200).chain([65536, 65537, 69_999]) {
            let d = &data[..len];
            assert_eq!(crc32c_of(d), crc32c::crc32c(d), "len {len}");
            let head = &data[..68];
            let want = crc32c::crc32c_append(crc32c::crc32c(head), d);
            assert_eq!(crc_append(crc32c::crc32c(head), d), want, "len {len}");
        }
    }

    #[test]
    fn crc_combine_of_large_payloads_and_a_full_cache() {
        let head = [7u8; 68];
        for len in [
            1usize << 20,
            4096,
            131072,
            1,
            65536,
            3,
            5,
            1 << 20,
            999_999,
            12,
            1 << 20,
        ] {
            let p: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let want = crc32c::crc32c_append(crc32c::crc32c(&head), &p);
            assert_eq!(
                crc_combine(crc32c::crc32c(&head), crc32c::crc32c(&p), len),
                want,
                "len {len}"
            );
        }
    }

    fn head(kind: RecordKind, seq: u64, length: u64) -> RecordHead {
        RecordHead {
            kind,
            group: 0xfeed,
            epoch: 3,
            seq,
            time: 1_700_000_000_000_000_000,
            volume: 17,
            offset: 4096,
            length,
        }
    }

    #[test]
    fn record_roundtrip_and_every_flipped_byte_is_refused() {
        let rec = JournalRecord {
            head: head(RecordKind::Write, 42, 5),
            payload: b"hello".to_vec().into(),
        };
        let bytes = rec.encode();
        let (back, used) = JournalRecord::decode(&bytes).unwrap();
        assert_eq!(back, rec);
        assert_eq!(used, bytes.len());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(JournalRecord::decode(&b).is_err(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(JournalRecord::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn a_header_from_a_precomputed_payload_crc_is_the_same() {
        for len in [0usize, 1, 4096, 65536, 1 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let h = head(RecordKind::Write, 9, len as u64);
            assert_eq!(
                h.encode_with_crc(len, crc32c::crc32c(&payload)),
                h.encode(&payload),
                "{len}"
            );
        }
    }

    #[test]
    fn manifest_carries_the_journal_settings_and_version_2_still_reads() {
        let mut m = Manifest {
            group: 7,
            epoch: 2,
            pool: 3,
            created: 4,
            name: "g".into(),
            start_seq: 99,
            volumes: vec![(5, "a".into())],
            settings: Some(JournalSettings {
                segment_bytes: 1 << 20,
                seal_age_ms: 300,
                rate: 0,
                journal_limit: 96 << 20,
                policy: super::super::group::full::FullPolicy::Suspend,
                block_timeout_ms: 7000,
            }),
        };
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        // A version 2 manifest (no settings): the v3 bytes without the settings, version 2.
        m.settings = None;
        let v3 = m.encode();
        let mut v2 = v3[..v3.len() - 5].to_vec();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(Manifest::decode(&v2).unwrap(), m);
        let mut bad = v3.clone();
        bad[20] ^= 1;
        assert!(Manifest::decode(&bad).is_err());
    }

    #[test]
    fn data_records_must_carry_their_length() {
        let rec = JournalRecord {
            head: head(RecordKind::Base, 1, 8),
            payload: vec![1; 4].into(),
        };
        assert!(JournalRecord::decode(&rec.encode()).is_err());
        let zero = JournalRecord {
            head: head(RecordKind::Zero, 2, 1 << 20),
            payload: vec![].into(),
        };
        assert_eq!(JournalRecord::decode(&zero.encode()).unwrap().0, zero);
    }

    #[test]
    fn names_roundtrip() {
        let rec = JournalRecord {
            head: head(RecordKind::Marker, 9, 0),
            payload: JournalRecord::name_payload("nightly").into(),
        };
        let (back, _) = JournalRecord::decode(&rec.encode()).unwrap();
        assert_eq!(back.name().unwrap(), "nightly");
    }

    #[test]
    fn headers_ack_and_manifest_detect_damage() {
        let h = SegmentHeader {
            group: 1,
            epoch: 2,
            first_seq: 3,
            created: 4,
        };
        let a = Ack {
            group: 1,
            epoch: 2,
            applied: 99,
            time: 5,
            acked_at: 6,
        };
        let m = Manifest {
            group: 1,
            epoch: 2,
            pool: 7,
            created: 8,
            name: "db".into(),
            start_seq: 41,
            volumes: vec![(3, "va".into()), (9, "vb".into())],
            settings: None,
        };
        let hb = h.encode();
        let ab = a.encode();
        let mb = m.encode();
        assert_eq!(SegmentHeader::decode(&hb).unwrap(), h);
        assert_eq!(Ack::decode(&ab).unwrap(), a);
        assert_eq!(Manifest::decode(&mb).unwrap(), m);
        for i in 0..hb.len() {
            let mut b = hb.clone();
            b[i] ^= 1;
            assert!(SegmentHeader::decode(&b).is_err(), "header flip {i}");
        }
        for i in 0..ab.len() {
            let mut b = ab.clone();
            b[i] ^= 1;
            assert!(Ack::decode(&b).is_err(), "ack flip {i}");
        }
        for i in 0..mb.len() {
            let mut b = mb.clone();
            b[i] ^= 1;
            assert!(Manifest::decode(&b).is_err(), "manifest flip {i}");
        }
    }

    #[test]
    fn version_1_manifest_still_decodes() {
        let mut e = Enc::new();
        e.bytes(MAN_MAGIC)
            .u32(1)
            .u32(0)
            .u64(1)
            .u64(2)
            .u64(3)
            .u64(4)
            .str("g");
        let b = close_var(e);
        let m = Manifest::decode(&b).unwrap();
        assert_eq!((m.group, m.epoch, m.start_seq), (1, 2, 0));
        assert!(m.volumes.is_empty());
    }

    #[test]
    fn failback_request_roundtrip_and_damage() {
        let f = FailbackRequest {
            group: 5,
            epoch: 3,
            pool: 11,
            created: 12,
            regions: vec![
                FailbackRegion {
                    volume: "va".into(),
                    offset: 65536,
                    len: 4096,
                },
                FailbackRegion {
                    volume: "vb".into(),
                    offset: 0,
                    len: 1 << 20,
                },
            ],
        };
        let b = f.encode();
        assert_eq!(FailbackRequest::decode(&b).unwrap(), f);
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x40;
            assert!(FailbackRequest::decode(&x).is_err(), "flip {i}");
        }
        assert!(FailbackRequest::decode(&b[..b.len() - 5]).is_err());
        assert_eq!(FailbackRequest::file_name(3), "failback.e3");
    }
}

// Format: payload of an `Info` journal record.
//   pool_id   u64  the primary pool's id
//   volume    str  the primary volume's name
//   snapshot  str  the snapshot's name (empty: the volume's own record)
//   info      u32 length (≤ 4096), then the encoded volume information (volinfo.rs; empty:
//             the record was removed)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InfoPayload {
    pub pool_id: u64,
    pub volume: String,
    pub snapshot: String,
    pub info: Vec<u8>,
}

impl InfoPayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.pool_id)
            .str(&self.volume)
            .str(&self.snapshot)
            .u32(self.info.len() as u32)
            .bytes(&self.info);
        e.buf
    }

    pub fn decode(buf: &[u8]) -> Result<InfoPayload, FormatError> {
        const WHAT: &str = "journal info record";
        let mut d = Dec::new(buf, WHAT);
        let pool_id = d.u64()?;
        let volume = d.str()?;
        let snapshot = d.str()?;
        let n = d.u32()? as usize;
        if n > super::volinfo::INFO_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("volume information of {n} bytes"),
            });
        }
        let info = d.bytes(n)?.to_vec();
        if d.remaining() != 0 {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{} trailing bytes", d.remaining()),
            });
        }
        Ok(InfoPayload {
            pool_id,
            volume,
            snapshot,
            info,
        })
    }
}

#[cfg(test)]
mod info_payload_tests {
    use super::*;

    #[test]
    fn info_payload_round_trip() {
        let p = InfoPayload {
            pool_id: 7,
            volume: "db".into(),
            snapshot: "s1".into(),
            info: vec![1, 2, 3],
        };
        let b = p.encode();
        assert_eq!(InfoPayload::decode(&b).unwrap(), p);
        for n in 0..b.len() {
            assert!(InfoPayload::decode(&b[..n]).is_err(), "cut at {n}");
        }
        assert_eq!(RecordKind::from_u8(40).unwrap(), RecordKind::Info);
    }
}
