//! Group record section: journal-full policy, suspension and the bitmap of regions changed while suspended.

use std::collections::BTreeMap;

use crate::bitmap::Bitmap;
use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

/// What happens when the journal reaches its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FullPolicy {
    /// Inflow control: writers are slowed above the high-water mark, then wait for space up
    /// to the block timeout, then fail with ENOSPC. Nothing is dropped.
    #[default]
    Block = 0,
    /// The group is suspended: journaling stops, changed regions go to a persistent bitmap,
    /// `group resync` copies them later.
    Suspend = 1,
}

impl FullPolicy {
    pub fn name(self) -> &'static str {
        match self {
            FullPolicy::Block => "block",
            FullPolicy::Suspend => "suspend",
        }
    }

    pub fn parse(s: &str) -> Option<FullPolicy> {
        match s {
            "block" => Some(FullPolicy::Block),
            "suspend" => Some(FullPolicy::Suspend),
            _ => None,
        }
    }
}

/// Where a group stands with respect to its journal limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FullState {
    /// Every write is journaled (the normal case).
    #[default]
    Journaling = 0,
    /// Primary: journaling stopped at the limit; writes go to the volumes and the bitmap.
    Suspended = 1,
    /// Primary: journaling again, and the bitmap's regions are being journaled as `Base`
    /// records. Secondary: applying a resync (inconsistent until its done record).
    Resync = 2,
}

impl FullState {
    pub fn name(self) -> &'static str {
        match self {
            FullState::Journaling => "journaling",
            FullState::Suspended => "suspended",
            FullState::Resync => "resync",
        }
    }

    fn from_u8(v: u8) -> Result<FullState, FormatError> {
        Ok(match v {
            0 => FullState::Journaling,
            1 => FullState::Suspended,
            2 => FullState::Resync,
            _ => return Err(invalid(format!("state {v}"))),
        })
    }
}

/// Default wait of a blocked writer before it fails with ENOSPC.
pub const DEFAULT_BLOCK_TIMEOUT_MS: u64 = 30_000;
const VERSION: u8 = 1;

// Format: (section tag 1; an empty body — records written before this section had fields —
// decodes as the defaults: policy block, timeout 30 s, journaling, nothing dirty)
//   version          u8   (1)
//   policy           u8   0 = block, 1 = suspend
//   block_timeout_ms u64  how long a blocked writer waits for journal space
//   state            u8   0 = journaling, 1 = suspended, 2 = resync
//   suspended_since  u64  primary: when the group was suspended (ns; 0: not suspended)
//   suspended_seq    u64  primary: the last sequence number journaled before it
//   resync_seq       u64  the sequence number of the resync's start record (both sides)
//   resync_snapshot  str  secondary: the snapshot holding the last consistent image ("")
//   resync_total     u64  primary: bytes of dirty regions when the resync started
//   resync_done      u64  primary: bytes of them journaled (and cleared) so far
//   resyncs          u64  resyncs completed
//   dirty            u64 n, then n × (volume id u64, runs u64 m, m × (start u64, count u64))
//                    primary: regions (extents) changed while suspended and not yet
//                    journaled again; each bit durable before the write it covers
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullRec {
    pub policy: FullPolicy,
    pub block_timeout_ms: u64,
    pub state: FullState,
    pub suspended_since: u64,
    pub suspended_seq: u64,
    pub resync_seq: u64,
    pub resync_snapshot: String,
    pub resync_total: u64,
    pub resync_done: u64,
    pub resyncs: u64,
    pub dirty: BTreeMap<u64, Bitmap>,
}

impl Default for FullRec {
    fn default() -> Self {
        FullRec {
            policy: FullPolicy::Block,
            block_timeout_ms: DEFAULT_BLOCK_TIMEOUT_MS,
            state: FullState::Journaling,
            suspended_since: 0,
            suspended_seq: 0,
            resync_seq: 0,
            resync_snapshot: String::new(),
            resync_total: 0,
            resync_done: 0,
            resyncs: 0,
            dirty: BTreeMap::new(),
        }
    }
}

fn invalid(detail: String) -> FormatError {
    FormatError::Invalid {
        what: "group journal-full section",
        detail,
    }
}

impl FullRec {
    /// Regions marked dirty, over all volumes.
    pub fn dirty_regions(&self) -> u64 {
        self.dirty.values().map(|b| b.count()).sum()
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(VERSION)
            .u8(self.policy as u8)
            .u64(self.block_timeout_ms)
            .u8(self.state as u8)
            .u64(self.suspended_since)
            .u64(self.suspended_seq)
            .u64(self.resync_seq)
            .str(&self.resync_snapshot)
            .u64(self.resync_total)
            .u64(self.resync_done)
            .u64(self.resyncs);
        let dirty: Vec<_> = self.dirty.iter().filter(|(_, b)| !b.is_empty()).collect();
        e.u64(dirty.len() as u64);
        for (vol, b) in dirty {
            let runs = b.runs();
            e.u64(*vol).u64(runs.len() as u64);
            for (s, n) in runs {
                e.u64(s).u64(n);
            }
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<FullRec, FormatError> {
        if !super::section_body(d, "group journal-full section", VERSION)? {
            return Ok(FullRec::default());
        }
        let policy = match d.u8()? {
            0 => FullPolicy::Block,
            1 => FullPolicy::Suspend,
            v => return Err(invalid(format!("policy {v}"))),
        };
        let block_timeout_ms = d.u64()?;
        let state = FullState::from_u8(d.u8()?)?;
        let (suspended_since, suspended_seq, resync_seq) = (d.u64()?, d.u64()?, d.u64()?);
        let resync_snapshot = d.str()?;
        let (resync_total, resync_done, resyncs) = (d.u64()?, d.u64()?, d.u64()?);
        let n = d.count(16)?;
        let mut dirty = BTreeMap::new();
        for _ in 0..n {
            let vol = d.u64()?;
            let m = d.count(16)?;
            let mut runs = Vec::with_capacity(m);
            for _ in 0..m {
                let (s, c) = (d.u64()?, d.u64()?);
                if c == 0 || s.checked_add(c).is_none() || c > 1 << 40 {
                    return Err(invalid(format!("dirty run {s}+{c}")));
                }
                runs.push((s, c));
            }
            if dirty.insert(vol, Bitmap::from_runs(&runs)).is_some() {
                return Err(invalid(format!("volume {vol} twice in the bitmap")));
            }
        }
        Ok(FullRec {
            policy,
            block_timeout_ms,
            state,
            suspended_since,
            suspended_seq,
            resync_seq,
            resync_snapshot,
            resync_total,
            resync_done,
            resyncs,
            dirty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FullRec {
        let mut dirty = BTreeMap::new();
        dirty.insert(3, Bitmap::from_runs(&[(0, 2), (10, 1), (700, 64)]));
        dirty.insert(9, Bitmap::from_runs(&[(5, 1)]));
        FullRec {
            policy: FullPolicy::Suspend,
            block_timeout_ms: 1234,
            state: FullState::Resync,
            suspended_since: 77,
            suspended_seq: 40,
            resync_seq: 41,
            resync_snapshot: "resync-41".into(),
            resync_total: 1 << 20,
            resync_done: 4096,
            resyncs: 2,
            dirty,
        }
    }

    #[test]
    fn round_trip_every_cut_refused_and_empty_is_default() {
        for r in [FullRec::default(), sample()] {
            let mut e = Enc::new();
            r.encode(&mut e);
            let mut d = Dec::new(&e.buf, "t");
            assert_eq!(FullRec::decode(&mut d).unwrap(), r);
            assert_eq!(d.remaining(), 0);
            // Every cut but the empty body (the defaults of an older record) is refused.
            for cut in 1..e.buf.len() {
                assert!(
                    FullRec::decode(&mut Dec::new(&e.buf[..cut], "t")).is_err(),
                    "cut at {cut}"
                );
            }
        }
        assert_eq!(
            FullRec::decode(&mut Dec::new(&[], "t")).unwrap(),
            FullRec::default()
        );
        assert_eq!(sample().dirty_regions(), 68);
    }

    #[test]
    fn bad_version_policy_state_and_runs_are_refused() {
        let mut e = Enc::new();
        sample().encode(&mut e);
        let good = e.buf.clone();
        for (at, v) in [(0usize, 2u8), (1, 5), (10, 9)] {
            let mut b = good.clone();
            b[at] = v;
            assert!(
                FullRec::decode(&mut Dec::new(&b, "t")).is_err(),
                "byte {at}"
            );
        }
        // A run of zero length.
        let mut r = FullRec::default();
        r.dirty.insert(1, Bitmap::from_runs(&[(4, 1)]));
        let mut e = Enc::new();
        r.encode(&mut e);
        let n = e.buf.len();
        e.buf[n - 8..].copy_from_slice(&0u64.to_le_bytes());
        assert!(FullRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
    }

    #[test]
    fn policy_names() {
        for p in [FullPolicy::Block, FullPolicy::Suspend] {
            assert_eq!(FullPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(FullPolicy::parse("drop"), None);
    }
}
