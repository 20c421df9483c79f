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
//! never less. A quick split takes a snapshot of the P-VOL at the split instant; the rest of
//! the copy reads from it, so the S-VOL only ever shows the split-time image.

pub mod bitmap;
mod copier;
mod io;
mod ops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::snapshot::Snapshot;
use crate::volume::Volume;
use bitmap::Bitmap;

/// Default background copy limit: 128 MiB/s.
pub const DEFAULT_COPY_RATE: u64 = 128 << 20;
const STRIPES: usize = 256;
/// Prefix of the snapshots a quick split takes (not valid as a user's snapshot name).
pub const SPLIT_SNAPSHOT_PREFIX: &str = ".split-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PairState {
    Copy = 1,
    Pair = 2,
    Psus = 3,
    CopyRs = 4,
    CopyRsR = 5,
    Psue = 6,
}

impl PairState {
    pub fn from_u8(v: u8) -> Option<PairState> {
        Some(match v {
            1 => PairState::Copy,
            2 => PairState::Pair,
            3 => PairState::Psus,
            4 => PairState::CopyRs,
            5 => PairState::CopyRsR,
            6 => PairState::Psue,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PairState::Copy => "COPY",
            PairState::Pair => "PAIR",
            PairState::Psus => "PSUS",
            PairState::CopyRs => "COPY(RS)",
            PairState::CopyRsR => "COPY(RS-R)",
            PairState::Psue => "PSUE",
        }
    }

    /// Host writes to the P-VOL go to the S-VOL too.
    pub fn dual_writes(self) -> bool {
        matches!(
            self,
            PairState::Copy | PairState::Pair | PairState::CopyRs | PairState::CopyRsR
        )
    }
}

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
    stripes: Vec<Mutex<()>>,
    pub(crate) stop: AtomicBool,
    pub(crate) worker: Mutex<Option<JoinHandle<()>>>,
}

impl Pair {
    pub(crate) fn new(
        id: u64,
        pvol: Arc<Volume>,
        svol: Arc<Volume>,
        group: String,
        separate_arrays: bool,
        m: PairMut,
    ) -> Pair {
        Pair {
            id,
            pvol,
            svol,
            group,
            separate_arrays,
            st: Mutex::new(m),
            changed: Condvar::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stop: AtomicBool::new(false),
            worker: Mutex::new(None),
        }
    }

    pub fn state(&self) -> PairState {
        self.st.lock().state
    }

    /// Lock the regions (in stripe order, so two lockers never deadlock).
    pub(crate) fn lock_regions(
        &self,
        regions: impl IntoIterator<Item = u64>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = regions
            .into_iter()
            .map(|r| (r as usize) % STRIPES)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| self.stripes[i].lock()).collect()
    }

    pub(crate) fn set_state(&self, m: &mut PairMut, s: PairState) {
        m.state = s;
        self.changed.notify_all();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Pairs by id.
#[derive(Default)]
pub struct Pairs {
    pub by_id: HashMap<u64, Arc<Pair>>,
}

impl Pairs {
    pub fn of_pvol(&self, vol: u64) -> Option<&Arc<Pair>> {
        self.by_id.values().find(|p| p.pvol.id == vol)
    }
}
