//! Optional sections of a journal group's record (`GroupRec`), each owned by one feature.
//!
//! Format: after the fixed fields of a group record comes
//!   u16 count, then count × (tag u16, len u32, body of len bytes)
//! Tags: 1 = journal-full policy and suspension (`full`), 2 = retention, apply delay and
//! markers (`pitr`), 3 = epochs, takeover and failback (`handover`), 4 = the progress of the
//! initial copy (`base`; records written before it existed have no such section and read as
//! no progress), 9 = the local names of the group's volumes (`rename`, ops.rs; only when
//! set), 10 = the lag alert threshold (`alert`, ops.rs; only when set). A section decodes its
//! body with its own decoder, so each can grow without touching the others; an unknown tag
//! is an error (its state would be lost silently otherwise).

pub mod base;
pub mod full;
pub mod handover;
pub mod ops;
pub mod pitr;

pub use base::BaseRec;
pub use full::FullRec;
pub use handover::HandoverRec;
pub use ops::{AlertRec, RenameRec};
pub use pitr::PitrRec;

use super::codec::{Dec, Enc};
use super::FormatError;

const TAG_FULL: u16 = 1;
const TAG_PITR: u16 = 2;
const TAG_HANDOVER: u16 = 3;
const TAG_BASE: u16 = 4;
const TAG_RENAME: u16 = 9;
const TAG_ALERT: u16 = 10;

/// The start of a versioned section body: false for an empty body (a record written before
/// the section had fields: the defaults), true after a version byte equal to `version`.
pub(crate) fn section_body(
    d: &mut Dec<'_>,
    what: &'static str,
    version: u8,
) -> Result<bool, FormatError> {
    if d.remaining() == 0 {
        return Ok(false);
    }
    let v = d.u8()?;
    if v != version {
        return Err(FormatError::BadVersion {
            what,
            version: v as u32,
        });
    }
    Ok(true)
}

/// The sections of a group record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSections {
    pub full: FullRec,
    pub pitr: PitrRec,
    pub handover: HandoverRec,
    pub base: BaseRec,
    pub rename: RenameRec,
    pub alert: AlertRec,
}

fn empty_section(tag: u16) -> FormatError {
    FormatError::Invalid {
        what: "group record section",
        detail: format!("optional section {tag} is present but empty"),
    }
}

fn section(e: &mut Enc, tag: u16, body: Enc) {
    e.bytes(&tag.to_le_bytes())
        .u32(body.len() as u32)
        .bytes(&body.buf);
}

impl GroupSections {
    pub(crate) fn encode(&self, e: &mut Enc) {
        let n = 4 + u16::from(!self.rename.is_empty()) + u16::from(!self.alert.is_empty());
        e.bytes(&n.to_le_bytes());
        let mut b = Enc::new();
        self.full.encode(&mut b);
        section(e, TAG_FULL, b);
        let mut b = Enc::new();
        self.pitr.encode(&mut b);
        section(e, TAG_PITR, b);
        let mut b = Enc::new();
        self.handover.encode(&mut b);
        section(e, TAG_HANDOVER, b);
        let mut b = Enc::new();
        self.base.encode(&mut b);
        section(e, TAG_BASE, b);
        if !self.rename.is_empty() {
            let mut b = Enc::new();
            self.rename.encode(&mut b);
            section(e, TAG_RENAME, b);
        }
        if !self.alert.is_empty() {
            let mut b = Enc::new();
            self.alert.encode(&mut b);
            section(e, TAG_ALERT, b);
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<GroupSections, FormatError> {
        const WHAT: &str = "group record section";
        let n = u16::from_le_bytes(d.bytes(2)?.try_into().unwrap());
        let mut s = GroupSections::default();
        let mut last = 0;
        for _ in 0..n {
            let tag = u16::from_le_bytes(d.bytes(2)?.try_into().unwrap());
            // Sections come in increasing tag order, each once (as written): a duplicate
            // would silently replace the first, which is damage, not a record.
            if tag <= last {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    detail: format!("tag {tag} after tag {last}"),
                });
            }
            last = tag;
            let len = d.u32()? as usize;
            let body = d.bytes(len)?;
            let mut bd = Dec::new(body, WHAT);
            match tag {
                TAG_FULL => s.full = FullRec::decode(&mut bd)?,
                TAG_PITR => s.pitr = PitrRec::decode(&mut bd)?,
                TAG_HANDOVER => s.handover = HandoverRec::decode(&mut bd)?,
                TAG_BASE => s.base = BaseRec::decode(&mut bd)?,
                // The optional sections are written only when they hold something.
                TAG_RENAME => {
                    s.rename = RenameRec::decode(&mut bd)?;
                    if s.rename.is_empty() {
                        return Err(empty_section(tag));
                    }
                }
                TAG_ALERT => {
                    s.alert = AlertRec::decode(&mut bd)?;
                    if s.alert.is_empty() {
                        return Err(empty_section(tag));
                    }
                }
                _ => {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("unknown tag {tag}"),
                    })
                }
            }
            if bd.remaining() != 0 {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    detail: format!("{} bytes left over in section {tag}", bd.remaining()),
                });
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_and_unknown_tags_are_refused() {
        let s = GroupSections::default();
        let mut e = Enc::new();
        s.encode(&mut e);
        let mut d = Dec::new(&e.buf, "t");
        assert_eq!(GroupSections::decode(&mut d).unwrap(), s);
        assert_eq!(d.remaining(), 0);
        let mut bad = e.buf.clone();
        bad[2] = 99; // first tag
        assert!(GroupSections::decode(&mut Dec::new(&bad, "t")).is_err());
        let short = &e.buf[..e.buf.len() - 1];
        assert!(GroupSections::decode(&mut Dec::new(short, "t")).is_err());
        // The optional sections round-trip when set.
        let s = GroupSections {
            rename: RenameRec {
                prefix: "r-".into(),
                map: vec![("a".into(), "b".into())],
            },
            alert: AlertRec { lag_alert_ms: 1000 },
            ..Default::default()
        };
        let mut e = Enc::new();
        s.encode(&mut e);
        assert_eq!(
            GroupSections::decode(&mut Dec::new(&e.buf, "t")).unwrap(),
            s
        );
    }
}
