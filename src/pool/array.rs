//! One array: a backing image file with a header and a data area of fixed-size extents.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::streams::Access;
use super::PoolError;
use crate::format::array_header::{ArrayHeader, ARRAY_HEADER_SIZE, DATA_OFFSET};
use crate::stats::ArrayStats;
use crate::sys;

pub struct Array {
    pub id: u32,
    pub name: String,
    pub tier: String,
    pub path: PathBuf,
    /// None when the array is missing (see `missing`).
    file: Option<File>,
    /// The same file opened again with POSIX_FADV_RANDOM (no read-ahead), for small reads
    /// that continue no stream (`streams::Access::Random`); None: `file` serves them too.
    random_file: Option<File>,
    /// Why the array file could not be used when the pool was opened (deleted, unreadable):
    /// the pool serves without it, every I/O on its extents fails with EIO naming it, and
    /// nothing is allocated on it (issue 19 item 6).
    pub missing: Option<String>,
    pub extent_size: u64,
    pub capacity_extents: u64,
    data_offset: u64,
    /// Reference counts of this array's extents (shared with the allocator, read lock-free).
    pub refs: std::sync::Arc<super::alloc::RefTable>,
    /// Set by every data write; cleared just before an fdatasync.
    dirty: AtomicBool,
    /// A failed fdatasync is never retried as if it worked: every later sync reports it.
    sync_failed: AtomicBool,
    /// What the daemon read from and wrote to this file (`fusevol stats --arrays`).
    pub stats: crate::stats::ArrayStats,
    /// Requests on this file in progress now (always counted: a cluster node's I/O load).
    pub in_flight: crate::stats::InFlight,
}

/// Create a new array file: sparse, header written and synced.
pub fn create_array_file(path: &Path, header: &ArrayHeader) -> Result<(), PoolError> {
    let f =
        crate::fsio::create_new(path).map_err(|e| PoolError::io("create array file", path, e))?;
    crate::fsio::set_len(&f, header.data_offset + header.capacity)
        .map_err(|e| PoolError::io("size array file", path, e))?;
    crate::fsio::pwrite(&f, &header.encode(), 0)
        .map_err(|e| PoolError::io("write array header", path, e))?;
    crate::fsio::fsync(&f).map_err(|e| PoolError::io("fsync array file", path, e))?;
    Ok(())
}

/// Read and verify the header of an array file. Errors name the file and offset.
pub fn read_header(path: &Path) -> Result<(File, ArrayHeader), PoolError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| PoolError::io("open array file", path, e))?;
    let mut buf = vec![0u8; ARRAY_HEADER_SIZE];
    let n = read_full(&f, &mut buf, 0).map_err(|e| PoolError::io("read array header", path, e))?;
    let h = ArrayHeader::decode(&buf[..n]).map_err(|source| {
        let offset = match source {
            crate::format::FormatError::BadChecksum { .. } => (ARRAY_HEADER_SIZE - 4) as u64,
            _ => 0,
        };
        PoolError::BadHeader {
            path: path.to_path_buf(),
            offset,
            source,
        }
    })?;
    Ok((f, h))
}

/// Read-ahead hints on the array files (issue 18; measured in docs/benchmarks.md, "Read-ahead
/// hints"). By default a read that spans several extents first tells the kernel about all of
/// them (POSIX_FADV_WILLNEED), so the arrays read them in parallel instead of one piece after
/// the other; single-extent reads (random 4 KiB) get no hint and keep the kernel's default
/// read-ahead, which already reads a lone small random read as it is. `FUSEVOL_READ_HINTS`
/// chooses otherwise for measuring: `none` (no hints, the behaviour before issue 18),
/// `random` (POSIX_FADV_RANDOM on every array file: no read-ahead at all; it lost on
/// sequential reads and won nothing on random ones), `willneed`, or `random,willneed`.
///
/// `stream` (on by default since the second round of issue 18): small reads that continue no
/// stream of their volume (`streams::ReadStreams`) go through a second descriptor of the array
/// opened with POSIX_FADV_RANDOM, so they read exactly their bytes; streams and large reads
/// keep the read-ahead of the first. `FUSEVOL_READ_HINTS=willneed` is the behaviour before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadHints {
    pub random: bool,
    pub willneed: bool,
    pub stream: bool,
}

pub fn read_hints() -> ReadHints {
    static HINTS: std::sync::OnceLock<ReadHints> = std::sync::OnceLock::new();
    *HINTS.get_or_init(|| {
        let default = ReadHints {
            random: false,
            willneed: true,
            stream: true,
        };
        let Ok(v) = std::env::var("FUSEVOL_READ_HINTS") else {
            return default;
        };
        let h = ReadHints {
            random: v.split(',').any(|w| w.trim() == "random"),
            willneed: v.split(',').any(|w| w.trim() == "willneed"),
            stream: v.split(',').any(|w| w.trim() == "stream"),
        };
        if h != default {
            log::info!("array read hints (FUSEVOL_READ_HINTS={v}): {h:?}");
        }
        h
    })
}

/// No read-ahead on this open file description (POSIX_FADV_RANDOM). A hint: errors are ignored.
fn advise_random(f: &File) {
    use std::os::unix::io::AsRawFd;
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
    );
}

fn read_full(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

impl Array {
    pub fn new(
        file: File,
        path: PathBuf,
        h: &ArrayHeader,
        refs: std::sync::Arc<super::alloc::RefTable>,
    ) -> Array {
        if read_hints().random {
            advise_random(&file);
        }
        let random_file = if read_hints().stream {
            // Its own open file description: the advice is per description, not per inode.
            match OpenOptions::new().read(true).open(&path) {
                Ok(f) => {
                    advise_random(&f);
                    Some(f)
                }
                Err(e) => {
                    log::warn!(
                        "array file {}: cannot open it a second time for random reads ({e}); \
                         they keep the kernel's read-ahead",
                        path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        Array {
            id: h.array_id,
            name: h.name.clone(),
            tier: h.tier.clone(),
            path,
            file: Some(file),
            random_file,
            missing: None,
            extent_size: h.extent_size,
            capacity_extents: h.capacity / h.extent_size,
            data_offset: h.data_offset,
            refs,
            dirty: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
            stats: Default::default(),
            in_flight: Default::default(),
        }
    }

    /// An array whose file is missing or unreadable (`why`): known from the metadata only.
    pub fn missing(
        rec: &crate::format::ArrayRec,
        extent_size: u64,
        path: PathBuf,
        refs: std::sync::Arc<super::alloc::RefTable>,
        why: String,
    ) -> Array {
        Array {
            id: rec.id,
            name: rec.name.clone(),
            tier: rec.tier.clone(),
            path,
            file: None,
            random_file: None,
            missing: Some(why),
            extent_size,
            capacity_extents: rec.capacity / extent_size,
            data_offset: DATA_OFFSET,
            refs,
            dirty: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
            stats: Default::default(),
            in_flight: Default::default(),
        }
    }

    /// The open file, or EIO naming the missing array file.
    fn f(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(|| {
            io::Error::other(format!(
                "array '{}' is missing ({}); its extents cannot be read or written",
                self.name,
                self.missing.as_deref().unwrap_or("unknown")
            ))
        })
    }

    /// Tell the kernel that `len` bytes at `offset` of extent `index` will be read soon
    /// (read-ahead starts now). A hint: errors are ignored.
    pub fn will_need(&self, index: u64, offset: u64, len: u64) {
        use std::os::unix::io::AsRawFd;
        let Some(file) = &self.file else { return };
        let _ = nix::fcntl::posix_fadvise(
            file.as_raw_fd(),
            self.file_offset(index, offset) as i64,
            len as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }

    /// Byte offset in the file of `offset` inside extent `index`.
    pub fn file_offset(&self, index: u64, offset: u64) -> u64 {
        self.data_offset + index * self.extent_size + offset
    }

    /// Read `buf.len()` bytes at `offset` inside extent `index`; bytes past the file end are
    /// zero. `access` picks the descriptor: read-ahead for streams, none for lone small reads.
    pub fn read(&self, index: u64, offset: u64, buf: &mut [u8], access: Access) -> io::Result<()> {
        fail::fail_point!("array::read::eio", |_| Err(io::Error::from_raw_os_error(
            libc::EIO
        )));
        let f = match (access, &self.random_file) {
            (Access::Random, Some(rf)) => rf,
            _ => self.f()?,
        };
        let _busy = self.in_flight.enter();
        // Tests make the disk slow here (`sleep(MS)`): the node's I/O load rises.
        fail::fail_point!("array::read::slow");
        let t0 = ArrayStats::clock();
        let r = read_full(f, buf, self.file_offset(index, offset));
        self.stats.read(t0, buf.len() as u64, r.is_ok());
        buf[r?..].fill(0);
        Ok(())
    }

    pub fn write(&self, index: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        fail::fail_point!("array::write::eio", |_| Err(io::Error::from_raw_os_error(
            libc::EIO
        )));
        let f = self.f()?;
        self.dirty.store(true, Ordering::Release);
        let _busy = self.in_flight.enter();
        let t0 = ArrayStats::clock();
        let r = crate::fsio::pwrite(f, data, self.file_offset(index, offset));
        self.stats.write(t0, data.len() as u64, r.is_ok());
        r
    }

    /// Copy `len` bytes at `offset` of extent `src` (this array) to the same offset of extent
    /// `dst_index` in array `dst`, inside the kernel (copy_file_range) where it can.
    pub fn copy_to(
        &self,
        src: u64,
        dst: &Array,
        dst_index: u64,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (from, to) = (self.f()?, dst.f()?);
        dst.dirty.store(true, Ordering::Release);
        let _busy = dst.in_flight.enter();
        let t0 = ArrayStats::clock();
        let r = crate::fsio::copy_range(
            from,
            self.file_offset(src, offset),
            to,
            dst.file_offset(dst_index, offset),
            len,
        );
        dst.stats.copy(t0, len, r.is_ok());
        r
    }

    /// Deallocate a byte range inside one extent (reads return zeros afterwards).
    pub fn punch(&self, index: u64, offset: u64, len: u64) -> io::Result<()> {
        if self.file.is_none() {
            // A freed extent of a missing array: nothing to deallocate, and it is never
            // reused (no allocation on a missing array).
            return Ok(());
        }
        self.dirty.store(true, Ordering::Release);
        crate::fsio::punch(self.f()?, self.file_offset(index, offset), len)
    }

    /// fdatasync if anything was written since the last sync. A failure sticks.
    pub fn sync(&self) -> io::Result<()> {
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(io::Error::other(format!(
                "an earlier fsync of array file {} failed; its data may be lost",
                self.path.display()
            )));
        }
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        fail::fail_point!("array::sync::eio", |_| {
            self.sync_failed.store(true, Ordering::Release);
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        let _busy = self.in_flight.enter();
        let t0 = ArrayStats::clock();
        let r = crate::fsio::fdatasync(self.f()?);
        self.stats.sync(t0, r.is_ok());
        r.inspect_err(|_| {
            self.sync_failed.store(true, Ordering::Release);
        })
    }

    /// Bytes the file occupies on its file system.
    pub fn on_disk(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    }

    /// The extents that hold any data according to the file system (SEEK_DATA).
    pub fn extents_with_data(&self) -> io::Result<Vec<u64>> {
        let start = self.data_offset;
        let end = self.data_offset + self.capacity_extents * self.extent_size;
        let mut out = Vec::new();
        for (a, b) in sys::data_regions(self.f()?, start, end)? {
            let first = (a - start) / self.extent_size;
            let last = (b - start).div_ceil(self.extent_size);
            for i in first..last {
                if out.last() != Some(&i) {
                    out.push(i);
                }
            }
        }
        Ok(out)
    }
}

/// Default data offset for new arrays.
pub const fn default_data_offset() -> u64 {
    DATA_OFFSET
}
