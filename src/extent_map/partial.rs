//! Partial extents: sub-extent copy-on-write (like qcow2's subclusters).
//!
//! The first write to an extent O shared with a snapshot or clone allocates a new extent N and
//! writes into it only the 4 KiB blocks the write touches. N is then *partial*: a bitmap says
//! which of its blocks hold their own data (valid); every other block still reads from O, the
//! *source*. A background filler copies the missing blocks O → N, makes them durable, and ends
//! the partial state (`PartialDone`), which drops N's reference on O.
//!
//! The table is pool-global and keyed by the physical extent N, not by a volume slot: every
//! table that maps N (the volume, and later its snapshots, clones or a pair copy) reads N
//! through the same entry, so taking a snapshot costs nothing extra.
//!
//! Invariants (checked by `fusevol check`):
//! * a source is never partial itself (chains are one hop): a copy-on-write of a partial N
//!   makes the new extent's source N's source and carries N's valid blocks over;
//! * a partial entry holds one reference on its source (counted like a table's), so the
//!   source is never written in place (it counts as shared) nor freed while N needs it;
//! * an entry is live while N is referenced by a table; when N's last reference goes the
//!   entry goes with it (the allocator drops it and the source's reference).
//!
//! This module only *describes*; the volume layer does the I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::format::Phys;

/// The copy-on-write granule inside an extent.
pub const BLOCK: u64 = 4096;

/// One bit per 4 KiB block of an extent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BlockBits {
    nblocks: usize,
    words: Vec<u64>,
}

impl BlockBits {
    pub fn new(nblocks: usize) -> BlockBits {
        BlockBits {
            nblocks,
            words: vec![0; nblocks.div_ceil(64)],
        }
    }

    /// Rebuild from stored words; refuses a wrong length or bits past the last block.
    pub fn from_words(nblocks: usize, words: Vec<u64>) -> Result<BlockBits, String> {
        if words.len() != nblocks.div_ceil(64) {
            return Err(format!(
                "block bitmap has {} words, an extent of {nblocks} blocks needs {}",
                words.len(),
                nblocks.div_ceil(64)
            ));
        }
        if !nblocks.is_multiple_of(64) {
            let last = words[words.len() - 1];
            if last >> (nblocks % 64) != 0 {
                return Err(format!("block bitmap has bits past block {nblocks}"));
            }
        }
        Ok(BlockBits { nblocks, words })
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn nblocks(&self) -> usize {
        self.nblocks
    }

    pub fn get(&self, b: usize) -> bool {
        b < self.nblocks && self.words[b / 64] & (1 << (b % 64)) != 0
    }

    pub fn set(&mut self, b: usize) {
        assert!(b < self.nblocks, "block {b} of {}", self.nblocks);
        self.words[b / 64] |= 1 << (b % 64);
    }

    /// Set blocks `[from, to)`.
    pub fn set_range(&mut self, from: usize, to: usize) {
        for b in from..to {
            self.set(b);
        }
    }

    pub fn union_with(&mut self, other: &BlockBits) {
        assert_eq!(self.nblocks, other.nblocks);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Bits set here and not in `other`.
    pub fn minus(&self, other: &BlockBits) -> BlockBits {
        let mut r = self.clone();
        for (a, b) in r.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
        r
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    pub fn all(&self) -> bool {
        self.count() == self.nblocks
    }

    /// Are blocks `[from, to)` all set?
    pub fn all_in(&self, from: usize, to: usize) -> bool {
        (from..to).all(|b| self.get(b))
    }

    /// Maximal runs `[a, b)` of blocks whose bit equals `value`, inside `[from, to)`.
    pub fn runs(&self, value: bool, from: usize, to: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for b in from..to {
            match (self.get(b) == value, start) {
                (true, None) => start = Some(b),
                (false, Some(s)) => {
                    out.push((s, b));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, to));
        }
        out
    }
}

/// Blocks `[first, last)` that the byte range `[offset, offset+len)` of an extent touches.
pub fn touched(offset: u64, len: u64) -> (usize, usize) {
    (
        (offset / BLOCK) as usize,
        (offset + len).div_ceil(BLOCK) as usize,
    )
}

/// Blocks the byte range covers entirely.
pub fn covered(offset: u64, len: u64) -> (usize, usize) {
    let first = offset.div_ceil(BLOCK) as usize;
    let last = ((offset + len) / BLOCK) as usize;
    (first, last.max(first))
}

/// One partial extent: where its invalid blocks read from, and which blocks are its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialExt {
    pub src: Phys,
    pub valid: BlockBits,
}

const STRIPES: usize = 64;

/// The pool's partial extents (runtime). Lock rules: entries are inserted and removed only by
/// a caller holding the allocator's lock (the entry's reference on its source changes with
/// them); valid bits may be set under the metadata lock alone. `lock_extent` serializes the
/// writers of an extent's invalid blocks with the filler, so a copy never overwrites a newer
/// block.
pub struct Partials {
    map: RwLock<BTreeMap<Phys, PartialExt>>,
    count: AtomicUsize,
    stripes: Box<[Mutex<()>]>,
    nblocks: usize,
    /// Where the filler picks up next.
    cursor: Mutex<Option<Phys>>,
}

impl Partials {
    pub fn new(extent_size: u64) -> Partials {
        Partials {
            map: RwLock::new(BTreeMap::new()),
            count: AtomicUsize::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            nblocks: (extent_size / BLOCK) as usize,
            cursor: Mutex::new(None),
        }
    }

    pub fn from_entries(extent_size: u64, entries: BTreeMap<Phys, PartialExt>) -> Partials {
        let p = Partials::new(extent_size);
        p.count.store(entries.len(), Ordering::Release);
        *p.map.write() = entries;
        p
    }

    /// Blocks per extent.
    pub fn nblocks(&self) -> usize {
        self.nblocks
    }

    /// No partial extent at all (the data path's fast check).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn get(&self, n: Phys) -> Option<PartialExt> {
        if self.is_empty() {
            return None;
        }
        self.map.read().get(&n).cloned()
    }

    pub fn contains(&self, n: Phys) -> bool {
        !self.is_empty() && self.map.read().contains_key(&n)
    }

    /// Add an entry (caller holds the allocator lock and gave the source its reference).
    pub fn insert(&self, n: Phys, e: PartialExt) {
        assert_eq!(e.valid.nblocks(), self.nblocks);
        if self.map.write().insert(n, e).is_none() {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Remove an entry (caller holds the allocator lock and drops the source's reference).
    pub fn remove(&self, n: Phys) -> Option<PartialExt> {
        if self.is_empty() {
            return None;
        }
        let r = self.map.write().remove(&n);
        if r.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        r
    }

    /// Set valid bits of `n`. None: no such entry; Some(true): every block is valid now.
    pub fn set_valid(&self, n: Phys, bits: &BlockBits) -> Option<bool> {
        let mut m = self.map.write();
        let e = m.get_mut(&n)?;
        e.valid.union_with(bits);
        Some(e.valid.all())
    }

    /// Serialize writers of `n`'s invalid blocks with the filler.
    pub fn lock_extent(&self, n: Phys) -> MutexGuard<'_, ()> {
        let h = (n.pack().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES;
        self.stripes[h].lock()
    }

    /// Every entry, in extent order (checkpoints, checks).
    pub fn entries(&self) -> BTreeMap<Phys, PartialExt> {
        self.map.read().clone()
    }

    /// Up to `max` partial extents for the filler, continuing after the last one handed out.
    pub fn pick(&self, max: usize) -> Vec<Phys> {
        let m = self.map.read();
        let mut cur = self.cursor.lock();
        let mut out: Vec<Phys> = match *cur {
            Some(c) => m
                .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .map(|(&k, _)| k)
                .take(max)
                .collect(),
            None => Vec::new(),
        };
        if out.len() < max {
            for &k in m.keys() {
                if out.len() >= max || out.contains(&k) {
                    break;
                }
                out.push(k);
            }
        }
        *cur = out.last().copied();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ph(i: u64) -> Phys {
        Phys { array: 1, index: i }
    }

    #[test]
    fn bits_basics() {
        let mut b = BlockBits::new(70);
        assert!(b.is_empty());
        b.set(0);
        b.set_range(63, 66);
        assert!(b.get(64) && b.get(65) && !b.get(66) && !b.get(200));
        assert_eq!(b.count(), 4);
        assert_eq!(b.runs(true, 0, 70), vec![(0, 1), (63, 66)]);
        assert_eq!(b.runs(false, 0, 70), vec![(1, 63), (66, 70)]);
        assert_eq!(b.runs(false, 64, 68), vec![(66, 68)]);
        assert!(b.all_in(63, 66));
        let mut all = BlockBits::new(70);
        all.set_range(0, 70);
        assert!(all.all());
        assert_eq!(all.minus(&b).count(), 66);
        b.union_with(&all);
        assert!(b.all());
    }

    #[test]
    fn words_are_validated() {
        let b = BlockBits::from_words(64, vec![u64::MAX]).unwrap();
        assert!(b.all());
        assert!(BlockBits::from_words(64, vec![]).is_err());
        assert!(BlockBits::from_words(64, vec![0, 0]).is_err());
        assert!(BlockBits::from_words(16, vec![1 << 16]).is_err());
        assert!(BlockBits::from_words(16, vec![1 << 15]).is_ok());
    }

    #[test]
    fn block_ranges() {
        assert_eq!(touched(0, 4096), (0, 1));
        assert_eq!(touched(100, 4096), (0, 2));
        assert_eq!(covered(100, 4096), (1, 1));
        assert_eq!(covered(4096, 8192), (1, 3));
        assert_eq!(covered(4000, 100), (1, 1));
    }

    #[test]
    fn table_insert_valid_remove_pick() {
        let t = Partials::new(64 << 10);
        assert_eq!(t.nblocks(), 16);
        assert!(t.is_empty() && t.get(ph(1)).is_none());
        for i in 1..=5 {
            let mut valid = BlockBits::new(16);
            valid.set(0);
            t.insert(
                ph(i),
                PartialExt {
                    src: ph(100 + i),
                    valid,
                },
            );
        }
        assert_eq!(t.len(), 5);
        let mut more = BlockBits::new(16);
        more.set_range(1, 16);
        assert_eq!(t.set_valid(ph(2), &more), Some(true));
        assert_eq!(t.set_valid(ph(9), &more), None);
        assert_eq!(t.remove(ph(2)).unwrap().src, ph(102));
        assert!(t.remove(ph(2)).is_none());
        assert_eq!(t.len(), 4);
        assert_eq!(t.pick(3), vec![ph(1), ph(3), ph(4)]);
        assert_eq!(t.pick(3), vec![ph(5), ph(1), ph(3)]);
        drop(t.lock_extent(ph(3)));
    }

    proptest! {
        #[test]
        fn runs_partition_the_range(words in proptest::collection::vec(any::<u64>(), 1..4), from in 0usize..200, len in 0usize..200) {
            let n = words.len() * 64;
            let b = BlockBits::from_words(n, words).unwrap();
            let (from, to) = (from.min(n), (from + len).min(n));
            let mut seen = vec![None; n];
            for v in [true, false] {
                for (a, z) in b.runs(v, from, to) {
                    prop_assert!(a < z);
                    for (i, s) in seen.iter_mut().enumerate().take(z).skip(a) {
                        prop_assert_eq!(b.get(i), v);
                        prop_assert!(s.is_none());
                        *s = Some(v);
                    }
                }
            }
            for (i, s) in seen.iter().enumerate() {
                prop_assert_eq!(s.is_some(), i >= from && i < to);
            }
        }
    }
}
