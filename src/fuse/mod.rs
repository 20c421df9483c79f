//! The `fuser` adapter: a root directory whose regular files are the volumes.
//!
//! This is the only place that turns errors into errno values. It holds no state of its
//! own beyond what the kernel protocol needs; every operation goes to the `Storage` (its
//! write pipeline for volume I/O, its services for lookups).

mod spread;
mod xattr;

use std::cell::RefCell;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

use crate::cluster::{Cluster, RemoteError, RemoteSnapshot, RemoteVolume, Route};
use crate::pool::PoolError;
use crate::snapshot::Snapshot;
use crate::storage::{CopyFrom, Storage};
use crate::volume::{IoError, Volume, Writer};

pub mod stage;
pub mod uring;
use stage::Dispatch;

pub const ROOT_INO: u64 = 1;
/// `<MOUNTPOINT>/.snapshots`
pub const SNAPROOT_INO: u64 = 2;
pub const SNAPROOT_NAME: &str = ".snapshots";
/// Volume or snapshot `id` (one id space) is inode `VOLUME_INO_BASE + id`.
pub const VOLUME_INO_BASE: u64 = 16;
/// `.snapshots/<VOL>` of volume `id` is inode `SNAPDIR_INO_BASE + id`.
pub const SNAPDIR_INO_BASE: u64 = 1 << 48;
/// Volume `i` of another node (cluster index `i`) is inode `REMOTE_INO_BASE + i`.
pub const REMOTE_INO_BASE: u64 = 1 << 40;
/// `.snapshots/<VOL>` of remote volume `i` is inode `REMOTE_SNAPDIR_BASE + i`.
pub const REMOTE_SNAPDIR_BASE: u64 = 1 << 44;
/// The kernel caps one request at 1 MiB.
pub const MAX_REQUEST: u32 = 1 << 20;
const TTL: Duration = Duration::from_secs(1);

pub fn volume_ino(id: u64) -> u64 {
    VOLUME_INO_BASE + id
}

/// What an inode is.
enum Node {
    Root,
    SnapRoot,
    SnapDir(Arc<Volume>),
    Volume(Arc<Volume>),
    Snapshot(Arc<Snapshot>),
    /// A volume another node owns: I/O is forwarded to it (`cluster`).
    Remote(RemoteVolume),
    /// `.snapshots/<VOL>` of a remote volume.
    RemoteSnapDir(RemoteVolume),
    /// A snapshot of a remote volume: reads are forwarded to the owner's `VOL@SNAP`.
    RemoteSnapshot(RemoteSnapshot),
}

pub struct FuseFs {
    st: Arc<Storage>,
    cluster: Option<Arc<Cluster>>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
    /// Runs data requests on the worker or hands them to the I/O stage (see `stage`).
    dispatch: Dispatch,
}

thread_local! {
    /// One read buffer per worker thread, reused for every request.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The errno a file system user sees for a data-path error.
pub fn io_errno(e: &IoError) -> i32 {
    match e {
        IoError::BeyondEnd { .. } | IoError::NoSpace { .. } => libc::ENOSPC,
        IoError::Array { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
            libc::ENOSPC
        }
        IoError::Invalid { .. } => libc::EINVAL,
        IoError::ReadOnly { .. } => libc::EROFS,
        IoError::JournalFull { .. } => libc::ENOSPC,
        IoError::Journal { source, .. } => source.errno(),
        _ => libc::EIO,
    }
}

/// The errno for a forwarded request's failure. An owner that is down or does not answer is
/// EIO (never data from anywhere else); the owner's own answer keeps its meaning.
pub fn remote_errno(e: &RemoteError) -> i32 {
    use crate::format::nbd as w;
    match e {
        RemoteError::BeyondEnd { .. } => libc::ENOSPC,
        RemoteError::Remote { error, .. } => match *error {
            w::ENOSPC => libc::ENOSPC,
            w::EPERM => libc::EROFS,
            w::EINVAL => libc::EINVAL,
            w::ENOMEM => libc::ENOMEM,
            _ => libc::EIO,
        },
        RemoteError::Unavailable { .. } | RemoteError::Io { .. } => libc::EIO,
    }
}

fn remote_fail(e: RemoteError) -> Errno {
    match &e {
        RemoteError::BeyondEnd { .. } => log::debug!("{e}"),
        _ => log::error!("{e}"),
    }
    Errno::from_i32(remote_errno(&e))
}

fn errno_of(e: &IoError) -> Errno {
    Errno::from_i32(io_errno(e))
}

fn pool_errno(e: &PoolError) -> Errno {
    Errno::from_i32(match e {
        PoolError::Invalid(_) => libc::EINVAL,
        PoolError::NotFound(_) => libc::ENOENT,
        PoolError::Exists(_) => libc::EEXIST,
        PoolError::Busy(_) => libc::EBUSY,
        PoolError::NoSpace(_) => libc::ENOSPC,
        _ => libc::EIO,
    })
}

impl FuseFs {
    /// An adapter whose data requests run on the FUSE workers themselves.
    pub fn new(st: Arc<Storage>) -> FuseFs {
        FuseFs::with_cluster(st, None)
    }

    /// A mount that also shows the volumes of the other nodes of `cluster`.
    pub fn with_cluster(st: Arc<Storage>, cluster: Option<Arc<Cluster>>) -> FuseFs {
        FuseFs {
            st,
            cluster,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mounted_at: SystemTime::now(),
            dispatch: Dispatch::new(0, 1).expect("no threads to start"),
        }
    }

    /// An adapter with an I/O stage of `io_threads` threads: a data request (read, write,
    /// fsync) that arrives while another is in flight runs there, so the FUSE worker goes
    /// back for the next request while its I/O is at the disk; the reply is sent when the
    /// I/O completes. 0 keeps every request on its worker. `workers`: the FUSE worker
    /// threads of the session.
    /// `cluster`: as for `with_cluster`.
    pub fn with_io_threads(
        st: Arc<Storage>,
        cluster: Option<Arc<Cluster>>,
        io_threads: usize,
        workers: usize,
    ) -> std::io::Result<FuseFs> {
        let mut fs = FuseFs::with_cluster(st, cluster);
        fs.dispatch = Dispatch::new(io_threads, workers)?;
        Ok(fs)
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        match ino.0 {
            ROOT_INO => Some(Node::Root),
            SNAPROOT_INO => Some(Node::SnapRoot),
            i if i >= SNAPDIR_INO_BASE => self
                .st
                .volumes
                .volume_by_id(i - SNAPDIR_INO_BASE)
                .map(Node::SnapDir),
            i if i >= REMOTE_SNAPDIR_BASE => self
                .cluster
                .as_ref()?
                .remote_by_index(i - REMOTE_SNAPDIR_BASE)
                .map(Node::RemoteSnapDir),
            i if i >= REMOTE_INO_BASE => {
                let c = self.cluster.as_ref()?;
                match c.remote_by_index(i - REMOTE_INO_BASE) {
                    Some(r) => Some(Node::Remote(r)),
                    None => c
                        .remote_snapshot_by_index(i - REMOTE_INO_BASE)
                        .map(Node::RemoteSnapshot)
                        // A volume moved here (`volume move`): its old inode is the local one.
                        .or_else(|| {
                            let name = c.index_name(i - REMOTE_INO_BASE)?;
                            self.local_volume(&name).map(Node::Volume)
                        }),
                }
            }
            i if i >= VOLUME_INO_BASE => {
                let id = i - VOLUME_INO_BASE;
                match self.st.volumes.volume_by_id(id) {
                    Some(v) => Some(Node::Volume(v)),
                    None => self
                        .st
                        .snapshots
                        .snapshot_by_id(id)
                        .map(Node::Snapshot)
                        // A volume moved to another node: its old inode is forwarded.
                        .or_else(|| {
                            let c = self.cluster.as_ref()?;
                            c.remote_volume(&c.moved_away(id)?).map(Node::Remote)
                        }),
                }
            }
            _ => None,
        }
    }

    /// The local volume `name`, unless the cluster hides it (a move's copy not switched yet,
    /// or the old copy of a volume moved away).
    fn local_volume(&self, name: &str) -> Option<Arc<Volume>> {
        // A volume renamed in the cluster: its global name leads to its local volume.
        if let Some(local) = self.cluster.as_ref().and_then(|c| c.local_alias(name)) {
            return self.st.volumes.volume(&local);
        }
        let v = self.st.volumes.volume(name)?;
        match &self.cluster {
            Some(c) if c.hides_local(name) => None,
            _ => Some(v),
        }
    }

    fn attr(&self, node: &Node) -> FileAttr {
        match node {
            Node::Root => self.dir_attr(ROOT_INO),
            Node::SnapRoot => self.dir_attr(SNAPROOT_INO),
            Node::SnapDir(v) => self.dir_attr(SNAPDIR_INO_BASE + v.id),
            Node::Volume(v) => self.volume_attr(v),
            Node::Snapshot(s) => self.snapshot_attr(s),
            Node::Remote(r) => self.remote_attr(r),
            Node::RemoteSnapDir(r) => self.dir_attr(REMOTE_SNAPDIR_BASE + r.index),
            Node::RemoteSnapshot(s) => {
                let mut a = self.remote_attr(&s.volume);
                a.ino = INodeNo(REMOTE_INO_BASE + s.index);
                a.size = s.size;
                a.blocks = s.size / 512;
                a.perm = 0o400;
                a
            }
        }
    }

    fn remote_attr(&self, r: &RemoteVolume) -> FileAttr {
        let ino = REMOTE_INO_BASE + r.index;
        let t = self.mounted_at;
        self.file_attr(ino, FileType::RegularFile, r.size, r.size / 512, t, 0o600)
    }

    /// The attributes every node shares: owned by the daemon's user, one time for all four
    /// stamps; directories have two links.
    fn file_attr(
        &self,
        ino: u64,
        kind: FileType,
        size: u64,
        blocks: u64,
        time: SystemTime,
        perm: u16,
    ) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Forward one request for remote volume `r` to its owner (EIO naming the owner when it
    /// is down).
    fn forward<T>(
        &self,
        r: &RemoteVolume,
        f: impl FnMut(&Cluster, &crate::cluster::Target) -> Result<T, RemoteError>,
    ) -> Result<T, Errno> {
        self.forward_to(r, &r.export, f)
    }

    /// Forward to export `export` of `r`'s owner (the volume, or `VOL@SNAP`). A request the
    /// owner refuses because the volume moved away (`volume move`) is sent again to the new
    /// owner once the catalog names it, never answered from the old copy.
    fn forward_to<T>(
        &self,
        r: &RemoteVolume,
        export: &str,
        mut f: impl FnMut(&Cluster, &crate::cluster::Target) -> Result<T, RemoteError>,
    ) -> Result<T, Errno> {
        let c = self.cluster.as_ref().ok_or(Errno::ENOENT)?;
        let mut r = r.clone();
        let mut tries = 0;
        loop {
            let t = c.target(&r, export).map_err(remote_fail)?;
            match f(c, &t) {
                Err(e) if tries < 3 => match c.reroute(&r, &e) {
                    Some(next) => {
                        log::info!("{e}; sending it to node '{}'", next.owner);
                        r = next;
                        tries += 1;
                    }
                    None => return Err(remote_fail(e)),
                },
                res => return res.map_err(remote_fail),
            }
        }
    }

    /// This node's own copy of a group snapshot when `route` says to read it here.
    fn local_replica(&self, route: Option<&Route>) -> Option<Node> {
        let Some(Route::Local { volume, snapshot }) = route else {
            return None;
        };
        let v = self.st.volumes.volume(volume)?;
        let s = self.st.snapshots.reg.read().get(v.id, snapshot).cloned()?;
        Some(Node::Snapshot(s))
    }

    /// Read snapshot `s` of another node's volume from the site `snapshot_route` picks: its
    /// owner, or another node holding the same group snapshot while the owner is busy or down
    /// (replica redirection). A replica that fails is not the last word: the owner is asked.
    fn read_remote_snapshot(
        &self,
        s: &RemoteSnapshot,
        route: Option<Route>,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; size as usize];
        if let Some(Route::Remote {
            node,
            address,
            export,
        }) = route
        {
            if let Ok(n) = self.read_replica(&node, &address, &export, s.size, offset, &mut buf) {
                buf.truncate(n);
                return Ok(buf);
            }
        }
        let read =
            |c: &Cluster, t: &crate::cluster::Target| c.remotes.read(t, s.size, offset, &mut buf);
        let n = self.forward_to(&s.volume, &s.export, read)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// One read of `export` on `node` (a copy of a group snapshot at another site).
    fn read_replica(
        &self,
        node: &str,
        address: &str,
        export: &str,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, RemoteError> {
        let c = self.cluster.as_ref().ok_or(RemoteError::Unavailable {
            volume: export.to_string(),
            node: node.to_string(),
        })?;
        let t = crate::cluster::Target {
            volume: export,
            node,
            address,
            export,
        };
        c.remotes.read(&t, size, offset, buf).inspect_err(|e| {
            log::warn!("{e}; reading the snapshot from its owner instead");
        })
    }

    fn snapshot_attr(&self, s: &Snapshot) -> FileAttr {
        let created = UNIX_EPOCH + Duration::from_secs(s.created);
        let blocks = s.mapped_extents() * self.st.pool.extent_size / 512;
        let ino = volume_ino(s.id);
        self.file_attr(ino, FileType::RegularFile, s.size, blocks, created, 0o400)
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        let perm = if ino == ROOT_INO { 0o755 } else { 0o555 };
        self.file_attr(ino, FileType::Directory, 0, 0, self.mounted_at, perm)
    }

    fn volume_attr(&self, v: &Volume) -> FileAttr {
        let created = UNIX_EPOCH + Duration::from_secs(v.created);
        let blocks = v.mapped_extents() * self.st.pool.extent_size / 512;
        let ino = volume_ino(v.id);
        self.file_attr(ino, FileType::RegularFile, v.size(), blocks, created, 0o600)
    }
}

impl FuseFs {
    /// fallocate on a forwarded volume: punching or zeroing becomes an NBD TRIM (the owner
    /// punches, reads give zeros); plain allocation inside the volume is accepted as is
    /// (the owner allocates on write).
    fn fallocate_remote(
        &self,
        r: &RemoteVolume,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let end = offset.saturating_add(length);
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let len = end.min(r.size).saturating_sub(offset);
            let res = if r.spread() {
                self.spread_trim(r, offset, len)
            } else {
                self.forward(r, |c, t| c.remotes.trim(t, offset, len))
            };
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        } else if end > r.size && mode & libc::FALLOC_FL_KEEP_SIZE == 0 {
            reply.error(Errno::from_i32(libc::EFBIG))
        } else {
            reply.ok()
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Asynchronous direct I/O: libaio on the volume file keeps many requests in flight.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO) {
            log::warn!("kernel lacks {missing:?}; O_DIRECT aio will run one request at a time");
        }
        // O_TRUNC arrives with the open instead of as a truncate to 0, and is ignored there:
        // a volume behaves like a block device (`dd of=vol` keeps its size).
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Volume files are opened with direct_io (see `open`); shared mmap of them still works
        // where the kernel allows it for direct_io files (6.6 and later).
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // Extended attributes are served (volume information, `xattr.rs`): the daemon
        // handles clearing set-id bits itself (volume files have none), so the kernel does
        // not ask for `security.capability` before every write.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2) {
            log::warn!("kernel lacks {missing:?}; writes may ask for security.capability first");
        }
        if let Err(max) = config.set_max_write(MAX_REQUEST) {
            let _ = config.set_max_write(max);
        }
        let _ = config.set_max_readahead(MAX_REQUEST);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let found = match self.node(parent) {
            Some(Node::Root) if name == SNAPROOT_NAME => Some(Node::SnapRoot),
            Some(Node::Root) => match self.local_volume(name) {
                Some(v) => Some(Node::Volume(v)),
                None => self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.remote_volume(name))
                    .map(Node::Remote),
            },
            Some(Node::SnapRoot) => match self.local_volume(name) {
                Some(v) => Some(Node::SnapDir(v)),
                None => self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.remote_volume(name))
                    .map(Node::RemoteSnapDir),
            },
            Some(Node::RemoteSnapDir(v)) => self
                .cluster
                .as_ref()
                .and_then(|c| c.remote_snapshot(&v.name, name))
                .map(Node::RemoteSnapshot),
            Some(Node::SnapDir(v)) => self
                .st
                .snapshots
                .snapshots_of(v.id)
                .into_iter()
                .find(|s| s.name == name)
                .map(Node::Snapshot),
            _ => None,
        };
        match found {
            Some(n) => reply.entry(&TTL, &self.attr(&n), fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(n) => reply.attr(&TTL, &self.attr(&n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let v = match self.node(ino) {
            Some(Node::Volume(v)) => v,
            Some(Node::Snapshot(_) | Node::RemoteSnapshot(_)) if size.is_some() => {
                return reply.error(Errno::EROFS)
            }
            // A forwarded volume is resized on its owner (`fusevol volume resize` there).
            Some(Node::Remote(r)) if size.is_some_and(|s| s != r.size) => {
                return reply.error(Errno::EPERM)
            }
            Some(n) => return reply.attr(&TTL, &self.attr(&n)),
            None => return reply.error(Errno::ENOENT),
        };
        // Mode, owner and times are fixed; only the size can change, and only upwards:
        // `truncate -s` grows a volume. Shrinking through the file is refused (EPERM) because
        // ordinary tools truncate as a side effect (`dd seek=N` without conv=notrunc) and a
        // storage array must not lose data on that; shrink with `fusevol volume resize`.
        if let Some(size) = size {
            if size < v.size() {
                log::warn!(
                    "refused truncate of volume '{}' from {} to {size} bytes: shrink with `fusevol volume resize`",
                    v.name,
                    v.size()
                );
                return reply.error(Errno::EPERM);
            }
            if size != v.size() {
                if let Err(e) = self.st.resize(&v, size) {
                    log::warn!("truncate of volume '{}' to {size}: {e}", v.name);
                    return reply.error(pool_errno(&e));
                }
            }
        }
        reply.attr(&TTL, &self.volume_attr(&v))
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Some(Node::Volume(v)) => {
                if flags.0 & libc::O_ACCMODE != libc::O_RDONLY
                    && v.claim_writer(Writer::File).is_err()
                {
                    log::warn!(
                        "volume '{}': open for writing refused: an NBD client writes it \
                         (start fusevold with --nbd-shared to allow both)",
                        v.name
                    );
                    return reply.error(Errno::EBUSY);
                }
                v.opened();
                // Every open of a volume is direct_io: reads and writes go to the daemon as
                // they come, without a second copy in the FUSE file's page cache (the arrays
                // below are cached already). Buffered writes were write-through anyway; this
                // saves the kernel's copy into pages it never reads back, and makes buffered
                // I/O as fast as O_DIRECT. Parallel writers are safe (the data path locks per
                // extent); the kernel honours FOPEN_PARALLEL_DIRECT_WRITES on direct_io only.
                let f = FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES | FopenFlags::FOPEN_DIRECT_IO;
                reply.opened(FileHandle(v.id), f)
            }
            Some(Node::Snapshot(s)) => {
                if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                    return reply.error(Errno::EROFS);
                }
                s.opened();
                reply.opened(FileHandle(s.id), FopenFlags::empty())
            }
            Some(Node::Remote(r)) => {
                let f = FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES | FopenFlags::FOPEN_DIRECT_IO;
                reply.opened(FileHandle(REMOTE_INO_BASE + r.index), f)
            }
            Some(Node::RemoteSnapshot(s)) => {
                if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                    return reply.error(Errno::EROFS);
                }
                // Not cached here: a snapshot deleted and made again under its name on the
                // owner must not be read from this kernel's old pages.
                reply.opened(
                    FileHandle(REMOTE_INO_BASE + s.index),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.node(ino) {
            // (A handle opened as a forwarded volume that moved here since was not counted.)
            Some(Node::Volume(v)) if fh.0 == v.id => {
                // The kernel passes the flags of the open this handle came from.
                if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                    v.release_writer(Writer::File);
                }
                v.closed()
            }
            Some(Node::Snapshot(s)) => s.closed(),
            _ => {}
        }
        reply.ok()
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.node(ino) {
            // A volume of another node: forwarded to its owner from this worker.
            Some(Node::Remote(r)) if r.spread() => {
                let mut buf = vec![0u8; size as usize];
                return match self.spread_read(&r, offset, &mut buf) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => reply.error(e),
                };
            }
            Some(Node::Remote(r)) => {
                let mut buf = vec![0u8; size as usize];
                return match self.forward(&r, |c, t| c.remotes.read(t, r.size, offset, &mut buf)) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => reply.error(e),
                };
            }
            Some(Node::RemoteSnapshot(s)) => {
                let route = self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.snapshot_route(&s.volume.name, &s.name));
                match self.local_replica(route.as_ref()) {
                    // This node holds the same group snapshot: read it here.
                    Some(local) => local,
                    None => {
                        return match self.read_remote_snapshot(&s, route, offset, size) {
                            Ok(buf) => reply.data(&buf),
                            Err(e) => reply.error(e),
                        }
                    }
                }
            }
            Some(Node::Snapshot(s)) => {
                match self.cluster.as_ref().and_then(|c| c.redirect_local(&s)) {
                    // This node is busy and another site holds the same group snapshot.
                    Some(Route::Remote {
                        node,
                        address,
                        export,
                    }) => {
                        let mut buf = vec![0u8; size as usize];
                        return match self
                            .read_replica(&node, &address, &export, s.size, offset, &mut buf)
                        {
                            Ok(n) => reply.data(&buf[..n]),
                            Err(_) => {
                                // The other site failed: this node still has the image.
                                let st = self.st.clone();
                                let node = Node::Snapshot(s);
                                self.dispatch.run(move |_inflight| {
                                    serve_read(&st, &node, offset, size, reply)
                                });
                                return;
                            }
                        };
                    }
                    _ => Node::Snapshot(s),
                }
            }
            Some(n @ Node::Volume(_)) => n,
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let st = self.st.clone();
        self.dispatch
            .run(move |_inflight| serve_read(&st, &node, offset, size, reply));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let v = match self.node(ino) {
            Some(Node::Volume(v)) => v,
            Some(Node::Snapshot(_) | Node::RemoteSnapshot(_)) => return reply.error(Errno::EROFS),
            Some(Node::Remote(r)) if r.spread() => {
                return match self.spread_write(&r, offset, data) {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                }
            }
            Some(Node::Remote(r)) => {
                return match self.forward(&r, |c, t| c.remotes.write(t, r.size, offset, data)) {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                }
            }
            _ => return reply.error(Errno::ENOENT),
        };
        let t = self.dispatch.begin();
        if t.inline {
            // Alone: written from the kernel's buffer on this worker, no copy.
            return serve_write(&self.st, &v, offset, data, reply);
        }
        // Others are in flight: the stage takes a copy of the data (the kernel's buffer is
        // this worker's, reused for its next request).
        let (st, data) = (self.st.clone(), data.to_vec());
        self.dispatch.hand_off(t, move |_inflight| {
            serve_write(&st, &v, offset, &data, reply)
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered in the daemon: every write already reached the array files.
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let v = match self.node(ino) {
            Some(Node::Volume(v)) => v,
            Some(Node::Remote(r)) if r.spread() => {
                return match self.spread_flush(&r) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                }
            }
            Some(Node::Remote(r)) => {
                return match self.forward(&r, |c, t| c.remotes.flush(t)) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                }
            }
            _ => return reply.error(Errno::ENOENT),
        };
        // Covers every write acknowledged before it: a write's reply is sent only after its
        // pipeline returned, wherever it ran.
        let st = self.st.clone();
        self.dispatch
            .run(move |_inflight| match st.fsync_volume(&v) {
                Ok(()) => reply.ok(),
                Err(e) => {
                    log::error!("{e}");
                    reply.error(errno_of(&e))
                }
            });
    }

    fn destroy(&mut self) {
        // Every request handed to the I/O stage is answered before the pool is closed.
        self.dispatch.drain();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let v = match self.node(ino) {
            Some(Node::Volume(v)) => v,
            Some(Node::Snapshot(_) | Node::RemoteSnapshot(_)) => return reply.error(Errno::EROFS),
            Some(Node::Remote(r)) => return self.fallocate_remote(&r, offset, length, mode, reply),
            _ => return reply.error(Errno::ENOENT),
        };
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let res = if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            self.st.discard(&v, offset, length)
        } else {
            // Allocation: a volume does not grow by fallocate; past the end is refused
            // unless KEEP_SIZE asks only for the part inside.
            let size = v.size();
            let end = offset.saturating_add(length);
            if end > size && !keep {
                return reply.error(Errno::from_i32(libc::EFBIG));
            }
            if offset >= size {
                return reply.ok();
            }
            self.st.allocate(&v, offset, end.min(size) - offset)
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => {
                log::warn!("fallocate mode {mode:#x} on volume '{}': {e}", v.name);
                reply.error(errno_of(&e))
            }
        }
    }

    /// SEEK_DATA / SEEK_HOLE from the extent map (`storage/holes.rs`). The kernel answers
    /// SEEK_SET, SEEK_CUR and SEEK_END itself.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let found = match self.node(ino) {
            Some(Node::Volume(v)) => self.st.seek_volume(&v, offset, data),
            Some(Node::Snapshot(s)) => self.st.seek_snapshot(&s, offset, data),
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        match found {
            Some(o) => reply.offset(o as i64),
            None => reply.error(Errno::ENXIO),
        }
    }

    /// A copy between files of the mount (`cp`, `qemu-img convert`): whole extents are
    /// shared copy-on-write, the rest copied in the daemon (`storage/copy.rs`).
    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let dst = match self.node(ino_out) {
            Some(Node::Volume(v)) => v,
            Some(Node::Snapshot(_)) => return reply.error(Errno::EROFS),
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        // The reply carries a 32-bit count: copy at most 4 GiB - 4 KiB per request (the
        // caller asks again for the rest).
        let len = len.min(u64::from(u32::MAX) & !4095);
        let node = self.node(ino_in);
        let src = match &node {
            Some(Node::Volume(v)) => CopyFrom::Volume(v),
            Some(Node::Snapshot(s)) => CopyFrom::Snapshot(s),
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        match self.st.copy_range(src, offset_in, &dst, offset_out, len) {
            Ok(n) => reply.written(n as u32),
            Err(e) => {
                match &e {
                    IoError::BeyondEnd { .. } => log::debug!("{e}"),
                    IoError::NoSpace { .. } | IoError::Invalid { .. } => log::warn!("{e}"),
                    _ => log::error!("{e}"),
                }
                reply.error(errno_of(&e))
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (me, parent) = match self.node(ino) {
            Some(Node::Root) => (ROOT_INO, ROOT_INO),
            Some(Node::SnapRoot) => (SNAPROOT_INO, ROOT_INO),
            Some(Node::SnapDir(v)) => (SNAPDIR_INO_BASE + v.id, SNAPROOT_INO),
            Some(Node::RemoteSnapDir(r)) => (REMOTE_SNAPDIR_BASE + r.index, SNAPROOT_INO),
            Some(_) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (me, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        match self.node(ino) {
            Some(Node::Root) => {
                entries.push((SNAPROOT_INO, FileType::Directory, SNAPROOT_NAME.into()));
                let hidden = |n: &str| self.cluster.as_ref().is_some_and(|c| c.hides_local(n));
                for v in self.st.volumes.volume_list() {
                    if hidden(&v.name) {
                        continue;
                    }
                    entries.push((volume_ino(v.id), FileType::RegularFile, v.name.clone()));
                }
                if let Some(c) = &self.cluster {
                    for (name, id) in c.renamed_locals() {
                        entries.push((volume_ino(id), FileType::RegularFile, name));
                    }
                    for r in c.remote_volumes() {
                        entries.push((REMOTE_INO_BASE + r.index, FileType::RegularFile, r.name));
                    }
                }
            }
            Some(Node::SnapRoot) => {
                let hidden = |n: &str| self.cluster.as_ref().is_some_and(|c| c.hides_local(n));
                for v in self.st.volumes.volume_list() {
                    if hidden(&v.name) {
                        continue;
                    }
                    entries.push((SNAPDIR_INO_BASE + v.id, FileType::Directory, v.name.clone()));
                }
                if let Some(c) = &self.cluster {
                    for (name, id) in c.renamed_locals() {
                        entries.push((SNAPDIR_INO_BASE + id, FileType::Directory, name));
                    }
                    for r in c.remote_volumes() {
                        entries.push((REMOTE_SNAPDIR_BASE + r.index, FileType::Directory, r.name));
                    }
                }
            }
            Some(Node::SnapDir(v)) => {
                for s in self.st.snapshots.snapshots_of(v.id) {
                    entries.push((volume_ino(s.id), FileType::RegularFile, s.name.clone()));
                }
            }
            Some(Node::RemoteSnapDir(r)) => {
                for e in &r.snapshots {
                    let snap = self
                        .cluster
                        .as_ref()
                        .and_then(|c| c.remote_snapshot(&r.name, &e.name));
                    if let Some(s) = snap {
                        entries.push((REMOTE_INO_BASE + s.index, FileType::RegularFile, s.name));
                    }
                }
            }
            _ => {}
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The same sums as `pool info` (daemon::status::array_infos), taken here directly:
        // the daemon uses this module, not the other way round.
        let (cap, free) = {
            let al = self.st.pool.alloc.lock();
            self.st
                .pool
                .arrays()
                .iter()
                .fold((0u64, 0u64), |(cap, free), a| {
                    let (_, f) = al.usage(a.id);
                    (
                        cap + a.capacity_extents * a.extent_size,
                        free + f * a.extent_size,
                    )
                })
        };
        let nvol = self.st.volumes.volume_list().len() as u64;
        reply.statfs(
            cap / 4096,
            free / 4096,
            free / 4096,
            nvol,
            0,
            4096,
            255,
            4096,
        )
    }

    fn getxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        self.xattr_get(ino, name, size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        self.xattr_list(ino, size, reply)
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.xattr_set(ino, name, value, flags, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.xattr_remove(ino, name, reply)
    }

    // The namespace is managed with the CLI: files cannot be made or removed in the mount.
    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM)
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM)
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM)
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM)
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EPERM)
    }
}

/// A read request's data path and reply (on a FUSE worker or a thread of the I/O stage).
fn serve_read(st: &Storage, node: &Node, offset: u64, size: u32, reply: ReplyData) {
    // Tests make a read wait here (`sleep(MS)`) to see that others are served meanwhile.
    fail::fail_point!("fuse::serve_read::start");
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < size as usize {
            buf.resize(size as usize, 0);
        }
        let dst = &mut buf[..size as usize];
        let res = match node {
            Node::Volume(v) => st.read(v, offset, dst),
            Node::Snapshot(s) => st.snapshots.read_snapshot(s, offset, dst),
            _ => return reply.error(Errno::EISDIR),
        };
        match res {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                log::error!("{e}");
                reply.error(errno_of(&e))
            }
        }
    })
}

/// A write request's data path and reply: acknowledged only when the whole pipeline
/// (journal, data, metadata record, pair's dual write) has returned.
/// A journaled write that overwrites in place is acknowledged once its record is in the
/// journal, and its data write finishes after the reply (`storage::destage`).
fn serve_write(st: &Storage, v: &Volume, offset: u64, data: &[u8], reply: ReplyWrite) {
    st.write_early_ack(v, offset, data, |res| match res {
        Ok(n) => reply.written(n as u32),
        Err(e) => {
            match &e {
                IoError::BeyondEnd { .. } => log::debug!("{e}"),
                IoError::NoSpace { .. } => log::warn!("{e}"),
                _ => log::error!("{e}"),
            }
            reply.error(errno_of(&e))
        }
    })
}
