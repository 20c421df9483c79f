//! Volume information: the per-volume (and per-snapshot) management record kept outside the
//! volume's address space (seed 001's 512-byte "volume information", generalised): what a
//! copy is, for whom, from when, and where it came from.
//!
//! The record lives in the pool's metadata (an `InfoPut` log record, and the checkpoint's
//! info section); it is stored as the encoded bytes below so that a reader can tell a valid
//! record (magic, format version, checksum) from a damaged or unknown one and say so.

use std::collections::BTreeMap;

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

// Format: volume information record, INFO_MAX (4096) bytes at most.
//   0  magic        4  b"FVIN"
//   4  version      u32 (1)
//   8  label        str (u16 length + UTF-8)
//  ..  host         str
//  ..  mountpoint   str
//  ..  app          str
//  ..  time         u64  backup time, seconds since the Unix epoch (0: not set)
//  ..  user         u32 count, then per key (sorted): key str (without "user."), value str
//  ..  origin       u8 present (0/1), then if 1: kind str, volume str, snapshot str,
//                   volume_id u64, pool_id u64, time u64, then (version 2 only) schedule
//                   str, schedule_id u64 (the schedule that made the copy)
//  end crc32c       u32 over every byte before it
// A record whose origin names no schedule is written as version 1 (byte for byte what
// earlier releases wrote); one made by a schedule as version 2. Both are read.
const MAGIC: &[u8; 4] = b"FVIN";
pub const INFO_VERSION: u32 = 1;
/// The version of a record whose origin names the schedule that made it.
pub const INFO_VERSION_SCHEDULE: u32 = 2;
/// The largest encoded record (a few labels and user keys; not a place for data).
pub const INFO_MAX: usize = 4096;
/// The longest value of one field, in bytes.
pub const VALUE_MAX: usize = 1024;
/// The most `user.*` keys on one volume.
pub const USER_KEYS_MAX: usize = 64;

/// Where a copy came from (set by the array when it makes the copy, never by the user).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// snapshot, clone, split, replica, import, group-snapshot
    pub kind: String,
    /// The source volume's name.
    pub volume: String,
    /// The source snapshot's name, when the copy was made from one (clone, export of VOL@SNAP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
    pub volume_id: u64,
    /// The source pool's id (hex in the text forms).
    pub pool_id: u64,
    /// When the copy was made (seconds since the Unix epoch).
    pub time: u64,
    /// The schedule that made the copy (origin kind `scheduled`); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule: String,
    /// That schedule's id (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schedule_id: u64,
}

/// The typed fields, the free-form `user.*` keys and the origin.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct InfoRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mountpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// Backup time (seconds since the Unix epoch; 0: not set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time: u64,
    /// `user.<key>` → value (keys stored without the `user.` prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The keys a user may set (`user.<anything>` besides these).
pub const TYPED_KEYS: [&str; 5] = ["label", "host", "mountpoint", "app", "time"];

impl InfoRecord {
    pub fn is_empty(&self) -> bool {
        *self == InfoRecord::default()
    }

    pub fn encode(&self) -> Vec<u8> {
        let scheduled = self.origin.as_ref().is_some_and(|o| o.schedule_id != 0);
        let mut e = Enc::with_capacity(256);
        e.bytes(MAGIC)
            .u32(if scheduled {
                INFO_VERSION_SCHEDULE
            } else {
                INFO_VERSION
            })
            .str(&self.label)
            .str(&self.host)
            .str(&self.mountpoint)
            .str(&self.app)
            .u64(self.time)
            .u32(self.user.len() as u32);
        for (k, v) in &self.user {
            e.str(k).str(v);
        }
        match &self.origin {
            None => {
                e.u8(0);
            }
            Some(o) => {
                e.u8(1)
                    .str(&o.kind)
                    .str(&o.volume)
                    .str(&o.snapshot)
                    .u64(o.volume_id)
                    .u64(o.pool_id)
                    .u64(o.time);
                if scheduled {
                    e.str(&o.schedule).u64(o.schedule_id);
                }
            }
        }
        let crc = crc32c::crc32c(&e.buf);
        e.u32(crc);
        e.buf
    }

    pub fn decode(buf: &[u8]) -> Result<InfoRecord, FormatError> {
        const WHAT: &str = "volume information";
        if buf.len() < 12 {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: 12,
                have: buf.len(),
            });
        }
        if buf.len() > INFO_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{} bytes, more than the limit {INFO_MAX}", buf.len()),
            });
        }
        if &buf[..4] != MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let body = &buf[..buf.len() - 4];
        let stored = u32::from_le_bytes(buf[buf.len() - 4..].try_into().unwrap());
        verify_crc(WHAT, body, stored)?;
        let mut d = Dec::new(&body[4..], WHAT);
        let version = d.u32()?;
        if version != INFO_VERSION && version != INFO_VERSION_SCHEDULE {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        let mut r = InfoRecord {
            label: d.str()?,
            host: d.str()?,
            mountpoint: d.str()?,
            app: d.str()?,
            time: d.u64()?,
            ..Default::default()
        };
        let n = d.u32()? as usize;
        if n > USER_KEYS_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{n} user keys, more than {USER_KEYS_MAX}"),
            });
        }
        for _ in 0..n {
            let k = d.str()?;
            let v = d.str()?;
            if r.user.insert(k.clone(), v).is_some() {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    detail: format!("user key '{k}' twice"),
                });
            }
        }
        match d.u8()? {
            0 => {}
            1 => {
                let mut o = Origin {
                    kind: d.str()?,
                    volume: d.str()?,
                    snapshot: d.str()?,
                    volume_id: d.u64()?,
                    pool_id: d.u64()?,
                    time: d.u64()?,
                    ..Default::default()
                };
                if version == INFO_VERSION_SCHEDULE {
                    o.schedule = d.str()?;
                    o.schedule_id = d.u64()?;
                    if o.schedule_id == 0 {
                        return Err(FormatError::Invalid {
                            what: WHAT,
                            detail: "version 2 record with schedule id 0".into(),
                        });
                    }
                }
                r.origin = Some(o)
            }
            other => {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    detail: format!("origin flag {other}"),
                })
            }
        }
        if version == INFO_VERSION_SCHEDULE && r.origin.is_none() {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: "version 2 record without an origin".into(),
            });
        }
        if d.remaining() != 0 {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{} trailing bytes", d.remaining()),
            });
        }
        Ok(r)
    }

    /// Set `key` (`label`, `host`, `mountpoint`, `app`, `time`, or `user.<name>`) to `value`.
    /// `time` takes seconds since the Unix epoch or `now` (resolved by the caller to `now`).
    pub fn set(&mut self, key: &str, value: &str, now: u64) -> Result<(), String> {
        if value.len() > VALUE_MAX {
            return Err(format!(
                "value of '{key}' is {} bytes; the limit is {VALUE_MAX}",
                value.len()
            ));
        }
        match key {
            "label" => self.label = value.to_string(),
            "host" => self.host = value.to_string(),
            "mountpoint" => self.mountpoint = value.to_string(),
            "app" => self.app = value.to_string(),
            "time" => {
                self.time = if value == "now" {
                    now
                } else {
                    value.parse().map_err(|_| {
                        format!("time must be seconds since the Unix epoch or 'now', not '{value}'")
                    })?
                }
            }
            _ => {
                let name = user_key(key)?;
                if !self.user.contains_key(name) && self.user.len() >= USER_KEYS_MAX {
                    return Err(format!("at most {USER_KEYS_MAX} user.* keys per volume"));
                }
                self.user.insert(name.to_string(), value.to_string());
            }
        }
        Ok(())
    }

    /// Remove `key`; false if it was not set.
    pub fn unset(&mut self, key: &str) -> Result<bool, String> {
        let field = |s: &mut String| !std::mem::take(s).is_empty();
        Ok(match key {
            "label" => field(&mut self.label),
            "host" => field(&mut self.host),
            "mountpoint" => field(&mut self.mountpoint),
            "app" => field(&mut self.app),
            "time" => std::mem::take(&mut self.time) != 0,
            _ => self.user.remove(user_key(key)?).is_some(),
        })
    }

    /// Every field that is set, as (key, value) in a fixed order: the typed fields, the
    /// `user.*` keys, then the origin as read-only `origin.*` keys.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("label", &self.label),
            ("host", &self.host),
            ("mountpoint", &self.mountpoint),
            ("app", &self.app),
        ] {
            if !v.is_empty() {
                out.push((k.to_string(), v.clone()));
            }
        }
        if self.time != 0 {
            out.push(("time".into(), self.time.to_string()));
        }
        for (k, v) in &self.user {
            out.push((format!("user.{k}"), v.clone()));
        }
        if let Some(o) = &self.origin {
            out.push(("origin.kind".into(), o.kind.clone()));
            out.push(("origin.volume".into(), o.volume.clone()));
            if !o.snapshot.is_empty() {
                out.push(("origin.snapshot".into(), o.snapshot.clone()));
            }
            out.push(("origin.volume_id".into(), o.volume_id.to_string()));
            out.push(("origin.pool".into(), format!("{:016x}", o.pool_id)));
            out.push(("origin.time".into(), o.time.to_string()));
            if o.schedule_id != 0 {
                out.push(("origin.schedule".into(), o.schedule.clone()));
                out.push(("origin.schedule_id".into(), o.schedule_id.to_string()));
            }
        }
        out
    }

    /// The value of one key (as `pairs` shows it), if set.
    pub fn get(&self, key: &str) -> Option<String> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The record a copy of the volume with this record carries: the same fields, and the
    /// given origin (a copy of a copy names its immediate source).
    pub fn for_copy(&self, origin: Origin) -> InfoRecord {
        InfoRecord {
            origin: Some(origin),
            ..self.clone()
        }
    }

    /// Check the size limit (the encoded record).
    pub fn check_size(&self) -> Result<(), String> {
        let n = self.encode().len();
        if n > INFO_MAX {
            return Err(format!(
                "the volume information would take {n} bytes; the limit is {INFO_MAX}"
            ));
        }
        Ok(())
    }
}

/// The name after `user.`, validated.
fn user_key(key: &str) -> Result<&str, String> {
    let Some(name) = key.strip_prefix("user.") else {
        return Err(format!(
            "unknown key '{key}': use label, host, mountpoint, app, time or user.<name>"
        ));
    };
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "bad key '{key}': user.<name> with 1-128 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InfoRecord {
        let mut r = InfoRecord::default();
        r.set("label", "nightly", 0).unwrap();
        r.set("host", "db1", 0).unwrap();
        r.set("time", "now", 77).unwrap();
        r.set("user.ticket", "OPS-1", 0).unwrap();
        r.for_copy(Origin {
            kind: "snapshot".into(),
            volume: "v".into(),
            snapshot: String::new(),
            volume_id: 3,
            pool_id: 0xabc,
            time: 9,
            ..Default::default()
        })
    }

    #[test]
    fn scheduled_origin_is_version_2_and_plain_stays_version_1() {
        let plain = sample();
        let b = plain.encode();
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 1);
        let mut s = plain.clone();
        let o = s.origin.as_mut().unwrap();
        o.kind = "scheduled".into();
        o.schedule = "db-hourly".into();
        o.schedule_id = 4;
        let b2 = s.encode();
        assert_eq!(u32::from_le_bytes(b2[4..8].try_into().unwrap()), 2);
        assert_eq!(InfoRecord::decode(&b2).unwrap(), s);
        assert_eq!(s.get("origin.schedule").as_deref(), Some("db-hourly"));
        assert_eq!(s.get("origin.schedule_id").as_deref(), Some("4"));
        assert_eq!(plain.get("origin.schedule"), None);
        for i in 0..b2.len() {
            let mut c = b2.clone();
            c[i] ^= 0x10;
            assert!(InfoRecord::decode(&c).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let r = sample();
        let b = r.encode();
        assert_eq!(InfoRecord::decode(&b).unwrap(), r);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x04;
            assert!(InfoRecord::decode(&c).is_err(), "flip at {i}");
        }
        assert!(InfoRecord::decode(&b[..b.len() - 1]).is_err());
        assert_eq!(
            InfoRecord::decode(&InfoRecord::default().encode()).unwrap(),
            InfoRecord::default()
        );
    }

    #[test]
    fn keys_are_checked() {
        let mut r = InfoRecord::default();
        assert!(r.set("colour", "x", 0).is_err());
        assert!(r.set("user.", "x", 0).is_err());
        assert!(r.set("user.a/b", "x", 0).is_err());
        assert!(r.set("time", "yesterday", 0).is_err());
        assert!(r.set("label", &"x".repeat(VALUE_MAX + 1), 0).is_err());
        r.set("user.a", "1", 0).unwrap();
        assert_eq!(r.get("user.a").as_deref(), Some("1"));
        assert!(r.unset("user.a").unwrap());
        assert!(!r.unset("user.a").unwrap());
        assert!(r.is_empty());
        for i in 0..USER_KEYS_MAX {
            r.set(&format!("user.k{i}"), "v", 0).unwrap();
        }
        assert!(r.set("user.more", "v", 0).is_err());
    }
}
