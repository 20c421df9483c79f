//! Copies that share extents: the whole extents of a copied range are mapped into the
//! destination copy-on-write, as a clone does, instead of being read and written
//! (`copy_file_range` between volume files, `storage/copy.rs`).
//!
//! One `MapShare` record per batch, appended and applied under the metadata lock like every
//! other map change. The shared extents hold data that an earlier record published (data
//! before the pointer to it holds for them already), so the record only adds a table's
//! reference; an extent it replaces in the destination loses one and, if that was the last,
//! waits in `pending_free` until the record is durable (crash-ordering rule 2). A shared
//! extent has two references, so the next write to it on either side copies it first.

use parking_lot::RwLock;

use super::{Volume, Volumes};
use crate::extent_map::{ExtentTable, RefCounts};
use crate::format::{MetaRecord, Phys};
use crate::meta::State;
use crate::pool::{IoError, Pool};

/// Where shared extents come from.
pub struct ShareFrom<'a> {
    /// The source's extent table (a volume's map or a snapshot's table).
    pub table: &'a RwLock<ExtentTable>,
    /// The volume the table belongs to (a snapshot's volume): the destination joins its
    /// family.
    pub family: u64,
}

impl Volumes {
    /// Map the whole logical extents `[src_l, src_l + n)` of `from` into `dst` at `[dst_l,
    /// dst_l + n)`: mapped extents are shared, holes of the source become holes. The caller
    /// holds `dst`'s `io_lock` shared and has made sure no pair or journal group needs to
    /// see these writes. Returns the source extents that were not shared because they lie
    /// on an array outside `dst`'s tier, for the caller to copy byte by byte.
    pub(crate) fn share_extents(
        &self,
        dst: &Volume,
        from: &ShareFrom,
        src_l: u64,
        dst_l: u64,
        n: u64,
    ) -> Result<Vec<u64>, IoError> {
        let _gate = self.pool.io_gate.read_recursive();
        loop {
            let mut log = self.pool.meta.lock();
            // Every change of a table holds the metadata lock, so the source stays as read
            // here until the record below is applied (also when it is `dst`'s own map).
            let src: Vec<Option<Phys>> = {
                let t = from.table.read();
                (src_l..src_l + n).map(|l| t.get(l)).collect()
            };
            let mut map = dst.map.write();
            // A writer allocating one of these slots publishes after us and would overwrite
            // the shared extent with one that holds only its own blocks: let it finish.
            if dst.any_pending(dst_l..dst_l + n) {
                drop(map);
                drop(log);
                dst.wait_pending();
                continue;
            }
            let mut entries: Vec<(u64, Phys)> = Vec::new();
            let mut holes: Vec<u64> = Vec::new();
            let mut unshared: Vec<u64> = Vec::new();
            for (i, s) in src.iter().enumerate() {
                let l = dst_l + i as u64;
                let cur = map.get(l);
                match *s {
                    None if cur.is_some() => holes.push(l),
                    None => {}
                    Some(p) if cur == Some(p) => {}
                    Some(p) if self.pool.array(p.array).is_some_and(|a| a.tier == dst.tier) => {
                        entries.push((l, p))
                    }
                    Some(_) => unshared.push(src_l + i as u64),
                }
            }
            if entries.is_empty() && holes.is_empty() {
                return Ok(unshared);
            }
            log.append(&MetaRecord::MapShare {
                volume: dst.id,
                from: from.family,
                entries: entries.iter().map(|&(l, p)| (l, p.pack())).collect(),
                holes: holes.clone(),
            })
            .map_err(Pool::meta_err(&dst.name))?;
            State::add_link(&mut self.links.lock(), dst.id, from.family);
            let mut al = self.pool.alloc.lock();
            for &(l, p) in &entries {
                al.incref(p);
                if let Some(old) = map.set(l, Some(p), &mut *al) {
                    al.decref(old);
                }
            }
            for &l in &holes {
                // Crash-ordering: reusable only after this record is durable and punched.
                if let Some(old) = map.set(l, None, &mut *al) {
                    al.decref(old);
                }
            }
            return Ok(unshared);
        }
    }
}
