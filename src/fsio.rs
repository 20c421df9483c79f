//! The file I/O layer for pool files: every write, hole punch, size change, rename, removal
//! and sync of the metadata log, the checkpoints (both slots and the arrays' copies), the
//! arrays' data and the journals goes through these functions.
//!
//! They are the plain system calls. In `--features failpoints` builds a test can also
//! *record* them (`record::start`): every mutation of a file under a directory, in the order
//! it was issued, with its bytes, and every sync. The torn-write harness
//! (`tests/torn_writes.rs`) replays a prefix of that record onto a copy of the pool taken
//! before — the state a machine crash can leave (the dm-log-writes / CrashMonkey method),
//! which kill -9 cannot produce because the page cache survives it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `pwrite` all of `buf` at `offset`.
pub fn pwrite(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    f.write_all_at(buf, offset)?;
    #[cfg(feature = "failpoints")]
    record::write(f, buf, offset);
    Ok(())
}

/// pwritev of all `parts` at `offset`, looping over short writes.
pub fn pwritev(f: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let (mut done, mut at) = (0usize, offset);
    while done < total {
        // The slices that remain after `done` bytes.
        let mut skip = done;
        let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(parts.len());
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            slices.push(io::IoSlice::new(&p[skip..]));
            skip = 0;
        }
        let n = nix::sys::uio::pwritev(f, &slices, at as i64).map_err(io::Error::from)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        done += n;
        at += n as u64;
    }
    #[cfg(feature = "failpoints")]
    record::write(f, &parts.concat(), offset);
    Ok(())
}

/// Deallocate `len` bytes at `offset` (reads return zeros afterwards).
pub fn punch(f: &File, offset: u64, len: u64) -> io::Result<()> {
    crate::sys::punch_hole(f, offset, len)?;
    #[cfg(feature = "failpoints")]
    record::punch(f, offset, len);
    Ok(())
}

/// Copy `len` bytes between files (in the kernel where it can).
pub fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<()> {
    crate::sys::copy_range(src, src_off, dst, dst_off, len)?;
    #[cfg(feature = "failpoints")]
    record::copied(dst, dst_off, len);
    Ok(())
}

/// Set a file's length.
pub fn set_len(f: &File, len: u64) -> io::Result<()> {
    f.set_len(len)?;
    #[cfg(feature = "failpoints")]
    record::set_len(f, len);
    Ok(())
}

/// fdatasync.
pub fn fdatasync(f: &File) -> io::Result<()> {
    f.sync_data()?;
    #[cfg(feature = "failpoints")]
    record::sync(f);
    Ok(())
}

/// fsync.
pub fn fsync(f: &File) -> io::Result<()> {
    f.sync_all()?;
    #[cfg(feature = "failpoints")]
    record::sync(f);
    Ok(())
}

/// Create (or truncate) a file for writing.
pub fn create(path: &Path) -> io::Result<File> {
    let f = File::create(path)?;
    #[cfg(feature = "failpoints")]
    record::create(path);
    Ok(f)
}

/// Create (or truncate) a file for reading and writing.
pub fn create_rw(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    #[cfg(feature = "failpoints")]
    record::create(path);
    Ok(f)
}

/// Create a new file (read-write; fails if it exists).
pub fn create_new(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    #[cfg(feature = "failpoints")]
    record::create(path);
    Ok(f)
}

/// Rename a file.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    #[cfg(feature = "failpoints")]
    record::rename(from, to);
    Ok(())
}

/// Remove a file.
pub fn remove(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    #[cfg(feature = "failpoints")]
    record::remove(path);
    Ok(())
}

/// fsync a directory (makes its renames, creations and removals durable).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    #[cfg(feature = "failpoints")]
    record::sync_path(dir);
    Ok(())
}

/// Recording the I/O of pool files, for the torn-write harness (tests only).
#[cfg(feature = "failpoints")]
pub mod record {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};

    use parking_lot::Mutex;

    /// One recorded operation; paths are relative to the recorded directory.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Op {
        Write {
            path: PathBuf,
            offset: u64,
            data: Vec<u8>,
        },
        Punch {
            path: PathBuf,
            offset: u64,
            len: u64,
        },
        SetLen {
            path: PathBuf,
            len: u64,
        },
        Create {
            path: PathBuf,
        },
        Rename {
            from: PathBuf,
            to: PathBuf,
        },
        Remove {
            path: PathBuf,
        },
        /// An fsync/fdatasync of a file or directory: everything before it in the record
        /// that touched this path is durable.
        Sync {
            path: PathBuf,
        },
        /// A point the test marks (e.g. "everything acknowledged up to here was fsynced").
        Mark(u64),
    }

    static ON: AtomicBool = AtomicBool::new(false);
    static REC: Mutex<Option<(PathBuf, Vec<Op>)>> = Mutex::new(None);

    /// Start recording the operations on files under `root` (replacing any record).
    pub fn start(root: &Path) {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        *REC.lock() = Some((root, Vec::new()));
        ON.store(true, Ordering::Release);
    }

    /// Stop recording and return what was recorded.
    pub fn stop() -> Vec<Op> {
        ON.store(false, Ordering::Release);
        REC.lock().take().map(|(_, ops)| ops).unwrap_or_default()
    }

    /// Operations recorded so far (recording goes on).
    pub fn len() -> usize {
        REC.lock().as_ref().map(|(_, o)| o.len()).unwrap_or(0)
    }

    /// Add a mark; returns its index in the record.
    pub fn mark(id: u64) -> usize {
        let mut g = REC.lock();
        match g.as_mut() {
            Some((_, ops)) => {
                ops.push(Op::Mark(id));
                ops.len() - 1
            }
            None => 0,
        }
    }

    fn on() -> bool {
        ON.load(Ordering::Acquire)
    }

    fn rel(root: &Path, p: &Path) -> Option<PathBuf> {
        p.strip_prefix(root).ok().map(Path::to_path_buf)
    }

    fn file_path(f: &File) -> Option<PathBuf> {
        let p = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
        let s = p.to_string_lossy();
        // An unlinked file's writes never reach a name after a crash.
        if s.ends_with(" (deleted)") {
            return None;
        }
        Some(p)
    }

    fn abs(p: &Path) -> PathBuf {
        match (p.parent(), p.file_name()) {
            (Some(d), Some(n)) if !d.as_os_str().is_empty() => std::fs::canonicalize(d)
                .map(|d| d.join(n))
                .unwrap_or_else(|_| p.to_path_buf()),
            _ => std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()),
        }
    }

    fn push(make: impl FnOnce(&Path) -> Option<Op>) {
        let mut g = REC.lock();
        if let Some((root, ops)) = g.as_mut() {
            if let Some(op) = make(root) {
                ops.push(op);
            }
        }
    }

    fn push_file(f: &File, make: impl FnOnce(PathBuf) -> Op) {
        if !on() {
            return;
        }
        let Some(p) = file_path(f) else { return };
        push(|root| rel(root, &p).map(make));
    }

    pub(super) fn write(f: &File, data: &[u8], offset: u64) {
        push_file(f, |path| Op::Write {
            path,
            offset,
            data: data.to_vec(),
        });
    }

    pub(super) fn punch(f: &File, offset: u64, len: u64) {
        push_file(f, |path| Op::Punch { path, offset, len });
    }

    /// A copy_file_range is recorded as a write of what the destination holds now.
    pub(super) fn copied(dst: &File, offset: u64, len: u64) {
        if !on() {
            return;
        }
        let mut data = vec![0u8; len as usize];
        let mut got = 0;
        while got < data.len() {
            match dst.read_at(&mut data[got..], offset + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        write(dst, &data, offset);
    }

    pub(super) fn set_len(f: &File, len: u64) {
        push_file(f, |path| Op::SetLen { path, len });
    }

    pub(super) fn sync(f: &File) {
        push_file(f, |path| Op::Sync { path });
    }

    pub(super) fn sync_path(p: &Path) {
        if !on() {
            return;
        }
        let p = abs(p);
        push(|root| rel(root, &p).map(|path| Op::Sync { path }));
    }

    pub(super) fn create(p: &Path) {
        if !on() {
            return;
        }
        let p = abs(p);
        push(|root| rel(root, &p).map(|path| Op::Create { path }));
    }

    pub(super) fn rename(from: &Path, to: &Path) {
        if !on() {
            return;
        }
        let (from, to) = (abs(from), abs(to));
        push(|root| {
            Some(Op::Rename {
                from: rel(root, &from)?,
                to: rel(root, &to)?,
            })
        });
    }

    pub(super) fn remove(p: &Path) {
        if !on() {
            return;
        }
        let p = abs(p);
        push(|root| rel(root, &p).map(|path| Op::Remove { path }));
    }
}
