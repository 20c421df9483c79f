//! Sub-extent copy-on-write: the I/O around partial extents (see `extent_map::partial`).
//!
//! * A write to part of a shared extent O allocates N and writes into N only the 4 KiB blocks
//!   it touches; a block it covers in part is completed from O first (`cow_prepare`). The
//!   `MapSetPartial` record then maps N and marks those blocks valid.
//! * A write to an invalid block of a partial extent N that the volume owns writes the block
//!   (completed from the source where the write covers part of it) and then appends a
//!   `PartialValid` record before it is acknowledged (`write_owned`). Writers of invalid
//!   blocks and the filler hold the extent's stripe lock, so the filler never copies a
//!   source block over a newer one.
//!
//! Crash-ordering: a block's data is written before the record that marks it valid, and a
//! block is read from N only once it is marked valid, so a crash at any moment leaves every
//! block readable from the right place.

use super::streams::Access;
use super::Pool;
use super::{Cow, IoError};
use crate::extent_map::partial::{touched, BlockBits, BLOCK};
use crate::extent_map::Piece;
use crate::format::{MetaRecord, Phys};

impl Pool {
    /// Copy into the fresh extent `n` what a sub-extent copy-on-write needs besides the
    /// written bytes: the rest of the blocks the piece touches in part, and the valid blocks
    /// of a partial old extent (carried over, so the source stays one hop away).
    pub(crate) fn cow_prepare(
        &self,
        name: &str,
        n: Phys,
        cow: &Cow,
        pc: Piece,
    ) -> Result<(), IoError> {
        let (f, l) = touched(pc.offset, pc.len);
        if let Some((old, bits)) = &cow.carry {
            let src = self.array(old.array).expect("mapped extent has an array");
            let dst = self.array(n.array).expect("reserved extent has an array");
            for (a, b) in bits.runs(true, 0, bits.nblocks()) {
                // Blocks the write touches are written below.
                for (a, b) in [(a, b.min(f)), (a.max(l), b)] {
                    if a < b {
                        let (off, len) = (a as u64 * BLOCK, (b - a) as u64 * BLOCK);
                        src.copy_to(old.index, &dst, n.index, off, len)
                            .map_err(|e| self.array_err(name, "copy-on-write", n, off, e))?;
                    }
                }
            }
        }
        self.fill_block_edges(name, n, pc, |b| Some(cow.block_home(b)))
    }

    /// Complete the blocks that the piece covers in part with the bytes of the old content
    /// (`home(b)` says where block b's old content lives; None: it is in `n` already).
    fn fill_block_edges(
        &self,
        name: &str,
        n: Phys,
        pc: Piece,
        home: impl Fn(usize) -> Option<Phys>,
    ) -> Result<(), IoError> {
        let end = pc.offset + pc.len;
        let mut buf = [0u8; BLOCK as usize];
        let head = pc.offset / BLOCK;
        if !pc.offset.is_multiple_of(BLOCK) {
            if let Some(from) = home(head as usize) {
                let lo = head * BLOCK;
                let part = &mut buf[..(pc.offset - lo) as usize];
                self.read_at(name, from, lo, part, Access::Sequential)?;
                self.write_at(name, n, lo, part)?;
            }
        }
        if !end.is_multiple_of(BLOCK) {
            let tb = end / BLOCK;
            if let Some(from) = home(tb as usize) {
                let hi = (tb + 1) * BLOCK;
                let part = &mut buf[..(hi - end) as usize];
                self.read_at(name, from, end, part, Access::Sequential)?;
                self.write_at(name, n, end, part)?;
            }
        }
        Ok(())
    }

    /// Write a piece into an extent the volume owns. A partial extent's invalid blocks
    /// become valid: data first, then the `PartialValid` record, then the bits.
    pub(crate) fn write_owned(
        &self,
        name: &str,
        p: Phys,
        pc: Piece,
        data: &[u8],
    ) -> Result<(), IoError> {
        let (f, l) = touched(pc.offset, pc.len);
        let needs_bits = |p: Phys| {
            self.partials
                .get(p)
                .filter(|e| !e.valid.all_in(f, l))
                .map(|e| (e.src, e.valid))
        };
        if needs_bits(p).is_none() {
            return self.write_at(name, p, pc.offset, data);
        }
        let _x = self.partials.lock_extent(p);
        let Some((src, valid)) = needs_bits(p) else {
            return self.write_at(name, p, pc.offset, data);
        };
        self.fill_block_edges(name, p, pc, |b| (!valid.get(b)).then_some(src))?;
        self.write_at(name, p, pc.offset, data)?;
        let mut bits = BlockBits::new(valid.nblocks());
        bits.set_range(f, l);
        self.mark_valid(name, p, bits.minus(&valid))
    }

    /// Append `PartialValid` for blocks of `p` whose data is written, and set them. Once every
    /// block is valid the extent is complete and its source loses this reference.
    fn mark_valid(&self, name: &str, p: Phys, bits: BlockBits) -> Result<(), IoError> {
        let mut log = self.meta.lock();
        // Under the metadata lock: the entry may have ended meanwhile (filler, or the extent
        // was dropped); then there is nothing to record.
        if !self.partials.contains(p) {
            return Ok(());
        }
        log.append(&MetaRecord::PartialValid {
            ext: p.pack(),
            valid: bits.words().to_vec(),
        })
        .map_err(|source| IoError::Meta {
            volume: name.to_string(),
            source,
        })?;
        if self.partials.set_valid(p, &bits) == Some(true) {
            let mut al = self.alloc.lock();
            if let Some(e) = self.partials.remove(p) {
                crate::extent_map::RefCounts::decref(&mut *al, e.src);
            }
        }
        Ok(())
    }
}
