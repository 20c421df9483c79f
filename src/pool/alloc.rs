//! The extent allocator: per-array reference counts, free lists and the placement policy.
//!
//! Crash-ordering rule enforced here together with `Pool::sync`: an extent whose reference
//! count drops to zero goes to `pending_free`, not to the free list. It becomes reusable only
//! after the record that freed it is durable in the metadata log *and* its old bytes were
//! punched out, so they can never be read through another volume.

use crate::format::Phys;

#[derive(Debug, Default)]
struct ArrayAlloc {
    tier: String,
    capacity: u64,
    /// Reference count per extent below the high-water mark.
    refs: Vec<u32>,
    /// Extents below the high-water mark with no reference, already punched.
    free: Vec<u64>,
    used: u64,
}

impl ArrayAlloc {
    fn take(&mut self) -> Option<u64> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None if (self.refs.len() as u64) < self.capacity => {
                self.refs.push(0);
                self.refs.len() as u64 - 1
            }
            None => return None,
        };
        self.refs[idx as usize] = 1;
        self.used += 1;
        Some(idx)
    }

    fn free_count(&self) -> u64 {
        self.capacity - self.used
    }
}

/// Allocation state of the whole pool. Guarded by one mutex; it is only touched when extents
/// are allocated or freed, never on the read/overwrite path.
#[derive(Debug, Default)]
pub struct Allocator {
    arrays: Vec<Option<ArrayAlloc>>,
    pending_free: Vec<Phys>,
}

impl Allocator {
    pub fn add_array(&mut self, id: u32, tier: &str, capacity_extents: u64) {
        let i = id as usize;
        if self.arrays.len() <= i {
            self.arrays.resize_with(i + 1, || None);
        }
        self.arrays[i] = Some(ArrayAlloc {
            tier: tier.to_string(),
            capacity: capacity_extents,
            ..Default::default()
        });
    }

    fn array_mut(&mut self, id: u32) -> &mut ArrayAlloc {
        self.arrays
            .get_mut(id as usize)
            .and_then(|a| a.as_mut())
            .unwrap_or_else(|| panic!("allocator has no array {id}"))
    }

    /// Is `p` inside a known array?
    pub fn contains(&self, p: Phys) -> bool {
        matches!(self.arrays.get(p.array as usize), Some(Some(a)) if p.index < a.capacity)
    }

    /// Allocate one extent for a volume of `tier`. Placement: the arrays of that tier take
    /// logical extents round-robin (`hint` is the logical extent number), so a volume is
    /// spread over all of them; a full array passes its turn to the next.
    pub fn alloc(&mut self, tier: &str, hint: u64) -> Option<Phys> {
        let candidates: Vec<u32> = self
            .arrays
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(a) if a.tier == tier => Some(i as u32),
                _ => None,
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let n = candidates.len() as u64;
        for k in 0..n {
            let id = candidates[((hint + k) % n) as usize];
            if let Some(index) = self.array_mut(id).take() {
                return Some(Phys { array: id, index });
            }
        }
        None
    }

    /// Count one more reference (recovery rebuilding counts from the maps; sharing).
    pub fn incref(&mut self, p: Phys) -> u32 {
        let a = self.array_mut(p.array);
        let i = p.index as usize;
        if a.refs.len() <= i {
            a.refs.resize(i + 1, 0);
        }
        if a.refs[i] == 0 {
            a.used += 1;
        }
        a.refs[i] += 1;
        a.refs[i]
    }

    /// Drop one reference; at zero the extent waits in `pending_free`.
    pub fn decref(&mut self, p: Phys) -> u32 {
        let a = self.array_mut(p.array);
        let r = &mut a.refs[p.index as usize];
        assert!(*r > 0, "extent {p:?} freed twice");
        *r -= 1;
        let left = *r;
        if left == 0 {
            // Still counted as used until it is punched and returned by `make_free`.
            self.pending_free.push(p);
        }
        left
    }

    pub fn refcount(&self, p: Phys) -> u32 {
        match self.arrays.get(p.array as usize) {
            Some(Some(a)) => a.refs.get(p.index as usize).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// After recovery: every extent below the high-water mark with no reference is free.
    /// (The caller punched any data found in them first.)
    pub fn rebuild_free_lists(&mut self) {
        for a in self.arrays.iter_mut().flatten() {
            a.free = (0..a.refs.len() as u64)
                .rev()
                .filter(|&i| a.refs[i as usize] == 0)
                .collect();
        }
    }

    /// Extents waiting for their free record to become durable.
    pub fn take_pending(&mut self) -> Vec<Phys> {
        std::mem::take(&mut self.pending_free)
    }

    /// Return a reserved extent that was never written or recorded: it is still clean.
    pub fn unreserve(&mut self, p: Phys) {
        let a = self.array_mut(p.array);
        debug_assert_eq!(a.refs[p.index as usize], 1);
        a.refs[p.index as usize] = 0;
        a.used -= 1;
        a.free.push(p.index);
    }

    /// Put back extents whose free record could not be made durable.
    pub fn restore_pending(&mut self, mut list: Vec<Phys>) {
        self.pending_free.append(&mut list);
    }

    pub fn pending_count(&self) -> usize {
        self.pending_free.len()
    }

    /// Return punched extents to the free lists.
    pub fn make_free(&mut self, list: &[Phys]) {
        for &p in list {
            let a = self.array_mut(p.array);
            debug_assert_eq!(a.refs[p.index as usize], 0);
            a.used -= 1;
            a.free.push(p.index);
        }
    }

    /// (used, free) extents of one array.
    pub fn usage(&self, id: u32) -> (u64, u64) {
        match self.arrays.get(id as usize) {
            Some(Some(a)) => (a.used, a.free_count()),
            _ => (0, 0),
        }
    }

    /// Free extents over all arrays of a tier (all tiers when `None`).
    pub fn free_extents(&self, tier: Option<&str>) -> u64 {
        self.arrays
            .iter()
            .flatten()
            .filter(|a| tier.is_none_or(|t| a.tier == t))
            .map(|a| a.free_count())
            .sum()
    }

    pub fn capacity_extents(&self, tier: Option<&str>) -> u64 {
        self.arrays
            .iter()
            .flatten()
            .filter(|a| tier.is_none_or(|t| a.tier == t))
            .map(|a| a.capacity)
            .sum()
    }

    pub fn has_tier(&self, tier: &str) -> bool {
        self.arrays.iter().flatten().any(|a| a.tier == tier)
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
        assert_eq!(a.decref(p), 0);
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
}
