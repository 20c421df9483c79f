//! Copies inside the mount: `copy_file_range` from a volume or snapshot file onto a volume
//! file (what `cp` uses since coreutils 9, and `qemu-img convert` between files of the mount).
//!
//! Where source and destination offsets have the same position inside an extent, the whole
//! extents of the range are *shared*: mapped into the destination copy-on-write, as a clone
//! does, by one `MapShare` record per batch (`volume/share.rs`); holes of the source become
//! holes of the destination. Only the parts of extents at the ends of the range are read and
//! written, through the ordinary pipeline. So `cp $MNT/a $MNT/b` of volumes of the same size
//! reads nothing but what cp's SEEK_DATA finds at the ends, and takes no new space.
//!
//! Pairs and journal groups: a destination in a pair or a journal group must have its writes
//! mirrored or journaled, and a paired source reads by its pair's rules (a reverse resync
//! serves regions from the S-VOL); for those, the copy takes the *copied path* — the
//! source's data runs are read and written through `Storage::write` (admissions, dual write,
//! journal record) and its holes discarded through `Storage::discard` — and still answers
//! the request in the daemon, without the kernel's round trips per page. Extents on an array
//! outside the destination's tier, and ranges whose offsets differ inside an extent, are
//! copied the same way.

use std::sync::Arc;
use std::time::Duration;

use super::Storage;
use crate::pool::IoError;
use crate::snapshot::Snapshot;
use crate::volume::{ShareFrom, Volume};

/// Whole extents shared per metadata record (and per hold of the metadata lock).
const SHARE_BATCH: u64 = 4096;
/// Bytes read and written per step of the copied path.
const COPY_STEP: u64 = 1 << 20;

/// The file a copy reads from.
#[derive(Clone, Copy)]
pub enum CopyFrom<'a> {
    Volume(&'a Arc<Volume>),
    Snapshot(&'a Arc<Snapshot>),
}

/// How long a copy waits for the in-flight writes of its source volume before it copies a
/// batch byte by byte instead of sharing it.
const QUIESCE_WAIT: Duration = Duration::from_secs(2);

impl CopyFrom<'_> {
    fn size(&self) -> u64 {
        match self {
            CopyFrom::Volume(v) => v.size(),
            CopyFrom::Snapshot(s) => s.size,
        }
    }

    fn name(&self) -> String {
        match self {
            CopyFrom::Volume(v) => v.name.clone(),
            CopyFrom::Snapshot(s) => s.name.clone(),
        }
    }
}

impl Storage {
    /// Copy `len` bytes at `off_in` of `src` to `off_out` of `dst`; returns the bytes
    /// copied (fewer at the end of either file; 0 at or past the end of the source). A copy
    /// that starts at or past the end of `dst` fails with `BeyondEnd` (ENOSPC), as a write.
    pub fn copy_range(
        &self,
        src: CopyFrom,
        off_in: u64,
        dst: &Volume,
        off_out: u64,
        len: u64,
    ) -> Result<u64, IoError> {
        if let Some(why) = self.pool.read_only() {
            return Err(IoError::ReadOnly {
                volume: dst.name.clone(),
                why,
            });
        }
        dst.moving.admit(&dst.name)?;
        let size_out = dst.check_start(off_out)?;
        let size_in = src.size();
        if off_in >= size_in || len == 0 {
            return Ok(0);
        }
        let len = len.min(size_in - off_in).min(size_out - off_out);
        if let CopyFrom::Volume(v) = src {
            if v.id == dst.id && off_in < off_out + len && off_out < off_in + len {
                return Err(IoError::Invalid {
                    volume: dst.name.clone(),
                    detail: format!(
                        "copy of {len} bytes from offset {off_in} to offset {off_out} overlaps itself"
                    ),
                });
            }
        }
        let es = self.pool.extent_size;
        if off_in % es != off_out % es {
            self.copy_bytes(src, off_in, dst, off_out, len)?;
            return Ok(len);
        }
        // Pair and group membership cannot change while the destination's io_lock is held
        // shared (pairing and grouping take it exclusively).
        let _io = dst.io_lock.read_recursive();
        if !self.may_share(src, dst) {
            drop(_io);
            self.copy_bytes(src, off_in, dst, off_out, len)?;
            return Ok(len);
        }
        let head = ((es - off_in % es) % es).min(len);
        let whole = (len - head) / es;
        let tail = len - head - whole * es;
        self.copy_bytes(src, off_in, dst, off_out, head)?;
        let (family, table) = match src {
            CopyFrom::Volume(v) => (v.id, &v.map),
            CopyFrom::Snapshot(s) => (s.volume, &s.table),
        };
        let from = ShareFrom { table, family };
        let (src_l, dst_l) = ((off_in + head) / es, (off_out + head) / es);
        let mut i = 0;
        while i < whole {
            let n = SHARE_BATCH.min(whole - i);
            // A write to another source volume that is in flight (planned as an overwrite in
            // place, or acknowledged early and still being destaged) would land in an extent
            // once it is shared: quiesce the source's writes around the share, as a snapshot
            // does. Waiting is bounded (a copy the other way holds this source's lock shared
            // as its destination and may want ours): on timeout the batch is copied instead.
            let quiet = match src {
                CopyFrom::Volume(v) if v.id != dst.id => {
                    match v.io_lock.try_write_for(QUIESCE_WAIT) {
                        Some(g) => Some(g),
                        None => {
                            log::info!(
                                "copy from volume '{}': its writes did not pause within {:?}; extents {}..{} are copied, not shared",
                                v.name,
                                QUIESCE_WAIT,
                                src_l + i,
                                src_l + i + n
                            );
                            let (s0, d0) = ((src_l + i) * es, (dst_l + i) * es);
                            self.copy_bytes(src, s0, dst, d0, n * es)?;
                            i += n;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let shared = self
                .volumes
                .share_extents(dst, &from, src_l + i, dst_l + i, n);
            // Shared without the pipeline: a move of `dst` copies the range again.
            dst.moving.note((dst_l + i) * es, n * es);
            let unshared = shared?;
            drop(quiet);
            for l in unshared {
                let k = l - src_l;
                self.copy_bytes(src, l * es, dst, (dst_l + k) * es, es)?;
            }
            i += n;
        }
        let done = head + whole * es;
        self.copy_bytes(src, off_in + done, dst, off_out + done, tail)?;
        log::debug!(
            "copied {len} bytes of '{}' at {off_in} to volume '{}' at {off_out} ({whole} extents shared)",
            src.name(),
            dst.name
        );
        Ok(len)
    }

    /// May whole extents of `src` be shared into `dst`? Not when a pair or journal group must
    /// see the destination's writes, when the destination keeps off some arrays (a pair's
    /// S-VOL side), or when a paired source reads by its pair's rules.
    fn may_share(&self, src: CopyFrom, dst: &Volume) -> bool {
        let src_paired = match src {
            CopyFrom::Volume(v) => self.mirror.pair_of_volume(v.id).is_some(),
            CopyFrom::Snapshot(_) => false,
        };
        !src_paired
            && self.mirror.pair_of_volume(dst.id).is_none()
            && self.replication.group_of(dst.id).is_none()
            && dst.allowed_arrays.read().is_none()
    }

    /// The copied path: read the source's data runs and write them through the pipeline;
    /// make its holes holes (discard) in the destination.
    fn copy_bytes(
        &self,
        src: CopyFrom,
        off_in: u64,
        dst: &Volume,
        off_out: u64,
        len: u64,
    ) -> Result<(), IoError> {
        let mut buf = vec![0u8; COPY_STEP.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = COPY_STEP.min(len - done);
            let runs = match src {
                CopyFrom::Volume(v) => self.allocation(v, off_in + done, n),
                CopyFrom::Snapshot(s) => self.snapshots.allocation(s, off_in + done, n),
            };
            let mut pos = done;
            for (rl, mapped) in runs {
                let (si, di) = (off_in + pos, off_out + pos);
                if mapped {
                    let b = &mut buf[..rl as usize];
                    let got = match src {
                        CopyFrom::Volume(v) => self.read(v, si, b)?,
                        CopyFrom::Snapshot(s) => self.snapshots.read_snapshot(s, si, b)?,
                    };
                    let mut w = 0;
                    while w < got {
                        match self.write(dst, di + w as u64, &b[w..got])? {
                            0 => break,
                            n => w += n,
                        }
                    }
                } else {
                    self.discard(dst, di, rl)?;
                }
                pos += rl;
            }
            if pos == done {
                break; // the source ended (cannot happen: the range was clipped to it)
            }
            done = pos;
        }
        Ok(())
    }
}
