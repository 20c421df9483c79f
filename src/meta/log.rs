//! The metadata log writer and checkpoint rotation.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{MetaError, State, CHECKPOINT_FILES, LOG_FILE};
use crate::format::{Checkpoint, LogHeader, MetaRecord};
use crate::fsio;

/// Write `bytes` to `dir/name` atomically: temporary file, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), MetaError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let f = fsio::create(&tmp).map_err(|e| MetaError::io("create", &tmp, e))?;
    fsio::pwrite(&f, bytes, 0).map_err(|e| MetaError::io("write", &tmp, e))?;
    fsio::fsync(&f).map_err(|e| MetaError::io("fsync", &tmp, e))?;
    fsio::rename(&tmp, &dst).map_err(|e| MetaError::io("rename", &dst, e))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), MetaError> {
    fsio::sync_dir(dir).map_err(|e| MetaError::io("fsync directory", dir, e))
}

/// Write a checkpoint to both slots, one after the other, each atomically (temporary file,
/// fsync, rename, fsync the directory), and then into the reserved area of every array file
/// it lists (`array_copy`: the bytes past the data area, fdatasync, then the label,
/// fdatasync). The caller cuts the log only after this returns, so every copy of epoch E+1
/// is durable before the log of epoch E is gone.
///
/// Crash ordering: never overwrite the only good copy. A slot is replaced only by a rename
/// of a complete, fsynced file, so at every moment each slot holds either its old checkpoint
/// or the new one, whole; and the caller (`MetaLog::rotate`) cuts the log only after both
/// slots are durable, so the log that the older checkpoint needs is still there whichever
/// copy survives. Recovery takes the newest copy that verifies.
pub fn write_checkpoint(dir: &Path, ckpt: &Checkpoint) -> Result<(), MetaError> {
    let bytes = ckpt.encode();
    for (i, name) in CHECKPOINT_FILES.into_iter().enumerate() {
        if i == 1 {
            fail::fail_point!("meta::checkpoint::between_slots", |_| Err(MetaError::io(
                "write checkpoint",
                dir.join(name),
                std::io::Error::other("failpoint meta::checkpoint::between_slots")
            )));
        }
        write_atomic(dir, name, &bytes)?;
    }
    fail::fail_point!("meta::checkpoint::before_arrays", |_| Err(MetaError::io(
        "write checkpoint",
        dir.join(super::array_copy::ARRAYS_DIR),
        std::io::Error::other("failpoint meta::checkpoint::before_arrays")
    )));
    super::array_copy::write_array_copies(dir, ckpt, &bytes);
    Ok(())
}

/// Make a recovered state the pool's on-disk state (a confirmed salvage, `fusevol check
/// --repair`): with `keep_log`, the old log is first copied aside to
/// `meta.log.damaged-<epoch>` (what was not applied stays available to a human); then
/// checkpoint epoch+1 is written to both slots and only then a fresh log (rotation order: a
/// crash in between leaves the new checkpoint with a stale log, which recovery ignores).
/// Returns the new epoch.
pub fn commit_recovered(dir: &Path, state: &State, keep_log: bool) -> Result<u64, MetaError> {
    let log = dir.join(LOG_FILE);
    if keep_log && log.exists() {
        let keep = dir.join(format!("{LOG_FILE}.damaged-{}", state.epoch));
        fs::copy(&log, &keep).map_err(|e| MetaError::io("copy the damaged log to", &keep, e))?;
        File::open(&keep)
            .and_then(|f| fsio::fsync(&f))
            .map_err(|e| MetaError::io("fsync", &keep, e))?;
    }
    let mut next = state.clone();
    next.epoch = state.epoch + 1;
    write_checkpoint(dir, &next.to_checkpoint())?;
    MetaLog::create(dir, state.pool_id, next.epoch)?;
    Ok(next.epoch)
}

/// Appends records to `meta.log`. Appends go to the page cache at once (so a daemon crash
/// loses nothing appended); `sync` makes them durable against a machine crash.
pub struct MetaLog {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    pool_id: u64,
    epoch: u64,
    len: u64,
    /// Where the records start (after the header copies).
    start: u64,
    /// Bytes appended since the last successful sync.
    unsynced: u64,
    /// A failed fsync of the log is never retried as if it worked: the log stays failed.
    failed: bool,
    /// Opened by an unconfirmed salvage: nothing may be appended (why, for the error).
    read_only: Option<String>,
    scratch: Vec<u8>,
}

impl MetaLog {
    /// Open an existing log for appending at `valid_len` (recovery found the valid end there;
    /// anything after it is a torn tail and is cut off).
    pub fn open(
        dir: &Path,
        pool_id: u64,
        epoch: u64,
        valid_len: u64,
    ) -> Result<MetaLog, MetaError> {
        Self::open_at(
            dir,
            pool_id,
            epoch,
            valid_len,
            LogHeader::new(pool_id, epoch),
        )
    }

    /// `open` for a log whose header is `header` (its version says where records start).
    pub fn open_at(
        dir: &Path,
        pool_id: u64,
        epoch: u64,
        valid_len: u64,
        header: LogHeader,
    ) -> Result<MetaLog, MetaError> {
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| MetaError::io("open", &path, e))?;
        let actual = file
            .metadata()
            .map_err(|e| MetaError::io("stat", &path, e))?
            .len();
        if actual != valid_len {
            fsio::set_len(&file, valid_len)
                .map_err(|e| MetaError::io("truncate torn tail of", &path, e))?;
            fsio::fsync(&file).map_err(|e| MetaError::io("fsync", &path, e))?;
        }
        let start = header.records_offset() as u64;
        Ok(Self::with_file(
            dir,
            path,
            file,
            (pool_id, epoch),
            (valid_len, start),
            None,
        ))
    }

    /// A log over an open file: `ids` (pool id, epoch), `at` (valid length, where records
    /// start); `read_only` says why appends fail, if they must.
    fn with_file(
        dir: &Path,
        path: PathBuf,
        file: File,
        ids: (u64, u64),
        at: (u64, u64),
        read_only: Option<String>,
    ) -> MetaLog {
        MetaLog {
            dir: dir.to_path_buf(),
            path,
            file,
            pool_id: ids.0,
            epoch: ids.1,
            len: at.0,
            start: at.1,
            unsynced: 0,
            failed: false,
            scratch: Vec::with_capacity(if read_only.is_some() { 0 } else { 4096 }),
            read_only,
        }
    }

    /// Open a log that must not change (an unconfirmed salvage: its damaged part stays as it
    /// is, for the operator). Appends and rotation fail with `why`.
    pub fn open_read_only(
        dir: &Path,
        pool_id: u64,
        epoch: u64,
        valid_len: u64,
        why: String,
    ) -> Result<MetaLog, MetaError> {
        let path = dir.join(LOG_FILE);
        let file = File::open(&path).map_err(|e| MetaError::io("open", &path, e))?;
        Ok(Self::with_file(
            dir,
            path,
            file,
            (pool_id, epoch),
            (valid_len, valid_len),
            Some(why),
        ))
    }

    /// Create a fresh, empty log for `epoch` (atomically replacing any old one).
    pub fn create(dir: &Path, pool_id: u64, epoch: u64) -> Result<MetaLog, MetaError> {
        // Both copies of the header are written (and fsynced) before the log is renamed
        // into place.
        let header = LogHeader::new(pool_id, epoch);
        let start = header.encode_start();
        write_atomic(dir, LOG_FILE, &start)?;
        Self::open_at(dir, pool_id, epoch, start.len() as u64, header)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= self.start
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record (to the page cache). The caller applies it to memory while still
    /// holding the lock that guards this log.
    pub fn append(&mut self, rec: &MetaRecord) -> Result<(), MetaError> {
        self.check_healthy()?;
        self.check_writable()?;
        fail::fail_point!("meta::append::write", |_| Err(MetaError::io(
            "append to",
            &self.path,
            std::io::Error::other("failpoint meta::append::write")
        )));
        self.scratch.clear();
        rec.encode_frame(&mut self.scratch);
        fsio::pwrite(&self.file, &self.scratch, self.len)
            .map_err(|e| MetaError::io("append to", &self.path, e))?;
        self.len += self.scratch.len() as u64;
        self.unsynced += self.scratch.len() as u64;
        Ok(())
    }

    /// A handle for syncing without holding the log's lock (see `Pool::sync`).
    pub fn sync_handle(&self) -> Result<File, MetaError> {
        self.file
            .try_clone()
            .map_err(|e| MetaError::io("dup", &self.path, e))
    }

    pub fn has_unsynced(&self) -> bool {
        self.unsynced > 0
    }

    /// Record that everything up to now was synced through a handle (or fail for good).
    pub fn mark_synced(
        &mut self,
        upto_unsynced: u64,
        result: std::io::Result<()>,
    ) -> Result<(), MetaError> {
        match result {
            Ok(()) => {
                self.unsynced = self.unsynced.saturating_sub(upto_unsynced);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(MetaError::io("fsync", &self.path, e))
            }
        }
    }

    pub fn unsynced(&self) -> u64 {
        self.unsynced
    }

    /// Err once an fsync of this log has failed: durability can no longer be promised.
    pub fn check_healthy(&self) -> Result<(), MetaError> {
        if self.failed {
            return Err(MetaError::io(
                "fsync",
                &self.path,
                std::io::Error::other("an earlier fsync of the metadata log failed; restart the daemon after fixing the file system"),
            ));
        }
        Ok(())
    }

    /// Err while the pool is opened read-only by an unconfirmed salvage.
    pub fn check_writable(&self) -> Result<(), MetaError> {
        match &self.read_only {
            Some(why) => Err(MetaError::io(
                "append to",
                &self.path,
                std::io::Error::new(std::io::ErrorKind::ReadOnlyFilesystem, why.clone()),
            )),
            None => Ok(()),
        }
    }

    /// Write checkpoint `state` (its epoch must be this log's epoch + 1) and start a new log.
    pub fn rotate(&mut self, state: &Checkpoint) -> Result<(), MetaError> {
        self.check_writable()?;
        assert_eq!(
            state.epoch,
            self.epoch + 1,
            "checkpoint epoch must follow the log"
        );
        write_checkpoint(&self.dir, state)?;
        fail::fail_point!("meta::rotate::after_checkpoint", |_| Err(MetaError::io(
            "rotate",
            &self.path,
            std::io::Error::other("failpoint meta::rotate::after_checkpoint")
        )));
        *self = MetaLog::create(&self.dir, self.pool_id, state.epoch)?;
        Ok(())
    }
}
