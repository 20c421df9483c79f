//! Reading journal segments: every record verified, sequence numbers checked to follow on.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::JournalError;
use crate::format::journal::{
    JournalRecord, RecordKind, SegmentHeader, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
};
use crate::format::FormatError;

/// Where a segment stops being valid.
#[derive(Debug)]
pub struct Damage {
    pub offset: u64,
    pub error: FormatError,
}

/// A segment as read: the records up to the first damage (if any).
#[derive(Debug)]
pub struct SegmentRead {
    pub header: SegmentHeader,
    pub records: Vec<JournalRecord>,
    /// Closed by a valid `Seal` record.
    pub sealed: bool,
    /// Bytes from the start of the file up to the end of the last valid record (or seal).
    pub valid_len: u64,
    /// The first invalid byte, when the file goes on past `valid_len`.
    pub damage: Option<Damage>,
    /// The file's bytes, which the records' payloads share.
    buf: Arc<Vec<u8>>,
}

impl SegmentRead {
    /// Sequence number of the last record (None for an empty segment).
    pub fn last_seq(&self) -> Option<u64> {
        self.records.last().map(|r| r.head.seq)
    }

    /// Done with the segment: its buffer is kept for the next read (when no payload of it
    /// is held elsewhere). Reading into memory that was written a moment ago is several
    /// times faster on a VM than into fresh pages, which the applier's profile showed.
    pub fn recycle(self) {
        let SegmentRead { records, buf, .. } = self;
        drop(records);
        if let Ok(v) = Arc::try_unwrap(buf) {
            let mut spare = SPARE_BUFS.lock();
            if spare.len() < MAX_SPARE_BUFS {
                spare.push(v);
            }
        }
    }
}

/// Read buffers kept by `recycle` (each as large as a segment).
static SPARE_BUFS: parking_lot::Mutex<Vec<Vec<u8>>> = parking_lot::Mutex::new(Vec::new());
const MAX_SPARE_BUFS: usize = 2;

/// The whole file, read into a recycled buffer when there is one.
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut v = SPARE_BUFS.lock().pop().unwrap_or_default();
    v.clear();
    // `read_to_end` fills the spare capacity without zeroing it first.
    f.read_to_end(&mut v)?;
    Ok(v)
}

fn invalid(detail: String) -> FormatError {
    FormatError::Invalid {
        what: "journal record",
        detail,
    }
}

/// Read a segment file. A bad header, or one of another group or epoch (when `expect` is
/// given as (group, epoch)), is an error; a bad record ends the read and is reported in
/// `damage`, so the caller decides whether it is a torn tail or corruption.
pub fn read_segment(path: &Path, expect: Option<(u64, u64)>) -> Result<SegmentRead, JournalError> {
    let buf = Arc::new(read_file(path).map_err(|e| JournalError::io("read", path, e))?);
    let header = SegmentHeader::decode(&buf).map_err(|source| JournalError::Damaged {
        path: path.to_path_buf(),
        offset: 0,
        source,
    })?;
    if let Some((g, e)) = expect {
        if header.group != g || header.epoch != e {
            return Err(JournalError::Foreign {
                path: path.to_path_buf(),
                group: header.group,
                epoch: header.epoch,
                want_group: g,
                want_epoch: e,
            });
        }
    }
    let mut out = SegmentRead {
        header,
        records: Vec::new(),
        sealed: false,
        valid_len: SEGMENT_HEADER_SIZE as u64,
        damage: None,
        buf: buf.clone(),
    };
    let mut pos = SEGMENT_HEADER_SIZE;
    let mut next = header.first_seq;
    while pos < buf.len() {
        let decoded = JournalRecord::decode_shared(&buf, pos);
        if let Ok((rec, _)) = &decoded {
            let h = &rec.head;
            if h.group == header.group && (h.epoch, h.seq) < (header.epoch, header.first_seq) {
                // A whole record older than this segment: bytes of a recycled file's
                // earlier life (the writer reuses purged segment files). The data ends here.
                break;
            }
        }
        let res = decoded.and_then(|(rec, used)| {
            let h = &rec.head;
            if h.group != header.group || h.epoch != header.epoch {
                return Err(invalid(format!(
                    "record of group {:#x} epoch {} in a segment of group {:#x} epoch {}",
                    h.group, h.epoch, header.group, header.epoch
                )));
            }
            if h.kind == RecordKind::Seal {
                let count = out.records.len() as u64;
                if count == 0 || h.seq != next - 1 || h.offset != count {
                    return Err(invalid(format!(
                        "seal says {} records up to {}, segment has {count} up to {}",
                        h.offset,
                        h.seq,
                        next.wrapping_sub(1)
                    )));
                }
            } else if h.seq != next {
                return Err(invalid(format!(
                    "sequence number {} where {next} was due",
                    h.seq
                )));
            }
            Ok((rec, used))
        });
        match res {
            Ok((rec, used)) => {
                pos += used;
                out.valid_len = pos as u64;
                if rec.head.kind == RecordKind::Seal {
                    out.sealed = true;
                    if pos < buf.len() {
                        out.damage = Some(Damage {
                            offset: pos as u64,
                            error: invalid(format!("{} bytes after the seal", buf.len() - pos)),
                        });
                    }
                    break;
                }
                next += 1;
                out.records.push(rec);
            }
            Err(error) => {
                out.damage = Some(Damage {
                    offset: pos as u64,
                    error,
                });
                break;
            }
        }
    }
    Ok(out)
}

/// Read a segment that must be whole: sealed and undamaged (what the applier accepts).
pub fn read_sealed(path: &Path, expect: (u64, u64)) -> Result<SegmentRead, JournalError> {
    let seg = read_segment(path, Some(expect))?;
    if let Some(d) = seg.damage {
        return Err(JournalError::Damaged {
            path: path.to_path_buf(),
            offset: d.offset,
            source: d.error,
        });
    }
    if !seg.sealed {
        return Err(JournalError::Invalid {
            path: path.to_path_buf(),
            offset: seg.valid_len,
            detail: format!(
                "segment ends without its seal record ({} records)",
                seg.records.len()
            ),
        });
    }
    Ok(seg)
}

/// Bytes one record takes in a segment.
pub(crate) fn record_size(payload: usize) -> u64 {
    (RECORD_HEADER_SIZE + payload) as u64
}
