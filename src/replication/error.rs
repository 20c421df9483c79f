//! Replication failures, each named after what failed and carrying what it failed on.
//!
//! The public group operations return `PoolError` through `ReplicationError::into_pool` (a
//! method: the core's error type is extended only in its own module), which keeps the
//! meaning: a refusal is `Busy`, a bad request `Invalid`, a full disk `NoSpace`, a failed
//! disk or remote directory an I/O error (never `Invalid`). Background threads report the
//! Display text with `Group::set_error`.

use std::io;
use std::path::PathBuf;

use crate::format::FormatError;
use crate::journal::JournalError;
use crate::meta::MetaError;
use crate::pool::{IoError, PoolError};

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The group's journal: open, append, seal, sync, purge, reading a sealed segment.
    #[error("{source}")]
    Journal { group: String, source: JournalError },
    /// The remote directory: listing, publishing, the acknowledgement, the manifest, a
    /// failback request, removing another epoch's files.
    #[error("{op} {}: {source}", path.display())]
    Remote {
        group: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Publishing a sealed segment into the remote directory.
    #[error(
        "shipping {segment} to {}: {source}; the journal keeps it and shipping resumes by itself",
        dir.display()
    )]
    Publish {
        group: String,
        segment: String,
        dir: PathBuf,
        source: io::Error,
    },
    /// A local file the operation writes (a restore's image files).
    #[error("{op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A file of the remote directory (or a record) that does not decode.
    #[error("{}: {source}", path.display())]
    Damaged { path: PathBuf, source: FormatError },
    /// The remote directory names another group, pool or epoch than this site's: nothing is
    /// shipped or applied until that is resolved.
    #[error("{detail}")]
    Conflict { group: String, detail: String },
    /// An image file a restore writes (file mode).
    #[error("{op}: {source}")]
    ImageFile { op: &'static str, source: io::Error },
    /// One record of a walk through the segments (a restore).
    #[error("{} sequence number {seq}: {source}", path.display())]
    Record {
        path: PathBuf,
        seq: u64,
        source: Box<ReplicationError>,
    },
    /// Building the restored image failed; what it made is removed.
    #[error("{0}; nothing of the restore is kept")]
    RestoreUndone(Box<ReplicationError>),
    /// The segments of the remote directory do not hold what is needed (a gap); `path` is
    /// the segment before it.
    #[error("{detail}")]
    Segment { path: PathBuf, detail: String },
    /// The secondary waits for a record the remote directory no longer holds.
    #[error(
        "waiting for sequence number {want}: the remote directory starts at {first} (a gap; nothing after it is applied)"
    )]
    Gap {
        group: String,
        want: u64,
        first: u64,
    },
    /// Applying one record of a published segment to the secondary's volumes.
    #[error("{} sequence number {seq}: {source}; nothing after it is applied", path.display())]
    Apply {
        group: String,
        path: PathBuf,
        seq: u64,
        source: Box<ReplicationError>,
    },
    /// A journal record whose payload does not decode.
    #[error("{source}")]
    BadRecord { seq: u64, source: FormatError },
    /// Replaying one journal record into the primary's volumes after a crash.
    #[error("redo of {} sequence number {seq}: {source}", path.display())]
    Redo {
        group: String,
        path: PathBuf,
        seq: u64,
        source: Box<IoError>,
    },
    /// A record names a volume the group does not have.
    #[error("record for volume #{volume}, which the group does not have")]
    NotInGroup { volume: u64 },
    /// A record names a volume the image being restored does not have.
    #[error("a record for volume #{volume}, which the image being restored does not have")]
    NotInImage { volume: u64 },
    /// A record adds a volume whose name another volume of this pool has.
    #[error("volume '{volume}' already exists in this pool and is not part of the group")]
    NameTaken { volume: String },
    /// Making the pool durable (data, then metadata) failed.
    #[error("sync: {source}")]
    Sync { source: PoolError },
    /// Making the data durable before a marker's snapshot failed.
    #[error("sync before snapshot '{snapshot}': {source}")]
    SnapshotSync { snapshot: String, source: PoolError },
    /// A data write, discard or resize of a group volume.
    #[error(transparent)]
    Data(#[from] IoError),
    /// The failback copy of the regions the secondary asked for.
    #[error("failback copy: {source}")]
    FailbackCopy {
        group: String,
        source: Box<ReplicationError>,
    },
    /// A point-in-time restore.
    #[error("group '{group}': restore: {source}")]
    Restore {
        group: String,
        source: Box<ReplicationError>,
    },
    /// Anything else that failed for a group, named by it.
    #[error("group '{group}': {source}")]
    Group {
        group: String,
        source: Box<ReplicationError>,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("journal group '{0}' does not exist")]
    NoGroup(String),
    /// Refused in the group's (or volume's) present state (busy).
    #[error("{0}")]
    Refused(String),
    /// A request that cannot be done as asked (invalid).
    #[error("{0}")]
    BadRequest(String),
    /// What the request names is not there.
    #[error("{0}")]
    NotFound(String),
}

impl ReplicationError {
    pub(crate) fn journal(group: &str, source: JournalError) -> Self {
        ReplicationError::Journal {
            group: group.to_string(),
            source,
        }
    }

    pub(crate) fn remote(
        group: &str,
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        ReplicationError::Remote {
            group: group.to_string(),
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sync(source: PoolError) -> Self {
        ReplicationError::Sync { source }
    }

    pub(crate) fn in_group(group: &str, source: impl Into<ReplicationError>) -> Self {
        ReplicationError::Group {
            group: group.to_string(),
            source: Box::new(source.into()),
        }
    }
}

/// A full disk (or quota) in an I/O error.
fn disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// An I/O failure of `op` on `path`, as the pool reports one; a full disk is `NoSpace`.
fn io_failure(text: String, op: &'static str, path: PathBuf, source: io::Error) -> PoolError {
    if disk_full(&source) {
        PoolError::NoSpace(text)
    } else {
        PoolError::Io { op, path, source }
    }
}

/// The inner failure's meaning, with the wrapper's words in front of its message.
fn prefixed(prefix: &str, inner: PoolError) -> PoolError {
    reworded(inner, |m| format!("{prefix}{m}"))
}

/// The failure's meaning (its variant, an I/O error's kind), its message rewritten.
fn reworded(inner: PoolError, p: impl FnOnce(String) -> String) -> PoolError {
    match inner {
        PoolError::Invalid(m) => PoolError::Invalid(p(m)),
        PoolError::NotFound(m) => PoolError::NotFound(p(m)),
        PoolError::Exists(m) => PoolError::Exists(p(m)),
        PoolError::Busy(m) => PoolError::Busy(p(m)),
        PoolError::NoSpace(m) => PoolError::NoSpace(p(m)),
        PoolError::Inconsistent(m) => PoolError::Inconsistent(p(m)),
        PoolError::Io { op, path, source } => PoolError::Io {
            op,
            path,
            source: io::Error::new(source.kind(), p(source.to_string())),
        },
        other => other,
    }
}

impl ReplicationError {
    /// What a public group operation reports, in the words `text` (the meaning stays
    /// this failure's: an I/O error stays one, a full disk `NoSpace`).
    pub fn into_pool_saying(self, text: String) -> PoolError {
        reworded(self.into_pool(), |_| text)
    }

    /// What a public group operation reports (the control protocol's code follows from it).
    pub fn into_pool(self) -> PoolError {
        use ReplicationError as R;
        let text = self.to_string();
        match self {
            R::Refused(m) => PoolError::Busy(m),
            R::BadRequest(m) => PoolError::Invalid(m),
            R::NotFound(m) => PoolError::NotFound(m),
            R::NoGroup(_) => PoolError::NotFound(text),
            R::NameTaken { .. } => PoolError::Exists(text),
            R::Pool(p) => p,
            R::Meta(m) => PoolError::Meta(m),
            R::Journal { source, .. } => journal_failure(text, source),
            R::Publish { dir, source, .. } => io_failure(text, "publishing into", dir, source),
            R::Remote {
                op, path, source, ..
            }
            | R::File { op, path, source } => io_failure(text, op, path, source),
            R::ImageFile { op, source } => io_failure(text, op, PathBuf::new(), source),
            R::Record { path, seq, source } => prefixed(
                &format!("{} sequence number {seq}: ", path.display()),
                source.into_pool(),
            ),
            R::Redo {
                path, seq, source, ..
            } => prefixed(
                &format!("redo of {} sequence number {seq}: ", path.display()),
                R::Data(*source).into_pool(),
            ),
            R::RestoreUndone(source) => reworded(source.into_pool(), |m| {
                format!("{m}; nothing of the restore is kept")
            }),
            R::Data(d) => match d {
                IoError::NoSpace { .. } | IoError::JournalFull { .. } => PoolError::NoSpace(text),
                IoError::Journal { source, .. } => journal_failure(text, source),
                IoError::Array {
                    op, path, source, ..
                } => io_failure(text, op, path, source),
                IoError::Meta { source, .. } => PoolError::Meta(source),
                IoError::Sync { source, .. } => source,
                IoError::ReadOnly { .. } | IoError::Moved { .. } => PoolError::Busy(text),
                IoError::BeyondEnd { .. } | IoError::Invalid { .. } => PoolError::Invalid(text),
            },
            R::Sync { source } => prefixed("sync: ", source),
            R::SnapshotSync { snapshot, source } => {
                prefixed(&format!("sync before snapshot '{snapshot}': "), source)
            }
            R::FailbackCopy { source, .. } => prefixed("failback copy: ", source.into_pool()),
            R::Restore { group, source } => {
                prefixed(&format!("group '{group}': restore: "), source.into_pool())
            }
            R::Group { group, source } => {
                prefixed(&format!("group '{group}': "), source.into_pool())
            }
            R::Conflict { detail, .. } => PoolError::Busy(detail),
            R::Apply { .. }
            | R::Damaged { .. }
            | R::BadRecord { .. }
            | R::Segment { .. }
            | R::Gap { .. }
            | R::NotInGroup { .. }
            | R::NotInImage { .. } => PoolError::Inconsistent(text),
        }
    }
}

/// A journal failure keeps its kind: a full disk is `NoSpace`, a failed disk an I/O error,
/// damaged or foreign bytes inconsistent.
fn journal_failure(text: String, e: JournalError) -> PoolError {
    if e.errno() == libc::ENOSPC {
        return PoolError::NoSpace(text);
    }
    match e {
        JournalError::Io { op, path, source } => PoolError::Io { op, path, source },
        _ => PoolError::Inconsistent(text),
    }
}
