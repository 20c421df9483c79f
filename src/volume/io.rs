//! Data path: read, write (with copy-on-write of shared extents), discard, allocate, fsync.

use std::io;
use std::path::PathBuf;

use parking_lot::RwLock;

use super::Volume;
use crate::extent_map::partial::{touched, BlockBits, PartialExt, BLOCK};
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
    /// The journal group's journal is at its limit (policy `block`) and no space came within
    /// the block timeout: nothing of the write was journaled or written (ENOSPC).
    #[error("volume '{volume}': journal full: {detail}")]
    JournalFull { volume: String, detail: String },
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
            IoError::JournalFull { .. } => libc::ENOSPC,
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

#[derive(Clone)]
struct Placed {
    piece: Piece,
    at: Where,
    /// The extent reserved for a hole or a copy-on-write.
    fresh: Option<Phys>,
    /// Sub-extent copy-on-write of a shared extent the write covers in part.
    cow: Option<Cow>,
}

/// Where the new extent of a sub-extent copy-on-write reads the blocks it does not hold.
#[derive(Clone)]
pub(super) struct Cow {
    /// The source: never partial itself. Holds one reference from the plan until commit
    /// (where it becomes the partial entry's) or abandon.
    pub(super) src: Phys,
    /// When the old extent was partial: it, and its valid blocks, carried over into the new
    /// extent (the source is then the old extent's source).
    pub(super) carry: Option<(Phys, BlockBits)>,
}

impl Cow {
    /// Where block `b` of the old extent's content lives.
    pub(super) fn block_home(&self, b: usize) -> Phys {
        match &self.carry {
            Some((old, valid)) if valid.get(b) => *old,
            _ => self.src,
        }
    }

    /// The new extent's valid blocks after a write of `[offset, offset+len)`.
    pub(super) fn valid_after(&self, nblocks: usize, offset: u64, len: u64) -> BlockBits {
        let mut v = match &self.carry {
            Some((_, bits)) => bits.clone(),
            None => BlockBits::new(nblocks),
        };
        let (f, l) = touched(offset, len);
        v.set_range(f, l);
        v
    }
}

impl Placed {
    fn needs_extent(&self) -> bool {
        matches!(self.at, Where::Hole | Where::Shared(_))
    }
}

impl Pool {
    pub(super) fn array_err(
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
            cow: None,
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
                Some(p) => match self.partials.get(p) {
                    Some(e) => self.read_partial(name, p, &e, piece.offset, dst)?,
                    None => self.read_at(name, p, piece.offset, dst)?,
                },
            }
        }
        Ok(len as usize)
    }

    pub(super) fn read_at(
        &self,
        name: &str,
        p: Phys,
        offset: u64,
        dst: &mut [u8],
    ) -> Result<(), IoError> {
        let a = self.array(p.array).expect("mapped extent has an array");
        a.read(p.index, offset, dst)
            .map_err(|e| self.array_err(name, "read", p, offset, e))
    }

    pub(super) fn write_at(
        &self,
        name: &str,
        p: Phys,
        offset: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        let a = self.array(p.array).expect("extent has an array");
        a.write(p.index, offset, data)
            .map_err(|e| self.array_err(name, "write", p, offset, e))
    }

    /// Read part of a partial extent: its valid blocks from itself, the others from its
    /// source. (The caller holds `io_gate`, so the source is not recycled meanwhile even if
    /// the extent completes.)
    fn read_partial(
        &self,
        name: &str,
        p: Phys,
        e: &PartialExt,
        offset: u64,
        dst: &mut [u8],
    ) -> Result<(), IoError> {
        let end = offset + dst.len() as u64;
        let (f, l) = touched(offset, dst.len() as u64);
        for (valid, from) in [(true, p), (false, e.src)] {
            for (a, b) in e.valid.runs(valid, f, l) {
                let lo = (a as u64 * BLOCK).max(offset);
                let hi = (b as u64 * BLOCK).min(end);
                let part = &mut dst[(lo - offset) as usize..(hi - offset) as usize];
                self.read_at(name, from, lo, part)?;
            }
        }
        Ok(())
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
            let mut holds: Vec<Phys> = Vec::new();
            let es = self.extent_size;
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
                                let cow = match self.partials.get(old) {
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
        // Sub-extent copies-on-write: partial unless the write made every block valid.
        let nblocks = self.partials.nblocks();
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
        let mut log = self.meta.lock();
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
        log.append(&rec).map_err(Self::meta_err(vol))?;
        let mut map = vol.map.write();
        let mut al = self.alloc.lock();
        for &(l, n) in &fresh {
            // The old extent (copy-on-write) loses this table's reference; a snapshot keeps it.
            if let Some(old) = map.set(l, Some(n), &mut *al) {
                al.decref(old);
            }
        }
        // The plan's reference on each source becomes its partial extent's.
        for (n, e) in partial {
            self.partials.insert(n, e);
        }
        for src in release {
            al.decref(src);
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
                (Where::Owned(p), None) => self.write_owned(&vol.name, p, pc, src)?,
                (_, Some(n)) => {
                    if let Some(cow) = &pl.cow {
                        // Sub-extent copy-on-write: only the blocks this write touches (and a
                        // partial old extent's own blocks) go into the new extent.
                        self.cow_prepare(&vol.name, n, cow, pc)?;
                    }
                    self.write_at(&vol.name, n, pc.offset, src)?;
                }
                (at, None) => unreachable!("piece at {at:?} without an extent"),
            }
        }
        Ok(())
    }

    /// Write `data` at `offset`. A write crossing the end of the volume is cut short; one
    /// starting at or after the end fails with `BeyondEnd` (ENOSPC, as on a block device).
    /// When the pool is full but freed extents wait for their records to become durable, the
    /// write makes them durable (a sync) and tries once more, so a discard or delete gives
    /// space back at once.
    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<usize, IoError> {
        // A full journal is waited for before the I/O lock is taken (see `full_wait`).
        let since = self.full_wait(vol, data.len() as u64)?;
        // The pair is looked at under the volume's io_lock: pair create and split change it
        // under the exclusive lock, so a write is either mirrored or not, never half.
        let _io = vol.io_lock.read_recursive();
        if let Some(g) = vol.group() {
            Self::refuse_replica(vol, &g)?;
            return self.journaled_write(&g, vol, offset, data, since);
        }
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

    /// A secondary's volumes change only through the applier.
    fn refuse_replica(vol: &Volume, g: &crate::replication::group::Group) -> Result<(), IoError> {
        if g.is_primary() && g.is_stale() {
            return Err(IoError::ReadOnly {
                volume: vol.name.clone(),
                why: format!(
                    "journal group '{}' was taken over by another site (a newer epoch); run `fusevol group failback {}` to make this site its secondary",
                    g.name, g.name
                ),
            });
        }
        if g.is_primary() {
            return Ok(());
        }
        Err(IoError::ReadOnly {
            volume: vol.name.clone(),
            why: format!(
                "it is the secondary of journal group '{}' (read-only while attached)",
                g.name
            ),
        })
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
        let since = self.full_wait(vol, 0)?;
        let _io = vol.io_lock.read_recursive();
        if let Some(g) = vol.group() {
            Self::refuse_replica(vol, &g)?;
            return self.journaled_discard(&g, vol, offset, len, since);
        }
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
                    Where::Owned(p) if self.partials.contains(p) => {
                        // Its invalid blocks read from the source: write zeros, which makes
                        // them the extent's own.
                        let zeros = vec![0u8; pc.len as usize];
                        self.write_once(vol, pc.lext * es + pc.offset, &zeros)?;
                    }
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
        if let Some(g) = vol.group() {
            Self::refuse_replica(vol, &g)?;
        }
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
        self.sync().map_err(|source| IoError::Sync {
            volume: vol.name.clone(),
            source,
        })
    }
}
