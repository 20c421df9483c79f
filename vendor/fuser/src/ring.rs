//! FUSE over io_uring (protocol 7.42, Linux 6.14+): added to the vendored fuser by fusevol
//! (see VENDORED.md at the crate root).
//!
//! The connection is set up as usual: INIT arrives on `/dev/fuse`; when the session was asked
//! for the transport (`Config::uring`) and the kernel offers `FUSE_OVER_IO_URING`, the rings
//! are created *before* the INIT reply and the flag is set in it only if that worked (once the
//! kernel has the flag, every request waits until all queues are registered, so a daemon
//! that asked for it must register or fail a REGISTER). Then one thread per queue (queue =
//! possible CPU; the kernel puts a request on the queue of the CPU its caller runs on) owns
//! one io_uring (SQE128) and registers `depth` entries on the `/dev/fuse` descriptor with
//! `IORING_OP_URING_CMD` / `FUSE_IO_URING_CMD_REGISTER`. Each entry is a header buffer
//! (`fuse_uring_req_header`: the in/out header, the per-opcode struct, `fuse_uring_ent_in_out`)
//! and a payload buffer, given as an iovec pair.
//!
//! A request arrives as the CQE of its entry. The classic wire layout (`fuse_in_header`, the
//! opcode's struct, the payload) is rebuilt in place: the entry's memory holds the header
//! buffer, a gap, then the payload buffer, and the in header and opcode struct (at most 168
//! bytes) are copied into the gap right before the payload, so the request is one contiguous
//! slice and fuser's ordinary parser and `dispatch` serve it unchanged.
//!
//! A reply (from any thread: the filesystem may answer later from another one) is written
//! into the entry (out header into the header buffer, the reply's arguments into the payload
//! buffer, `payload_sz`) and committed with `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also
//! hands the entry back for the next request. Only the queue's own thread submits to its ring
//! (the kernel delivers the next request to the entry as task work of the submitting task), so
//! a reply from another thread is queued and the ring thread is woken through an eventfd (one
//! write per batch). A reply sent while the request is still being dispatched on the ring
//! thread, and whose request carried a payload (the reply would overwrite bytes the request
//! slice still covers), is staged in a small buffer and copied in after dispatch returns; a
//! read's reply (its request has no payload) goes straight into the payload buffer.
//!
//! Forgets, interrupts and notifications still use `/dev/fuse` (the kernel sends forgets and
//! interrupts there, and refuses notifications through the ring), so the session keeps its
//! `/dev/fuse` threads.

use std::alloc::Layout;
use std::fs::File;
use std::io;
use std::io::IoSlice;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::ThreadId;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::info;
use log::warn;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::ReplyEmpty;
use crate::channel::Channel;
use crate::ll::Operation;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `FUSE_IO_URING_CMD_REGISTER`: register an entry and fetch a request into it.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: commit a reply and fetch the next request.
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, `fuse_uring_ent_in_out`.
const HDR_IN_OUT: usize = 0;
const HDR_OP_IN: usize = 128;
const OP_IN_MAX: usize = 128;
/// `fuse_uring_ent_in_out`: flags u64, commit_id u64, payload_sz u32, padding u32, reserved u64.
const HDR_ENT_IN_OUT: usize = 256;
const HDR_SIZE: usize = 288;
/// Where the payload buffer starts in an entry's memory; the gap between the header buffer
/// and it takes the rebuilt `fuse_in_header` + opcode struct.
const PAYLOAD_AT: usize = 512;
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;

thread_local! {
    /// On a ring thread while it dispatches: requests received and not yet dispatched.
    static BACKLOG: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Called from a filesystem method: `Some(n)` on a ring thread, `n` requests of its queue
/// received and waiting for this one to return (a filesystem that runs a request on the
/// calling thread only when nothing waits behind it uses this); `None` elsewhere.
pub fn ring_backlog() -> Option<usize> {
    BACKLOG.with(|b| b.get())
}

/// The user_data of the eventfd read that wakes a ring thread.
const WAKE: u64 = u64::MAX;

/// How the io_uring transport is asked for (`Config::uring`).
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub struct UringConfig {
    /// Entries (requests in flight) per queue.
    pub depth: u16,
    /// Payload bytes per entry; `None`: what the kernel needs (the largest of max_write and
    /// max_pages pages). A smaller value makes the kernel refuse the registration (used to
    /// test the fallback to `/dev/fuse`).
    pub payload_override: Option<usize>,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            depth: 32,
            payload_override: None,
        }
    }
}

/// Number of possible CPUs: the kernel makes one queue per possible CPU and uses the ring
/// only when every queue has an entry registered.
fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut max = 0usize;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next().unwrap_or(part);
        let n: usize = last
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("cannot parse possible CPUs {s:?}")))?;
        max = max.max(n);
    }
    Ok(max + 1)
}

/// One entry's memory: header buffer at 0, payload buffer at `PAYLOAD_AT`. Shared with the
/// kernel, so only raw pointers are kept; who may touch it follows the entry's state (the
/// kernel between a submit and its CQE, the request's handler and its reply in between).
struct EntryMem {
    ptr: *mut u8,
    layout: Layout,
    /// `iov[0]`: header buffer, `iov[1]`: payload buffer (read by the kernel on REGISTER).
    iov: Box<[libc::iovec; 2]>,
    /// The request's payload size while it is in user space (0: the reply may be written
    /// into the payload buffer at once, the request slice does not cover it).
    req_payload: AtomicU32,
    /// The ring thread is still dispatching the request (its slice is alive).
    dispatching: AtomicBool,
}

// SAFETY: the memory is a private heap allocation; access is ordered by the entry's state
// machine (kernel / dispatching / replied), see the module comment.
unsafe impl Send for EntryMem {}
// SAFETY: as above; concurrent writers never exist for one entry.
unsafe impl Sync for EntryMem {}

impl EntryMem {
    fn new(payload: usize) -> io::Result<EntryMem> {
        let layout = Layout::from_size_align(PAYLOAD_AT + payload, 4096)
            .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let iov = Box::new([
            libc::iovec {
                iov_base: ptr.cast(),
                iov_len: HDR_SIZE,
            },
            libc::iovec {
                // SAFETY: inside the allocation.
                iov_base: unsafe { ptr.add(PAYLOAD_AT) }.cast(),
                iov_len: payload,
            },
        ]);
        Ok(EntryMem {
            ptr,
            layout,
            iov,
            req_payload: AtomicU32::new(0),
            dispatching: AtomicBool::new(false),
        })
    }

    fn payload_cap(&self) -> usize {
        self.layout.size() - PAYLOAD_AT
    }

    /// Copy `src` into the entry at `at`.
    ///
    /// # Safety
    /// The caller owns the entry (it is in user space) and no live slice covers the range.
    unsafe fn write(&self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.layout.size());
        // SAFETY: in bounds (checked), exclusive per the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) };
    }

    /// Read `N` bytes at `at`.
    ///
    /// # Safety
    /// The caller owns the entry.
    unsafe fn read<const N: usize>(&self, at: usize) -> [u8; N] {
        assert!(at + N <= self.layout.size());
        let mut out = [0u8; N];
        // SAFETY: in bounds (checked).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(at), out.as_mut_ptr(), N) };
        out
    }
}

impl Drop for EntryMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout. The queue (and so this) is dropped only
        // when its ring is closed, after which the kernel no longer uses the buffers.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// A reply queued for the ring thread to commit.
struct Commit {
    ent: u16,
    unique: u64,
    header: [u8; OUT_HEADER],
    payload_len: u32,
    /// The reply's arguments when they could not be written into the entry yet.
    staged: Option<Vec<u8>>,
}

/// What a queue's ring thread shares with the threads that reply.
pub(crate) struct QueueShared {
    qid: u16,
    entries: Vec<EntryMem>,
    commits: Mutex<Vec<Commit>>,
    /// eventfd that wakes the ring thread; `wake_pending`: a write is in flight.
    wake: File,
    wake_pending: AtomicBool,
    owner: OnceLock<ThreadId>,
}

impl std::fmt::Debug for QueueShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueShared")
            .field("qid", &self.qid)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// The reply path of one request that came through a ring entry.
#[derive(Debug, Clone)]
pub(crate) struct RingReply {
    q: Arc<QueueShared>,
    ent: u16,
    unique: u64,
}

impl RingReply {
    /// Write the reply (`bufs[0]` is the `fuse_out_header`) into the entry, or stage it, and
    /// queue the commit for the ring thread.
    pub(crate) fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let (first, rest) = bufs
            .split_first()
            .ok_or_else(|| io::Error::other("empty FUSE reply"))?;
        let mut header = [0u8; OUT_HEADER];
        if first.len() != OUT_HEADER {
            return Err(io::Error::other(format!(
                "FUSE reply header of {} bytes",
                first.len()
            )));
        }
        header.copy_from_slice(first);
        let mem = &self.q.entries[self.ent as usize];
        let payload_len: usize = rest.iter().map(|b| b.len()).sum();
        if payload_len > mem.payload_cap() {
            return Err(io::Error::other(format!(
                "FUSE reply of {payload_len} bytes is larger than the ring entry's {}",
                mem.payload_cap()
            )));
        }
        let direct = mem.req_payload.load(Ordering::Acquire) == 0
            || !mem.dispatching.load(Ordering::Acquire);
        let staged = if direct {
            let mut at = PAYLOAD_AT;
            for b in rest {
                // SAFETY: the entry is in user space (its request is being answered) and no
                // slice covers the payload buffer: the request had no payload, or its
                // dispatch has returned.
                unsafe { mem.write(at, b) };
                at += b.len();
            }
            None
        } else {
            let mut v = Vec::with_capacity(payload_len);
            for b in rest {
                v.extend_from_slice(b);
            }
            Some(v)
        };
        self.q.commits.lock().push(Commit {
            ent: self.ent,
            unique: self.unique,
            header,
            payload_len: payload_len as u32,
            staged,
        });
        if self.q.owner.get() != Some(&std::thread::current().id())
            && !self.q.wake_pending.swap(true, Ordering::AcqRel)
        {
            (&self.q.wake).write_all(&1u64.to_ne_bytes())?;
        }
        Ok(())
    }
}

/// One queue's ring, created before the INIT reply.
pub(crate) struct QueueRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    shared: Arc<QueueShared>,
}

impl std::fmt::Debug for QueueRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

/// The rings of a session, one per possible CPU.
#[derive(Debug)]
pub(crate) struct UringSetup {
    pub(crate) queues: Vec<QueueRing>,
    pub(crate) depth: u16,
    pub(crate) payload: usize,
}

impl UringSetup {
    /// Create the rings and entry buffers (no kernel registration yet).
    pub(crate) fn create(cfg: &UringConfig, payload: usize) -> io::Result<UringSetup> {
        let nq = possible_cpus()?;
        let depth = cfg.depth.max(1);
        let payload = cfg.payload_override.unwrap_or(payload);
        let mut queues = Vec::with_capacity(nq);
        for qid in 0..nq {
            let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
                .build((u32::from(depth) + 2).next_power_of_two())?;
            let mut entries = Vec::with_capacity(depth as usize);
            for _ in 0..depth {
                entries.push(EntryMem::new(payload)?);
            }
            // SAFETY: eventfd returns a new descriptor or -1.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: efd is a fresh descriptor owned by nobody else.
            let wake = unsafe { File::from_raw_fd(efd) };
            queues.push(QueueRing {
                ring,
                shared: Arc::new(QueueShared {
                    qid: qid as u16,
                    entries,
                    commits: Mutex::new(Vec::new()),
                    wake,
                    wake_pending: AtomicBool::new(false),
                    owner: OnceLock::new(),
                }),
            });
        }
        Ok(UringSetup {
            queues,
            depth,
            payload,
        })
    }
}

/// A `URING_CMD` SQE128 on the FUSE device with `fuse_uring_cmd_req` in its command area.
fn uring_cmd(
    dev: RawFd,
    cmd_op: u32,
    qid: u16,
    commit_id: u64,
    iov: Option<&[libc::iovec; 2]>,
) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    // fuse_uring_cmd_req { flags: u64, commit_id: u64, qid: u16, padding: [u8; 6] }
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut b = opcode::UringCmd80::new(types::Fd(dev), cmd_op).cmd(cmd);
    if let Some(iov) = iov {
        b = b.addr(Some(iov.as_ptr() as u64));
    }
    let entry = b.build();
    if iov.is_none() {
        return entry;
    }
    // The REGISTER command wants `sqe->len == 2` (the iovec count), which the io-uring
    // crate's UringCmd80 builder does not set: patch the field (offset 24 of the SQE).
    // SAFETY: Entry128 is `#[repr(C)]` over the 128 bytes of an SQE128 (64-byte
    // `io_uring_sqe` + 64 bytes of command), every bit pattern of which is a valid value.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Pin the current thread to `cpu` (the queue's CPU); best effort.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < 8 * std::mem::size_of::<libc::cpu_set_t>() {
            libc::CPU_SET(cpu, &mut set);
            let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Outcome of a queue's registration, sent to the session before serving.
pub(crate) type Registered = Result<(), String>;

/// Run one queue: register its entries, then serve requests until the connection ends.
pub(crate) fn queue_loop<FS: Filesystem>(
    mut qr: QueueRing,
    se: SessionEventLoop<FS>,
    dev: Channel,
    registered: mpsc::Sender<Registered>,
) -> io::Result<()> {
    let q = qr.shared.clone();
    let _ = q.owner.set(std::thread::current().id());
    pin_to(q.qid as usize);
    let devfd = std::os::fd::AsFd::as_fd(&dev).as_raw_fd();
    let depth = q.entries.len();
    let mut wake_buf = [0u8; 8];

    // Entries whose command is in the kernel.
    let mut in_kernel = 0usize;
    for (i, mem) in q.entries.iter().enumerate() {
        let sqe = uring_cmd(devfd, CMD_REGISTER, q.qid, 0, Some(&mem.iov)).user_data(i as u64);
        // SAFETY: the iovecs and the buffers they name live in `q`, which outlives the ring.
        unsafe { qr.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        in_kernel += 1;
    }
    let wake_sqe: squeue::Entry128 =
        opcode::Read::new(types::Fd(q.wake.as_raw_fd()), wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE)
            .into();
    // SAFETY: wake_buf lives on this frame for the whole loop; the ring is dropped (and the
    // read cancelled) before it.
    unsafe { qr.ring.submission().push(&wake_sqe) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    qr.ring.submit()?;
    // A refused REGISTER completes at once (inline issue); a good one only when a request
    // arrives.
    let mut refused = None;
    let mut early = Vec::new();
    for cqe in qr.ring.completion() {
        early.push((cqe.user_data(), cqe.result()));
    }
    for &(ud, res) in &early {
        if ud != WAKE && res < 0 && refused.is_none() {
            refused = Some(format!(
                "the kernel refused FUSE_IO_URING_CMD_REGISTER on queue {}: {}",
                q.qid,
                io::Error::from_raw_os_error(-res)
            ));
        }
    }
    let _ = registered.send(match &refused {
        None => Ok(()),
        Some(r) => Err(r.clone()),
    });
    drop(registered);

    let mut stopping = refused.is_some();
    let mut cqes: Vec<(u64, i32)> = early;
    let mut wake_armed = true;
    loop {
        let mut left = cqes.len();
        for (ud, res) in cqes.drain(..) {
            left -= 1;
            if ud == WAKE {
                wake_armed = false;
                q.wake_pending.store(false, Ordering::Release);
                continue;
            }
            let i = ud as usize;
            in_kernel -= 1;
            if res < 0 {
                if !stopping {
                    debug!(
                        "fuse ring queue {}: entry {i} ended: {}",
                        q.qid,
                        io::Error::from_raw_os_error(-res)
                    );
                }
                stopping = true;
                continue;
            }
            BACKLOG.with(|b| b.set(Some(left)));
            serve_one(&q, i, &se);
            BACKLOG.with(|b| b.set(None));
        }
        // Commit the replies (ours, and those other threads queued).
        let batch = std::mem::take(&mut *q.commits.lock());
        for c in batch {
            let mem = &q.entries[c.ent as usize];
            // SAFETY: the entry is in user space until this commit is submitted, and its
            // request's dispatch has returned (we are past it on the only thread that
            // dispatches), so nothing else touches the memory.
            unsafe {
                if let Some(s) = &c.staged {
                    mem.write(PAYLOAD_AT, s);
                }
                mem.write(HDR_IN_OUT, &c.header);
                mem.write(HDR_ENT_IN_OUT + 16, &c.payload_len.to_ne_bytes());
            }
            let sqe = uring_cmd(devfd, CMD_COMMIT_AND_FETCH, q.qid, c.unique, None)
                .user_data(u64::from(c.ent));
            // SAFETY: the command carries no pointers.
            unsafe { qr.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            in_kernel += 1;
        }
        if stopping && in_kernel == 0 {
            break;
        }
        if !wake_armed {
            // SAFETY: as for the first wake read.
            unsafe { qr.ring.submission().push(&wake_sqe) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            wake_armed = true;
        }
        // Nothing queued by another thread may be missed: the eventfd read is armed, and a
        // commit queued after the drain above either finds `wake_pending` false and writes
        // the eventfd, or the write in flight completes the armed read.
        match qr.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        for cqe in qr.ring.completion() {
            cqes.push((cqe.user_data(), cqe.result()));
        }
        if cqes.len() > depth + 1 {
            debug!("fuse ring queue {}: {} completions", q.qid, cqes.len());
        }
    }
    if refused.is_none() {
        info!("fuse ring queue {} stopped", q.qid);
    }
    Ok(())
}

/// Rebuild the request of entry `i` in place and dispatch it.
fn serve_one<FS: Filesystem>(q: &Arc<QueueShared>, i: usize, se: &SessionEventLoop<FS>) {
    let mem = &q.entries[i];
    // SAFETY: the CQE handed the entry to user space.
    let (inh, payload_sz) = unsafe {
        (
            mem.read::<IN_HEADER>(HDR_IN_OUT),
            u32::from_ne_bytes(mem.read::<4>(HDR_ENT_IN_OUT + 16)) as usize,
        )
    };
    let len = u32::from_ne_bytes(inh[0..4].try_into().expect("4 bytes")) as usize;
    let unique = u64::from_ne_bytes(inh[8..16].try_into().expect("8 bytes"));
    let op_len = len.checked_sub(IN_HEADER + payload_sz);
    let reply = RingReply {
        q: q.clone(),
        ent: i as u16,
        unique,
    };
    let Some(op_len) = op_len.filter(|&n| n <= OP_IN_MAX && payload_sz <= mem.payload_cap())
    else {
        warn!(
            "fuse ring queue {}: malformed request (len {len}, payload {payload_sz}); answering EIO",
            q.qid
        );
        let _ = reply.send(&[IoSlice::new(&eio_header(unique))]);
        return;
    };
    let start = PAYLOAD_AT - op_len - IN_HEADER;
    // SAFETY: the entry is ours; the gap [start, PAYLOAD_AT) lies after the header buffer.
    unsafe {
        let op = mem.read::<OP_IN_MAX>(HDR_OP_IN);
        mem.write(start, &inh);
        mem.write(start + IN_HEADER, &op[..op_len]);
    }
    mem.req_payload.store(payload_sz as u32, Ordering::Release);
    mem.dispatching.store(true, Ordering::Release);
    {
        // SAFETY: [start, PAYLOAD_AT + payload_sz) is inside the allocation and holds the
        // rebuilt request; nothing writes it while this slice lives (a reply that would, is
        // staged: `dispatching` is set).
        let data = unsafe { std::slice::from_raw_parts(mem.ptr.add(start), len) };
        match RequestWithSender::new_ring(reply.clone(), data) {
            Some(req) => {
                if let Ok(Operation::Destroy(_)) = req.request.operation() {
                    req.reply::<ReplyEmpty>().ok();
                } else {
                    req.dispatch(se);
                }
            }
            None => {
                warn!("fuse ring queue {}: unparsable request {unique}; answering EIO", q.qid);
                let _ = reply.send(&[IoSlice::new(&eio_header(unique))]);
            }
        }
    }
    mem.dispatching.store(false, Ordering::Release);
}

/// A `fuse_out_header` answering `unique` with EIO.
fn eio_header(unique: u64) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    h[0..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}
