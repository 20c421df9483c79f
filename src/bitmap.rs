//! A growable set of region numbers (one bit per extent-sized region).

#[derive(Debug, Clone, Default)]
pub struct Bitmap {
    words: Vec<u64>,
    count: u64,
}

/// Equal when the same bits are set (however many zero words either carries).
impl PartialEq for Bitmap {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Bitmap {}

impl Bitmap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set bit `i`; true when it was clear.
    pub fn set(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        if !was {
            self.count += 1;
        }
        !was
    }

    /// Clear bit `i`; true when it was set.
    pub fn clear(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        match self.words.get_mut(w) {
            Some(word) if *word & (1 << b) != 0 => {
                *word &= !(1 << b);
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn contains(&self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.words.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn clear_all(&mut self) {
        self.words.clear();
        self.count = 0;
    }

    /// Add every bit of `other`.
    pub fn union_with(&mut self, other: &Bitmap) {
        for i in other.iter() {
            self.set(i);
        }
    }

    /// The first set bit at or after `from`.
    pub fn next_from(&self, from: u64) -> Option<u64> {
        let mut w = (from / 64) as usize;
        if w >= self.words.len() {
            return None;
        }
        let mut word = self.words[w] & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                return Some(w as u64 * 64 + word.trailing_zeros() as u64);
            }
            w += 1;
            if w >= self.words.len() {
                return None;
            }
            word = self.words[w];
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut next = self.next_from(0);
        std::iter::from_fn(move || {
            let cur = next?;
            next = self.next_from(cur + 1);
            Some(cur)
        })
    }

    /// As runs (start, length), for compact storage.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in self.iter() {
            match out.last_mut() {
                Some((s, n)) if *s + *n == i => *n += 1,
                _ => out.push((i, 1)),
            }
        }
        out
    }

    pub fn from_runs(runs: &[(u64, u64)]) -> Bitmap {
        let mut b = Bitmap::new();
        for &(s, n) in runs {
            for i in s..s + n {
                b.set(i);
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_a_btreeset(ops in proptest::collection::vec((0u64..2000, any::<bool>()), 0..300)) {
            let mut b = Bitmap::new();
            let mut m = BTreeSet::new();
            for (i, set) in ops {
                if set {
                    prop_assert_eq!(b.set(i), m.insert(i));
                } else {
                    prop_assert_eq!(b.clear(i), m.remove(&i));
                }
            }
            prop_assert_eq!(b.iter().collect::<Vec<_>>(), m.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(b.count(), m.len() as u64);
            prop_assert_eq!(Bitmap::from_runs(&b.runs()), b.clone());
            for probe in [0u64, 63, 64, 65, 1000, 1999] {
                prop_assert_eq!(b.next_from(probe), m.range(probe..).next().copied());
            }
        }
    }
}
