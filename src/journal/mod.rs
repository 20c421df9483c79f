//! The write journal of a journal group: an ordered, checksummed record of every change to
//! the group's volumes, kept in segment files under `<POOL>/journals/<GROUP>/`.
//!
//! A segment is `<first_seq:020>.jseg`: a `SegmentHeader`, records with consecutive sequence
//! numbers, and a `Seal` record once it is closed (by size or by age). Only sealed segments
//! are shipped. The writer (`Journal`) appends; the reader (`read_segment`) verifies every
//! record and reports the first damaged byte by file and offset.

mod reader;
mod writer;

use std::io;
use std::path::PathBuf;

pub use reader::{read_sealed, read_segment, Damage, SegmentRead};
pub use writer::{segment_name, Journal, JournalConfig, JournalStats, SealedSegment};

use crate::format::FormatError;

/// File name suffix of a journal segment.
pub const SEGMENT_SUFFIX: &str = ".jseg";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("journal segment {path} at offset {offset}: {source}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        source: FormatError,
    },
    #[error("journal segment {path} at offset {offset}: {detail}")]
    Invalid {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error(
        "journal segment {path} belongs to group {group:#x} epoch {epoch}, \
         not to group {want_group:#x} epoch {want_epoch}"
    )]
    Foreign {
        path: PathBuf,
        group: u64,
        epoch: u64,
        want_group: u64,
        want_epoch: u64,
    },
}

impl JournalError {
    /// The errno this failure means to a writer: a full disk is ENOSPC, anything else that
    /// failed on the disk (or damaged bytes) EIO.
    pub fn errno(&self) -> i32 {
        match self {
            JournalError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => libc::ENOSPC,
                Some(libc::EROFS) => libc::EROFS,
                _ => libc::EIO,
            },
            _ => libc::EIO,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Test builds only (`--features failpoints`): die at once, as `kill -9` would, at the crash
/// point `name`. A crash point is a failpoint whose action is this call, e.g.
/// `fail::fail_point!("replication::publish::before_rename", |_| crash_point("..."))`; it
/// fires only when armed (the daemon reads `FAILPOINTS`, e.g.
/// `FAILPOINTS=replication::publish::after_rename=3*off->return` crashes at the fourth pass).
///
/// One line names the point on stderr (tests look for `crash point NAME`), then the process
/// sends itself SIGKILL: no destructor, no flush, no unmount runs, and no core file is
/// written (`abort` is the fallback should the signal fail).
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "fusevold: crash point {name}: killing the process"
    );
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}
