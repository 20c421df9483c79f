//! A volume's extent map: logical extent → physical extent, in memory.
//!
//! The map *describes*; the caller does the I/O. `plan` cuts a byte range into per-extent
//! pieces and says for each where its bytes live, holding no lock itself; the volume layer
//! holds the map's lock only for the lookup.
//!
//! Storage is a two-level table of packed entries (8 bytes per mapped extent, chunks of 512
//! entries allocated on first use), so a sparse volume costs little and a fully mapped 1 TiB
//! volume with 256 KiB extents costs 32 MiB.

use crate::format::Phys;

const CHUNK: usize = 512;
const HOLE: u64 = 0;
const PENDING: u64 = u64::MAX;

/// One entry of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Hole,
    /// An extent is being allocated and written for this slot; its record is not logged yet.
    Pending,
    Mapped(Phys),
}

#[derive(Default)]
pub struct ExtentTable {
    chunks: Vec<Option<Box<[u64; CHUNK]>>>,
    mapped: u64,
}

impl ExtentTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, lext: u64) -> Entry {
        let (c, i) = ((lext as usize) / CHUNK, (lext as usize) % CHUNK);
        let raw = match self.chunks.get(c) {
            Some(Some(ch)) => ch[i],
            _ => HOLE,
        };
        match raw {
            HOLE => Entry::Hole,
            PENDING => Entry::Pending,
            v => Entry::Mapped(Phys::unpack(v - 1)),
        }
    }

    /// Set an entry; returns the previous one.
    pub fn set(&mut self, lext: u64, e: Entry) -> Entry {
        let prev = self.get(lext);
        let raw = match e {
            Entry::Hole => HOLE,
            Entry::Pending => PENDING,
            Entry::Mapped(p) => p.pack() + 1,
        };
        let (c, i) = ((lext as usize) / CHUNK, (lext as usize) % CHUNK);
        if raw == HOLE && !matches!(self.chunks.get(c), Some(Some(_))) {
            return prev;
        }
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, || None);
        }
        let ch = self.chunks[c].get_or_insert_with(|| Box::new([HOLE; CHUNK]));
        ch[i] = raw;
        let was = matches!(prev, Entry::Mapped(_));
        let is = matches!(e, Entry::Mapped(_));
        match (was, is) {
            (false, true) => self.mapped += 1,
            (true, false) => self.mapped -= 1,
            _ => {}
        }
        prev
    }

    /// Number of mapped (not pending) extents.
    pub fn mapped(&self) -> u64 {
        self.mapped
    }

    /// All mapped entries in logical order.
    pub fn iter_mapped(&self) -> impl Iterator<Item = (u64, Phys)> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, ch)| {
            ch.iter().flat_map(move |ch| {
                ch.iter()
                    .enumerate()
                    .filter_map(move |(i, &raw)| match raw {
                        HOLE | PENDING => None,
                        v => Some(((c * CHUNK + i) as u64, Phys::unpack(v - 1))),
                    })
            })
        })
    }

    /// Is any slot at or after `from` pending?
    pub fn any_pending_from(&self, from: u64) -> bool {
        self.chunks.iter().enumerate().any(|(c, ch)| {
            ch.as_ref().is_some_and(|ch| {
                ch.iter()
                    .enumerate()
                    .any(|(i, &raw)| raw == PENDING && (c * CHUNK + i) as u64 >= from)
            })
        })
    }

    /// Remove every mapping at or after `from`; returns what was removed.
    pub fn truncate(&mut self, from: u64) -> Vec<(u64, Phys)> {
        let removed: Vec<(u64, Phys)> = self.iter_mapped().filter(|&(l, _)| l >= from).collect();
        for &(l, _) in &removed {
            self.set(l, Entry::Hole);
        }
        let keep_chunks = (from as usize).div_ceil(CHUNK);
        if self.chunks.len() > keep_chunks && !self.any_pending_from(from) {
            self.chunks.truncate(keep_chunks);
        }
        removed
    }
}

/// One piece of a byte range, inside a single extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Logical extent number.
    pub lext: u64,
    /// Byte offset inside the extent.
    pub offset: u64,
    /// Byte length (never crosses the extent end).
    pub len: u64,
    /// Offset of this piece inside the caller's buffer.
    pub buf_offset: usize,
}

impl Piece {
    /// Does the piece cover its whole extent?
    pub fn is_whole(&self, extent_size: u64) -> bool {
        self.offset == 0 && self.len == extent_size
    }
}

/// Cut `[offset, offset+len)` into per-extent pieces.
pub fn pieces(offset: u64, len: u64, extent_size: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let lext = pos / extent_size;
        let inner = pos % extent_size;
        let n = (extent_size - inner).min(end - pos);
        let p = Piece {
            lext,
            offset: inner,
            len: n,
            buf_offset: (pos - offset) as usize,
        };
        pos += n;
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn pieces_cover_the_range() {
        let v: Vec<Piece> = pieces(100, 1000, 256).collect();
        assert_eq!(v.len(), 5);
        assert_eq!(
            v[0],
            Piece {
                lext: 0,
                offset: 100,
                len: 156,
                buf_offset: 0
            }
        );
        assert_eq!(v.iter().map(|p| p.len).sum::<u64>(), 1000);
        assert!(v[1].is_whole(256));
    }

    proptest! {
        #[test]
        fn table_matches_a_btreemap(ops in proptest::collection::vec((0u64..3000, 0u8..4, 0u64..1000), 1..300)) {
            let mut t = ExtentTable::new();
            let mut m: BTreeMap<u64, Entry> = BTreeMap::new();
            for (l, kind, v) in ops {
                let e = match kind {
                    0 => Entry::Hole,
                    1 => Entry::Pending,
                    _ => Entry::Mapped(Phys { array: (v % 3) as u32 + 1, index: v }),
                };
                if kind == 3 && l > 10 {
                    let from = l / 2;
                    let removed = t.truncate(from);
                    let expect: Vec<(u64, Phys)> = m.iter().filter_map(|(&k, &e)| match e { Entry::Mapped(p) if k >= from => Some((k, p)), _ => None }).collect();
                    prop_assert_eq!(removed, expect);
                    m.retain(|&k, e| k < from || *e == Entry::Pending);
                    continue;
                }
                let prev = t.set(l, e);
                let mprev = m.insert(l, e).unwrap_or(Entry::Hole);
                prop_assert_eq!(prev, mprev);
            }
            for (&k, &e) in &m {
                prop_assert_eq!(t.get(k), e);
            }
            let count = m.values().filter(|e| matches!(e, Entry::Mapped(_))).count() as u64;
            prop_assert_eq!(t.mapped(), count);
        }
    }
}
