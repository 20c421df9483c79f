//! Split mirrors (ShadowImage-style pairs): a P-VOL and a full, independent S-VOL copy on
//! other arrays, with initial copy, dual writes, steady and quick split, differential resync
//! and reverse restore. States and access rules follow DESIGN.md:
//!
//! | state      | P-VOL                      | S-VOL     | copy running            |
//! |------------|----------------------------|-----------|-------------------------|
//! | COPY       | R/W, writes go to both     | read-only | P → S, regions in `todo`|
//! | PAIR       | R/W, writes go to both     | read-only | none                    |
//! | PSUS       | R/W, changes → `p_dirty`   | R/W, changes → `s_dirty` | quick split: snapshot → S |
//! | COPY(RS)   | R/W, writes go to both     | read-only | P → S                   |
//! | COPY(RS-R) | R/W (reads of uncopied regions come from S), writes go to both | read-only | S → P |
//! | PSUE       | R/W, changes → `p_dirty`   | read-only | none (resync repairs)   |
//!
//! A region is one extent. Host writes and the copier serialize per region (striped locks),
//! so a copy never overwrites newer data. Copy progress (`PairCopied`) is recorded only after
//! the copied data is synced; difference bits (`PairDirty`) are made durable *before* the
//! write that sets them (a write-intent bitmap), so a crash can only make a resync copy more,
//! never less. In the dual-write states (COPY, PAIR, COPY(RS), COPY(RS-R)) `p_dirty` is the
//! same kind of write-intent bitmap for the two legs of a dual write: a unit of
//! [`INTENT_UNIT`] around every region a host write touches is recorded durably before the
//! write, and cleared (`PairDirty` side 2, not synced) once a pool sync has made every write
//! to it durable on both sides and no write touched it since. A pair found after a crash in a
//! dual-write state with intent bits copies those regions again (P→S, or S→P in COPY(RS-R))
//! before it reports PAIR; a split keeps them as changed regions. A quick split takes a snapshot of the P-VOL at the split instant; the rest of
//! the copy reads from it, so the S-VOL only ever shows the split-time image.

mod copier;
mod io;
mod ops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{ArcMutexGuard, Condvar, Mutex, RawMutex, RwLock};

use crate::bitmap::Bitmap;
use crate::events::EventLog;
use crate::meta::{PairSt, State};
use crate::pool::{Pool, StateSource};
use crate::snapshot::{Snapshot, Snapshots};
use crate::volume::{Volume, Volumes};

/// Default background copy limit: 128 MiB/s.
pub const DEFAULT_COPY_RATE: u64 = 128 << 20;
const STRIPES: usize = 256;
/// The write-intent unit of a pair in a dual-write state: the first write to a unit pays one
/// metadata log sync; after a crash the units with intents are copied again (md's bitmap
/// chunk: large enough that a random writer pays few syncs, small enough to copy quickly).
pub const INTENT_UNIT: u64 = 64 << 20;
pub use crate::format::PairState;
pub use crate::snapshot::SPLIT_SNAPSHOT_PREFIX;

/// Which side of a pair a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

/// The mutable part of a pair.
pub(crate) struct PairMut {
    pub state: PairState,
    pub todo: Bitmap,
    pub p_dirty: Bitmap,
    pub s_dirty: Bitmap,
    /// A quick split's source: the P-VOL as it was at the split.
    pub split_snap: Option<Arc<Snapshot>>,
    pub error: Option<String>,
    pub rate_limit: u64,
    /// Regions in `todo` when the running copy started (for the progress figure).
    pub copy_total: u64,
    /// Measured copy rate, bytes per second.
    pub rate: u64,
    pub rate_window: (Instant, u64),
    /// Regions the copier has copied but not yet recorded (still in `todo`).
    pub copied_unrecorded: Bitmap,
    /// Dual-write states: regions a host write was admitted to since the last intent
    /// cleaning pass (their write-intent bits in `p_dirty` stay set).
    pub touched: Bitmap,
    /// Regions with a dual write in flight (admitted, not completed), with their count.
    pub inflight: HashMap<u64, u32>,
}

impl PairMut {
    /// Account copied bytes for the measured rate (a 1 s window).
    pub(crate) fn count_copied(&mut self, bytes: u64) {
        let (since, n) = self.rate_window;
        let el = since.elapsed();
        if el.as_secs_f64() >= 1.0 {
            self.rate = ((n + bytes) as f64 / el.as_secs_f64()) as u64;
            self.rate_window = (Instant::now(), 0);
        } else {
            self.rate_window.1 = n + bytes;
        }
    }
}

pub struct Pair {
    pub id: u64,
    pub pvol: Arc<Volume>,
    pub svol: Arc<Volume>,
    pub group: String,
    pub separate_arrays: bool,
    pub(crate) st: Mutex<PairMut>,
    pub(crate) changed: Condvar,
    stripes: Vec<Arc<Mutex<()>>>,
    pub(crate) stop: AtomicBool,
    pub(crate) worker: Mutex<Option<JoinHandle<()>>>,
    /// Where its state changes are published (the pool's event log).
    events: Arc<EventLog>,
    extent_size: u64,
}

impl Pair {
    pub(crate) fn new(
        id: u64,
        pvol: Arc<Volume>,
        svol: Arc<Volume>,
        group: String,
        separate_arrays: bool,
        m: PairMut,
        pool: &Pool,
    ) -> Pair {
        Pair {
            events: pool.events.clone(),
            extent_size: pool.extent_size,
            id,
            pvol,
            svol,
            group,
            separate_arrays,
            st: Mutex::new(m),
            changed: Condvar::new(),
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
            stop: AtomicBool::new(false),
            worker: Mutex::new(None),
        }
    }

    pub fn state(&self) -> PairState {
        self.st.lock().state
    }

    /// Lock the regions (in stripe order, so two lockers never deadlock). The guards are
    /// owned, so a write's admission can hold them until its completion.
    pub(crate) fn lock_regions(
        &self,
        regions: impl IntoIterator<Item = u64>,
    ) -> Vec<ArcMutexGuard<RawMutex, ()>> {
        let mut idx: Vec<usize> = regions
            .into_iter()
            .map(|r| (r as usize) % STRIPES)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| self.stripes[i].lock_arc())
            .collect()
    }

    /// Change the state and publish the change (with PSUE's reason, and the copy's start
    /// or end with its bytes).
    pub(crate) fn set_state(&self, m: &mut PairMut, s: PairState) {
        let from = m.state;
        m.state = s;
        self.changed.notify_all();
        if from == s {
            // A quick split's background copy ended (PSUS stays PSUS).
            self.events.publish(
                "pair",
                &self.pvol.name,
                "copy-finished",
                serde_json::json!({"svol": self.svol.name, "copy": "split", "state": s.name()}),
            );
            return;
        }
        let mut detail = serde_json::json!({
            "svol": self.svol.name,
            "from": from.name(),
            "state": s.name(),
        });
        if s == PairState::Psue {
            detail["reason"] = m.error.clone().unwrap_or_default().into();
        }
        self.events
            .publish("pair", &self.pvol.name, "state", detail);
        let copying =
            |st: PairState| matches!(st, PairState::Copy | PairState::CopyRs | PairState::CopyRsR);
        if copying(s) && !copying(from) {
            self.publish_copy_started(m);
        } else if copying(from) && s == PairState::Pair {
            self.events.publish(
                "pair",
                &self.pvol.name,
                "copy-finished",
                serde_json::json!({
                    "svol": self.svol.name,
                    "copy": from.name(),
                    "bytes": m.copy_total * self.extent_size,
                }),
            );
        }
    }

    /// A copy (initial, resync or restore) starts with `m.copy_total` regions to copy.
    pub(crate) fn publish_copy_started(&self, m: &PairMut) {
        self.events.publish(
            "pair",
            &self.pvol.name,
            "copy-started",
            serde_json::json!({
                "svol": self.svol.name,
                "copy": m.state.name(),
                "bytes": m.copy_total * self.extent_size,
            }),
        );
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Pairs by id, and by the id of each of their volumes.
#[derive(Default)]
pub struct PairReg {
    pub by_id: HashMap<u64, Arc<Pair>>,
    /// Volume id → its pair and its side (set and cleared under the volumes' `io_lock`,
    /// held exclusively, so a write is either mirrored or not, never half).
    pub by_vol: HashMap<u64, (Arc<Pair>, Role)>,
}

impl PairReg {
    pub fn of_pvol(&self, vol: u64) -> Option<&Arc<Pair>> {
        self.by_id.values().find(|p| p.pvol.id == vol)
    }

    /// Enter a pair (both volumes).
    pub(crate) fn insert(&mut self, pair: Arc<Pair>) {
        self.by_vol
            .insert(pair.pvol.id, (pair.clone(), Role::Primary));
        self.by_vol
            .insert(pair.svol.id, (pair.clone(), Role::Secondary));
        self.by_id.insert(pair.id, pair);
    }

    /// Remove a pair (both volumes).
    pub(crate) fn remove(&mut self, id: u64) -> Option<Arc<Pair>> {
        let pair = self.by_id.remove(&id)?;
        self.by_vol.remove(&pair.pvol.id);
        self.by_vol.remove(&pair.svol.id);
        Some(pair)
    }
}

/// The split-mirror service: the pairs, their state machine, copiers, and their part of the
/// write pipeline (`io.rs`: admission before the data write, completion after it).
pub struct Mirror {
    pub pool: Arc<Pool>,
    pub volumes: Arc<Volumes>,
    pub snapshots: Arc<Snapshots>,
    pub(crate) pairs: RwLock<PairReg>,
}

impl Mirror {
    /// The service; `attach_pairs` (ops.rs) loads the recovered pairs.
    pub fn new(snapshots: Arc<Snapshots>) -> Arc<Mirror> {
        let me = Arc::new(Mirror {
            pool: snapshots.pool.clone(),
            volumes: snapshots.volumes.clone(),
            snapshots,
            pairs: RwLock::new(PairReg::default()),
        });
        let weak: std::sync::Weak<dyn StateSource> = Arc::downgrade(&me) as _;
        me.pool.add_state_source(weak);
        me
    }

    /// The pair of a volume and its side, if it is paired.
    pub fn pair_of_volume(&self, vol: u64) -> Option<(Arc<Pair>, Role)> {
        self.pairs.read().by_vol.get(&vol).cloned()
    }

    /// All pairs, by id.
    pub fn pair_list(&self) -> Vec<Arc<Pair>> {
        let mut all: Vec<Arc<Pair>> = self.pairs.read().by_id.values().cloned().collect();
        all.sort_by_key(|p| p.id);
        all
    }
}

impl StateSource for Mirror {
    fn save(&self, state: &mut State) {
        let mut pairs: Vec<Arc<Pair>> = self.pairs.read().by_id.values().cloned().collect();
        pairs.sort_by_key(|p| p.id);
        state.pairs = pairs
            .iter()
            .map(|p| {
                let m = p.st.lock();
                PairSt {
                    id: p.id,
                    pvol: p.pvol.id,
                    svol: p.svol.id,
                    group: p.group.clone(),
                    state: m.state as u8,
                    rate: m.rate_limit,
                    error: m.error.clone().unwrap_or_default(),
                    split_snap: m.split_snap.as_ref().map_or(0, |s| s.id),
                    todo: m.todo.clone(),
                    p_dirty: m.p_dirty.clone(),
                    s_dirty: m.s_dirty.clone(),
                }
            })
            .collect();
    }
}

pub use io::MirrorAdmission;
