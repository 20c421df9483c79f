//! Transmission: one reader thread per connection decodes requests (and a WRITE's payload)
//! and hands them to a few worker threads, which run them through `Storage`'s pipeline and
//! send each reply as soon as it is ready — out of order, serialized by the writer's mutex.
//! So a client keeps many requests in flight (QEMU and nbdcopy pipeline), and a slow flush
//! does not hold up reads queued behind it.
//!
//! Ending: `NBD_CMD_DISC`, end of stream or a malformed request stop the reader; the workers
//! finish the requests already taken (their writes were made before any reply said so) and
//! the connection closes. A reply is sent only after its operation finished: an acknowledged
//! write is in the pipeline's hands (page cache of the arrays; durable after FLUSH or FUA).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;

use super::handshake::{Negotiated, ALLOCATION_CONTEXT, MAX_PAYLOAD};
use super::{nbd_error, Export, Sock};
use crate::format::nbd::{self as w, Request};
use crate::storage::Storage;
use crate::volume::{Volume, Writer};

/// Worker threads per connection (requests run at once on one connection): 16, so a QD16
/// client keeps 16 reads in flight to the disk (4 workers: 17k vs 21k IOPS of 4 KiB random
/// reads after a cache drop, `bench-nbd.sh --quick`).
pub const WORKERS: usize = 16;
/// Requests decoded ahead of the workers (with their payloads) before the reader waits.
const QUEUE: usize = 16;
/// WRITE_ZEROES with NO_HOLE writes zeros in pieces of this size.
const ZERO_CHUNK: usize = 1 << 20;

/// Why a connection's request stream ended in error (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("WRITE of {0} bytes is larger than the {MAX_PAYLOAD}-byte maximum")]
    TooLarge(u32),
    #[error("connection lost in the middle of a request")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Read one request and, for WRITE, its payload. `Ok(None)`: the stream ended cleanly
/// between requests. Payloads over `MAX_PAYLOAD` are refused (the connection is closed:
/// their bytes cannot be skipped safely).
pub fn read_request(r: &mut impl Read) -> Result<Option<(Request, Vec<u8>)>, RequestError> {
    let mut hb = [0u8; w::REQUEST_LEN];
    let mut got = 0;
    while got < hb.len() {
        match r.read(&mut hb[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(RequestError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let req = w::decode_request(&hb).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let mut data = Vec::new();
    if req.kind == w::CMD_WRITE {
        if req.len > MAX_PAYLOAD {
            return Err(RequestError::TooLarge(req.len));
        }
        // Grown as bytes arrive: a client that claims 32 MiB and sends nothing does not get
        // 32 MiB allocated.
        data.reserve_exact((req.len as usize).min(4 << 20));
        let got = r.take(req.len as u64).read_to_end(&mut data)?;
        if got != req.len as usize {
            return Err(RequestError::Truncated);
        }
    }
    Ok(Some((req, data)))
}

/// A request's outcome before it is put on the wire.
enum Outcome {
    Ok,
    /// A finished READ: the buffer has `w::OFFSET_DATA_PREFIX` bytes of room, then the data.
    Data(Vec<u8>),
    BlockStatus(Vec<(u32, u32)>),
    /// A finished structured READ of several chunks (data and holes), ready to send.
    Chunks(Vec<u8>),
    Err(u32, String),
}

/// One connection's transmission state, shared by its reader and workers.
struct Conn {
    st: Arc<Storage>,
    export: Arc<Export>,
    neg: Negotiated,
    out: Mutex<Sock>,
    /// `--nbd-shared`: writes allowed while the volume file is open for writing too.
    shared: bool,
    /// This connection has written and holds a network writer claim on its volume (the
    /// mutex orders the first claim; the flag lets later writes skip it).
    claimed: Mutex<bool>,
    claimed_fast: AtomicBool,
}

/// Serve requests on `stream` until the client disconnects or the stream fails.
pub fn transmit(
    st: Arc<Storage>,
    export: Arc<Export>,
    neg: Negotiated,
    stream: Sock,
    shared: bool,
) {
    let out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("nbd: {e}");
            return;
        }
    };
    let conn = Arc::new(Conn {
        st,
        export,
        neg,
        out: Mutex::new(out),
        shared,
        claimed: Mutex::new(false),
        claimed_fast: AtomicBool::new(false),
    });
    let (tx, rx) = sync_channel::<(Request, Vec<u8>)>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let (c, rx) = (conn.clone(), rx.clone());
        match thread::Builder::new()
            .name(format!("nbd-worker-{i}"))
            .spawn(move || worker(&c, &rx))
        {
            Ok(h) => workers.push(h),
            Err(e) => log::warn!("nbd: spawn worker: {e}"),
        }
    }
    let mut reader = io::BufReader::with_capacity(256 * 1024, &stream);
    loop {
        match read_request(&mut reader) {
            Ok(None) => break,
            Ok(Some((req, _))) if req.kind == w::CMD_DISC => break,
            Ok(Some(job)) => {
                if workers.is_empty() {
                    conn.run(job);
                } else if tx.send(job).is_err() {
                    break;
                }
            }
            Err(e) => {
                log::warn!("nbd: export '{}': {e}; closing", conn.neg.export);
                break;
            }
        }
    }
    drop(tx);
    for h in workers {
        let _ = h.join();
    }
    if let (true, Export::Volume(v)) = (*conn.claimed.lock(), &*conn.export) {
        v.release_writer(Writer::Network {
            shared: conn.shared,
        });
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn worker(conn: &Conn, rx: &Mutex<Receiver<(Request, Vec<u8>)>>) {
    loop {
        let job = rx.lock().recv();
        match job {
            Ok(job) => conn.run(job),
            Err(_) => return,
        }
    }
}

impl Conn {
    fn run(&self, (req, data): (Request, Vec<u8>)) {
        let outcome = self.execute(&req, &data);
        drop(data);
        if let Err(e) = self.send(&req, outcome) {
            log::debug!("nbd: reply to export '{}': {e}", self.neg.export);
            // The reader may be waiting for bytes that will never come: wake it.
            let _ = self.out.lock().shutdown(Shutdown::Both);
        }
    }

    fn send(&self, req: &Request, outcome: Outcome) -> io::Result<()> {
        let c = req.cookie;
        let bytes: Vec<u8> = match outcome {
            Outcome::Data(mut buf) => {
                let n = (buf.len() - w::OFFSET_DATA_PREFIX) as u32;
                if self.neg.structured {
                    w::encode_offset_data_prefix(&mut buf, w::REPLY_FLAG_DONE, c, req.offset, n);
                    return self.out.lock().write_all(&buf);
                }
                let start = w::OFFSET_DATA_PREFIX - w::SIMPLE_REPLY_LEN;
                buf[start..w::OFFSET_DATA_PREFIX].copy_from_slice(&w::encode_simple_reply(0, c));
                return self.out.lock().write_all(&buf[start..]);
            }
            Outcome::Chunks(b) => return self.out.lock().write_all(&b),
            Outcome::Ok => w::encode_simple_reply(0, c).to_vec(),
            Outcome::BlockStatus(ext) => w::encode_block_status(c, ALLOCATION_CONTEXT, &ext),
            Outcome::Err(code, msg) => {
                if self.neg.structured && matches!(req.kind, w::CMD_READ | w::CMD_BLOCK_STATUS) {
                    w::encode_error_chunk(c, code, &msg)
                } else {
                    w::encode_simple_reply(code, c).to_vec()
                }
            }
        };
        self.out.lock().write_all(&bytes)
    }

    fn fail(&self, e: &crate::pool::IoError) -> Outcome {
        log::warn!("nbd: export '{}': {e}", self.neg.export);
        Outcome::Err(nbd_error(e), e.to_string())
    }

    fn execute(&self, req: &Request, data: &[u8]) -> Outcome {
        let allowed = match req.kind {
            w::CMD_READ => w::CMD_FLAG_DF,
            w::CMD_WRITE | w::CMD_TRIM => w::CMD_FLAG_FUA,
            w::CMD_WRITE_ZEROES => w::CMD_FLAG_FUA | w::CMD_FLAG_NO_HOLE,
            w::CMD_BLOCK_STATUS => w::CMD_FLAG_REQ_ONE,
            w::CMD_FLUSH => 0,
            k => return Outcome::Err(w::EINVAL, format!("command {k} is not supported")),
        };
        if req.flags & !allowed != 0 {
            return Outcome::Err(w::EINVAL, format!("flags {:#x} not allowed", req.flags));
        }
        let size = self.export.size();
        let end = req.offset.checked_add(req.len as u64);
        if req.kind != w::CMD_FLUSH && end.is_none_or(|e| e > size) {
            let code = match req.kind {
                w::CMD_WRITE | w::CMD_WRITE_ZEROES => w::ENOSPC,
                _ => w::EINVAL,
            };
            return Outcome::Err(
                code,
                format!(
                    "range {}+{} is past the end of the export ({size} bytes)",
                    req.offset, req.len
                ),
            );
        }
        let writing = matches!(req.kind, w::CMD_WRITE | w::CMD_TRIM | w::CMD_WRITE_ZEROES);
        let vol = match &*self.export {
            Export::Volume(v) => Some(v),
            Export::Snapshot(_) if writing => {
                return Outcome::Err(w::EPERM, "a snapshot export is read-only".into())
            }
            Export::VolumeReadOnly(_) if writing => {
                return Outcome::Err(w::EPERM, "this export was added read-only".into())
            }
            Export::Snapshot(_) | Export::VolumeReadOnly(_) => None,
        };
        if let (true, Some(v)) = (writing, vol) {
            if let Err(o) = self.claim(v) {
                return o;
            }
            if req.len == 0 {
                return Outcome::Ok;
            }
        }
        let res = match req.kind {
            w::CMD_READ => return self.read(req),
            w::CMD_BLOCK_STATUS => return self.block_status(req),
            w::CMD_FLUSH => match vol {
                Some(v) => self.st.fsync_volume(v),
                None => Ok(()),
            },
            w::CMD_WRITE => vol.map_or(Ok(()), |v| self.st.write(v, req.offset, data).map(|_| ())),
            w::CMD_TRIM => vol.map_or(Ok(()), |v| self.st.discard(v, req.offset, req.len as u64)),
            _ => vol.map_or(Ok(()), |v| {
                if req.flags & w::CMD_FLAG_NO_HOLE != 0 {
                    self.write_zeros(v, req.offset, req.len as u64)
                } else {
                    self.st.discard(v, req.offset, req.len as u64)
                }
            }),
        };
        let res = match (res, vol) {
            (Ok(()), Some(v)) if writing && req.flags & w::CMD_FLAG_FUA != 0 => {
                self.st.fsync_volume(v)
            }
            (r, _) => r,
        };
        match res {
            Ok(()) => Outcome::Ok,
            Err(e) => self.fail(&e),
        }
    }

    /// Claim the volume as a network writer at this connection's first write (a client that
    /// only reads never keeps the mount's writers out). Refused (EPERM) while the volume file
    /// is open for writing, unless the daemon runs with `--nbd-shared`.
    fn claim(&self, v: &Volume) -> Result<(), Outcome> {
        if self.claimed_fast.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut claimed = self.claimed.lock();
        if *claimed {
            return Ok(());
        }
        v.claim_writer(Writer::Network {
            shared: self.shared,
        })
        .map_err(|_| {
            log::warn!(
                "nbd: export '{}': write refused: the volume file is open for writing in the \
                 mount (start fusevold with --nbd-shared to allow both)",
                v.name
            );
            Outcome::Err(
                w::EPERM,
                "the volume file is open for writing in the mount".into(),
            )
        })?;
        *claimed = true;
        self.claimed_fast.store(true, Ordering::Release);
        Ok(())
    }

    fn write_zeros(&self, vol: &Volume, offset: u64, len: u64) -> Result<(), crate::pool::IoError> {
        let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK as u64) as usize;
            self.st.write(vol, offset + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    fn read(&self, req: &Request) -> Outcome {
        if req.len > MAX_PAYLOAD {
            return Outcome::Err(
                w::EINVAL,
                format!("READ of {} bytes (at most {MAX_PAYLOAD})", req.len),
            );
        }
        // With structured replies, holes go as NBD_REPLY_TYPE_OFFSET_HOLE chunks (12 bytes
        // instead of the zeros), unless the client asked for one chunk (DF).
        if self.neg.structured && req.flags & w::CMD_FLAG_DF == 0 && req.len > 0 {
            let runs = self.runs(req.offset, req.len as u64);
            if runs.iter().any(|&(_, mapped)| !mapped) {
                return self.read_chunks(req, runs);
            }
        }
        let mut buf = vec![0u8; w::OFFSET_DATA_PREFIX + req.len as usize];
        match self.read_into(req.offset, &mut buf[w::OFFSET_DATA_PREFIX..]) {
            // A short read (the volume shrank meanwhile) leaves zeros, as a hole would.
            Ok(_) => Outcome::Data(buf),
            Err(e) => self.fail(&e),
        }
    }

    fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<usize, crate::pool::IoError> {
        match &*self.export {
            Export::Volume(v) | Export::VolumeReadOnly(v) => self.st.read(v, offset, dst),
            Export::Snapshot(s) => self.st.snapshots.read_snapshot(s, offset, dst),
        }
    }

    /// Runs of (bytes, mapped) over the range, clipped to the export's size.
    fn runs(&self, offset: u64, len: u64) -> Vec<(u64, bool)> {
        match &*self.export {
            Export::Volume(v) | Export::VolumeReadOnly(v) => self.st.allocation(v, offset, len),
            Export::Snapshot(s) => self.st.snapshots.allocation(s, offset, len),
        }
    }

    /// A READ as data and hole chunks in offset order, the last one flagged DONE. A write
    /// racing the read may land in a range reported as a hole: overlapping concurrent
    /// requests have no defined order in NBD.
    fn read_chunks(&self, req: &Request, mut runs: Vec<(u64, bool)>) -> Outcome {
        let covered: u64 = runs.iter().map(|r| r.0).sum();
        if covered < req.len as u64 {
            // The export shrank under the request: the rest reads as zeros.
            runs.push((req.len as u64 - covered, false));
        }
        let mut out = Vec::with_capacity(req.len as usize / 2);
        let mut pos = req.offset;
        let last = runs.len() - 1;
        for (i, (n, mapped)) in runs.into_iter().enumerate() {
            let flags = if i == last { w::REPLY_FLAG_DONE } else { 0 };
            if mapped {
                let start = out.len();
                out.resize(start + w::OFFSET_DATA_PREFIX + n as usize, 0);
                if let Err(e) = self.read_into(pos, &mut out[start + w::OFFSET_DATA_PREFIX..]) {
                    return self.fail(&e);
                }
                w::encode_offset_data_prefix(
                    &mut out[start..start + w::OFFSET_DATA_PREFIX],
                    flags,
                    req.cookie,
                    pos,
                    n as u32,
                );
            } else {
                out.extend_from_slice(&w::encode_offset_hole(flags, req.cookie, pos, n as u32));
            }
            pos += n;
        }
        Outcome::Chunks(out)
    }

    fn block_status(&self, req: &Request) -> Outcome {
        if !self.neg.structured || !self.neg.allocation {
            return Outcome::Err(
                w::EINVAL,
                "BLOCK_STATUS needs the base:allocation meta context".into(),
            );
        }
        if req.len == 0 {
            return Outcome::Err(w::EINVAL, "BLOCK_STATUS of zero bytes".into());
        }
        let runs = self.runs(req.offset, req.len as u64);
        let mut ext: Vec<(u32, u32)> = runs
            .into_iter()
            .map(|(n, mapped)| {
                let flags = if mapped {
                    0
                } else {
                    w::STATE_HOLE | w::STATE_ZERO
                };
                (n as u32, flags)
            })
            .collect();
        if ext.is_empty() {
            // The export shrank under the request: say the rest is a hole.
            ext.push((req.len, w::STATE_HOLE | w::STATE_ZERO));
        }
        if req.flags & w::CMD_FLAG_REQ_ONE != 0 {
            ext.truncate(1);
        }
        Outcome::BlockStatus(ext)
    }
}
