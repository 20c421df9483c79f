//! Checkpoint: the whole metadata state at one moment, written as one file.

use std::collections::BTreeMap;

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

/// One volume: its attributes and its extent map (logical extent → packed `Phys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRec {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub tier: String,
    pub created: u64,
    pub map: BTreeMap<u64, u64>,
}

/// The pool's metadata state. Recovery = the last checkpoint + the log records after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub pool_id: u64,
    /// Incremented by every checkpoint; the log that follows carries the same epoch.
    pub epoch: u64,
    pub extent_size: u64,
    pub next_volume_id: u64,
    pub arrays: Vec<ArrayRec>,
    pub volumes: Vec<VolumeRec>,
}

// Format: checkpoint file `checkpoint`, written whole (tmp + fsync + rename + fsync dir).
//   0  magic          8  b"FVCKPT\0\0"
//   8  version        u32 (1)
//  12  reserved       u32 (0)
//  16  pool_id        u64
//  24  epoch          u64
//  32  extent_size    u64
//  40  next_volume_id u64
//  48  array count    u64, then per array: id u32, name str, tier str, capacity u64, file str
//  ..  volume count   u64, then per volume: id u64, name str, size u64, tier str, created u64,
//                     run count u64, then per run: lext u64, phys u64, len u64
//                     (lext+i → phys+i for i < len; runs never cross arrays)
//  end crc32c         u32 over every byte before it
// (str = u16 length + UTF-8 bytes)
const MAGIC: &[u8; 8] = b"FVCKPT\0\0";
const VERSION: u32 = 1;

/// Coalesce a map into runs of consecutive logical and physical extents.
fn runs(map: &BTreeMap<u64, u64>) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for (&l, &p) in map {
        if let Some(last) = out.last_mut() {
            let same_array = (last.1 >> super::Phys::INDEX_BITS) == (p >> super::Phys::INDEX_BITS);
            if last.0 + last.2 == l && last.1 + last.2 == p && same_array {
                last.2 += 1;
                continue;
            }
        }
        out.push((l, p, 1));
    }
    out
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
            .u64(self.next_volume_id)
            .u64(self.arrays.len() as u64);
        for a in &self.arrays {
            a.encode(&mut e);
        }
        e.u64(self.volumes.len() as u64);
        for v in &self.volumes {
            e.u64(v.id)
                .str(&v.name)
                .u64(v.size)
                .str(&v.tier)
                .u64(v.created);
            let rs = runs(&v.map);
            e.u64(rs.len() as u64);
            for (l, p, n) in rs {
                e.u64(l).u64(p).u64(n);
            }
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
        if version != VERSION {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        d.u32()?;
        let mut c = Checkpoint {
            pool_id: d.u64()?,
            epoch: d.u64()?,
            extent_size: d.u64()?,
            next_volume_id: d.u64()?,
            ..Default::default()
        };
        let na = d.count(16)?;
        for _ in 0..na {
            c.arrays.push(ArrayRec::decode(&mut d)?);
        }
        let nv = d.count(32)?;
        for _ in 0..nv {
            let id = d.u64()?;
            let name = d.str()?;
            let size = d.u64()?;
            let tier = d.str()?;
            let created = d.u64()?;
            let nr = d.count(24)?;
            let mut map = BTreeMap::new();
            for _ in 0..nr {
                let (l, p, n) = (d.u64()?, d.u64()?, d.u64()?);
                if n > (1 << 40) {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("run of {n} extents at logical extent {l}"),
                    });
                }
                for i in 0..n {
                    map.insert(l + i, p + i);
                }
            }
            c.volumes.push(VolumeRec {
                id,
                name,
                size,
                tier,
                created,
                map,
            });
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
        let mut map = BTreeMap::new();
        for i in 0..10 {
            map.insert(i, (1u64 << 40) + 100 + i);
        }
        map.insert(50, 7);
        map.insert(51, (2u64 << 40) + 8);
        Checkpoint {
            pool_id: 42,
            epoch: 3,
            extent_size: 1 << 18,
            next_volume_id: 9,
            arrays: vec![ArrayRec {
                id: 1,
                name: "a".into(),
                tier: "fast".into(),
                capacity: 1 << 30,
                file: "arrays/a.img".into(),
            }],
            volumes: vec![VolumeRec {
                id: 8,
                name: "v".into(),
                size: 1 << 30,
                tier: "fast".into(),
                created: 1,
                map,
            }],
        }
    }

    #[test]
    fn round_trip_and_runs() {
        let c = sample();
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
        assert_eq!(runs(&c.volumes[0].map).len(), 3);
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
}
