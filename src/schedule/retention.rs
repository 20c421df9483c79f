//! Which of a schedule's snapshots to keep (sanoid / zfs-auto-snapshot style): the `keep`
//! most recent, plus for each of `hourly`, `daily`, `weekly` the first snapshot of each of
//! the last N hours, UTC days or ISO weeks (Monday to Sunday, UTC) that have one. Everything
//! else the schedule made may be pruned. Pure: times in, ids out.

use std::collections::{BTreeMap, BTreeSet};

/// The rules of one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    pub keep: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
}

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// The bucket of `t` (seconds since the Unix epoch) for a period: hours and days count
/// from the epoch; weeks start on Monday (1970-01-01 was a Thursday, so day 4 is a Monday).
fn bucket(t: u64, period: u64) -> u64 {
    if period == 7 * DAY {
        (t / DAY + 3) / 7
    } else {
        t / period
    }
}

/// The snapshots to keep among `snaps` (id, time in seconds). Ties in time are ordered by
/// id (a later id is newer).
pub fn keep(snaps: &[(u64, u64)], rules: Rules) -> BTreeSet<u64> {
    let mut by_age: Vec<(u64, u64)> = snaps.iter().map(|&(id, t)| (t, id)).collect();
    by_age.sort_unstable();
    let mut kept: BTreeSet<u64> = by_age
        .iter()
        .rev()
        .take(rules.keep as usize)
        .map(|&(_, id)| id)
        .collect();
    for (n, period) in [
        (rules.hourly, HOUR),
        (rules.daily, DAY),
        (rules.weekly, 7 * DAY),
    ] {
        if n == 0 {
            continue;
        }
        // The first snapshot of each bucket (by_age is oldest first).
        let mut first: BTreeMap<u64, u64> = BTreeMap::new();
        for &(t, id) in &by_age {
            first.entry(bucket(t, period)).or_insert(id);
        }
        kept.extend(first.values().rev().take(n as usize));
    }
    kept
}

/// The snapshots to prune: every one of `snaps` that `keep` does not keep, oldest first.
pub fn prune(snaps: &[(u64, u64)], rules: Rules) -> Vec<u64> {
    let kept = keep(snaps, rules);
    let mut out: Vec<(u64, u64)> = snaps
        .iter()
        .filter(|(id, _)| !kept.contains(id))
        .map(|&(id, t)| (t, id))
        .collect();
    out.sort_unstable();
    out.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The oracle: decides each snapshot on its own, by counting, with the calendar done
    /// through jiff (UTC civil hours, days and ISO weeks) rather than integer division.
    fn oracle_keeps(snaps: &[(u64, u64)], rules: Rules, me: (u64, u64)) -> bool {
        let newer = |a: (u64, u64), b: (u64, u64)| (a.1, a.0) > (b.1, b.0);
        let rank = snaps.iter().filter(|&&s| newer(s, me)).count();
        if rank < rules.keep as usize {
            return true;
        }
        let civil = |t: u64| {
            jiff::Timestamp::from_second(t as i64)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC)
        };
        type Key = (i16, i8, i8, i8);
        type KeyFn = fn(&jiff::Zoned) -> Key;
        let keys: [(u32, KeyFn); 3] = [
            (rules.hourly, |z| (z.year(), z.month(), z.day(), z.hour())),
            (rules.daily, |z| (z.year(), z.month(), z.day(), 0)),
            (rules.weekly, |z| {
                let w = z.date().iso_week_date();
                (w.year(), w.week(), 0, 0)
            }),
        ];
        for (n, key) in keys {
            if n == 0 {
                continue;
            }
            let mine = key(&civil(me.1));
            // First of its bucket: no older snapshot in the same bucket.
            let first = !snaps
                .iter()
                .any(|&s| newer(me, s) && key(&civil(s.1)) == mine);
            if !first {
                continue;
            }
            // Among the n newest buckets: fewer than n distinct newer buckets.
            let newer_buckets: BTreeSet<Key> = snaps
                .iter()
                .map(|s| key(&civil(s.1)))
                .filter(|k| *k > mine)
                .collect();
            if newer_buckets.len() < n as usize {
                return true;
            }
        }
        false
    }

    fn snaps_strategy() -> impl Strategy<Value = Vec<(u64, u64)>> {
        // Times over ~10 weeks around a realistic epoch, some sharing a second.
        prop::collection::vec(0u64..6_000_000, 0..60).prop_map(|ts| {
            ts.into_iter()
                .enumerate()
                .map(|(i, t)| (i as u64 + 1, 1_700_000_000 + t - t % 7))
                .collect()
        })
    }

    fn rules_strategy() -> impl Strategy<Value = Rules> {
        (0u32..6, 0u32..5, 0u32..4, 0u32..3).prop_map(|(keep, hourly, daily, weekly)| Rules {
            keep,
            hourly,
            daily,
            weekly,
        })
    }

    proptest! {
        #[test]
        fn matches_the_oracle(snaps in snaps_strategy(), rules in rules_strategy()) {
            let kept = keep(&snaps, rules);
            for &s in &snaps {
                prop_assert_eq!(kept.contains(&s.0), oracle_keeps(&snaps, rules, s), "{:?}", s);
            }
            let pruned = prune(&snaps, rules);
            prop_assert_eq!(pruned.len() + kept.len(), snaps.len());
            prop_assert!(kept.len() <= (rules.keep + rules.hourly + rules.daily + rules.weekly) as usize);
        }

        #[test]
        fn pruning_again_prunes_nothing(snaps in snaps_strategy(), rules in rules_strategy()) {
            let kept = keep(&snaps, rules);
            let rest: Vec<(u64, u64)> = snaps.iter().copied().filter(|s| kept.contains(&s.0)).collect();
            prop_assert!(prune(&rest, rules).is_empty());
        }
    }

    #[test]
    fn keep_three_of_a_run() {
        let snaps: Vec<(u64, u64)> = (1..=10).map(|i| (i, 1000 + 2 * i)).collect();
        let r = Rules {
            keep: 3,
            ..Default::default()
        };
        assert_eq!(keep(&snaps, r), [8, 9, 10].into_iter().collect());
        assert_eq!(prune(&snaps, r), (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn weeks_start_on_monday() {
        // The Sunday before a Monday is in the previous week.
        let monday = 1_764_547_200; // Monday 2025-12-01T00:00:00Z
        assert_eq!(bucket(monday, 7 * DAY), bucket(monday + 6 * DAY, 7 * DAY));
        assert_eq!(bucket(monday - 1, 7 * DAY) + 1, bucket(monday, 7 * DAY));
    }
}
