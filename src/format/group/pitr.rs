//! Group record section: retention of applied segments, apply delay and the markers (group
//! snapshots) seen.
//!
//! Set at the secondary (`group attach --retain-secs/--retain-size/--apply-delay`, changed
//! with `group set`); read by the applier (delay, what to do with an applied segment) and by
//! `group restore-to` (which group snapshots can be the base of a restore).

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

const VERSION: u8 = 1;
/// At most this many markers are remembered (the oldest go first).
pub const MAX_MARKERS: usize = 1024;

/// A group snapshot whose marker this site applied: its snapshots of the group's volumes
/// hold the image after sequence number `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerSeen {
    pub name: String,
    pub seq: u64,
    /// Primary time of the marker record (ns since the Unix epoch).
    pub time: u64,
    /// The epoch of the marker record (the volume ids below are that epoch's).
    pub epoch: u64,
    /// The image was a consistent group image when the marker was applied.
    pub consistent: bool,
    /// (primary volume id, local volume id, id of the snapshot taken there) of the group's
    /// volumes at the marker. The snapshot id, not its name, says the image is still the
    /// marker's (a name can be deleted and taken again).
    pub volumes: Vec<(u64, u64, u64)>,
}

// Format: (section tag 2; an empty body, as written before the section had fields, decodes
// as everything off)
//   version          u8   (1)
//   retain_secs      u64  keep applied segments this long after applying (0: no age limit)
//   retain_bytes     u64  keep at most this many bytes of applied segments (0: no size limit)
//                         (both 0: retention off, an applied segment is deleted)
//   apply_delay      u64  seconds: apply a record only once its time + delay has passed
//   count            u64, then count × marker:
//     name str, seq u64, time u64, epoch u64, consistent u8 (0/1),
//     volumes u64 count, then count × (primary id u64, local id u64, snapshot id u64)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PitrRec {
    pub retain_secs: u64,
    pub retain_bytes: u64,
    pub apply_delay: u64,
    pub markers: Vec<MarkerSeen>,
}

impl PitrRec {
    /// Applied segments are kept (in `REMOTE/GROUP/retained/`).
    pub fn retains(&self) -> bool {
        self.retain_secs > 0 || self.retain_bytes > 0
    }

    /// Remember a marker (once per name and sequence number; the oldest beyond
    /// `MAX_MARKERS` are forgotten).
    pub fn note_marker(&mut self, m: MarkerSeen) {
        if self
            .markers
            .iter()
            .any(|x| x.name == m.name && x.seq == m.seq)
        {
            return;
        }
        self.markers.push(m);
        self.markers.sort_by_key(|x| x.seq);
        if self.markers.len() > MAX_MARKERS {
            let n = self.markers.len() - MAX_MARKERS;
            self.markers.drain(..n);
        }
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(VERSION)
            .u64(self.retain_secs)
            .u64(self.retain_bytes)
            .u64(self.apply_delay)
            .u64(self.markers.len() as u64);
        for m in &self.markers {
            e.str(&m.name)
                .u64(m.seq)
                .u64(m.time)
                .u64(m.epoch)
                .u8(m.consistent as u8)
                .u64(m.volumes.len() as u64);
            for &(p, l, sid) in &m.volumes {
                e.u64(p).u64(l).u64(sid);
            }
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<PitrRec, FormatError> {
        const WHAT: &str = "group pitr section";
        if !super::section_body(d, WHAT, VERSION)? {
            return Ok(PitrRec::default());
        }
        let retain_secs = d.u64()?;
        let retain_bytes = d.u64()?;
        let apply_delay = d.u64()?;
        // name (2) + seq, time, epoch (24) + flag (1) + count (8)
        let n = d.count(35)?;
        let mut markers = Vec::with_capacity(n);
        for _ in 0..n {
            let name = d.str()?;
            let seq = d.u64()?;
            let time = d.u64()?;
            let epoch = d.u64()?;
            let consistent = match d.u8()? {
                0 => false,
                1 => true,
                f => {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        detail: format!("marker flag {f}"),
                    })
                }
            };
            let nv = d.count(24)?;
            let mut volumes = Vec::with_capacity(nv);
            for _ in 0..nv {
                volumes.push((d.u64()?, d.u64()?, d.u64()?));
            }
            markers.push(MarkerSeen {
                name,
                seq,
                time,
                epoch,
                consistent,
                volumes,
            });
        }
        Ok(PitrRec {
            retain_secs,
            retain_bytes,
            apply_delay,
            markers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(name: &str, seq: u64) -> MarkerSeen {
        MarkerSeen {
            name: name.into(),
            seq,
            time: seq * 1000,
            epoch: 1,
            consistent: seq > 1,
            volumes: vec![(7, 70, 700), (8, 80, 800)],
        }
    }

    #[test]
    fn round_trip_damage_and_the_empty_body_of_older_records() {
        let full = PitrRec {
            retain_secs: 3600,
            retain_bytes: 1 << 30,
            apply_delay: 60,
            markers: vec![marker("m1", 1), marker("m2", 9)],
        };
        for r in [PitrRec::default(), full] {
            let mut e = Enc::new();
            r.encode(&mut e);
            let mut d = Dec::new(&e.buf, "t");
            assert_eq!(PitrRec::decode(&mut d).unwrap(), r);
            assert_eq!(d.remaining(), 0);
            // Every cut but the empty one is an error.
            for cut in 1..e.buf.len() {
                assert!(
                    PitrRec::decode(&mut Dec::new(&e.buf[..cut], "t")).is_err(),
                    "cut at {cut}"
                );
            }
        }
        assert_eq!(
            PitrRec::decode(&mut Dec::new(&[], "t")).unwrap(),
            PitrRec::default()
        );
        let mut e = Enc::new();
        PitrRec::default().encode(&mut e);
        e.buf[0] = 9;
        assert!(PitrRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
        let mut e = Enc::new();
        PitrRec {
            markers: vec![marker("m", 3)],
            ..Default::default()
        }
        .encode(&mut e);
        let flag_at = 1 + 24 + 8 + 2 + 1 + 24;
        assert_eq!(e.buf[flag_at], 1);
        e.buf[flag_at] = 2;
        assert!(PitrRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
        // A huge count is refused before it sizes an allocation.
        let mut e = Enc::new();
        e.u8(1).u64(0).u64(0).u64(0).u64(u64::MAX);
        assert!(PitrRec::decode(&mut Dec::new(&e.buf, "t")).is_err());
    }

    #[test]
    fn markers_are_noted_once_in_order_and_bounded() {
        let mut r = PitrRec::default();
        assert!(!r.retains());
        r.retain_bytes = 1;
        assert!(r.retains());
        r.note_marker(marker("b", 20));
        r.note_marker(marker("a", 10));
        r.note_marker(marker("a", 10));
        assert_eq!(
            r.markers.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![10, 20]
        );
        for i in 0..MAX_MARKERS as u64 + 5 {
            r.note_marker(marker("x", 100 + i));
        }
        assert_eq!(r.markers.len(), MAX_MARKERS);
        assert_eq!(r.markers[0].seq, 105);
    }
}
