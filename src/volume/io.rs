//! Data path: read, write (with copy-on-write of shared extents), discard, allocate, fsync.

use std::io;
use std::path::PathBuf;

use parking_lot::RwLock;

use super::Volume;
use crate::extent_map::{pieces, ExtentTable, Piece, RefCounts};
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
    #[error("volume '{volume}' is read-only: {why}")]
    ReadOnly { volume: String, why: String },
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
            IoError::ReadOnly { .. } => libc::EROFS,
            _ => libc::EIO,
        }
    }
}

/// Where a piece's bytes live now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Where {
    Hole,
    /// Held by this volume alone: written in place.
    Owned(Phys),
    /// Shared with a snapshot or clone: copied to a new extent before it is written.
    Shared(Phys),
}

#[derive(Clone, Copy)]
struct Placed {
    piece: Piece,
    at: Where,
    /// The extent reserved for a hole or a copy-on-write.
    fresh: Option<Phys>,
}

impl Placed {
    fn needs_extent(&self) -> bool {
        matches!(self.at, Where::Hole | Where::Shared(_))
    }
}

impl Pool {
    fn array_err(
        &self,
        name: &str,
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
            volume: name.to_string(),
            op,
            path,
            offset,
            source: e,
        }
    }

    fn meta_err(vol: &Volume) -> impl FnOnce(MetaError) -> IoError + '_ {
        move |source| IoError::Meta {
            volume: vol.name.clone(),
            source,
        }
    }

    /// Is the extent held by anything besides this table's one chunk?
    fn is_shared(&self, p: Phys, chunk_shared: bool) -> bool {
        chunk_shared || self.array(p.array).is_some_and(|a| a.refs.get(p.index) > 1)
    }

    fn classify(&self, map: &ExtentTable, piece: Piece) -> Placed {
        let lk = map.lookup(piece.lext);
        let at = match lk.phys {
            None => Where::Hole,
            Some(p) if self.is_shared(p, lk.chunk_shared) => Where::Shared(p),
            Some(p) => Where::Owned(p),
        };
        Placed {
            piece,
            at,
            fresh: None,
        }
    }

    /// Read from any extent table (a volume's or a snapshot's). Holes read as zeros.
    pub(crate) fn read_table(
        &self,
        table: &RwLock<ExtentTable>,
        size: u64,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, IoError> {
        if offset >= size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset);
        let _gate = self.io_gate.read_recursive();
        let mut plan: Vec<(Piece, Option<Phys>)> = Vec::with_capacity(4);
        {
            let map = table.read();
            for piece in pieces(offset, len, self.extent_size) {
                plan.push((piece, map.get(piece.lext)));
            }
        }
        for (piece, phys) in plan {
            let dst = &mut buf[piece.buf_offset..piece.buf_offset + piece.len as usize];
            match phys {
                None => dst.fill(0),
                Some(p) => {
                    let a = self.array(p.array).expect("mapped extent has an array");
                    a.read(p.index, piece.offset, dst)
                        .map_err(|e| self.array_err(name, "read", p, piece.offset, e))?;
                }
            }
        }
        Ok(len as usize)
    }

    /// Read `buf.len()` bytes at `offset` (fewer at the end of the volume).
    pub fn read(&self, vol: &Volume, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        match vol.pair() {
            Some((pair, role)) => self.mirror_read(&pair, role, vol, offset, buf),
            None => self.read_plain(vol, offset, buf),
        }
    }

    /// Read the volume's own extents, whatever its pair does.
    pub(crate) fn read_plain(
        &self,
        vol: &Volume,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, IoError> {
        self.read_table(&vol.map, vol.size(), &vol.name, offset, buf)
    }

    /// Look the range up and reserve extents for its holes and shared extents. Waits out
    /// other requests that are allocating the same slots. Returns the plan; pieces with
    /// `fresh` set are pending in the volume until `commit` or `abandon`.
    fn plan_write(&self, vol: &Volume, offset: u64, len: u64) -> Result<Vec<Placed>, IoError> {
        loop {
            let mut plan: Vec<Placed> = {
                let map = vol.map.read();
                pieces(offset, len, self.extent_size)
                    .map(|pc| self.classify(&map, pc))
                    .collect()
            };
            if !plan.iter().any(Placed::needs_extent) {
                return Ok(plan);
            }
            let map = vol.map.write();
            if vol.any_pending(plan.iter().map(|pl| pl.piece.lext)) {
                drop(map);
                vol.wait_pending();
                continue;
            }
            // Look again under the write lock: another request may have published meanwhile.
            for pl in plan.iter_mut() {
                *pl = self.classify(&map, pl.piece);
            }
            let limit = vol.size().div_ceil(self.extent_size);
            let allowed = vol.allowed_arrays.read().clone();
            let mut al = self.alloc.lock();
            let mut reserved: Vec<Phys> = Vec::new();
            for pl in plan.iter_mut().filter(|pl| pl.needs_extent()) {
                let got = if pl.piece.lext < limit {
                    al.alloc_in(&vol.tier, pl.piece.lext, allowed.as_deref())
                } else {
                    None
                };
                match got {
                    Some(n) => {
                        pl.fresh = Some(n);
                        reserved.push(n);
                    }
                    None => {
                        // Never written: the extents go straight back, clean.
                        for &n in &reserved {
                            al.unreserve(n);
                        }
                        let offset = pl.piece.lext * self.extent_size + pl.piece.offset;
                        if pl.piece.lext >= limit {
                            return Err(IoError::BeyondEnd {
                                volume: vol.name.clone(),
                                offset,
                                size: vol.size(),
                            });
                        }
                        return Err(IoError::NoSpace {
                            volume: vol.name.clone(),
                            tier: vol.tier.clone(),
                            offset,
                        });
                    }
                }
            }
            drop(al);
            let lexts: Vec<u64> = plan
                .iter()
                .filter(|pl| pl.fresh.is_some())
                .map(|pl| pl.piece.lext)
                .collect();
            vol.mark_pending(&lexts);
            drop(map);
            return Ok(plan);
        }
    }

    /// Publish the reserved extents of `plan`: record first, then the map.
    fn commit(&self, vol: &Volume, plan: &[Placed]) -> Result<(), IoError> {
        let fresh: Vec<(u64, Phys)> = plan
            .iter()
            .filter_map(|pl| pl.fresh.map(|n| (pl.piece.lext, n)))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut log = self.meta.lock();
        // Crash-ordering: the data of every extent in `fresh` was written before this record
        // is appended (data before the pointer to it). A freshly allocated extent was punched
        // or never written, so if the record reaches the disk before the data after a machine
        // crash, the slot reads zeros, never another volume's old bytes.
        log.append(&MetaRecord::MapSet {
            volume: vol.id,
            entries: fresh.iter().map(|&(l, p)| (l, p.pack())).collect(),
        })
        .map_err(Self::meta_err(vol))?;
        let mut map = vol.map.write();
        let mut al = self.alloc.lock();
        for &(l, n) in &fresh {
            // The old extent (copy-on-write) loses this table's reference; a snapshot keeps it.
            if let Some(old) = map.set(l, Some(n), &mut *al) {
                al.decref(old);
            }
        }
        Ok(())
    }

    /// Give up the reserved extents of `plan` after a failure. They may hold partial data,
    /// so they go through the pending-free path and are punched before reuse.
    fn abandon(&self, plan: &[Placed]) {
        let mut al = self.alloc.lock();
        for n in plan.iter().filter_map(|pl| pl.fresh) {
            al.decref(n);
        }
    }

    fn pending_of(plan: &[Placed]) -> Vec<u64> {
        plan.iter()
            .filter(|pl| pl.fresh.is_some())
            .map(|pl| pl.piece.lext)
            .collect()
    }

    /// Do the data I/O of a planned write.
    fn write_planned(&self, vol: &Volume, plan: &[Placed], data: &[u8]) -> Result<(), IoError> {
        let es = self.extent_size;
        for pl in plan {
            let pc = pl.piece;
            let target = match (pl.at, pl.fresh) {
                (Where::Owned(p), None) => p,
                (_, Some(n)) => n,
                (at, None) => unreachable!("piece at {at:?} without an extent"),
            };
            if let (Where::Shared(old), Some(n)) = (pl.at, pl.fresh) {
                // Copy-on-write: bring over the bytes this write does not cover.
                let src = self.array(old.array).expect("mapped extent has an array");
                let dst = self.array(n.array).expect("reserved extent has an array");
                let tail = pc.offset + pc.len;
                src.copy_to(old.index, &dst, n.index, 0, pc.offset)
                    .and_then(|_| src.copy_to(old.index, &dst, n.index, tail, es - tail))
                    .map_err(|e| self.array_err(&vol.name, "copy-on-write", n, 0, e))?;
            }
            let a = self.array(target.array).expect("extent has an array");
            let src = &data[pc.buf_offset..pc.buf_offset + pc.len as usize];
            a.write(target.index, pc.offset, src)
                .map_err(|e| self.array_err(&vol.name, "write", target, pc.offset, e))?;
        }
        Ok(())
    }

    /// Write `data` at `offset`. A write crossing the end of the volume is cut short; one
    /// starting at or after the end fails with `BeyondEnd` (ENOSPC, as on a block device).
    /// When the pool is full but freed extents wait for their records to become durable, the
    /// write makes them durable (a sync) and tries once more, so a discard or delete gives
    /// space back at once.
    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
        // The pair is looked at under the volume's io_lock: pair create and split change it
        // under the exclusive lock, so a write is either mirrored or not, never half.
        let _io = vol.io_lock.read_recursive();
        match vol.pair() {
            Some((pair, role)) => {
                let (off, len) = (offset, data.len() as u64);
                self.mirrored(&pair, role, vol, off, len, |v| {
                    self.write_plain(v, offset, data)
                })
            }
            None => self.write_plain(vol, offset, data),
        }
    }

    /// Write to the volume's own extents (no pair logic).
    pub(crate) fn write_plain(
        &self,
        vol: &Volume,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, IoError> {
        match self.write_once(vol, offset, data) {
            Err(IoError::NoSpace { .. }) if self.alloc.lock().pending_count() > 0 => {
                self.fsync_volume(vol)?;
                self.write_once(vol, offset, data)
            }
            r => r,
        }
    }

    fn write_once(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
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
        let _io = vol.io_lock.read_recursive();
        let plan = self.plan_write(vol, offset, len)?;
        let mut res = self.write_planned(vol, &plan, data);
        if res.is_ok() {
            res = self.commit(vol, &plan);
        }
        if res.is_err() {
            self.abandon(&plan);
        }
        vol.clear_pending(&Self::pending_of(&plan));
        res.map(|_| len as usize)
    }

    /// Make `[offset, offset+len)` read as zeros and free the extents it covers whole
    /// (`fallocate` punch-hole / zero-range, discard).
    pub fn discard(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
        let size = vol.size();
        if offset >= size || len == 0 {
            return Ok(());
        }
        let _io = vol.io_lock.read_recursive();
        match vol.pair() {
            Some((pair, role)) => {
                self.mirrored(&pair, role, vol, offset, len.min(size - offset), |v| {
                    self.discard_locked(v, offset, len)
                })
            }
            None => self.discard_locked(vol, offset, len),
        }
    }

    /// `discard` for a caller that holds the volume's `io_lock` (shared or exclusive).
    pub(crate) fn discard_locked(
        &self,
        vol: &Volume,
        offset: u64,
        len: u64,
    ) -> Result<(), IoError> {
        let size = vol.size();
        if offset >= size || len == 0 {
            return Ok(());
        }
        let len = len.min(size - offset);
        let _gate = self.io_gate.read_recursive();
        let es = self.extent_size;
        let all: Vec<Piece> = pieces(offset, len, es).collect();
        // Partial extents: punch in place when owned; a shared one is rewritten with zeros
        // through copy-on-write so the snapshot keeps its bytes.
        for pc in all.iter().filter(|pc| !pc.is_whole(es)) {
            loop {
                let at = self.classify(&vol.map.read(), *pc).at;
                if vol.any_pending([pc.lext]) {
                    vol.wait_pending();
                    continue;
                }
                match at {
                    Where::Hole => {}
                    Where::Owned(p) => {
                        let a = self.array(p.array).expect("mapped extent has an array");
                        a.punch(p.index, pc.offset, pc.len)
                            .map_err(|e| self.array_err(&vol.name, "punch", p, pc.offset, e))?;
                    }
                    Where::Shared(_) => {
                        let zeros = vec![0u8; pc.len as usize];
                        self.write_once(vol, pc.lext * es + pc.offset, &zeros)?;
                    }
                }
                break;
            }
        }
        // Whole extents: unmap them (record first), then drop their references.
        let whole: Vec<u64> = all
            .iter()
            .filter(|pc| pc.is_whole(es))
            .map(|pc| pc.lext)
            .collect();
        if whole.is_empty() {
            return Ok(());
        }
        loop {
            let mut log = self.meta.lock();
            let mut map = vol.map.write();
            if vol.any_pending(whole.iter().copied()) {
                drop(map);
                drop(log);
                vol.wait_pending();
                continue;
            }
            let gone: Vec<u64> = whole
                .iter()
                .copied()
                .filter(|&l| map.get(l).is_some())
                .collect();
            if gone.is_empty() {
                return Ok(());
            }
            log.append(&MetaRecord::Unmap {
                volume: vol.id,
                lexts: gone.clone(),
            })
            .map_err(Self::meta_err(vol))?;
            let mut al = self.alloc.lock();
            for &l in &gone {
                // Crash-ordering: the extent is reusable only after this Unmap record is
                // durable and the extent is punched (Pool::sync / Pool::recycle).
                if let Some(p) = map.set(l, None, &mut *al) {
                    al.decref(p);
                }
            }
            return Ok(());
        }
    }

    /// Allocate extents for every hole in the range (`fallocate` mode 0): later writes there
    /// cannot fail for lack of space (unless the extent is shared with a snapshot). Fresh
    /// extents read as zeros.
    pub fn allocate(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
        let _io = vol.io_lock.read_recursive();
        match vol.pair() {
            Some((pair, role)) => self.mirrored(&pair, role, vol, offset, len, |v| {
                self.allocate_plain(v, offset, len)
            }),
            None => self.allocate_plain(vol, offset, len),
        }
    }

    pub(crate) fn allocate_plain(
        &self,
        vol: &Volume,
        offset: u64,
        len: u64,
    ) -> Result<(), IoError> {
        let size = vol.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(IoError::BeyondEnd {
                volume: vol.name.clone(),
                offset: offset.saturating_add(len),
                size,
            });
        }
        let _gate = self.io_gate.read_recursive();
        let _io = vol.io_lock.read_recursive();
        let step = self.extent_size * 64;
        let mut pos = offset;
        while pos < offset + len {
            let n = step.min(offset + len - pos);
            let mut plan = self.plan_write(vol, pos, n)?;
            // Only holes: a shared extent keeps its data and is copied when written.
            let mut al = self.alloc.lock();
            let mut skipped = Vec::new();
            for pl in plan.iter_mut() {
                if let (Where::Shared(_), Some(f)) = (pl.at, pl.fresh) {
                    al.unreserve(f);
                    pl.fresh = None;
                    skipped.push(pl.piece.lext);
                }
            }
            drop(al);
            vol.clear_pending(&skipped);
            let res = self.commit(vol, &plan);
            if res.is_err() {
                self.abandon(&plan);
            }
            vol.clear_pending(&Self::pending_of(&plan));
            res?;
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
