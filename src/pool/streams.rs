//! Sequential or random: how a read of a volume or snapshot file is read from the arrays.
//!
//! The kernel's read-ahead on an array file is tuned for the whole device (8 MiB on the
//! virtio disks here) and keeps one window per open file, shared by every volume and every
//! thread that reads through that file. Random 4 KiB reads of a volume then pull pages they
//! never use: a read whose neighbour page happens to be cached looks like a stream to the
//! kernel and gets a read-ahead window (issue 18 counted ~30 KiB from the disk per 4 KiB
//! read). Each array therefore has a second descriptor opened with POSIX_FADV_RANDOM (no
//! read-ahead; both share the file's page cache, so they see the same bytes), and each volume
//! and snapshot keeps a few recent stream ends: a read that continues one of them, or a large
//! one, goes through the read-ahead descriptor; a small read elsewhere through the random one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How the arrays should read one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Part of a stream (or large): the kernel's read-ahead helps.
    Sequential,
    /// A lone small read: read exactly the bytes asked for.
    Random,
}

/// Streams remembered per volume or snapshot (several readers at once: a VM and a backup).
const SLOTS: usize = 8;
/// A read starting within this distance of a stream's end (either side: requests of one
/// stream at queue depth > 1 arrive slightly out of order) continues that stream.
const NEAR: u64 = 512 << 10;
/// A read at least this large is read with read-ahead even when it starts a stream.
pub const LARGE: u64 = 128 << 10;
/// No stream (an empty slot).
const NONE: u64 = u64::MAX;

/// Recent stream ends of one volume or snapshot (lock-free; a lost race only misclassifies
/// one read, which costs read-ahead or a smaller read, never wrong data).
pub struct ReadStreams {
    ends: [AtomicU64; SLOTS],
    next: AtomicUsize,
}

impl Default for ReadStreams {
    fn default() -> Self {
        ReadStreams {
            ends: std::array::from_fn(|_| AtomicU64::new(NONE)),
            next: AtomicUsize::new(0),
        }
    }
}

impl ReadStreams {
    /// Classify a read of `len` bytes at `offset` and remember where it ends.
    pub fn classify(&self, offset: u64, len: u64) -> Access {
        let end = offset.saturating_add(len);
        for slot in &self.ends {
            let e = slot.load(Ordering::Relaxed);
            if e != NONE && offset.abs_diff(e) <= NEAR {
                if end > e {
                    let _ = slot.compare_exchange(e, end, Ordering::Relaxed, Ordering::Relaxed);
                }
                return Access::Sequential;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % SLOTS;
        self.ends[i].store(end, Ordering::Relaxed);
        if len >= LARGE {
            Access::Sequential
        } else {
            Access::Random
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_seen_from_its_second_read() {
        let s = ReadStreams::default();
        assert_eq!(s.classify(0, 4096), Access::Random);
        for i in 1..100u64 {
            assert_eq!(s.classify(i * 4096, 4096), Access::Sequential, "read {i}");
        }
    }

    #[test]
    fn random_reads_stay_random_and_large_reads_read_ahead() {
        let s = ReadStreams::default();
        // Offsets far apart (a stride of 1 GiB + 40 KiB): none continues another.
        let mut random = 0;
        for i in 0..1000u64 {
            let off = (i * ((1 << 30) + 40960)) % (1 << 40);
            if s.classify(off, 4096) == Access::Random {
                random += 1;
            }
        }
        assert!(
            random >= 990,
            "{random} of 1000 random reads seen as random"
        );
        assert_eq!(s.classify(7 << 40, 1 << 20), Access::Sequential);
    }

    #[test]
    fn several_streams_and_reordered_requests() {
        let s = ReadStreams::default();
        let bases = [0u64, 1 << 30, 2 << 30, 3 << 30];
        for b in bases {
            s.classify(b, 65536);
        }
        for step in 1..50u64 {
            for b in bases {
                assert_eq!(s.classify(b + step * 65536, 65536), Access::Sequential);
            }
        }
        // Queue depth > 1: the next-but-one request arrives before the next.
        let t = ReadStreams::default();
        t.classify(0, 65536);
        assert_eq!(t.classify(2 * 65536, 65536), Access::Sequential);
        assert_eq!(t.classify(65536, 65536), Access::Sequential);
    }
}
