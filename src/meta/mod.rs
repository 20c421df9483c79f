//! Metadata persistence: an append-only log of checksummed records plus checkpoints.
//!
//! * Every change to arrays, volumes or extent maps is one `MetaRecord`, appended to
//!   `<POOL>/meta.log` *and* applied to memory while the pool's metadata lock is held, so a
//!   checkpoint taken under that lock never misses or duplicates a record.
//! * A checkpoint holds the whole state at epoch E (the epoch is its generation number); it
//!   is written twice, to `<POOL>/checkpoint` and `<POOL>/checkpoint.2`, and the log that
//!   follows it has a header with the same epoch, kept twice in the log (offsets 0 and 4096).
//!   Recovery takes the newest copy that verifies and names the copies it skipped and why. Rotation writes checkpoint E+1 first, then a
//!   fresh log E+1: a crash between the two leaves a log of epoch E, which recovery ignores
//!   because the checkpoint already contains all of it.
//! * Recovery (`recover`) is the one replay routine; the offline checker (`check_pool`) and the
//!   daemon both use it. Policy: a torn tail (an incomplete or bad last frame with nothing valid
//!   after it) is cut off with a warning naming the file and offset; any other bad record stops
//!   recovery with an error naming the file and offset (`RecoveryMode::Strict`), or, in
//!   `RecoveryMode::Salvage`, ends the replay there with a report of what was not applied.

mod array_copy;
mod log;
mod recovery;
mod replay;
pub mod state;

use std::io;
use std::path::PathBuf;

pub use log::{commit_recovered, sync_dir, write_checkpoint, MetaLog};
pub use recovery::{recover, recover_with, LostRecord, Recovered, RecoveryMode, SalvageReport};
pub use replay::apply;
pub use state::{PairSt, SnapState, State, VolState};

use crate::format::FormatError;

/// The first checkpoint slot (the only one before issue 19; a pool exists when it or the
/// second slot does).
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The second checkpoint slot: every checkpoint is written to both (see `write_checkpoint`).
pub const CHECKPOINT_COPY_FILE: &str = "checkpoint.2";
/// Both checkpoint slots, in the order they are written.
pub const CHECKPOINT_FILES: [&str; 2] = [CHECKPOINT_FILE, CHECKPOINT_COPY_FILE];
pub const LOG_FILE: &str = "meta.log";

/// Failures of the metadata layer; each names the file (and offset where one applies).
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} at offset {offset}: {source}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        source: FormatError,
    },
    #[error("{path} at offset {offset}: record does not apply: {detail}")]
    Inconsistent {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{path}: {detail}")]
    Mismatch { path: PathBuf, detail: String },
    #[error("no checkpoint copy verifies: {detail}")]
    NoCheckpoint { detail: String },
}

impl MetaError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        MetaError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
