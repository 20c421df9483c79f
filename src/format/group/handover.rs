//! Group record section: epochs, takeover, split-brain refusal and failback.

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

/// A primary that saw a newer epoch of its group in the remote directory: it refuses to go
/// on as primary (its volumes are read-only) until `group failback` makes it the secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRec {
    /// The newer epoch and the sequence number its journal continues after.
    pub epoch: u64,
    pub start_seq: u64,
    /// The pool that took over.
    pub pool: u64,
}

/// A secondary made from an old primary, waiting for the delta from the new primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailbackRec {
    /// The snapshot of every group volume taken before anything was applied (this site's
    /// last image as primary); deleted when the delta is in unless `keep`.
    pub snapshot: String,
    pub keep: bool,
    /// Bytes of regions asked for.
    pub requested: u64,
    /// Regions asked for.
    pub regions: u64,
}

// Format: (section tag 3)
//   start_seq       u64  this epoch's journal continues after this sequence number
//   stale           u8 (0/1), then if 1: epoch u64, start_seq u64, pool u64
//   failback        u8 (0/1), then if 1: snapshot str, keep u8, requested u64, regions u64
//   failback_bytes  u64  bytes of the last failback delta (sent by the primary, received by
//                        the secondary)
//   served_created  u64  `created` of the last failback request the primary served (0: none)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoverRec {
    pub start_seq: u64,
    pub stale: Option<StaleRec>,
    pub failback: Option<FailbackRec>,
    pub failback_bytes: u64,
    pub served_created: u64,
}

fn flag(d: &mut Dec<'_>) -> Result<bool, FormatError> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(FormatError::Invalid {
            what: "group handover section",
            detail: format!("flag {v}"),
        }),
    }
}

impl HandoverRec {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.start_seq);
        match &self.stale {
            Some(s) => e.u8(1).u64(s.epoch).u64(s.start_seq).u64(s.pool),
            None => e.u8(0),
        };
        match &self.failback {
            Some(f) => e
                .u8(1)
                .str(&f.snapshot)
                .u8(f.keep as u8)
                .u64(f.requested)
                .u64(f.regions),
            None => e.u8(0),
        };
        e.u64(self.failback_bytes).u64(self.served_created);
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<HandoverRec, FormatError> {
        let start_seq = d.u64()?;
        let stale = if flag(d)? {
            Some(StaleRec {
                epoch: d.u64()?,
                start_seq: d.u64()?,
                pool: d.u64()?,
            })
        } else {
            None
        };
        let failback = if flag(d)? {
            Some(FailbackRec {
                snapshot: d.str()?,
                keep: flag(d)?,
                requested: d.u64()?,
                regions: d.u64()?,
            })
        } else {
            None
        };
        Ok(HandoverRec {
            start_seq,
            stale,
            failback,
            failback_bytes: d.u64()?,
            served_created: d.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let full = HandoverRec {
            start_seq: 17,
            stale: Some(StaleRec {
                epoch: 3,
                start_seq: 90,
                pool: 0xabc,
            }),
            failback: Some(FailbackRec {
                snapshot: "failback-e3".into(),
                keep: true,
                requested: 1 << 20,
                regions: 4,
            }),
            failback_bytes: 5,
            served_created: 6,
        };
        for r in [HandoverRec::default(), full] {
            let mut e = Enc::new();
            r.encode(&mut e);
            let mut d = Dec::new(&e.buf, "t");
            assert_eq!(HandoverRec::decode(&mut d).unwrap(), r);
            assert_eq!(d.remaining(), 0);
            for cut in 0..e.buf.len() {
                assert!(
                    HandoverRec::decode(&mut Dec::new(&e.buf[..cut], "t")).is_err(),
                    "cut at {cut}"
                );
            }
        }
        let mut e = Enc::new();
        HandoverRec::default().encode(&mut e);
        e.buf[8] = 7; // the stale flag
        assert!(HandoverRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
    }
}
