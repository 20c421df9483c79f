//! Data path: read, write (with copy-on-write of shared extents), discard, allocate, fsync.

use super::{Volume, Volumes};
use crate::extent_map::partial::PartialExt;
use crate::extent_map::{pieces, ExtentTable, Piece, RefCounts};
use crate::format::{MetaRecord, Phys};
use crate::pool::{Cow, IoError, Pool};

/// The data operation of a host request, applied once to a volume by `Volumes::apply` (and
/// once more to a pair's S-VOL for a dual write).
#[derive(Clone, Copy, Debug)]
pub enum DataOp<'a> {
    /// Write these bytes.
    Write(&'a [u8]),
    /// Make this many bytes read as zeros, freeing whole extents (punch hole, zero range).
    Discard(u64),
    /// Allocate extents for the holes in this many bytes (`fallocate` mode 0).
    Allocate(u64),
}

impl DataOp<'_> {
    /// Bytes the operation covers.
    pub fn len(&self) -> u64 {
        match self {
            DataOp::Write(d) => d.len() as u64,
            DataOp::Discard(n) | DataOp::Allocate(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

#[derive(Clone)]
struct Placed {
    piece: Piece,
    at: Where,
    /// The extent reserved for a hole or a copy-on-write.
    fresh: Option<Phys>,
    /// Sub-extent copy-on-write of a shared extent the write covers in part.
    cow: Option<Cow>,
}

impl Placed {
    fn needs_extent(&self) -> bool {
        matches!(self.at, Where::Hole | Where::Shared(_))
    }
}

impl Volumes {
    /// Apply a data operation to the volume's own extents: the one data write of the
    /// pipeline. Returns the bytes written (0 for discard and allocate).
    pub fn apply(&self, vol: &Volume, offset: u64, op: DataOp) -> Result<usize, IoError> {
        match op {
            DataOp::Write(data) => self.write_plain(vol, offset, data),
            DataOp::Discard(len) => self.discard_locked(vol, offset, len).map(|_| 0),
            DataOp::Allocate(len) => self.allocate_plain(vol, offset, len).map(|_| 0),
        }
    }

    fn classify(&self, map: &ExtentTable, piece: Piece) -> Placed {
        let lk = map.lookup(piece.lext);
        let at = match lk.phys {
            None => Where::Hole,
            Some(p) if self.pool.is_shared(p, lk.chunk_shared) => Where::Shared(p),
            Some(p) => Where::Owned(p),
        };
        Placed {
            piece,
            at,
            fresh: None,
            cow: None,
        }
    }

    /// Would a write of `[offset, offset+len)` overwrite extents in place — every one mapped,
    /// owned by this volume alone and complete — so that it cannot fail for lack of space?
    /// Stays true while the caller holds the volume's `io_lock` and the range's journal
    /// stripes (what could change it — snapshot, clone, discard, another write — waits).
    pub fn overwrites_in_place(&self, vol: &Volume, offset: u64, len: u64) -> bool {
        let map = vol.map.read();
        pieces(offset, len, self.pool.extent_size).all(|pc| {
            let lk = map.lookup(pc.lext);
            match lk.phys {
                Some(p) => {
                    !self.pool.is_shared(p, lk.chunk_shared) && self.pool.partials.get(p).is_none()
                }
                None => false,
            }
        })
    }

    /// Read the volume's own extents, whatever its pair does.
    pub(crate) fn read_plain(
        &self,
        vol: &Volume,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, IoError> {
        let access = vol.streams.classify(offset, buf.len() as u64);
        self.pool
            .read_table(&vol.map, vol.size(), &vol.name, offset, buf, access)
    }

    /// Look the range up and reserve extents for its holes and shared extents. Waits out
    /// other requests that are allocating the same slots. Returns the plan; pieces with
    /// `fresh` set are pending in the volume until `commit` or `abandon`.
    fn plan_write(&self, vol: &Volume, offset: u64, len: u64) -> Result<Vec<Placed>, IoError> {
        loop {
            let mut plan: Vec<Placed> = {
                let map = vol.map.read();
                pieces(offset, len, self.pool.extent_size)
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
            let limit = vol.size().div_ceil(self.pool.extent_size);
            let allowed = vol.allowed_arrays.read().clone();
            let mut al = self.pool.alloc.lock();
            let mut reserved: Vec<Phys> = Vec::new();
            let mut holds: Vec<Phys> = Vec::new();
            let es = self.pool.extent_size;
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
                        if let Where::Shared(old) = pl.at {
                            if !pl.piece.is_whole(es) {
                                // Sub-extent copy-on-write. Looked up under the allocator
                                // lock, which every change of the partial table holds, so
                                // the source cannot lose its last reference before ours.
                                let cow = match self.pool.partials.get(old) {
                                    Some(e) => Cow {
                                        src: e.src,
                                        carry: Some((old, e.valid)),
                                    },
                                    None => Cow {
                                        src: old,
                                        carry: None,
                                    },
                                };
                                al.incref(cow.src);
                                holds.push(cow.src);
                                pl.cow = Some(cow);
                            }
                        }
                    }
                    None => {
                        // Never written: the extents go straight back, clean.
                        for &n in &reserved {
                            al.unreserve(n);
                        }
                        for &h in &holds {
                            al.decref(h);
                        }
                        let offset = pl.piece.lext * self.pool.extent_size + pl.piece.offset;
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
        // Sub-extent copies-on-write: partial unless the write made every block valid.
        let nblocks = self.pool.partials.nblocks();
        let mut partial: Vec<(Phys, PartialExt)> = Vec::new();
        let mut release: Vec<Phys> = Vec::new();
        for pl in plan {
            if let (Some(cow), Some(n)) = (&pl.cow, pl.fresh) {
                let valid = cow.valid_after(nblocks, pl.piece.offset, pl.piece.len);
                if valid.all() {
                    release.push(cow.src);
                } else {
                    partial.push((
                        n,
                        PartialExt {
                            src: cow.src,
                            valid,
                        },
                    ));
                }
            }
        }
        let entries: Vec<(u64, u64)> = fresh.iter().map(|&(l, p)| (l, p.pack())).collect();
        let mut log = self.pool.meta.lock();
        // Crash-ordering: the data of every extent in `fresh` (of every valid block of a
        // partial one) was written before this record is appended (data before the pointer
        // to it). A freshly allocated extent was punched or never written, so if the record
        // reaches the disk before the data after a machine crash, the slot reads zeros, never
        // another volume's old bytes.
        let rec = if partial.is_empty() {
            MetaRecord::MapSet {
                volume: vol.id,
                entries,
            }
        } else {
            MetaRecord::MapSetPartial {
                volume: vol.id,
                entries,
                partials: partial
                    .iter()
                    .map(|(n, e)| crate::format::PartialRec {
                        ext: n.pack(),
                        src: e.src.pack(),
                        valid: e.valid.words().to_vec(),
                    })
                    .collect(),
            }
        };
        log.append(&rec).map_err(Pool::meta_err(&vol.name))?;
        let mut map = vol.map.write();
        let mut al = self.pool.alloc.lock();
        for &(l, n) in &fresh {
            // The old extent (copy-on-write) loses this table's reference; a snapshot keeps it.
            if let Some(old) = map.set(l, Some(n), &mut *al) {
                al.decref(old);
            }
        }
        // The plan's reference on each source becomes its partial extent's.
        for (n, e) in partial {
            self.pool.partials.insert(n, e);
        }
        for src in release {
            al.decref(src);
        }
        Ok(())
    }

    /// Give up the reserved extents of `plan` after a failure. They may hold partial data,
    /// so they go through the pending-free path and are punched before reuse.
    fn abandon(&self, plan: &[Placed]) {
        let mut al = self.pool.alloc.lock();
        for n in plan.iter().filter_map(|pl| pl.fresh) {
            al.decref(n);
        }
        for cow in plan.iter().filter_map(|pl| pl.cow.as_ref()) {
            al.decref(cow.src);
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
        for pl in plan {
            let pc = pl.piece;
            let src = &data[pc.buf_offset..pc.buf_offset + pc.len as usize];
            match (pl.at, pl.fresh) {
                (Where::Owned(p), None) => self.pool.write_owned(&vol.name, p, pc, src)?,
                (_, Some(n)) => {
                    if let Some(cow) = &pl.cow {
                        // Sub-extent copy-on-write: only the blocks this write touches (and a
                        // partial old extent's own blocks) go into the new extent.
                        self.pool.cow_prepare(&vol.name, n, cow, pc)?;
                    }
                    self.pool.write_at(&vol.name, n, pc.offset, src)?;
                }
                (at, None) => unreachable!("piece at {at:?} without an extent"),
            }
        }
        Ok(())
    }

    /// Write to the volume's own extents (no pair logic).
    pub(crate) fn write_plain(
        &self,
        vol: &Volume,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, IoError> {
        match self.write_once(vol, offset, data) {
            Err(IoError::NoSpace { .. }) if self.pool.alloc.lock().pending_count() > 0 => {
                self.fsync_volume(vol)?;
                self.write_once(vol, offset, data)
            }
            r => r,
        }
    }

    fn write_once(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
        let size = vol.check_start(offset)?;
        let len = (data.len() as u64).min(size - offset);
        let _gate = self.pool.io_gate.read_recursive();
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
        let _gate = self.pool.io_gate.read_recursive();
        let es = self.pool.extent_size;
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
                    Where::Owned(p) if self.pool.partials.contains(p) => {
                        // Its invalid blocks read from the source: write zeros, which makes
                        // them the extent's own.
                        let zeros = vec![0u8; pc.len as usize];
                        self.write_once(vol, pc.lext * es + pc.offset, &zeros)?;
                    }
                    Where::Owned(p) => {
                        let a = self
                            .pool
                            .array(p.array)
                            .expect("mapped extent has an array");
                        a.punch(p.index, pc.offset, pc.len).map_err(|e| {
                            self.pool.array_err(&vol.name, "punch", p, pc.offset, e)
                        })?;
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
            let mut log = self.pool.meta.lock();
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
            .map_err(Pool::meta_err(&vol.name))?;
            let mut al = self.pool.alloc.lock();
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
        let _gate = self.pool.io_gate.read_recursive();
        let _io = vol.io_lock.read_recursive();
        let step = self.pool.extent_size * 64;
        let mut pos = offset;
        while pos < offset + len {
            let n = step.min(offset + len - pos);
            let mut plan = self.plan_write(vol, pos, n)?;
            // Only holes: a shared extent keeps its data and is copied when written.
            let mut al = self.pool.alloc.lock();
            let mut skipped = Vec::new();
            for pl in plan.iter_mut() {
                if let (Where::Shared(_), Some(f)) = (pl.at, pl.fresh) {
                    al.unreserve(f);
                    pl.fresh = None;
                    if let Some(cow) = pl.cow.take() {
                        al.decref(cow.src);
                    }
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
        self.pool.sync().map_err(|source| IoError::Sync {
            volume: vol.name.clone(),
            source,
        })
    }
}
