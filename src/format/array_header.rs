//! The header at the start of every array (backing image) file.

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

// Format: array header, ARRAY_HEADER_SIZE (4096) bytes at offset 0 of every array file.
//   0  magic        8  b"FVARRAY\0"
//   8  version      u32 (1)
//  12  array_id     u32
//  16  pool_id      u64
//  24  capacity     u64   data-area bytes (a multiple of extent_size)
//  32  extent_size  u64
//  40  data_offset  u64   where extent 0 starts in the file
//  48  created      u64   seconds since the Unix epoch
//  56  name         u16 length + UTF-8 (≤ 255 bytes)
//   .. tier         u16 length + UTF-8 (≤ 64 bytes)
//   .. zero padding up to 4092
// 4092 crc32c       u32   over bytes 0..4092
pub const ARRAY_HEADER_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"FVARRAY\0";
const VERSION: u32 = 1;
/// Extent 0 of every array starts here: 1 MiB keeps extents aligned for O_DIRECT and hole punching.
pub const DATA_OFFSET: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayHeader {
    pub array_id: u32,
    pub pool_id: u64,
    pub capacity: u64,
    pub extent_size: u64,
    pub data_offset: u64,
    pub created: u64,
    pub name: String,
    pub tier: String,
}

impl ArrayHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(ARRAY_HEADER_SIZE);
        e.bytes(MAGIC)
            .u32(VERSION)
            .u32(self.array_id)
            .u64(self.pool_id)
            .u64(self.capacity)
            .u64(self.extent_size)
            .u64(self.data_offset)
            .u64(self.created)
            .str(&self.name)
            .str(&self.tier);
        let mut buf = e.buf;
        assert!(
            buf.len() <= ARRAY_HEADER_SIZE - 4,
            "array header fields too long"
        );
        buf.resize(ARRAY_HEADER_SIZE - 4, 0);
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decode and verify a header. On a checksum error the offset to report is 4092.
    pub fn decode(buf: &[u8]) -> Result<ArrayHeader, FormatError> {
        const WHAT: &str = "array header";
        if buf.len() < ARRAY_HEADER_SIZE {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: ARRAY_HEADER_SIZE,
                have: buf.len(),
            });
        }
        if &buf[..8] != MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let stored = u32::from_le_bytes(
            buf[ARRAY_HEADER_SIZE - 4..ARRAY_HEADER_SIZE]
                .try_into()
                .unwrap(),
        );
        verify_crc(WHAT, &buf[..ARRAY_HEADER_SIZE - 4], stored)?;
        let mut d = Dec::new(&buf[8..ARRAY_HEADER_SIZE - 4], WHAT);
        let version = d.u32()?;
        if version != VERSION {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        let h = ArrayHeader {
            array_id: d.u32()?,
            pool_id: d.u64()?,
            capacity: d.u64()?,
            extent_size: d.u64()?,
            data_offset: d.u64()?,
            created: d.u64()?,
            name: d.str()?,
            tier: d.str()?,
        };
        d.zero_padding()?;
        if h.extent_size == 0
            || !h.capacity.is_multiple_of(h.extent_size)
            || h.data_offset < ARRAY_HEADER_SIZE as u64
        {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!(
                    "capacity {} / extent size {} / data offset {} do not fit",
                    h.capacity, h.extent_size, h.data_offset
                ),
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArrayHeader {
        ArrayHeader {
            array_id: 3,
            pool_id: 0xdead_beef,
            capacity: 64 << 20,
            extent_size: 256 << 10,
            data_offset: DATA_OFFSET,
            created: 1_700_000_000,
            name: "a0".into(),
            tier: "fast".into(),
        }
    }

    #[test]
    fn round_trip() {
        let b = sample().encode();
        assert_eq!(b.len(), ARRAY_HEADER_SIZE);
        assert_eq!(ArrayHeader::decode(&b).unwrap(), sample());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let b = sample().encode();
        for i in (0..ARRAY_HEADER_SIZE).step_by(97) {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(ArrayHeader::decode(&c).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn short_buffer_is_truncated() {
        let b = sample().encode();
        assert!(matches!(
            ArrayHeader::decode(&b[..100]),
            Err(FormatError::Truncated { .. })
        ));
    }
}
