//! Group record section: how far the primary's initial copy (base copy) of a volume got.
//!
//! The base copier journals every allocated extent of a volume as a `Base` record, in order.
//! This section names the volume and the first logical extent whose `Base` record is not
//! known durable: every `Base` record of the extents before it has a sequence number at or
//! below the group's redo floor (`synced`, in the same record), so it is in the journal or
//! already at the secondary. After a restart the copy resumes there instead of at extent 0.

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

const VERSION: u8 = 1;

// Format: (section tag 4; an empty body decodes as no progress)
//   version  u8   (1)
//   volume   u64  the volume being copied (0: none)
//   next     u64  its first logical extent still to journal
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BaseRec {
    pub volume: u64,
    pub next: u64,
}

impl BaseRec {
    /// Where the base copy of `volume` starts: `next` if this is its progress, else 0.
    pub fn start_of(&self, volume: u64) -> u64 {
        if self.volume == volume && volume != 0 {
            self.next
        } else {
            0
        }
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(VERSION).u64(self.volume).u64(self.next);
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<BaseRec, FormatError> {
        if !super::section_body(d, "group base-copy section", VERSION)? {
            return Ok(BaseRec::default());
        }
        Ok(BaseRec {
            volume: d.u64()?,
            next: d.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_empty_body() {
        let b = BaseRec {
            volume: 7,
            next: 12345,
        };
        let mut e = Enc::new();
        b.encode(&mut e);
        assert_eq!(BaseRec::decode(&mut Dec::new(&e.buf, "t")).unwrap(), b);
        assert_eq!(
            BaseRec::decode(&mut Dec::new(&[], "t")).unwrap(),
            BaseRec::default()
        );
        let mut bad = e.buf.clone();
        bad[0] = 9;
        assert!(BaseRec::decode(&mut Dec::new(&bad, "t")).is_err());
        assert_eq!(b.start_of(7), 12345);
        assert_eq!(b.start_of(8), 0);
        assert_eq!(BaseRec::default().start_of(0), 0);
    }
}
