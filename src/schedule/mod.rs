//! Backup schedules: the durable registry (`Schedules`) and the retention rules
//! (`retention.rs`). The runs themselves (snapshot, hooks, label, prune) are in
//! `backup/schedule.rs`, over the `Storage`; the daemon's scheduler thread calls them.
//!
//! Every change is one `SchedulePut` / `ScheduleDelete` metadata record (logged,
//! checkpointed, replayed like the volume information), so a schedule, its next run and its
//! last result survive restarts. A record that does not decode is kept as it is and shown as
//! invalid (never run, never dropped).

pub mod retention;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::format::schedule::ScheduleRec;
use crate::format::MetaRecord;
use crate::meta::State;
use crate::pool::{Pool, PoolError, StateSource};

/// The schedule registry: encoded records by id.
pub struct Schedules {
    pub pool: Arc<Pool>,
    map: RwLock<BTreeMap<u64, Vec<u8>>>,
}

impl StateSource for Schedules {
    fn save(&self, state: &mut State) {
        state.schedules = self.map.read().clone();
    }
}

impl Schedules {
    pub fn new(pool: Arc<Pool>, recs: BTreeMap<u64, Vec<u8>>) -> Arc<Schedules> {
        let me = Arc::new(Schedules {
            pool,
            map: RwLock::new(recs),
        });
        let weak: std::sync::Weak<dyn StateSource> = Arc::downgrade(&me) as _;
        me.pool.add_state_source(weak);
        me
    }

    /// Every schedule by id: the record, or why it does not decode.
    pub fn list(&self) -> Vec<(u64, Result<ScheduleRec, String>)> {
        self.map
            .read()
            .iter()
            .map(|(id, b)| (*id, ScheduleRec::decode(b).map_err(|e| e.to_string())))
            .collect()
    }

    /// The valid schedule `id`.
    pub fn get(&self, id: u64) -> Option<ScheduleRec> {
        self.map
            .read()
            .get(&id)
            .and_then(|b| ScheduleRec::decode(b).ok())
    }

    /// The schedule named `key`, or with id `key`; not found names it.
    pub fn find(&self, key: &str) -> Result<u64, PoolError> {
        let list = self.list();
        if let Some((id, _)) = list
            .iter()
            .find(|(_, r)| r.as_ref().is_ok_and(|r| r.name == key))
        {
            return Ok(*id);
        }
        if let Ok(id) = key.parse::<u64>() {
            if list.iter().any(|(i, _)| *i == id) {
                return Ok(id);
            }
        }
        Err(PoolError::NotFound(format!(
            "no schedule named '{key}' (and no schedule with that id); see `fusevol schedule list`"
        )))
    }

    /// Add a schedule: it gets the next free id; its name must be unique.
    pub fn add(&self, mut rec: ScheduleRec) -> Result<ScheduleRec, PoolError> {
        let mut log = self.pool.meta.lock();
        let mut map = self.map.write();
        let clash = map.values().any(|b| {
            ScheduleRec::decode(b)
                .map(|r| r.name == rec.name)
                .unwrap_or(false)
        });
        if clash {
            return Err(PoolError::Exists(format!(
                "a schedule named '{}' exists already",
                rec.name
            )));
        }
        rec.id = map.keys().next_back().map_or(1, |m| m + 1);
        let bytes = rec.encode();
        log.append(&MetaRecord::SchedulePut {
            id: rec.id,
            rec: bytes.clone(),
        })?;
        map.insert(rec.id, bytes);
        Ok(rec)
    }

    /// Store a run's outcome (next run, last result). False when the schedule was removed
    /// meanwhile: then nothing is written (a removed schedule never comes back).
    pub fn update(&self, rec: &ScheduleRec) -> Result<bool, PoolError> {
        let mut log = self.pool.meta.lock();
        let mut map = self.map.write();
        if !map.contains_key(&rec.id) {
            return Ok(false);
        }
        let bytes = rec.encode();
        log.append(&MetaRecord::SchedulePut {
            id: rec.id,
            rec: bytes.clone(),
        })?;
        map.insert(rec.id, bytes);
        Ok(true)
    }

    /// Remove schedule `id` (its snapshots stay).
    pub fn remove(&self, id: u64) -> Result<(), PoolError> {
        let mut log = self.pool.meta.lock();
        let mut map = self.map.write();
        if !map.contains_key(&id) {
            return Err(PoolError::NotFound(format!("no schedule with id {id}")));
        }
        log.append(&MetaRecord::ScheduleDelete { id })?;
        map.remove(&id);
        Ok(())
    }
}

/// An interval as the CLI takes it: a number with a unit `s`, `m`, `h`, `d` or `w`
/// (`15m`, `2s`, `1d`); a bare number is seconds. Milliseconds; at least one second.
pub fn parse_every(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad interval '{s}': use e.g. 30s, 15m, 1h, 1d, 1w"))?;
    let unit_ms: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(format!("bad interval '{s}': the unit is s, m, h, d or w")),
    };
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("interval '{s}' is too long"))?;
    if ms < crate::format::schedule::MIN_EVERY_MS {
        return Err(format!("interval '{s}' is shorter than one second"));
    }
    Ok(ms)
}

/// An interval in the largest unit that divides it (`15m`, `2s`, `90s`).
pub fn format_every(ms: u64) -> String {
    for (unit, len) in [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
    ] {
        if ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_every("15m"), Ok(900_000));
        assert_eq!(parse_every("2s"), Ok(2000));
        assert_eq!(parse_every("30"), Ok(30_000));
        assert_eq!(parse_every("1w"), Ok(604_800_000));
        assert!(parse_every("0s").is_err());
        assert!(parse_every("5x").is_err());
        assert!(parse_every("m").is_err());
        assert!(parse_every("99999999999999999999d").is_err());
        for s in ["15m", "2s", "90s", "1h", "3d", "2w"] {
            assert_eq!(format_every(parse_every(s).unwrap()), s);
        }
    }
}
