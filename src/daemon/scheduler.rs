//! The scheduler thread: about every 250 ms it runs the backup schedules that are due
//! (`backup::schedule::run_due`). A schedule whose volume or group is locked by an operator
//! (`fusevol lock`) is skipped, with the lock as the reason in its last result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::guard::touched;
use super::locks::Locks;
use crate::control::protocol::Request;
use crate::format::schedule::{ScheduleRec, TargetKind};
use crate::storage::Storage;

/// How often the thread looks for due schedules.
const TICK: Duration = Duration::from_millis(250);

pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why `rec`'s target may not be changed now: the lock that holds it.
fn lock_reason(st: &Storage, locks: &Locks, rec: &ScheduleRec, snap: &str) -> Option<String> {
    let req = match rec.kind {
        TargetKind::Volume => Request::SnapshotCreate {
            volume: rec.target.clone(),
            name: snap.to_string(),
        },
        TargetKind::Group => Request::GroupSnapshot {
            name: rec.target.clone(),
            snapshot: snap.to_string(),
        },
    };
    locks.check(&touched(st, &req), None).err().map(|r| r.0)
}

impl Scheduler {
    pub fn start(st: Arc<Storage>, locks: Arc<Locks>) -> std::io::Result<Scheduler> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    thread::sleep(TICK);
                    if st.pool.read_only().is_some() {
                        continue;
                    }
                    let locked =
                        |rec: &ScheduleRec, snap: &str| lock_reason(&st, &locks, rec, snap);
                    crate::backup::schedule::run_due(
                        &st,
                        crate::backup::schedule::now_ms(),
                        &locked,
                    );
                }
            })?;
        Ok(Scheduler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop after the run in progress (hooks have their own timeouts).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
