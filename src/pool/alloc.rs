//! The extent allocator: per-array reference counts, free lists and the placement policy.
//!
//! Crash-ordering rule enforced here together with `Pool::sync`: an extent whose reference
//! count drops to zero goes to `pending_free`, not to the free list. It becomes reusable only
//! after the record that freed it is durable in the metadata log *and* its old bytes were
//! punched out, so they can never be read through another volume.
//!
//! Counts live in `RefTable`s shared with the arrays, so the data path reads them without
//! taking the allocator's lock; they are changed only under that lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::extent_map::partial::Partials;
use crate::extent_map::RefCounts;
use crate::format::Phys;

const SEG: usize = 4096;

/// Reference counts of one array's extents, allocated in segments on first use.
pub struct RefTable {
    segs: Box<[OnceLock<Box<[AtomicU32]>>]>,
}

impl RefTable {
    fn new(capacity: u64) -> RefTable {
        let n = (capacity as usize).div_ceil(SEG);
        RefTable {
            segs: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn get(&self, index: u64) -> u32 {
        let (s, i) = (index as usize / SEG, index as usize % SEG);
        match self.segs.get(s).and_then(|s| s.get()) {
            Some(seg) => seg[i].load(Ordering::Acquire),
            None => 0,
        }
    }

    fn seg(&self, index: u64) -> &AtomicU32 {
        let (s, i) = (index as usize / SEG, index as usize % SEG);
        let seg = self.segs[s].get_or_init(|| (0..SEG).map(|_| AtomicU32::new(0)).collect());
        &seg[i]
    }

    /// Add one; returns the new count.
    fn inc(&self, index: u64) -> u32 {
        self.seg(index).fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Take one away; returns the new count.
    fn dec(&self, index: u64) -> u32 {
        let c = self.seg(index);
        let old = c.load(Ordering::Acquire);
        assert!(old > 0, "extent {index} freed twice");
        c.fetch_sub(1, Ordering::AcqRel) - 1
    }

    fn set(&self, index: u64, v: u32) {
        self.seg(index).store(v, Ordering::Release);
    }
}

struct ArrayAlloc {
    tier: String,
    capacity: u64,
    refs: Arc<RefTable>,
    /// Extents at or above this index were never handed out since the pool was opened.
    hwm: u64,
    /// Extents below the high-water mark with no reference, already punched.
    free: Vec<u64>,
    /// Extents referenced or waiting in `pending_free`.
    used: u64,
    /// The array's file is missing: nothing is allocated on it, nothing freed is reused.
    offline: bool,
}

impl ArrayAlloc {
    fn take(&mut self) -> Option<u64> {
        if self.offline {
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None if self.hwm < self.capacity => {
                self.hwm += 1;
                self.hwm - 1
            }
            None => return None,
        };
        self.refs.set(idx, 1);
        self.used += 1;
        Some(idx)
    }

    fn free_count(&self) -> u64 {
        if self.offline {
            return 0;
        }
        self.capacity - self.used
    }
}

/// Allocation state of the whole pool. Guarded by one mutex; it is only taken when extents
/// are allocated or freed, never on the read/overwrite path.
#[derive(Default)]
pub struct Allocator {
    arrays: Vec<Option<ArrayAlloc>>,
    pending_free: Vec<Phys>,
    /// The pool's partial extents: when a partial extent loses its last reference its entry
    /// goes too, and with it the reference on its source.
    partials: Option<Arc<Partials>>,
}

impl Allocator {
    /// Register an array; returns its reference-count table (shared with the `Array`).
    pub fn add_array(&mut self, id: u32, tier: &str, capacity_extents: u64) -> Arc<RefTable> {
        let i = id as usize;
        if self.arrays.len() <= i {
            self.arrays.resize_with(i + 1, || None);
        }
        let refs = Arc::new(RefTable::new(capacity_extents));
        self.arrays[i] = Some(ArrayAlloc {
            tier: tier.to_string(),
            capacity: capacity_extents,
            refs: refs.clone(),
            hwm: 0,
            free: Vec::new(),
            used: 0,
            offline: false,
        });
        refs
    }

    /// The array's file is missing: allocation passes it over from now on.
    pub fn set_offline(&mut self, id: u32) {
        self.array_mut(id).offline = true;
    }

    fn array_mut(&mut self, id: u32) -> &mut ArrayAlloc {
        self.arrays
            .get_mut(id as usize)
            .and_then(|a| a.as_mut())
            .unwrap_or_else(|| panic!("allocator has no array {id}"))
    }

    /// Attach the pool's partial-extent table (see `decref`).
    pub fn set_partials(&mut self, p: Arc<Partials>) {
        self.partials = Some(p);
    }

    /// Is `p` inside a known array?
    pub fn contains(&self, p: Phys) -> bool {
        matches!(self.arrays.get(p.array as usize), Some(Some(a)) if p.index < a.capacity)
    }

    /// Allocate one extent (with one reference) for a volume of `tier`. Placement: the arrays
    /// of that tier take logical extents round-robin (`hint` is the logical extent number),
    /// so a volume is spread over all of them; a full array passes its turn to the next.
    pub fn alloc(&mut self, tier: &str, hint: u64) -> Option<Phys> {
        self.alloc_in(tier, hint, None)
    }

    /// `alloc`, restricted to the `allowed` arrays when given.
    pub fn alloc_in(&mut self, tier: &str, hint: u64, allowed: Option<&[u32]>) -> Option<Phys> {
        let candidates: Vec<u32> = self
            .arrays
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(a) if a.tier == tier && allowed.is_none_or(|l| l.contains(&(i as u32))) => {
                    Some(i as u32)
                }
                _ => None,
            })
            .collect();
        let n = candidates.len() as u64;
        for k in 0..n {
            let id = candidates[((hint + k) % n) as usize];
            if let Some(index) = self.array_mut(id).take() {
                return Some(Phys { array: id, index });
            }
        }
        None
    }

    pub fn refcount(&self, p: Phys) -> u32 {
        match self.arrays.get(p.array as usize) {
            Some(Some(a)) => a.refs.get(p.index),
            _ => 0,
        }
    }

    /// After recovery: every extent with no reference is free (the caller punched any data
    /// found in them first).
    pub fn rebuild_free_lists(&mut self) {
        for a in self.arrays.iter_mut().flatten() {
            let mut hwm = 0;
            let mut used = 0;
            for i in 0..a.capacity {
                if a.refs.get(i) > 0 {
                    hwm = i + 1;
                    used += 1;
                }
            }
            a.hwm = hwm;
            a.used = used;
            a.free = if a.offline {
                Vec::new()
            } else {
                (0..hwm).rev().filter(|&i| a.refs.get(i) == 0).collect()
            };
        }
    }

    /// Extents waiting for their free record to become durable.
    pub fn take_pending(&mut self) -> Vec<Phys> {
        std::mem::take(&mut self.pending_free)
    }

    /// Extents freed but not yet reusable (their record is not known durable).
    pub fn pending_count(&self) -> usize {
        self.pending_free.len()
    }

    /// Put back extents whose free record could not be made durable.
    pub fn restore_pending(&mut self, mut list: Vec<Phys>) {
        self.pending_free.append(&mut list);
    }

    /// Return a reserved extent that was never written or recorded: it is still clean.
    pub fn unreserve(&mut self, p: Phys) {
        let a = self.array_mut(p.array);
        debug_assert_eq!(a.refs.get(p.index), 1);
        a.refs.set(p.index, 0);
        a.used -= 1;
        a.free.push(p.index);
    }

    /// Return punched extents to the free lists. An extent that gained a reference again in
    /// the meantime (it cannot, but be safe) stays out.
    pub fn make_free(&mut self, list: &[Phys]) {
        for &p in list {
            let a = self.array_mut(p.array);
            if a.refs.get(p.index) == 0 {
                a.used -= 1;
                if !a.offline {
                    a.free.push(p.index);
                }
            }
        }
    }

    /// (used, free) extents of one array.
    pub fn usage(&self, id: u32) -> (u64, u64) {
        match self.arrays.get(id as usize) {
            Some(Some(a)) => (a.used, a.free_count()),
            _ => (0, 0),
        }
    }

    pub fn capacity_extents(&self, tier: Option<&str>) -> u64 {
        self.arrays
            .iter()
            .flatten()
            .filter(|a| tier.is_none_or(|t| a.tier == t))
            .map(|a| a.capacity)
            .sum()
    }

    /// Ids of the arrays of a tier.
    pub fn tier_arrays(&self, tier: &str) -> Vec<u32> {
        self.arrays
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(a) if a.tier == tier => Some(i as u32),
                _ => None,
            })
            .collect()
    }

    pub fn has_tier(&self, tier: &str) -> bool {
        self.arrays.iter().flatten().any(|a| a.tier == tier)
    }
}

impl RefCounts for Allocator {
    /// One more chunk object holds `p` (recovery rebuilding counts; a shared chunk copied).
    fn incref(&mut self, p: Phys) {
        self.array_mut(p.array).refs.inc(p.index);
    }

    /// One reference fewer; at zero the extent waits in `pending_free`. A partial extent
    /// that loses its last reference drops its entry and its reference on the source (the
    /// record that dropped the extent is the one that ends its partial state; replay ignores
    /// entries of unreferenced extents).
    fn decref(&mut self, p: Phys) {
        if self.array_mut(p.array).refs.dec(p.index) == 0 {
            // Still counted as used until it is punched and returned by `make_free`.
            self.pending_free.push(p);
            if let Some(e) = self.partials.clone().and_then(|t| t.remove(p)) {
                self.decref(e.src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_round_robin_and_fills_up() {
        let mut a = Allocator::default();
        a.add_array(1, "fast", 2);
        a.add_array(2, "fast", 2);
        a.add_array(3, "slow", 5);
        let got: Vec<Phys> = (0..4).map(|l| a.alloc("fast", l).unwrap()).collect();
        assert_eq!(got[0].array, 1);
        assert_eq!(got[1].array, 2);
        assert_eq!(got[2].array, 1);
        assert!(a.alloc("fast", 0).is_none(), "fast tier is full");
        assert!(a.alloc("slow", 0).is_some());
        assert!(a.alloc("nope", 0).is_none());
    }

    #[test]
    fn freed_extents_wait_until_made_free() {
        let mut a = Allocator::default();
        a.add_array(1, "fast", 1);
        let p = a.alloc("fast", 0).unwrap();
        a.decref(p);
        assert!(
            a.alloc("fast", 0).is_none(),
            "pending extent must not be reused"
        );
        let pending = a.take_pending();
        a.make_free(&pending);
        assert_eq!(a.alloc("fast", 0), Some(p));
    }

    #[test]
    fn rebuild_counts_from_references() {
        let mut a = Allocator::default();
        a.add_array(1, "fast", 10);
        a.incref(Phys { array: 1, index: 4 });
        a.rebuild_free_lists();
        assert_eq!(a.usage(1), (1, 9));
        let mut seen = Vec::new();
        while let Some(p) = a.alloc("fast", 0) {
            seen.push(p.index);
        }
        assert_eq!(seen.len(), 9);
        assert!(!seen.contains(&4));
    }

    #[test]
    fn shared_extent_needs_every_reference_dropped() {
        let mut a = Allocator::default();
        a.add_array(1, "fast", 4);
        let p = a.alloc("fast", 0).unwrap();
        a.incref(p);
        assert_eq!(a.refcount(p), 2);
        a.decref(p);
        assert!(a.take_pending().is_empty());
        a.decref(p);
        assert_eq!(a.take_pending(), vec![p]);
    }

    #[test]
    fn freeing_a_partial_extent_frees_its_source_reference() {
        use crate::extent_map::partial::{BlockBits, PartialExt};
        let mut a = Allocator::default();
        a.add_array(1, "fast", 4);
        let t = Arc::new(Partials::new(64 << 10));
        a.set_partials(t.clone());
        let o = a.alloc("fast", 0).unwrap();
        let n = a.alloc("fast", 0).unwrap();
        a.incref(o);
        t.insert(
            n,
            PartialExt {
                src: o,
                valid: BlockBits::new(16),
            },
        );
        a.decref(o);
        assert_eq!(
            a.refcount(o),
            1,
            "the partial extent still holds its source"
        );
        a.decref(n);
        assert!(t.is_empty());
        assert_eq!(a.take_pending(), vec![n, o]);
    }
}
