//! How far a group's secondary is behind, and the lag alert: with `group set GROUP
//! --lag-alert SECS` a site publishes `lag-above` when the lag it measures reaches SECS and
//! `lag-below` when it is under half of SECS again (hysteresis: a lag hovering at the
//! threshold gives one pair of events, not a stream). Off by default.
//!
//! Each site measures what it can see. The primary: the age of the oldest journal record the
//! secondary has not acknowledged — it sees a secondary that is stopped, slow or cut off, so
//! this is the alert to set there. The secondary: the age (primary time) of the last record
//! it applied while more records wait in the remote directory — its own backlog, including
//! an apply delay. The shipper and the applier check it at most every `CHECK_EVERY`.

use std::time::{Duration, Instant};

use super::group::Group;
use crate::journal::now_ns;
use crate::pool::PoolError;

const CHECK_EVERY: Duration = Duration::from_millis(200);

/// The alert's run-time state (in `Runtime`; not persistent: after a restart a lag still
/// above the threshold is published again).
#[derive(Default, Clone)]
pub struct LagRuntime {
    /// `lag-above` was published and `lag-below` not yet.
    pub above: bool,
    next_check: Option<Instant>,
}

impl Group {
    /// Seconds the secondary is behind as this site sees it (the `lag_seconds` of `group
    /// status`), with the records behind.
    pub fn lag_now(&self) -> (f64, u64) {
        let now = now_ns();
        let r = self.rec.lock().clone();
        if self.is_primary() {
            let js = self.journal().stats();
            let records = js.written.saturating_sub(r.acked);
            let oldest = self
                .journal()
                .sealed_after(r.acked)
                .first()
                .map(|s| s.first_time)
                .unwrap_or(js.oldest_time);
            if records == 0 || oldest == 0 {
                return (0.0, records);
            }
            (now.saturating_sub(oldest) as f64 / 1e9, records)
        } else {
            let written = self.rt.lock().remote_written.max(r.synced);
            let records = written - r.synced;
            if records == 0 || r.synced_time == 0 {
                return (0.0, records);
            }
            (now.saturating_sub(r.synced_time) as f64 / 1e9, records)
        }
    }

    /// The lag alert threshold in seconds, when set.
    pub fn lag_alert_secs(&self) -> Option<f64> {
        let ms = self.rec.lock().ext.alert.lag_alert_ms;
        (ms > 0).then(|| ms as f64 / 1000.0)
    }

    /// `lag-above` published and `lag-below` not yet.
    pub fn lag_above(&self) -> bool {
        self.rt.lock().lag.above
    }
}

/// Called by the shipper and the applier on every turn: publish `lag-above` / `lag-below`
/// when the lag crosses the alert threshold (at most every `CHECK_EVERY`).
pub(crate) fn check_lag(g: &Group) {
    {
        let mut rt = g.rt.lock();
        let now = Instant::now();
        if rt.lag.next_check.is_some_and(|t| now < t) {
            return;
        }
        rt.lag.next_check = Some(now + CHECK_EVERY);
    }
    let Some(threshold) = g.lag_alert_secs() else {
        // Turned off while above: say the alert is over.
        if std::mem::take(&mut g.rt.lock().lag.above) {
            g.publish("lag-below", serde_json::json!({"alert": "off"}));
        }
        return;
    };
    let (lag, records) = g.lag_now();
    let change = {
        let mut rt = g.rt.lock();
        if !rt.lag.above && lag >= threshold {
            rt.lag.above = true;
            Some("lag-above")
        } else if rt.lag.above && lag < threshold / 2.0 {
            rt.lag.above = false;
            Some("lag-below")
        } else {
            None
        }
    };
    let Some(change) = change else { return };
    let detail = serde_json::json!({
        "lag_seconds": (lag * 1000.0).round() / 1000.0,
        "lag_records": records,
        "threshold_seconds": threshold,
    });
    if change == "lag-above" {
        log::warn!(
            "group '{}': the secondary is {lag:.1} s behind ({records} records), at or above the alert threshold of {threshold} s",
            g.name
        );
    } else {
        log::info!(
            "group '{}': lag {lag:.1} s, below half the alert threshold of {threshold} s again",
            g.name
        );
    }
    g.publish(change, detail);
}

impl super::Replication {
    /// `group set --lag-alert`: the threshold in milliseconds (0: off). Either site.
    pub fn group_set_lag_alert(&self, name: &str, ms: u64) -> Result<(), PoolError> {
        let g = self
            .group_by_name(name)
            .ok_or_else(|| super::error::ReplicationError::NoGroup(name.to_string()).into_pool())?;
        g.rec.lock().ext.alert.lag_alert_ms = ms;
        g.rt.lock().lag.next_check = None;
        self.put_group(&g)?;
        self.pool.sync_metadata()?;
        log::info!(
            "group '{name}': lag alert {}",
            if ms == 0 {
                "off".to_string()
            } else {
                format!("at {} s", ms as f64 / 1000.0)
            }
        );
        Ok(())
    }
}
