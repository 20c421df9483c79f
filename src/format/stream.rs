//! The export stream of `fusevol volume export` / `volume import`: a self-describing copy of
//! a volume (or of what changed between two snapshots of it) — the management information
//! first, then the data, as seed 001 copies a backup to tape.
//!
//! Pure encode/decode over byte buffers; the CLI does the I/O. Parsing is incremental: each
//! `parse` takes the bytes available and answers `Incomplete` when it needs more, so a reader
//! never allocates more than one extent (bounded by `MAX_EXTENT`) for a record.

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

// Format: export stream, little-endian, back to back:
//   header
//     0  magic        8  b"FVSTREAM"
//     8  version      u32 (1)
//    12  flags        u32  bit 0: incremental (only what changed since snapshot `base`)
//    16  size         u64  the volume's size in bytes
//    24  extent_size  u64  bytes per extent record (the source pool's extent size)
//    32  pool_id      u64  the source pool
//    40  volume       str  (u16 length + UTF-8) the source volume
//    ..  snapshot     str  the source snapshot (empty: the live volume)
//    ..  base         str  incremental: the snapshot the changes apply on (else empty)
//    ..  info         u32 length (≤ 4096) + an encoded volume information record (volinfo.rs)
//    ..  crc32c       u32  over the header bytes before it
//   records, each with its own crc32c over its bytes before the crc:
//     1 extent: tag u8 (1), index u64 (offset / extent_size), len u32 (1..=extent_size,
//               the last extent may be short), data (len bytes), crc32c u32
//     2 hole:   tag u8 (2), index u64, crc32c u32   (incremental: the extent became a hole)
//   trailer
//     tag u8 (3), records u64 (extent + hole records), data_bytes u64 (sum of extent lens),
//     stream_crc u32: crc32c of every byte of the stream before this field
// Holes of a full stream are not sent: an importer starts from a volume of zeros.
pub const MAGIC: &[u8; 8] = b"FVSTREAM";
pub const VERSION: u32 = 1;
pub const FLAG_INCREMENTAL: u32 = 1;
/// The largest extent a stream may carry (64 MiB, the largest pool extent size).
pub const MAX_EXTENT: u64 = 64 << 20;
const TAG_EXTENT: u8 = 1;
const TAG_HOLE: u8 = 2;
const TAG_END: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    pub incremental: bool,
    pub size: u64,
    pub extent_size: u64,
    pub pool_id: u64,
    pub volume: String,
    pub snapshot: String,
    pub base: String,
    /// Encoded `volinfo::InfoRecord` (may be empty: none).
    pub info: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRecord {
    Extent {
        index: u64,
        data: Vec<u8>,
    },
    Hole {
        index: u64,
    },
    End {
        records: u64,
        data_bytes: u64,
        stream_crc: u32,
    },
}

/// What a parse found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The item and the bytes it took.
    Done(T, usize),
    /// At least this many bytes are needed in all.
    Incomplete(usize),
}

const WHAT_H: &str = "export stream header";
const WHAT_R: &str = "export stream record";

fn invalid(what: &'static str, detail: String) -> FormatError {
    FormatError::Invalid { what, detail }
}

impl StreamHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(128 + self.info.len());
        e.bytes(MAGIC)
            .u32(VERSION)
            .u32(if self.incremental {
                FLAG_INCREMENTAL
            } else {
                0
            })
            .u64(self.size)
            .u64(self.extent_size)
            .u64(self.pool_id)
            .str(&self.volume)
            .str(&self.snapshot)
            .str(&self.base)
            .u32(self.info.len() as u32)
            .bytes(&self.info);
        let crc = crc32c::crc32c(&e.buf);
        e.u32(crc);
        e.buf
    }

    /// Parse the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Parsed<StreamHeader>, FormatError> {
        // Fixed part, then three strings and the info, each with a length to check first.
        if buf.len() < 8 {
            return Ok(Parsed::Incomplete(8));
        }
        if &buf[..8] != MAGIC {
            return Err(FormatError::BadMagic { what: WHAT_H });
        }
        let mut need = 40;
        for _ in 0..3 {
            if buf.len() < need + 2 {
                return Ok(Parsed::Incomplete(need + 2));
            }
            need += 2 + u16::from_le_bytes([buf[need], buf[need + 1]]) as usize;
        }
        if buf.len() < need + 4 {
            return Ok(Parsed::Incomplete(need + 4));
        }
        let ilen = u32::from_le_bytes(buf[need..need + 4].try_into().unwrap()) as usize;
        if ilen > super::volinfo::INFO_MAX {
            return Err(invalid(
                WHAT_H,
                format!("volume information of {ilen} bytes"),
            ));
        }
        need += 4 + ilen;
        if buf.len() < need + 4 {
            return Ok(Parsed::Incomplete(need + 4));
        }
        let stored = u32::from_le_bytes(buf[need..need + 4].try_into().unwrap());
        verify_crc(WHAT_H, &buf[..need], stored)?;
        let mut d = Dec::new(&buf[8..need], WHAT_H);
        let version = d.u32()?;
        if version != VERSION {
            return Err(FormatError::BadVersion {
                what: WHAT_H,
                version,
            });
        }
        let flags = d.u32()?;
        if flags & !FLAG_INCREMENTAL != 0 {
            return Err(invalid(WHAT_H, format!("unknown flags {flags:#x}")));
        }
        let h = StreamHeader {
            incremental: flags & FLAG_INCREMENTAL != 0,
            size: d.u64()?,
            extent_size: d.u64()?,
            pool_id: d.u64()?,
            volume: d.str()?,
            snapshot: d.str()?,
            base: d.str()?,
            info: {
                let n = d.u32()? as usize;
                d.bytes(n)?.to_vec()
            },
        };
        if h.extent_size == 0 || h.extent_size > MAX_EXTENT || !h.extent_size.is_power_of_two() {
            return Err(invalid(WHAT_H, format!("extent size {}", h.extent_size)));
        }
        if h.incremental == h.base.is_empty() {
            return Err(invalid(
                WHAT_H,
                "an incremental stream names its base snapshot, a full one none".into(),
            ));
        }
        Ok(Parsed::Done(h, need + 4))
    }

    /// Extents in a volume of this size.
    pub fn extents(&self) -> u64 {
        self.size.div_ceil(self.extent_size)
    }
}

impl StreamRecord {
    /// Append the record; `End` is written by `encode_end` (it needs the running crc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            StreamRecord::Extent { index, data } => {
                out.push(TAG_EXTENT);
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            StreamRecord::Hole { index } => {
                out.push(TAG_HOLE);
                out.extend_from_slice(&index.to_le_bytes());
            }
            StreamRecord::End { .. } => panic!("use encode_end"),
        }
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// The trailer, given the crc32c of every stream byte before it (`crc_before`).
    pub fn encode_end(records: u64, data_bytes: u64, crc_before: u32, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(TAG_END);
        out.extend_from_slice(&records.to_le_bytes());
        out.extend_from_slice(&data_bytes.to_le_bytes());
        let crc = crc32c::crc32c_append(crc_before, &out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Parse one record at the start of `buf`, in a stream with this header. For `End`,
    /// `stream_crc` is the stored value; the caller compares it with its running crc.
    pub fn parse(buf: &[u8], h: &StreamHeader) -> Result<Parsed<StreamRecord>, FormatError> {
        if buf.is_empty() {
            return Ok(Parsed::Incomplete(1));
        }
        match buf[0] {
            TAG_EXTENT => {
                if buf.len() < 13 {
                    return Ok(Parsed::Incomplete(13));
                }
                let index = u64::from_le_bytes(buf[1..9].try_into().unwrap());
                let len = u32::from_le_bytes(buf[9..13].try_into().unwrap()) as u64;
                if index >= h.extents() {
                    return Err(invalid(
                        WHAT_R,
                        format!("extent {index} past the end ({} extents)", h.extents()),
                    ));
                }
                let room = (h.size - index * h.extent_size).min(h.extent_size);
                if len == 0 || len > room {
                    return Err(invalid(
                        WHAT_R,
                        format!("extent {index} carries {len} bytes (at most {room})"),
                    ));
                }
                let total = 13 + len as usize + 4;
                if buf.len() < total {
                    return Ok(Parsed::Incomplete(total));
                }
                let stored = u32::from_le_bytes(buf[total - 4..total].try_into().unwrap());
                verify_crc(WHAT_R, &buf[..total - 4], stored)?;
                Ok(Parsed::Done(
                    StreamRecord::Extent {
                        index,
                        data: buf[13..total - 4].to_vec(),
                    },
                    total,
                ))
            }
            TAG_HOLE => {
                if buf.len() < 13 {
                    return Ok(Parsed::Incomplete(13));
                }
                let stored = u32::from_le_bytes(buf[9..13].try_into().unwrap());
                verify_crc(WHAT_R, &buf[..9], stored)?;
                let index = u64::from_le_bytes(buf[1..9].try_into().unwrap());
                if !h.incremental || index >= h.extents() {
                    return Err(invalid(WHAT_R, format!("hole record for extent {index}")));
                }
                Ok(Parsed::Done(StreamRecord::Hole { index }, 13))
            }
            TAG_END => {
                if buf.len() < 21 {
                    return Ok(Parsed::Incomplete(21));
                }
                Ok(Parsed::Done(
                    StreamRecord::End {
                        records: u64::from_le_bytes(buf[1..9].try_into().unwrap()),
                        data_bytes: u64::from_le_bytes(buf[9..17].try_into().unwrap()),
                        stream_crc: u32::from_le_bytes(buf[17..21].try_into().unwrap()),
                    },
                    21,
                ))
            }
            kind => Err(FormatError::UnknownType { what: WHAT_R, kind }),
        }
    }
}

/// A whole stream in memory (tests, fuzzing): header, records, trailer.
pub fn encode_stream(h: &StreamHeader, records: &[StreamRecord]) -> Vec<u8> {
    let mut out = h.encode();
    let (mut n, mut bytes) = (0u64, 0u64);
    for r in records {
        if let StreamRecord::Extent { data, .. } = r {
            bytes += data.len() as u64;
        }
        if !matches!(r, StreamRecord::End { .. }) {
            r.encode(&mut out);
            n += 1;
        }
    }
    let crc = crc32c::crc32c(&out);
    StreamRecord::encode_end(n, bytes, crc, &mut out);
    out
}

/// Decode a whole stream from memory, checking every crc, the counts and that nothing
/// follows the trailer. Errors carry the byte offset where the stream went wrong.
pub fn decode_stream(buf: &[u8]) -> Result<(StreamHeader, Vec<StreamRecord>), (u64, FormatError)> {
    let h = match StreamHeader::parse(buf).map_err(|e| (0, e))? {
        Parsed::Done(h, n) => (h, n),
        Parsed::Incomplete(need) => {
            return Err((
                buf.len() as u64,
                FormatError::Truncated {
                    what: WHAT_H,
                    need,
                    have: buf.len(),
                },
            ))
        }
    };
    let (h, mut pos) = h;
    let mut recs = Vec::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    loop {
        let at = pos as u64;
        match StreamRecord::parse(&buf[pos..], &h).map_err(|e| (at, e))? {
            Parsed::Incomplete(need) => {
                return Err((
                    buf.len() as u64,
                    FormatError::Truncated {
                        what: WHAT_R,
                        need,
                        have: buf.len() - pos,
                    },
                ))
            }
            Parsed::Done(
                StreamRecord::End {
                    records,
                    data_bytes,
                    stream_crc,
                },
                len,
            ) => {
                let crc = crc32c::crc32c(&buf[..pos + 17]);
                if crc != stream_crc {
                    return Err((
                        at + 17,
                        FormatError::BadChecksum {
                            what: "export stream",
                            stored: stream_crc,
                            computed: crc,
                        },
                    ));
                }
                if records != n || data_bytes != bytes {
                    return Err((
                        at,
                        invalid(
                            "export stream trailer",
                            format!("says {records} records / {data_bytes} bytes, the stream had {n} / {bytes}"),
                        ),
                    ));
                }
                if pos + len != buf.len() {
                    return Err((
                        (pos + len) as u64,
                        invalid("export stream", "bytes after the trailer".into()),
                    ));
                }
                return Ok((h, recs));
            }
            Parsed::Done(r, len) => {
                if let StreamRecord::Extent { data, .. } = &r {
                    bytes += data.len() as u64;
                }
                n += 1;
                recs.push(r);
                pos += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (StreamHeader, Vec<StreamRecord>) {
        let h = StreamHeader {
            incremental: true,
            size: 3 * 4096 + 100,
            extent_size: 4096,
            pool_id: 7,
            volume: "v".into(),
            snapshot: "s2".into(),
            base: "s1".into(),
            info: vec![9, 9],
        };
        let recs = vec![
            StreamRecord::Extent {
                index: 0,
                data: vec![5; 4096],
            },
            StreamRecord::Hole { index: 1 },
            StreamRecord::Extent {
                index: 3,
                data: vec![6; 100],
            },
        ];
        (h, recs)
    }

    #[test]
    fn round_trip_and_every_flip_or_cut_is_refused() {
        let (h, recs) = sample();
        let b = encode_stream(&h, &recs);
        assert_eq!(decode_stream(&b).unwrap(), (h, recs));
        for i in (0..b.len()).step_by(7) {
            let mut c = b.clone();
            c[i] ^= 0x20;
            assert!(decode_stream(&c).is_err(), "flip at {i}");
        }
        for cut in [0, 5, 40, 100, b.len() - 1] {
            assert!(decode_stream(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_lengths_are_refused_before_allocating() {
        let (h, _) = sample();
        let mut b = h.encode();
        b.push(TAG_EXTENT);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_stream(&b).is_err());
    }
}
