//! Data path: read, write, discard, allocate, fsync.

use std::io;
use std::path::PathBuf;

use super::Volume;
use crate::extent_map::{pieces, Entry, Piece};
use crate::format::{MetaRecord, Phys};
use crate::meta::MetaError;
use crate::pool::{Pool, PoolError};

/// Data-path failures. The FUSE adapter maps each to one errno.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(
        "volume '{volume}': offset {offset} is at or beyond the end of the volume ({size} bytes)"
    )]
    BeyondEnd {
        volume: String,
        offset: u64,
        size: u64,
    },
    #[error("volume '{volume}': no free extent in tier '{tier}' for offset {offset} (pool full)")]
    NoSpace {
        volume: String,
        tier: String,
        offset: u64,
    },
    #[error("volume '{volume}': {op} array file {path} at offset {offset}: {source}")]
    Array {
        volume: String,
        op: &'static str,
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("volume '{volume}': metadata: {source}")]
    Meta { volume: String, source: MetaError },
    #[error("volume '{volume}': sync: {source}")]
    Sync { volume: String, source: PoolError },
    #[error("volume '{volume}': {detail}")]
    Invalid { volume: String, detail: String },
}

impl IoError {
    /// The errno a file system user should see.
    pub fn errno(&self) -> i32 {
        match self {
            IoError::BeyondEnd { .. } | IoError::NoSpace { .. } => libc::ENOSPC,
            IoError::Array { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                libc::ENOSPC
            }
            IoError::Invalid { .. } => libc::EINVAL,
            _ => libc::EIO,
        }
    }
}

/// A piece of a request and where its bytes live.
#[derive(Clone, Copy)]
struct Placed {
    piece: Piece,
    phys: Option<Phys>,
}

/// Result of looking a request up.
enum Lookup {
    Ready,
    /// Some slot is being allocated by another request; wait and look again.
    Busy,
}

impl Pool {
    fn array_err(
        &self,
        vol: &Volume,
        op: &'static str,
        p: Phys,
        inner: u64,
        e: io::Error,
    ) -> IoError {
        let (path, offset) = match self.array(p.array) {
            Some(a) => (a.path.clone(), a.file_offset(p.index, inner)),
            None => (PathBuf::from(format!("<array {}>", p.array)), 0),
        };
        IoError::Array {
            volume: vol.name.clone(),
            op,
            path,
            offset,
            source: e,
        }
    }

    fn lookup(&self, vol: &Volume, offset: u64, len: u64, out: &mut Vec<Placed>) -> Lookup {
        out.clear();
        let map = vol.map.read();
        for piece in pieces(offset, len, self.extent_size) {
            let phys = match map.get(piece.lext) {
                Entry::Mapped(p) => Some(p),
                Entry::Hole => None,
                Entry::Pending => return Lookup::Busy,
            };
            out.push(Placed { piece, phys });
        }
        Lookup::Ready
    }

    /// Read `buf.len()` bytes at `offset` (fewer at the end of the volume). Holes read as zeros.
    pub fn read(&self, vol: &Volume, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        let size = vol.size();
        if offset >= size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset);
        let _gate = self.io_gate.read_recursive();
        let mut plan = Vec::with_capacity(4);
        // A pending slot reads as a hole: its write has not been acknowledged yet.
        {
            let map = vol.map.read();
            for piece in pieces(offset, len, self.extent_size) {
                let phys = match map.get(piece.lext) {
                    Entry::Mapped(p) => Some(p),
                    _ => None,
                };
                plan.push(Placed { piece, phys });
            }
        }
        for pl in &plan {
            let dst = &mut buf[pl.piece.buf_offset..pl.piece.buf_offset + pl.piece.len as usize];
            match pl.phys {
                None => dst.fill(0),
                Some(p) => {
                    let a = self.array(p.array).expect("mapped extent has an array");
                    a.read(p.index, pl.piece.offset, dst)
                        .map_err(|e| self.array_err(vol, "read", p, pl.piece.offset, e))?;
                }
            }
        }
        Ok(len as usize)
    }

    /// Reserve extents for the holes in `plan`: mark them `Pending` and fill in `phys`.
    /// Returns the reserved (logical, physical) pairs, or `None` if another request is
    /// allocating one of the slots (look up again).
    fn reserve(
        &self,
        vol: &Volume,
        plan: &mut [Placed],
    ) -> Result<Option<Vec<(u64, Phys)>>, IoError> {
        let mut map = vol.map.write();
        let limit = vol.size().div_ceil(self.extent_size);
        for pl in plan.iter_mut().filter(|pl| pl.phys.is_none()) {
            match map.get(pl.piece.lext) {
                Entry::Pending => return Ok(None),
                Entry::Mapped(p) => pl.phys = Some(p),
                Entry::Hole => {}
            }
            if pl.piece.lext >= limit {
                return Err(IoError::BeyondEnd {
                    volume: vol.name.clone(),
                    offset: pl.piece.lext * self.extent_size,
                    size: vol.size(),
                });
            }
        }
        let mut fresh: Vec<(u64, Phys)> = Vec::new();
        {
            let mut al = self.alloc.lock();
            for pl in plan.iter_mut().filter(|pl| pl.phys.is_none()) {
                if fresh.iter().any(|&(l, _)| l == pl.piece.lext) {
                    continue;
                }
                match al.alloc(&vol.tier, pl.piece.lext) {
                    Some(p) => fresh.push((pl.piece.lext, p)),
                    None => {
                        // Never written: the extents go straight back, clean.
                        for &(_, p) in &fresh {
                            al.unreserve(p);
                        }
                        return Err(IoError::NoSpace {
                            volume: vol.name.clone(),
                            tier: vol.tier.clone(),
                            offset: pl.piece.lext * self.extent_size + pl.piece.offset,
                        });
                    }
                }
            }
        }
        for pl in plan.iter_mut().filter(|pl| pl.phys.is_none()) {
            let p = fresh.iter().find(|&&(l, _)| l == pl.piece.lext).unwrap().1;
            pl.phys = Some(p);
        }
        for &(l, _) in &fresh {
            map.set(l, Entry::Pending);
        }
        Ok(Some(fresh))
    }

    /// Publish reserved extents whose data is written: record first, then the map.
    fn commit(&self, vol: &Volume, fresh: &[(u64, Phys)]) -> Result<(), IoError> {
        let mut log = self.meta.lock();
        // Crash-ordering: the data of every extent in `fresh` was written before this record
        // is appended (data before the pointer to it). A freshly allocated extent was punched
        // or never written, so if the record reaches the disk before the data after a machine
        // crash, the slot reads zeros, never another volume's old bytes.
        log.append(&MetaRecord::MapSet {
            volume: vol.id,
            entries: fresh.iter().map(|&(l, p)| (l, p.pack())).collect(),
        })
        .map_err(|source| IoError::Meta {
            volume: vol.name.clone(),
            source,
        })?;
        let mut map = vol.map.write();
        for &(l, p) in fresh {
            map.set(l, Entry::Mapped(p));
        }
        Ok(())
    }

    /// Give up reserved extents after a failure. They may hold partial data, so they go
    /// through the pending-free path and are punched before reuse.
    fn abandon(&self, vol: &Volume, fresh: &[(u64, Phys)]) {
        {
            let mut map = vol.map.write();
            for &(l, _) in fresh {
                map.set(l, Entry::Hole);
            }
        }
        let mut al = self.alloc.lock();
        for &(_, p) in fresh {
            al.decref(p);
        }
    }

    /// Look up `[offset, offset+len)` and reserve its holes, waiting out concurrent
    /// allocations of the same slots.
    fn plan_write(
        &self,
        vol: &Volume,
        offset: u64,
        len: u64,
        plan: &mut Vec<Placed>,
    ) -> Result<Vec<(u64, Phys)>, IoError> {
        loop {
            if let Lookup::Busy = self.lookup(vol, offset, len, plan) {
                vol.wait_pending();
                continue;
            }
            if plan.iter().all(|pl| pl.phys.is_some()) {
                return Ok(Vec::new());
            }
            match self.reserve(vol, plan)? {
                Some(fresh) => return Ok(fresh),
                None => vol.wait_pending(),
            }
        }
    }

    /// Write `data` at `offset`. A write crossing the end of the volume is cut short; one
    /// starting at or after the end fails with `BeyondEnd` (ENOSPC, as on a block device).
    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
        let size = vol.size();
        if offset >= size {
            return Err(IoError::BeyondEnd {
                volume: vol.name.clone(),
                offset,
                size,
            });
        }
        let len = (data.len() as u64).min(size - offset);
        let _gate = self.io_gate.read_recursive();
        let mut plan = Vec::with_capacity(4);
        let fresh = self.plan_write(vol, offset, len, &mut plan)?;
        for pl in &plan {
            let p = pl.phys.expect("planned");
            let a = self.array(p.array).expect("mapped extent has an array");
            let src = &data[pl.piece.buf_offset..pl.piece.buf_offset + pl.piece.len as usize];
            if let Err(e) = a.write(p.index, pl.piece.offset, src) {
                if !fresh.is_empty() {
                    self.abandon(vol, &fresh);
                    vol.wake_pending();
                }
                return Err(self.array_err(vol, "write", p, pl.piece.offset, e));
            }
        }
        if !fresh.is_empty() {
            let res = self.commit(vol, &fresh);
            if res.is_err() {
                self.abandon(vol, &fresh);
            }
            vol.wake_pending();
            res?;
        }
        Ok(len as usize)
    }

    /// Make `[offset, offset+len)` read as zeros and free the extents it covers whole
    /// (`fallocate` punch-hole / zero-range, discard).
    pub fn discard(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
        let size = vol.size();
        if offset >= size || len == 0 {
            return Ok(());
        }
        let len = len.min(size - offset);
        let _gate = self.io_gate.read_recursive();
        let es = self.extent_size;
        let mut plan = Vec::new();
        loop {
            if let Lookup::Busy = self.lookup(vol, offset, len, &mut plan) {
                vol.wait_pending();
                continue;
            }
            break;
        }
        // Partial extents: punch the bytes inside the physical extent.
        for pl in plan.iter().filter(|pl| !pl.piece.is_whole(es)) {
            if let Some(p) = pl.phys {
                let a = self.array(p.array).expect("mapped extent has an array");
                a.punch(p.index, pl.piece.offset, pl.piece.len)
                    .map_err(|e| self.array_err(vol, "punch", p, pl.piece.offset, e))?;
            }
        }
        // Whole extents: unmap them (record first), then drop their references.
        let whole: Vec<u64> = plan
            .iter()
            .filter(|pl| pl.piece.is_whole(es) && pl.phys.is_some())
            .map(|pl| pl.piece.lext)
            .collect();
        if whole.is_empty() {
            return Ok(());
        }
        loop {
            let mut log = self.meta.lock();
            let mut map = vol.map.write();
            if whole.iter().any(|&l| map.get(l) == Entry::Pending) {
                drop(map);
                drop(log);
                vol.wait_pending();
                continue;
            }
            let gone: Vec<(u64, Phys)> = whole
                .iter()
                .filter_map(|&l| match map.get(l) {
                    Entry::Mapped(p) => Some((l, p)),
                    _ => None,
                })
                .collect();
            if gone.is_empty() {
                return Ok(());
            }
            log.append(&MetaRecord::Unmap {
                volume: vol.id,
                lexts: gone.iter().map(|&(l, _)| l).collect(),
            })
            .map_err(|source| IoError::Meta {
                volume: vol.name.clone(),
                source,
            })?;
            let mut al = self.alloc.lock();
            for &(l, p) in &gone {
                map.set(l, Entry::Hole);
                // Crash-ordering: the extent is reusable only after this Unmap record is
                // durable and the extent is punched (Pool::sync / Pool::recycle).
                al.decref(p);
            }
            return Ok(());
        }
    }

    /// Allocate extents for every hole in the range (`fallocate` mode 0): later writes there
    /// cannot fail for lack of space. Fresh extents read as zeros.
    pub fn allocate(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
        let size = vol.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(IoError::BeyondEnd {
                volume: vol.name.clone(),
                offset: offset.saturating_add(len),
                size,
            });
        }
        let _gate = self.io_gate.read_recursive();
        // One extent-sized step at a time keeps reservations small on huge ranges.
        let step = self.extent_size * 64;
        let mut pos = offset;
        let mut plan = Vec::new();
        while pos < offset + len {
            let n = step.min(offset + len - pos);
            let fresh = self.plan_write(vol, pos, n, &mut plan)?;
            if !fresh.is_empty() {
                let res = self.commit(vol, &fresh);
                if res.is_err() {
                    self.abandon(vol, &fresh);
                }
                vol.wake_pending();
                res?;
            }
            pos += n;
        }
        Ok(())
    }

    /// fsync/fdatasync of a volume file: everything acknowledged before it becomes durable.
    pub fn fsync_volume(&self, vol: &Volume) -> Result<(), IoError> {
        self.sync().map_err(|source| IoError::Sync {
            volume: vol.name.clone(),
            source,
        })
    }
}
