//! Group record sections of the operator's control plane: the names a secondary keeps the
//! group's volumes under (`group attach --rename/--map`, tag 9) and the lag alert threshold
//! (`group set --lag-alert`, tag 10). Both are written only when set, so a pool that uses
//! neither keeps records an older fusevold reads.

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

const RENAME_VERSION: u8 = 1;
const ALERT_VERSION: u8 = 1;

// Format: (section tag 9; written only when `prefix` or `map` is set)
//   version  u8   (1)
//   prefix   str  put before the group's name of a volume not in `map` ("" = none)
//   n        u64  then n × (group name str, local name str): the explicit mapping
/// How this site names the group's volumes. The group's names are the ones on the wire
/// (journal `VolumeAdd` records, the manifest, failback requests); a site translates them
/// into its own names here and back. Unset: the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenameRec {
    pub prefix: String,
    pub map: Vec<(String, String)>,
}

impl RenameRec {
    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty() && self.map.is_empty()
    }

    /// The local name of the group's volume `group_name`.
    pub fn local_name(&self, group_name: &str) -> String {
        match self.map.iter().find(|(g, _)| g == group_name) {
            Some((_, l)) => l.clone(),
            None => format!("{}{group_name}", self.prefix),
        }
    }

    /// The group's name of the local volume `local`: the inverse of `local_name` (a local
    /// name that no group name maps to is its own group name).
    pub fn group_name(&self, local: &str) -> String {
        if let Some((g, _)) = self.map.iter().find(|(_, l)| l == local) {
            return g.clone();
        }
        if let Some(g) = local.strip_prefix(self.prefix.as_str()) {
            if !self.prefix.is_empty() && !g.is_empty() && !self.map.iter().any(|(mg, _)| mg == g) {
                return g.to_string();
            }
        }
        local.to_string()
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(RENAME_VERSION)
            .str(&self.prefix)
            .u64(self.map.len() as u64);
        for (g, l) in &self.map {
            e.str(g).str(l);
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<RenameRec, FormatError> {
        if !super::section_body(d, "group rename section", RENAME_VERSION)? {
            return Ok(RenameRec::default());
        }
        let prefix = d.str()?;
        let n = d.count(4)?;
        let mut map = Vec::with_capacity(n);
        for _ in 0..n {
            map.push((d.str()?, d.str()?));
        }
        Ok(RenameRec { prefix, map })
    }
}

// Format: (section tag 10; written only when `lag_alert_ms` is not 0)
//   version       u8   (1)
//   lag_alert_ms  u64  publish `lag-above` when the lag reaches this, `lag-below` when it is
//                      under half of it again (0: off)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertRec {
    pub lag_alert_ms: u64,
}

impl AlertRec {
    pub fn is_empty(&self) -> bool {
        self.lag_alert_ms == 0
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u8(ALERT_VERSION).u64(self.lag_alert_ms);
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<AlertRec, FormatError> {
        if !super::section_body(d, "group alert section", ALERT_VERSION)? {
            return Ok(AlertRec::default());
        }
        Ok(AlertRec {
            lag_alert_ms: d.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_round_trip_and_names_both_ways() {
        let r = RenameRec {
            prefix: "r-".into(),
            map: vec![("vol0".into(), "primary-vol0".into())],
        };
        let mut e = Enc::new();
        r.encode(&mut e);
        assert_eq!(RenameRec::decode(&mut Dec::new(&e.buf, "t")).unwrap(), r);
        assert_eq!(
            RenameRec::decode(&mut Dec::new(&[], "t")).unwrap(),
            RenameRec::default()
        );
        let mut bad = e.buf.clone();
        bad[0] = 7;
        assert!(RenameRec::decode(&mut Dec::new(&bad, "t")).is_err());
        assert_eq!(r.local_name("data"), "r-data");
        assert_eq!(r.local_name("vol0"), "primary-vol0");
        assert_eq!(r.group_name("r-data"), "data");
        assert_eq!(r.group_name("primary-vol0"), "vol0");
        // "r-vol0" is no group volume's local name ("vol0" is mapped elsewhere).
        assert_eq!(r.group_name("r-vol0"), "r-vol0");
        assert_eq!(r.group_name("other"), "other");
        let none = RenameRec::default();
        assert_eq!(none.local_name("x"), "x");
        assert_eq!(none.group_name("x"), "x");
        assert!(none.is_empty() && !r.is_empty());
    }

    #[test]
    fn alert_round_trip() {
        let a = AlertRec { lag_alert_ms: 2500 };
        let mut e = Enc::new();
        a.encode(&mut e);
        assert_eq!(AlertRec::decode(&mut Dec::new(&e.buf, "t")).unwrap(), a);
        assert!(AlertRec::default().is_empty());
    }
}
