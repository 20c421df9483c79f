//! What a volume needs while `fusevol volume move` copies it to another node (`cluster::
//! moving` drives the move): a dirty-range tracker, so ranges written during the background
//! copy are copied again, and a gate, so the last pass runs with no write in flight and, once
//! the catalog names the new owner, every request here is refused (`IoError::Moved`) instead
//! of reading or changing a copy that is no longer the volume.
//!
//! The tracker records a range *after* its data write (`note`, called by the pipeline while it
//! still holds the volume's `io_lock` shared): a pass that takes the set and then reads a range
//! either sees a write whose range it took, or the write's range is in the next set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::pool::IoError;

/// How long a request waits at a closed gate before it fails (the move's last pass and its
/// catalog switch take well under this).
pub const GATE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Gate {
    #[default]
    Open,
    /// The last pass and the catalog switch: requests wait.
    Closed,
    /// The volume belongs to another node now: requests are refused.
    Fenced,
}

#[derive(Default)]
struct State {
    /// Byte ranges written since the last `take` (start, end), merged; None: not tracking.
    dirty: Option<Vec<(u64, u64)>>,
    gate: Gate,
    /// The node the volume went to (for the refusal's message).
    to: String,
}

/// Per-volume move state (see the module comment).
#[derive(Default)]
pub struct MoveTrack {
    /// Fast path: false while no move runs (one relaxed load per request).
    active: AtomicBool,
    st: Mutex<State>,
    cv: Condvar,
}

/// Insert [start, end) into a sorted list of disjoint ranges, merging neighbours.
fn insert(v: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    let i = v.partition_point(|&(_, e)| e < start);
    let mut j = i;
    let (mut s, mut e) = (start, end);
    while j < v.len() && v[j].0 <= e {
        s = s.min(v[j].0);
        e = e.max(v[j].1);
        j += 1;
    }
    v.splice(i..j, [(s, e)]);
}

impl MoveTrack {
    /// Start recording written ranges (a move's first pass begins).
    pub fn start(&self) {
        let mut g = self.st.lock();
        g.dirty = Some(Vec::new());
        g.gate = Gate::Open;
        self.active.store(true, Ordering::Release);
    }

    /// Is a move running (or did one fence this volume)?
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// A range of the volume was written (or discarded): the pipeline, after the data write.
    pub fn note(&self, offset: u64, len: u64) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Some(d) = self.st.lock().dirty.as_mut() {
            insert(d, offset, offset.saturating_add(len));
        }
    }

    /// The ranges written since the last call (and forget them).
    pub fn take(&self) -> Vec<(u64, u64)> {
        self.st
            .lock()
            .dirty
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Bytes in the ranges written since the last `take`.
    pub fn dirty_bytes(&self) -> u64 {
        self.st
            .lock()
            .dirty
            .as_ref()
            .map(|d| d.iter().map(|(s, e)| e - s).sum())
            .unwrap_or(0)
    }

    /// Hold new requests at the gate (the last pass).
    pub fn close(&self) {
        self.st.lock().gate = Gate::Closed;
    }

    /// The move is over without a switch: stop tracking, let waiting requests through.
    pub fn abort(&self) {
        let mut g = self.st.lock();
        g.dirty = None;
        g.gate = Gate::Open;
        self.active.store(false, Ordering::Release);
        self.cv.notify_all();
    }

    /// The catalog names `to` as the owner: refuse every request from now on.
    pub fn fence(&self, to: &str) {
        let mut g = self.st.lock();
        g.dirty = None;
        g.gate = Gate::Fenced;
        g.to = to.to_string();
        self.cv.notify_all();
    }

    pub fn fenced(&self) -> bool {
        self.active() && self.st.lock().gate == Gate::Fenced
    }

    /// May a request of `volume` go on? Waits while the gate is closed (at most GATE_WAIT).
    pub fn admit(&self, volume: &str) -> Result<(), IoError> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let end = Instant::now() + GATE_WAIT;
        let mut g = self.st.lock();
        loop {
            match g.gate {
                Gate::Open => return Ok(()),
                Gate::Fenced => {
                    return Err(IoError::Moved {
                        volume: volume.to_string(),
                        node: g.to.clone(),
                    })
                }
                Gate::Closed => {
                    if self.cv.wait_until(&mut g, end).timed_out() && g.gate == Gate::Closed {
                        return Err(IoError::Invalid {
                            volume: volume.to_string(),
                            detail: format!(
                                "held {} s by the last pass of a move to another node",
                                GATE_WAIT.as_secs()
                            ),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_are_taken_once() {
        let t = MoveTrack::default();
        t.note(0, 10); // not tracking: ignored
        t.start();
        t.note(100, 10);
        t.note(0, 10);
        t.note(10, 5);
        t.note(105, 20);
        t.note(300, 0);
        assert_eq!(t.dirty_bytes(), 15 + 25);
        assert_eq!(t.take(), vec![(0, 15), (100, 125)]);
        assert!(t.take().is_empty());
        t.note(50, 1);
        t.note(40, 30);
        assert_eq!(t.take(), vec![(40, 70)]);
    }

    #[test]
    fn the_gate_holds_then_fences_or_opens() {
        let t = std::sync::Arc::new(MoveTrack::default());
        assert!(t.admit("v").is_ok());
        t.start();
        t.close();
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.admit("v"));
        std::thread::sleep(Duration::from_millis(50));
        t.fence("b");
        match h.join().unwrap() {
            Err(IoError::Moved { node, .. }) => assert_eq!(node, "b"),
            other => panic!("{other:?}"),
        }
        assert!(t.fenced());
        let t = std::sync::Arc::new(MoveTrack::default());
        t.start();
        t.close();
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.admit("v"));
        std::thread::sleep(Duration::from_millis(50));
        t.abort();
        assert!(h.join().unwrap().is_ok());
        assert!(!t.active());
    }
}
