//! I/O to a spread volume (`cluster::spread`): a request is split at the parts' boundaries,
//! each piece served from this node's pool when the part is here and forwarded over NBD to
//! the part's node otherwise. A part whose node is down fails its pieces with EIO, the log
//! naming the volume, the part's range and the node; the other parts are unaffected.

use fuser::Errno;

use super::{errno_of, remote_fail, FuseFs};
use crate::cluster::spread::pieces;
use crate::cluster::{RemotePart, RemoteVolume};
use crate::volume::{IoError, Volume};

impl FuseFs {
    /// The local volume holding part `p` (it must exist: the catalog says it is here).
    fn part_volume(&self, p: &RemotePart) -> Result<std::sync::Arc<Volume>, Errno> {
        self.st.volumes.volume(&p.local_name).ok_or_else(|| {
            log::error!(
                "{}: the part's local volume '{}' is missing on this node",
                p.label,
                p.local_name
            );
            Errno::EIO
        })
    }

    fn local_fail(&self, e: IoError) -> Errno {
        match &e {
            IoError::BeyondEnd { .. } => log::debug!("{e}"),
            IoError::NoSpace { .. } => log::warn!("{e}"),
            _ => log::error!("{e}"),
        }
        errno_of(&e)
    }

    /// Run `f` on every piece of `[offset, offset+len)` (clipped to the volume): (part,
    /// offset in the part, offset in the request, length). Stops at the first error.
    fn each_piece(
        &self,
        r: &RemoteVolume,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&RemotePart, u64, usize, usize) -> Result<(), Errno>,
    ) -> Result<u64, Errno> {
        if offset >= r.size {
            return Ok(0);
        }
        let len = len.min(r.size - offset);
        for (i, poff, roff, n) in pieces(r.parts.iter().map(|p| (p.offset, p.size)), offset, len) {
            f(&r.parts[i], poff, roff as usize, n as usize)?;
        }
        Ok(len)
    }

    pub(super) fn spread_read(
        &self,
        r: &RemoteVolume,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        let c = self.cluster.as_ref().ok_or(Errno::ENOENT)?;
        let n = self.each_piece(r, offset, buf.len() as u64, |p, poff, roff, n| {
            let dst = &mut buf[roff..roff + n];
            if p.local {
                let v = self.part_volume(p)?;
                self.st
                    .read(&v, poff, dst)
                    .map(|_| ())
                    .map_err(|e| self.local_fail(e))
            } else {
                let t = c.part_target(p).map_err(remote_fail)?;
                c.remotes
                    .read(&t, p.size, poff, dst)
                    .map(|_| ())
                    .map_err(remote_fail)
            }
        })?;
        Ok(n as usize)
    }

    pub(super) fn spread_write(
        &self,
        r: &RemoteVolume,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, Errno> {
        if offset >= r.size {
            return Err(Errno::from_i32(libc::ENOSPC));
        }
        let c = self.cluster.as_ref().ok_or(Errno::ENOENT)?;
        let n = self.each_piece(r, offset, data.len() as u64, |p, poff, roff, n| {
            let src = &data[roff..roff + n];
            if p.local {
                let v = self.part_volume(p)?;
                self.st
                    .write(&v, poff, src)
                    .map(|_| ())
                    .map_err(|e| self.local_fail(e))
            } else {
                let t = c.part_target(p).map_err(remote_fail)?;
                c.remotes
                    .write(&t, p.size, poff, src)
                    .map(|_| ())
                    .map_err(remote_fail)
            }
        })?;
        Ok(n as usize)
    }

    /// fsync: every part (each one's owner makes what it acknowledged durable).
    pub(super) fn spread_flush(&self, r: &RemoteVolume) -> Result<(), Errno> {
        let c = self.cluster.as_ref().ok_or(Errno::ENOENT)?;
        for p in &r.parts {
            if p.local {
                let v = self.part_volume(p)?;
                self.st.fsync_volume(&v).map_err(|e| self.local_fail(e))?;
            } else {
                let t = c.part_target(p).map_err(remote_fail)?;
                c.remotes.flush(&t).map_err(remote_fail)?;
            }
        }
        Ok(())
    }

    /// Punch `[offset, offset+len)`: each piece discarded on its part.
    pub(super) fn spread_trim(&self, r: &RemoteVolume, offset: u64, len: u64) -> Result<(), Errno> {
        let c = self.cluster.as_ref().ok_or(Errno::ENOENT)?;
        self.each_piece(r, offset, len, |p, poff, _, n| {
            if p.local {
                let v = self.part_volume(p)?;
                self.st
                    .discard(&v, poff, n as u64)
                    .map_err(|e| self.local_fail(e))
            } else {
                let t = c.part_target(p).map_err(remote_fail)?;
                c.remotes.trim(&t, poff, n as u64).map_err(remote_fail)
            }
        })
        .map(|_| ())
    }
}
