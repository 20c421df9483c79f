//! Replica redirection (seed 004's "access another replica"): a node's I/O load, the busy
//! flag it publishes in its registration, and which site serves a read of a group snapshot.
//!
//! A group snapshot exists as the same image at both sites of its journal group (the primary
//! takes it at its marker, the secondary when it applies the marker). Each node publishes the
//! group snapshots it holds in their catalog entries (`records::GroupTag`), so a reader finds
//! every copy of one. A read goes to the volume's owner unless the owner reports itself busy
//! (or is down); then to a site holding the same image that is up and not busy, this node
//! first when it holds one (no network), then the least loaded.
//!
//! **The load figure** is the node's own, not the host's: the requests in progress on its
//! array files, sampled every 100 ms and averaged over the last 2 s (an average queue depth,
//! like iostat's `aqu-sz`). A node is busy while that average is above its threshold
//! (`fusevold --busy-above N`, default 8; `fusevol cluster set --busy-above N` at run time),
//! or when the operator says so (`fusevol cluster set --busy on|off|auto`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Default threshold: requests in flight at the arrays, averaged over `WINDOW` samples.
pub const DEFAULT_BUSY_ABOVE: f64 = 8.0;
/// Sampling period of the in-flight counters.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Samples averaged (2 s).
const WINDOW: usize = 20;

/// The operator's override of the busy flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyMode {
    /// Busy while the load is above the threshold.
    Auto,
    /// Always busy (readers of group snapshots go to the other site: maintenance).
    On,
    /// Never busy.
    Off,
}

impl BusyMode {
    pub fn parse(s: &str) -> Option<BusyMode> {
        match s {
            "auto" => Some(BusyMode::Auto),
            "on" => Some(BusyMode::On),
            "off" => Some(BusyMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BusyMode::Auto => "auto",
            BusyMode::On => "on",
            BusyMode::Off => "off",
        }
    }
}

/// A busy threshold as the control protocol carries it (a number; compared bit for bit, so
/// requests stay `Eq`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Threshold(pub f64);

impl PartialEq for Threshold {
    fn eq(&self, other: &Threshold) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Threshold {}

/// This node's load: samples, the average, the threshold and the override.
pub struct LoadGauge {
    samples: Mutex<VecDeque<u32>>,
    /// The average (f64 bits).
    avg: AtomicU64,
    /// The threshold (f64 bits).
    above: AtomicU64,
    mode: AtomicU8,
}

impl LoadGauge {
    pub fn new(busy_above: f64) -> LoadGauge {
        LoadGauge {
            samples: Mutex::new(VecDeque::with_capacity(WINDOW)),
            avg: AtomicU64::new(0f64.to_bits()),
            above: AtomicU64::new(busy_above.to_bits()),
            mode: AtomicU8::new(0),
        }
    }

    /// Take one sample (requests in flight now); returns whether the busy flag changed.
    pub fn sample(&self, in_flight: u32) -> bool {
        let was = self.busy();
        let mut s = self.samples.lock();
        if s.len() == WINDOW {
            s.pop_front();
        }
        s.push_back(in_flight);
        let avg = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
        drop(s);
        self.avg.store(avg.to_bits(), Relaxed);
        was != self.busy()
    }

    /// The average requests in flight over the last 2 s.
    pub fn io_load(&self) -> f64 {
        f64::from_bits(self.avg.load(Relaxed))
    }

    pub fn busy_above(&self) -> f64 {
        f64::from_bits(self.above.load(Relaxed))
    }

    pub fn mode(&self) -> BusyMode {
        match self.mode.load(Relaxed) {
            1 => BusyMode::On,
            2 => BusyMode::Off,
            _ => BusyMode::Auto,
        }
    }

    /// Change the threshold and/or the override; returns whether the busy flag changed.
    pub fn set(&self, above: Option<f64>, mode: Option<BusyMode>) -> bool {
        let was = self.busy();
        if let Some(a) = above {
            self.above.store(a.to_bits(), Relaxed);
        }
        if let Some(m) = mode {
            let v = match m {
                BusyMode::Auto => 0,
                BusyMode::On => 1,
                BusyMode::Off => 2,
            };
            self.mode.store(v, Relaxed);
        }
        was != self.busy()
    }

    pub fn busy(&self) -> bool {
        match self.mode() {
            BusyMode::On => true,
            BusyMode::Off => false,
            BusyMode::Auto => self.io_load() > self.busy_above(),
        }
    }
}

/// One site that can serve a read of a group snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub node: String,
    /// The snapshot's NBD export there (`VOL@SNAP` in that node's pool).
    pub export: String,
    /// The owner of the volume the reader opened (the first choice).
    pub owner: bool,
    /// This node (served without the network).
    pub here: bool,
    pub up: bool,
    pub busy: bool,
    pub io_load: f64,
    pub busy_above: f64,
}

/// Which site serves a read, and why (for `fusevol cluster volumes`); None when no site is
/// up. `sites[0]`... in any order; the owner is the one with `owner` set.
pub fn choose(sites: &[Site]) -> Option<(usize, String)> {
    let owner = sites.iter().position(|s| s.owner);
    if let Some(o) = owner {
        if sites[o].up && !sites[o].busy {
            return Some((o, "owner".into()));
        }
    }
    let why = match owner {
        Some(o) if sites[o].up => format!(
            "owner '{}' is busy (I/O load {:.1}, above {:.1})",
            sites[o].node, sites[o].io_load, sites[o].busy_above
        ),
        Some(o) => format!("owner '{}' is down", sites[o].node),
        None => "no owner".into(),
    };
    let best = |want_idle: bool| {
        sites
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.owner && s.up && (!want_idle || !s.busy))
            .min_by(|(_, a), (_, b)| {
                b.here
                    .cmp(&a.here)
                    .then(a.io_load.total_cmp(&b.io_load))
                    .then(a.node.cmp(&b.node))
            })
            .map(|(i, _)| i)
    };
    if let Some(i) = best(true) {
        return Some((i, format!("replica: {why}")));
    }
    match owner {
        Some(o) if sites[o].up => Some((o, "owner (every other site is busy too)".into())),
        _ => best(false).map(|i| (i, format!("replica: {why} (the replica is busy too)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(node: &str, owner: bool, up: bool, busy: bool, load: f64) -> Site {
        Site {
            node: node.into(),
            export: format!("v@{node}"),
            owner,
            here: false,
            up,
            busy,
            io_load: load,
            busy_above: 8.0,
        }
    }

    #[test]
    fn owner_first_while_idle_then_an_idle_replica_then_the_owner_again() {
        let mut s = vec![
            site("a", true, true, false, 1.0),
            site("b", false, true, false, 0.0),
        ];
        assert_eq!(choose(&s).unwrap(), (0, "owner".to_string()));
        s[0].busy = true;
        s[0].io_load = 12.5;
        let (i, why) = choose(&s).unwrap();
        assert_eq!(i, 1);
        assert!(
            why.contains("owner 'a' is busy (I/O load 12.5, above 8.0)"),
            "{why}"
        );
        // Both busy: stay with the owner.
        s[1].busy = true;
        assert_eq!(choose(&s).unwrap().0, 0);
        // Owner down: a busy replica still serves (same image), none when it is down too.
        s[0].up = false;
        let (i, why) = choose(&s).unwrap();
        assert_eq!(i, 1);
        assert!(why.contains("is down"), "{why}");
        s[1].up = false;
        assert!(choose(&s).is_none());
    }

    #[test]
    fn a_replica_on_this_node_wins_then_the_least_loaded() {
        let mut s = vec![
            site("a", true, true, true, 20.0),
            site("b", false, true, false, 3.0),
            site("c", false, true, false, 1.0),
        ];
        assert_eq!(choose(&s).unwrap().0, 2);
        s[1].here = true;
        assert_eq!(choose(&s).unwrap().0, 1);
    }

    #[test]
    fn the_gauge_averages_two_seconds_and_the_override_wins() {
        let g = LoadGauge::new(4.0);
        assert!(!g.busy());
        for _ in 0..WINDOW {
            g.sample(10);
        }
        assert!(g.busy());
        assert!((g.io_load() - 10.0).abs() < 1e-9);
        // Half a window of idle samples halves the average.
        for _ in 0..WINDOW / 2 {
            g.sample(0);
        }
        assert!((g.io_load() - 5.0).abs() < 1e-9);
        assert!(g.set(Some(6.0), None), "5.0 is not above 6: no longer busy");
        assert!(g.set(None, Some(BusyMode::On)));
        assert!(g.busy());
        g.set(None, Some(BusyMode::Off));
        assert!(!g.busy());
        for _ in 0..WINDOW {
            g.sample(100);
        }
        assert!(!g.busy(), "off wins over the load");
        g.set(None, Some(BusyMode::Auto));
        assert!(g.busy());
    }
}
