//! Volume information as extended attributes of the volume and snapshot files:
//! `user.fusevol.<key>` for every key of `fusevol volume info` (`label`, `host`,
//! `mountpoint`, `app`, `time`, `user.<name>`, and the read-only `origin.*`).
//!
//! Other names answer ENODATA (get) or ENOTSUP (set), so `security.capability` costs
//! nothing more than before; the daemon also negotiates `FUSE_HANDLE_KILLPRIV_V2` (see
//! `init`), with which the kernel leaves clearing set-id bits to the daemon instead of
//! asking for `security.capability` before writes (volume files have no set-id bits).

use std::ffi::OsStr;

use fuser::{Errno, INodeNo, ReplyEmpty, ReplyXattr};

use super::{pool_errno, FuseFs, Node};
use crate::pool::create::now_secs;

pub const PREFIX: &str = "user.fusevol.";

impl FuseFs {
    /// The volume or snapshot id of an inode that carries volume information.
    fn info_id(&self, ino: INodeNo) -> Option<u64> {
        match self.node(ino)? {
            Node::Volume(v) => Some(v.id),
            Node::Snapshot(s) => Some(s.id),
            _ => None,
        }
    }

    pub(super) fn xattr_get(&self, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        log::trace!("getxattr {name:?} of inode {ino:?}");
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        let Some(id) = self.info_id(ino) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        match self.st.infos.get(id).record().get(key) {
            Some(v) => reply_bytes(v.as_bytes(), size, reply),
            None => reply.error(Errno::from_i32(libc::ENODATA)),
        }
    }

    pub(super) fn xattr_list(&self, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut out = Vec::new();
        if let Some(id) = self.info_id(ino) {
            for (k, _) in self.st.infos.get(id).record().pairs() {
                out.extend_from_slice(PREFIX.as_bytes());
                out.extend_from_slice(k.as_bytes());
                out.push(0);
            }
        }
        reply_bytes(&out, size, reply)
    }

    pub(super) fn xattr_set(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        reply: ReplyEmpty,
    ) {
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            return reply.error(Errno::from_i32(libc::ENOTSUP));
        };
        let Some(id) = self.info_id(ino) else {
            return reply.error(Errno::from_i32(libc::ENOTSUP));
        };
        if key.starts_with("origin.") {
            // Set by the array when it makes a copy, never by a user.
            return reply.error(Errno::EPERM);
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return reply.error(Errno::EINVAL);
        };
        let now = now_secs();
        let res = self.st.infos.update(id, |r| {
            let exists = r.get(key).is_some();
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err("exists".into());
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err("absent".into());
            }
            r.set(key, value, now)
        });
        match res {
            Ok(_) => reply.ok(),
            Err(crate::pool::PoolError::Invalid(m)) if m == "exists" => reply.error(Errno::EEXIST),
            Err(crate::pool::PoolError::Invalid(m)) if m == "absent" => {
                reply.error(Errno::from_i32(libc::ENODATA))
            }
            Err(crate::pool::PoolError::Invalid(m)) if m.contains("limit") => {
                reply.error(Errno::from_i32(libc::E2BIG))
            }
            Err(e) => {
                log::info!("setxattr {name:?}: {e}");
                reply.error(pool_errno(&e))
            }
        }
    }

    pub(super) fn xattr_remove(&self, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        let Some(id) = self.info_id(ino) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        if key.starts_with("origin.") {
            return reply.error(Errno::EPERM);
        }
        let res = self.st.infos.update(id, |r| match r.unset(key) {
            Ok(true) => Ok(()),
            Ok(false) => Err("absent".into()),
            Err(e) => Err(e),
        });
        match res {
            Ok(_) => reply.ok(),
            Err(crate::pool::PoolError::Invalid(m)) if m == "absent" => {
                reply.error(Errno::from_i32(libc::ENODATA))
            }
            Err(e) => reply.error(pool_errno(&e)),
        }
    }
}

/// The xattr size protocol: size 0 asks for the length; a too-small buffer is ERANGE.
fn reply_bytes(v: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE))
    } else {
        reply.data(v)
    }
}
