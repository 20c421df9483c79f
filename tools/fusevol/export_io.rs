//! The I/O of `volume export`: reading the extents of a plan from the mount with several
//! reads in flight, delivered in order, and writing the output with large vectored writes
//! whose writeback starts behind the writer.
//!
//! Reads: the allocated extents are cut into blocks of up to `BLOCK` bytes (adjacent extents
//! coalesced; an extent larger than a block is cut in pieces), `READERS` threads read them
//! with `O_DIRECT` (no copy into the FUSE file's page cache, and the kernel sends the
//! daemon a large read as several requests at once) — block `j` by thread `j % READERS`, so
//! the writer takes them back in order from each thread's channel. A reader also computes
//! the CRC32C of each extent record it read, so the checksums run beside the I/O.
//!
//! Writes: one `writev` per block (record heads, data and checksums without copying the
//! data), and every `WINDOW` bytes the written range is given `POSIX_FADV_DONTNEED`, which
//! starts its writeback now (and lets the page cache drop it once clean) instead of leaving
//! a whole volume of dirty pages for the final `fsync`.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use fusevol::control::ExportPlan;

use crate::exit::Failure;

/// Bytes per read (and per write of the stream).
pub(crate) const BLOCK: u64 = 4 << 20;
/// Reader threads, each with one block read ahead of the writer.
const READERS: usize = 4;
/// Buffers per reader: one being read, one waiting for the writer, one being written.
const BUFFERS: usize = 3;
/// Writeback of the output is started every this many bytes.
const WINDOW: u64 = 16 << 20;
const ALIGN: usize = 4096;

fn local(msg: String) -> Failure {
    Failure::Local(msg)
}

/// Bytes of extent `i` in a volume of `size`.
pub(crate) fn extent_len(i: u64, es: u64, size: u64) -> u64 {
    es.min(size - i * es)
}

/// A range of the volume read at once: whole extents, or a piece of one extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub off: u64,
    pub len: u64,
}

/// The blocks of a plan's extents, in order.
pub(crate) fn blocks(plan: &ExportPlan) -> impl Iterator<Item = Block> + '_ {
    let es = plan.extent_size;
    plan.extents.iter().flat_map(move |&(a, n)| {
        let (start, end) = (a * es, ((a + n) * es).min(plan.size));
        (start..end).step_by(BLOCK as usize).map(move |off| Block {
            off,
            len: BLOCK.min(end - off),
        })
    })
}

/// The part of one extent inside a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The extent's index.
    pub index: u64,
    /// Bytes of the piece, from the start of the block.
    pub start: usize,
    pub len: usize,
    /// The piece starts its extent (its record head goes before it).
    pub first: bool,
    /// The piece ends its extent (its record checksum goes after it).
    pub last: bool,
}

pub(crate) fn pieces(b: Block, es: u64, size: u64) -> Vec<Piece> {
    let mut v = Vec::new();
    let mut off = b.off;
    while off < b.off + b.len {
        let index = off / es;
        let ext_end = ((index + 1) * es).min(size);
        let end = ext_end.min(b.off + b.len);
        v.push(Piece {
            index,
            start: (off - b.off) as usize,
            len: (end - off) as usize,
            first: off == index * es,
            last: end == ext_end,
        });
        off = end;
    }
    v
}

/// The head of an extent record (format::stream): tag 1, index, length.
pub(crate) fn record_head(index: u64, len: u64) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[0] = 1;
    h[1..9].copy_from_slice(&index.to_le_bytes());
    h[9..13].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

/// A block's buffer, page-aligned for O_DIRECT.
pub(crate) struct Buf {
    v: Vec<u8>,
    at: usize,
    len: usize,
}

impl Buf {
    fn new() -> Buf {
        let v = vec![0u8; BLOCK as usize + ALIGN];
        let at = v.as_ptr().align_offset(ALIGN).min(ALIGN);
        Buf { v, at, len: 0 }
    }

    pub(crate) fn data(&self) -> &[u8] {
        &self.v[self.at..self.at + self.len]
    }
}

/// A block as read, with for each piece the CRC32C of its record bytes: the head and the
/// data for a piece that starts its extent, the data alone for a later piece.
pub(crate) struct Filled {
    pub block: Block,
    pub buf: Buf,
    pub crcs: Vec<u32>,
}

/// The file to read: opened with O_DIRECT where the file system allows it, and without
/// (read-ahead advised sequential) for the reads O_DIRECT refuses.
pub(crate) struct Source {
    path: String,
    direct: Option<File>,
    buffered: File,
}

impl Source {
    pub(crate) fn open(path: &str) -> Result<Source, Failure> {
        let buffered = File::open(path).map_err(|e| local(format!("cannot open {path}: {e}")))?;
        let _ = nix::fcntl::posix_fadvise(
            buffered.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Ok(Source {
            path: path.to_string(),
            direct,
            buffered,
        })
    }

    fn read(&self, dst: &mut [u8], off: u64) -> Result<(), Failure> {
        let r = match &self.direct {
            Some(d) => match d.read_exact_at(dst, off) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.buffered.read_exact_at(dst, off)
                }
                r => r,
            },
            None => self.buffered.read_exact_at(dst, off),
        };
        r.map_err(|e| local(format!("cannot read {} at offset {off}: {e}", self.path)))
    }
}

fn fill(
    src: &Source,
    plan: &ExportPlan,
    b: Block,
    mut buf: Buf,
    crc: bool,
) -> Result<Filled, Failure> {
    buf.len = b.len as usize;
    let at = buf.at;
    src.read(&mut buf.v[at..at + b.len as usize], b.off)?;
    let mut crcs = Vec::new();
    if crc {
        let data = buf.data();
        for p in pieces(b, plan.extent_size, plan.size) {
            let d = &data[p.start..p.start + p.len];
            crcs.push(if p.first {
                let h = record_head(p.index, extent_len(p.index, plan.extent_size, plan.size));
                crc32c::crc32c_append(crc32c::crc32c(&h), d)
            } else {
                crc32c::crc32c(d)
            });
        }
    }
    Ok(Filled {
        block: b,
        buf,
        crcs,
    })
}

/// Read every block of `plan` from `src` (with the pieces' checksums if `crc`), and call
/// `each` on them in order. Stops at the first error, of a read or of `each`.
pub(crate) fn read_in_order(
    src: &Source,
    plan: &ExportPlan,
    crc: bool,
    mut each: impl FnMut(&Filled) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let nblocks = blocks(plan).count();
    let k = READERS.min(nblocks);
    if k == 0 {
        return Ok(());
    }
    std::thread::scope(|scope| -> Result<(), Failure> {
        let mut full: Vec<Receiver<Result<Filled, Failure>>> = Vec::new();
        let mut empty: Vec<SyncSender<Buf>> = Vec::new();
        for t in 0..k {
            let (ftx, frx) = sync_channel::<Result<Filled, Failure>>(1);
            let (etx, erx) = sync_channel::<Buf>(BUFFERS);
            full.push(frx);
            empty.push(etx);
            scope.spawn(move || {
                let mut made = 0;
                for b in blocks(plan).skip(t).step_by(k) {
                    let buf = match erx.try_recv() {
                        Ok(buf) => buf,
                        Err(_) if made < BUFFERS => {
                            made += 1;
                            Buf::new()
                        }
                        Err(_) => match erx.recv() {
                            Ok(buf) => buf,
                            Err(_) => return, // the writer stopped
                        },
                    };
                    let r = fill(src, plan, b, buf, crc);
                    let stop = r.is_err();
                    if ftx.send(r).is_err() || stop {
                        return;
                    }
                }
            });
        }
        // Returning drops the channels: a reader waiting on either stops.
        for j in 0..nblocks {
            let f = full[j % k]
                .recv()
                .map_err(|_| local(format!("a reader of {} stopped", plan.path)))??;
            each(&f)?;
            let _ = empty[j % k].send(f.buf);
        }
        Ok(())
    })
}

/// Where an export goes: FILE (written as FILE.part, synced and renamed when complete) or
/// stdout.
pub(crate) struct Sink {
    out: File,
    part: Option<(PathBuf, PathBuf)>,
    /// Bytes written (the position of sequential writes).
    pub written: u64,
    /// Writeback was started for the bytes below this offset.
    kicked: u64,
}

impl Sink {
    pub(crate) fn open(file: &str) -> Result<Sink, Failure> {
        if file == "-" {
            // The descriptor itself: Rust's stdout is line-buffered.
            let fd = std::os::fd::AsFd::as_fd(&std::io::stdout())
                .try_clone_to_owned()
                .map_err(|e| local(format!("cannot use stdout: {e}")))?;
            return Ok(Sink {
                out: File::from(fd),
                part: None,
                written: 0,
                kicked: 0,
            });
        }
        let path = PathBuf::from(file);
        let part = PathBuf::from(format!("{file}.part"));
        let out = File::create(&part)
            .map_err(|e| local(format!("cannot create {}: {e}", part.display())))?;
        Ok(Sink {
            out,
            part: Some((part, path)),
            written: 0,
            kicked: 0,
        })
    }

    pub(crate) fn is_file(&self) -> bool {
        self.part.is_some()
    }

    fn failed(&self, e: std::io::Error) -> Failure {
        match &self.part {
            Some((part, _)) => local(format!("cannot write {}: {e}", part.display())),
            None => local(format!("cannot write the export to stdout: {e}")),
        }
    }

    pub(crate) fn write(&mut self, b: &[u8]) -> Result<(), Failure> {
        self.out.write_all(b).map_err(|e| self.failed(e))?;
        self.written += b.len() as u64;
        self.kick(self.written);
        Ok(())
    }

    /// Write all of `bufs`, in as few system calls as the kernel takes.
    pub(crate) fn write_vectored(&mut self, mut bufs: &mut [IoSlice<'_>]) -> Result<(), Failure> {
        while !bufs.is_empty() {
            match self.out.write_vectored(bufs) {
                Ok(0) => {
                    return Err(self.failed(std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.written += n as u64;
                    IoSlice::advance_slices(&mut bufs, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(e)),
            }
        }
        self.kick(self.written);
        Ok(())
    }

    /// Write `b` at `off` (a file only: a raw image).
    pub(crate) fn write_at(&mut self, b: &[u8], off: u64) -> Result<(), Failure> {
        self.out.write_all_at(b, off).map_err(|e| self.failed(e))?;
        self.kick(off + b.len() as u64);
        Ok(())
    }

    pub(crate) fn set_len(&mut self, len: u64) -> Result<(), Failure> {
        self.out.set_len(len).map_err(|e| self.failed(e))
    }

    /// Start the writeback of what is written below `upto` once a window's worth is
    /// waiting (files only; a hint, errors are ignored: the final fsync is what counts).
    fn kick(&mut self, upto: u64) {
        if self.part.is_some() && upto >= self.kicked + WINDOW {
            let _ = nix::fcntl::posix_fadvise(
                self.out.as_raw_fd(),
                self.kicked as i64,
                (upto - self.kicked) as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            self.kicked = upto;
        }
    }

    /// A file: synced, renamed to its name, and the rename synced (its directory).
    pub(crate) fn finish(mut self) -> Result<(), Failure> {
        if let Some((part, path)) = self.part.take() {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let r = self
                .out
                .sync_all()
                .and_then(|_| std::fs::rename(&part, &path))
                .and_then(|_| File::open(&dir)?.sync_all());
            if let Err(e) = r {
                let _ = std::fs::remove_file(&part);
                return Err(local(format!("cannot finish {}: {e}", path.display())));
            }
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((part, _)) = &self.part {
            let _ = std::fs::remove_file(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: u64, es: u64, extents: Vec<(u64, u64)>) -> ExportPlan {
        ExportPlan {
            size,
            extent_size: es,
            pool_id: 1,
            volume: "v".into(),
            snapshot: String::new(),
            base: String::new(),
            info: Vec::new(),
            path: String::new(),
            extents,
            holes: Vec::new(),
        }
    }

    #[test]
    fn blocks_coalesce_adjacent_extents_and_stop_at_runs_and_the_end() {
        let m = 1 << 20;
        // 1 MiB extents: a run of 6 → a 4 MiB block and a 2 MiB one; a run of 1 alone;
        // the volume's last extent is short (size 10.5 MiB).
        let p = plan(10 * m + m / 2, m, vec![(0, 6), (7, 1), (10, 1)]);
        let b: Vec<Block> = blocks(&p).collect();
        assert_eq!(
            b,
            vec![
                Block { off: 0, len: 4 * m },
                Block {
                    off: 4 * m,
                    len: 2 * m
                },
                Block { off: 7 * m, len: m },
                Block {
                    off: 10 * m,
                    len: m / 2
                },
            ]
        );
        let ps = pieces(b[1], m, p.size);
        assert_eq!(ps.len(), 2);
        assert!(ps.iter().all(|p| p.first && p.last && p.len == m as usize));
        assert_eq!((ps[0].index, ps[1].index, ps[1].start), (4, 5, m as usize));
        let last = pieces(b[3], m, p.size);
        assert_eq!(last.len(), 1);
        assert!(last[0].first && last[0].last && last[0].len == (m / 2) as usize);
    }

    #[test]
    fn an_extent_larger_than_a_block_is_read_in_pieces() {
        let es = 16 << 20;
        let p = plan(40 << 20, es, vec![(1, 2)]); // extents 1 (16 MiB) and 2 (8 MiB, short)
        let b: Vec<Block> = blocks(&p).collect();
        assert_eq!(b.len(), 6);
        let ps: Vec<Piece> = b.iter().flat_map(|&b| pieces(b, es, p.size)).collect();
        let firsts: Vec<u64> = ps.iter().filter(|p| p.first).map(|p| p.index).collect();
        let lasts: Vec<u64> = ps.iter().filter(|p| p.last).map(|p| p.index).collect();
        assert_eq!((firsts, lasts), (vec![1, 2], vec![1, 2]));
        assert_eq!(ps.iter().map(|p| p.len as u64).sum::<u64>(), 24 << 20);
    }

    #[test]
    fn read_in_order_gives_every_block_once_in_order_with_record_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol");
        let es = 64u64 << 10;
        let size = 100 * es + 1000; // a short last extent
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 65536) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let p = ExportPlan {
            path: path.to_str().unwrap().to_string(),
            ..plan(size, es, vec![(0, 3), (5, 70), (80, 21)])
        };
        let Ok(src) = Source::open(&p.path) else {
            panic!("cannot open {}", p.path)
        };
        let mut seen = Vec::new();
        let r = read_in_order(&src, &p, true, |f| {
            assert_eq!(
                f.buf.data(),
                &data[f.block.off as usize..(f.block.off + f.block.len) as usize]
            );
            for (pc, &c) in pieces(f.block, es, size).iter().zip(&f.crcs) {
                let mut rec = record_head(pc.index, extent_len(pc.index, es, size)).to_vec();
                let at = (pc.index * es) as usize;
                rec.extend_from_slice(&data[at..at + extent_len(pc.index, es, size) as usize]);
                assert_eq!(c, crc32c::crc32c(&rec), "extent {}", pc.index);
            }
            seen.push(f.block);
            Ok(())
        });
        assert!(r.is_ok());
        assert_eq!(seen, blocks(&p).collect::<Vec<_>>());
        // An error of the consumer stops the readers and comes back.
        let mut n = 0;
        let r = read_in_order(&src, &p, false, |_| {
            n += 1;
            if n == 3 {
                Err(local("stop".into()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(Failure::Local(m)) if m == "stop"));
    }
}
