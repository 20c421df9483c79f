//! Extent-level I/O of the core: read any extent table (a volume's or a snapshot's), read and
//! write one extent, and the data-path error type every layer above returns.

use std::io;
use std::path::PathBuf;

use parking_lot::RwLock;

use super::streams::Access;
use super::{Pool, PoolError};
use crate::extent_map::partial::{touched, BlockBits, PartialExt, BLOCK};
use crate::extent_map::{pieces, ExtentTable, Piece};
use crate::format::Phys;
use crate::meta::MetaError;

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
    /// The journal could not take the write's record (write-ahead), so nothing of the write
    /// was done. Keeps the journal's own error, so a full disk stays ENOSPC and an I/O error
    /// EIO.
    #[error("volume '{volume}': journal: {source}")]
    Journal {
        volume: String,
        source: crate::journal::JournalError,
    },
    /// The journal group's journal is at its limit (policy `block`) and no space came within
    /// the block timeout: nothing of the write was journaled or written (ENOSPC).
    #[error("volume '{volume}': journal full: {detail}")]
    JournalFull { volume: String, detail: String },
    /// The volume was moved to another node of the cluster (`fusevol volume move`): this
    /// node's copy is no longer it (NBD ESHUTDOWN: a forwarding node asks the new owner).
    #[error("volume '{volume}' was moved to node '{node}'")]
    Moved { volume: String, node: String },
}

/// Where the new extent of a sub-extent copy-on-write reads the blocks it does not hold.
#[derive(Clone)]
pub struct Cow {
    /// The source: never partial itself. Holds one reference from the plan until commit
    /// (where it becomes the partial entry's) or abandon.
    pub src: Phys,
    /// When the old extent was partial: it, and its valid blocks, carried over into the new
    /// extent (the source is then the old extent's source).
    pub carry: Option<(Phys, BlockBits)>,
}

impl Cow {
    /// Where block `b` of the old extent's content lives.
    pub(crate) fn block_home(&self, b: usize) -> Phys {
        match &self.carry {
            Some((old, valid)) if valid.get(b) => *old,
            _ => self.src,
        }
    }

    /// The new extent's valid blocks after a write of `[offset, offset+len)`.
    pub(crate) fn valid_after(&self, nblocks: usize, offset: u64, len: u64) -> BlockBits {
        let mut v = match &self.carry {
            Some((_, bits)) => bits.clone(),
            None => BlockBits::new(nblocks),
        };
        let (f, l) = touched(offset, len);
        v.set_range(f, l);
        v
    }
}

/// The shortest gap between two `io-error` events of one array.
const ARRAY_EVENT_GAP: std::time::Duration = std::time::Duration::from_secs(10);

impl Pool {
    pub(crate) fn array_err(
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
        // An array error is an event, at most one per array per ARRAY_EVENT_GAP.
        let publish = {
            let mut last = self.array_error_events.lock();
            let now = std::time::Instant::now();
            match last.get(&p.array) {
                Some(t) if now.duration_since(*t) < ARRAY_EVENT_GAP => false,
                _ => {
                    last.insert(p.array, now);
                    true
                }
            }
        };
        if publish {
            let array = self
                .array(p.array)
                .map_or_else(|| format!("#{}", p.array), |a| a.name.clone());
            self.events.publish(
                "array",
                &array,
                "io-error",
                serde_json::json!({"op": op, "path": path.display().to_string(), "offset": offset, "volume": name, "error": e.to_string()}),
            );
        }
        IoError::Array {
            volume: name.to_string(),
            op,
            path,
            offset,
            source: e,
        }
    }

    pub(crate) fn meta_err(volume: &str) -> impl FnOnce(MetaError) -> IoError + '_ {
        move |source| IoError::Meta {
            volume: volume.to_string(),
            source,
        }
    }

    /// Is the extent held by anything besides this table's one chunk?
    pub(crate) fn is_shared(&self, p: Phys, chunk_shared: bool) -> bool {
        chunk_shared || self.array(p.array).is_some_and(|a| a.refs.get(p.index) > 1)
    }

    /// Read from any extent table (a volume's or a snapshot's). Holes read as zeros.
    /// `access`: with or without the arrays' read-ahead (`streams`).
    pub(crate) fn read_table(
        &self,
        table: &RwLock<ExtentTable>,
        size: u64,
        name: &str,
        offset: u64,
        buf: &mut [u8],
        access: Access,
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
        if plan.len() > 1 && super::array::read_hints().willneed {
            for (piece, p) in plan.iter().filter_map(|(pc, p)| p.map(|p| (pc, p))) {
                if let Some(a) = self.array(p.array) {
                    a.will_need(p.index, piece.offset, piece.len);
                }
            }
        }
        for (piece, phys) in plan {
            let dst = &mut buf[piece.buf_offset..piece.buf_offset + piece.len as usize];
            match phys {
                None => dst.fill(0),
                Some(p) => match self.partials.get(p) {
                    Some(e) => self.read_partial(name, p, &e, piece.offset, dst, access)?,
                    None => self.read_at(name, p, piece.offset, dst, access)?,
                },
            }
        }
        Ok(len as usize)
    }

    pub(crate) fn read_at(
        &self,
        name: &str,
        p: Phys,
        offset: u64,
        dst: &mut [u8],
        access: Access,
    ) -> Result<(), IoError> {
        let a = self.array(p.array).expect("mapped extent has an array");
        a.read(p.index, offset, dst, access)
            .map_err(|e| self.array_err(name, "read", p, offset, e))
    }

    pub(crate) fn write_at(
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
        access: Access,
    ) -> Result<(), IoError> {
        let end = offset + dst.len() as u64;
        let (f, l) = touched(offset, dst.len() as u64);
        for (valid, from) in [(true, p), (false, e.src)] {
            for (a, b) in e.valid.runs(valid, f, l) {
                let lo = (a as u64 * BLOCK).max(offset);
                let hi = (b as u64 * BLOCK).min(end);
                let part = &mut dst[(lo - offset) as usize..(hi - offset) as usize];
                self.read_at(name, from, lo, part, access)?;
            }
        }
        Ok(())
    }
}
