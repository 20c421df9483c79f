//! The checkpoint copy kept in every array file: two 4 KiB labels in the array's reserved
//! area (between its header and its data area) that point to a whole checkpoint stored past
//! the end of the data area.
//!
//! Every array file already reserves bytes 4096 up to its data offset (1 MiB in every pool
//! fusevol created), so existing pools get the labels with no format change; the checkpoint
//! bytes themselves live past `data_offset + capacity`, where no extent address reaches, so a
//! checkpoint of any size fits (the file is sparse). The labels alternate: a new copy goes to
//! the label that does not hold the newest copy that verifies, and to a region that does not
//! overlap that copy, so the only good copy of an array is never overwritten.

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

// Format: array checkpoint label, ARRAY_LABEL_SIZE (4096) bytes at offset
// ARRAY_LABEL_OFFSETS[slot] (4096 or 8192) of an array file.
//   0  magic        8  b"FVACOPY\0"
//   8  version      u32 (1)
//  12  array_id     u32   the array this label belongs to
//  16  pool_id      u64
//  24  generation   u64   the checkpoint's epoch
//  32  copy_offset  u64   where the checkpoint bytes start in the file (past the data area)
//  40  copy_len     u64   their length (a whole `Checkpoint` encoding)
//  48  copy_crc     u32   CRC32C of those bytes
//  52  reserved     u32   zero
//  .. zero padding up to 4092
// 4092 crc32c       u32   over bytes 0..4092
pub const ARRAY_LABEL_SIZE: usize = 4096;
/// The two label slots (different 4 KiB blocks: one bad sector takes at most one).
pub const ARRAY_LABEL_OFFSETS: [u64; 2] = [4096, 8192];
/// An array's data area must start at or after this for it to hold the labels.
pub const ARRAY_LABELS_END: u64 = 12288;
/// Checkpoint copies start at the first multiple of this past the data area.
pub const ARRAY_COPY_ALIGN: u64 = 1 << 20;
/// A label whose copy claims more than this is refused (no allocation from a bad field).
pub const ARRAY_COPY_MAX: u64 = 1 << 36;
const MAGIC: &[u8; 8] = b"FVACOPY\0";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayLabel {
    pub array_id: u32,
    pub pool_id: u64,
    pub generation: u64,
    pub copy_offset: u64,
    pub copy_len: u64,
    pub copy_crc: u32,
}

impl ArrayLabel {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(ARRAY_LABEL_SIZE);
        e.bytes(MAGIC)
            .u32(VERSION)
            .u32(self.array_id)
            .u64(self.pool_id)
            .u64(self.generation)
            .u64(self.copy_offset)
            .u64(self.copy_len)
            .u32(self.copy_crc)
            .u32(0);
        let mut buf = e.buf;
        buf.resize(ARRAY_LABEL_SIZE - 4, 0);
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decode and verify a label (not its copy: see `verify_copy`).
    pub fn decode(buf: &[u8]) -> Result<ArrayLabel, FormatError> {
        const WHAT: &str = "array checkpoint label";
        if buf.len() < ARRAY_LABEL_SIZE {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: ARRAY_LABEL_SIZE,
                have: buf.len(),
            });
        }
        if &buf[..8] != MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let stored = u32::from_le_bytes(
            buf[ARRAY_LABEL_SIZE - 4..ARRAY_LABEL_SIZE]
                .try_into()
                .unwrap(),
        );
        verify_crc(WHAT, &buf[..ARRAY_LABEL_SIZE - 4], stored)?;
        let mut d = Dec::new(&buf[8..ARRAY_LABEL_SIZE - 4], WHAT);
        let version = d.u32()?;
        if version != VERSION {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        let l = ArrayLabel {
            array_id: d.u32()?,
            pool_id: d.u64()?,
            generation: d.u64()?,
            copy_offset: d.u64()?,
            copy_len: d.u64()?,
            copy_crc: d.u32()?,
        };
        d.reserved_u32()?;
        d.zero_padding()?;
        if l.copy_len == 0 || l.copy_len > ARRAY_COPY_MAX || l.copy_offset < ARRAY_LABELS_END {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!(
                    "copy at offset {} of {} bytes is out of range",
                    l.copy_offset, l.copy_len
                ),
            });
        }
        Ok(l)
    }

    /// Check the copy's bytes against the label's checksum.
    pub fn verify_copy(&self, bytes: &[u8]) -> Result<(), FormatError> {
        if bytes.len() as u64 != self.copy_len {
            return Err(FormatError::Truncated {
                what: "array checkpoint copy",
                need: self.copy_len as usize,
                have: bytes.len(),
            });
        }
        verify_crc("array checkpoint copy", bytes, self.copy_crc)
    }

    /// The file range of the copy.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.copy_offset..self.copy_offset + self.copy_len
    }
}

/// Where the next copy of `len` bytes goes, given the newest good copy `keep` (if any) and
/// the first offset past the data area: never overlapping `keep`.
pub fn place_copy(tail: u64, len: u64, keep: Option<std::ops::Range<u64>>) -> u64 {
    let base = tail.next_multiple_of(ARRAY_COPY_ALIGN);
    match keep {
        None => base,
        Some(k) if base + len <= k.start => base,
        Some(k) => k.end.max(base).next_multiple_of(ARRAY_COPY_ALIGN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArrayLabel {
        ArrayLabel {
            array_id: 2,
            pool_id: 0x1234,
            generation: 9,
            copy_offset: 5 << 20,
            copy_len: 4000,
            copy_crc: 77,
        }
    }

    #[test]
    fn round_trip_and_every_flip_detected() {
        let b = sample().encode();
        assert_eq!(b.len(), ARRAY_LABEL_SIZE);
        assert_eq!(ArrayLabel::decode(&b).unwrap(), sample());
        for i in (0..ARRAY_LABEL_SIZE).step_by(7) {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(ArrayLabel::decode(&c).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn placement_never_overlaps_the_kept_copy() {
        let tail = (1 << 20) + (64 << 20);
        assert_eq!(place_copy(tail, 100, None), tail);
        let k = tail..tail + 3_000_000;
        let p = place_copy(tail, 100, Some(k.clone()));
        assert!(p >= k.end && p.is_multiple_of(ARRAY_COPY_ALIGN));
        // The kept copy after the base with room before it: the base.
        let k2 = p..p + 10;
        assert_eq!(place_copy(tail, 100, Some(k2.clone())), tail);
        // No room before it: after it.
        let big = p - tail + 1;
        assert!(place_copy(tail, big, Some(k2.clone())) >= k2.end);
    }
}
