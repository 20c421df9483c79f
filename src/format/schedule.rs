//! Backup schedules (`fusevol schedule add`): what the daemon snapshots, how often, what it
//! keeps, and how the last run went. Kept in the pool's metadata (a `SchedulePut` log record
//! per change, the checkpoint's schedule section), so a schedule and its next run survive a
//! restart.

use super::codec::{Dec, Enc};
use super::{verify_crc, FormatError};

// Format: schedule record, SCHEDULE_MAX (16384) bytes at most.
//   0  magic         4  b"FVSC"
//   4  version       u32 (1)
//   8  id            u64  (≥ 1; unique in the pool)
//  ..  name          str  (u16 length + UTF-8)
//  ..  target_kind   u8   (1: volume, 2: journal group)
//  ..  target        str  the volume or group name
//  ..  every_ms      u64  interval (≥ 1000)
//  ..  keep          u32  the most recent snapshots kept
//  ..  hourly        u32  hourly buckets kept (newest snapshot of each of the last N hours)
//  ..  daily         u32  daily buckets kept (UTC days)
//  ..  weekly        u32  weekly buckets kept (ISO weeks, UTC)
//  ..  label         str  the `label` field written into each snapshot's information
//  ..  pre           str  pre hook command (empty: none)
//  ..  post          str  post hook command (empty: none)
//  ..  hook_timeout  u64  seconds
//  ..  created       u64  seconds since the Unix epoch
//  ..  next_due_ms   u64  when the next run is due (ms since the Unix epoch)
//  ..  last_ms       u64  when the last run ended (0: never ran)
//  ..  last_result   u8   0 none, 1 ok, 2 failed, 3 skipped
//  ..  last_snapshot str  the snapshot the last run took (empty if none)
//  ..  last_message  str  why it failed or was skipped, or a note (missed slots, pruned)
//  ..  runs          u64  runs that took a snapshot
//  ..  failures      u64  runs that failed or were skipped
//  end crc32c        u32 over every byte before it
const MAGIC: &[u8; 4] = b"FVSC";
pub const SCHEDULE_VERSION: u32 = 1;
/// The largest encoded schedule (two hook commands and a label; sanity bound for decoders).
pub const SCHEDULE_MAX: usize = 16384;
/// The shortest interval.
pub const MIN_EVERY_MS: u64 = 1000;

/// What a schedule snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetKind {
    #[default]
    Volume,
    Group,
}

/// How the last run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastResult {
    #[default]
    None,
    Ok,
    Failed,
    Skipped,
}

impl LastResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LastResult::None => "",
            LastResult::Ok => "ok",
            LastResult::Failed => "failed",
            LastResult::Skipped => "skipped",
        }
    }
    fn code(self) -> u8 {
        match self {
            LastResult::None => 0,
            LastResult::Ok => 1,
            LastResult::Failed => 2,
            LastResult::Skipped => 3,
        }
    }
}

/// One schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduleRec {
    pub id: u64,
    pub name: String,
    pub kind: TargetKind,
    pub target: String,
    pub every_ms: u64,
    pub keep: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub label: String,
    pub pre: String,
    pub post: String,
    pub hook_timeout: u64,
    pub created: u64,
    pub next_due_ms: u64,
    pub last_ms: u64,
    pub last_result: LastResult,
    pub last_snapshot: String,
    pub last_message: String,
    pub runs: u64,
    pub failures: u64,
}

impl ScheduleRec {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(256);
        e.bytes(MAGIC)
            .u32(SCHEDULE_VERSION)
            .u64(self.id)
            .str(&self.name)
            .u8(match self.kind {
                TargetKind::Volume => 1,
                TargetKind::Group => 2,
            })
            .str(&self.target)
            .u64(self.every_ms)
            .u32(self.keep)
            .u32(self.hourly)
            .u32(self.daily)
            .u32(self.weekly)
            .str(&self.label)
            .str(&self.pre)
            .str(&self.post)
            .u64(self.hook_timeout)
            .u64(self.created)
            .u64(self.next_due_ms)
            .u64(self.last_ms)
            .u8(self.last_result.code())
            .str(&self.last_snapshot)
            .str(&self.last_message)
            .u64(self.runs)
            .u64(self.failures);
        let crc = crc32c::crc32c(&e.buf);
        e.u32(crc);
        e.buf
    }

    pub fn decode(buf: &[u8]) -> Result<ScheduleRec, FormatError> {
        const WHAT: &str = "schedule";
        if buf.len() < 12 {
            return Err(FormatError::Truncated {
                what: WHAT,
                need: 12,
                have: buf.len(),
            });
        }
        if buf.len() > SCHEDULE_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{} bytes, more than the limit {SCHEDULE_MAX}", buf.len()),
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
        if version != SCHEDULE_VERSION {
            return Err(FormatError::BadVersion {
                what: WHAT,
                version,
            });
        }
        let invalid = |detail: String| FormatError::Invalid { what: WHAT, detail };
        let id = d.u64()?;
        let name = d.str()?;
        let kind = match d.u8()? {
            1 => TargetKind::Volume,
            2 => TargetKind::Group,
            k => return Err(invalid(format!("target kind {k}"))),
        };
        let r = ScheduleRec {
            id,
            name,
            kind,
            target: d.str()?,
            every_ms: d.u64()?,
            keep: d.u32()?,
            hourly: d.u32()?,
            daily: d.u32()?,
            weekly: d.u32()?,
            label: d.str()?,
            pre: d.str()?,
            post: d.str()?,
            hook_timeout: d.u64()?,
            created: d.u64()?,
            next_due_ms: d.u64()?,
            last_ms: d.u64()?,
            last_result: match d.u8()? {
                0 => LastResult::None,
                1 => LastResult::Ok,
                2 => LastResult::Failed,
                3 => LastResult::Skipped,
                k => return Err(invalid(format!("last result {k}"))),
            },
            last_snapshot: d.str()?,
            last_message: d.str()?,
            runs: d.u64()?,
            failures: d.u64()?,
        };
        if r.id == 0 {
            return Err(invalid("id 0".into()));
        }
        if r.every_ms < MIN_EVERY_MS {
            return Err(invalid(format!("interval of {} ms", r.every_ms)));
        }
        if d.remaining() != 0 {
            return Err(invalid(format!("{} trailing bytes", d.remaining())));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let r = ScheduleRec {
            id: 3,
            name: "db-15m".into(),
            kind: TargetKind::Group,
            target: "g".into(),
            every_ms: 900_000,
            keep: 8,
            hourly: 24,
            daily: 7,
            weekly: 4,
            label: "auto".into(),
            pre: "fsfreeze -f /x".into(),
            post: "fsfreeze -u /x".into(),
            hook_timeout: 60,
            created: 5,
            next_due_ms: 6,
            last_ms: 7,
            last_result: LastResult::Skipped,
            last_snapshot: "s".into(),
            last_message: "locked".into(),
            runs: 9,
            failures: 1,
        };
        let b = r.encode();
        assert_eq!(ScheduleRec::decode(&b).unwrap(), r);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x02;
            assert!(ScheduleRec::decode(&c).is_err(), "flip at {i}");
        }
        for n in 0..b.len() {
            assert!(ScheduleRec::decode(&b[..n]).is_err(), "cut at {n}");
        }
    }
}
