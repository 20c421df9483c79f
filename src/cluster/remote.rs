//! Forwarding: I/O to a volume another node owns goes to that node's NBD server, and the
//! answer is relayed. A small blocking NBD client (fixed newstyle, NBD_OPT_GO, simple
//! replies; wire format in `format::nbd_client`), written against the protocol document of
//! NetworkBlockDevice/nbd. Why not a crate: the maintained Rust NBD crates are servers
//! (`nbd` 0.3 has a client half without OPT_GO or error replies) or bind libnbd (a C library
//! and its async runtime for what is twenty lines of framing here); this client runs on the
//! calling FUSE worker thread with no hand-off, which is what a forwarded request's latency
//! needs.
//!
//! Connections are pooled per (node address, export): a request takes an idle connection or
//! opens one, so parallel FUSE requests use parallel connections (the server sets
//! CAN_MULTI_CONN: a FLUSH on any connection covers writes acknowledged on all of them).
//! Nothing is cached: every read goes to the owner, so a read never returns stale data.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::format::nbd as w;
use crate::format::nbd_client as c;

/// How long a forwarded request may wait for the owner before it fails (EIO): a stopped
/// (SIGSTOP) or partitioned owner must not hang the reader forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per export.
const MAX_IDLE: usize = 32;
/// An idle connection unused this long is closed (`Remotes::reap`): the owner counts every
/// connection as an open handle of the volume, and a volume with open handles cannot be
/// deleted, so forwarding must not keep them open once the I/O stopped.
pub const IDLE_CLOSE: Duration = Duration::from_millis(1000);
/// READs and WRITEs larger than this are sent as pipelined pieces of this size (`request`).
const PIECE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "volume '{volume}': owner node '{node}' is unavailable (not registered in the cluster)"
    )]
    Unavailable { volume: String, node: String },
    #[error("volume '{volume}': forwarding to node '{node}' at {address}: {source}")]
    Io {
        volume: String,
        node: String,
        address: String,
        source: io::Error,
    },
    #[error("volume '{volume}': node '{node}' answered {what} at offset {offset} with NBD error {error}")]
    Remote {
        volume: String,
        node: String,
        what: &'static str,
        offset: u64,
        /// The NBD error code (`format::nbd::EIO`, `ENOSPC`, `EPERM`, ...).
        error: u32,
    },
    #[error("volume '{volume}': {what} at offset {offset} is at or past the end ({size} bytes)")]
    BeyondEnd {
        volume: String,
        what: &'static str,
        offset: u64,
        size: u64,
    },
}

/// One negotiated connection to an export.
struct Conn {
    sock: TcpStream,
    size: u64,
    flags: u16,
    /// Header + data of a WRITE, sent with one write (reused).
    out: Vec<u8>,
    /// When it went back to the pool.
    idle_since: std::time::Instant,
}

fn proto(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Conn {
    fn open(address: &str, export: &str) -> io::Result<Conn> {
        use std::net::ToSocketAddrs;
        let addr = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| proto(format!("'{address}' names no address")))?;
        let mut sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut g = [0u8; w::GREETING_LEN];
        sock.read_exact(&mut g)?;
        let sflags = c::decode_greeting(&g).map_err(|e| proto(e.to_string()))?;
        sock.write_all(&c::encode_client_flags(sflags))?;
        sock.write_all(&c::encode_go(export))?;
        let mut info = None;
        loop {
            let mut h = [0u8; c::OPTION_REPLY_LEN];
            sock.read_exact(&mut h)?;
            let r = c::decode_option_reply(&h).map_err(|e| proto(e.to_string()))?;
            if r.len as usize > w::MAX_STRING + 64 {
                return Err(proto(format!("option reply of {} bytes", r.len)));
            }
            let mut data = vec![0u8; r.len as usize];
            sock.read_exact(&mut data)?;
            match r.reply {
                w::REP_INFO => {
                    if let Some(i) =
                        c::decode_info_export(&data).map_err(|e| proto(e.to_string()))?
                    {
                        info = Some(i);
                    }
                }
                w::REP_ACK => break,
                e if e & (1 << 31) != 0 => {
                    let msg = String::from_utf8_lossy(&data);
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("export '{export}' refused (reply {e:#x}): {msg}"),
                    ));
                }
                other => return Err(proto(format!("unexpected option reply {other}"))),
            }
        }
        let (size, flags) =
            info.ok_or_else(|| proto("GO acknowledged without INFO_EXPORT".into()))?;
        Ok(Conn {
            sock,
            size,
            flags,
            out: Vec::new(),
            idle_since: std::time::Instant::now(),
        })
    }

    /// Send one request (with `data` for a WRITE) and read its reply; a READ's data goes to
    /// `read_into`. Ok(error code): 0 is success.
    ///
    /// A READ or WRITE larger than `PIECE` is sent as pieces, all at once on this connection,
    /// before the first reply is read (NBD lets a client keep many requests in flight; the
    /// server runs them on its workers and answers in any order): the owner writes the first
    /// piece to its pool while the next ones are still on the wire, instead of the whole
    /// request crossing the socket before any of it is written (and the whole answer being
    /// read before any of it is sent back). The first error of a piece is the answer.
    fn request(
        &mut self,
        kind: u16,
        offset: u64,
        len: u32,
        data: &[u8],
        read_into: &mut [u8],
        cookie: u64,
    ) -> io::Result<u32> {
        let split = matches!(kind, w::CMD_READ | w::CMD_WRITE) && len as usize > PIECE;
        let pieces = if split {
            (len as usize).div_ceil(PIECE)
        } else {
            1
        };
        let piece = |i: usize| -> (u64, usize, usize) {
            if !split {
                return (offset, 0, len as usize);
            }
            let start = i * PIECE;
            let end = (start + PIECE).min(len as usize);
            (offset + start as u64, start, end)
        };
        self.out.clear();
        for i in 0..pieces {
            let (off, start, end) = piece(i);
            self.out.extend_from_slice(&w::encode_request(&w::Request {
                flags: 0,
                kind,
                cookie: cookie + i as u64,
                offset: off,
                len: (end - start) as u32,
            }));
            if kind == w::CMD_WRITE {
                self.out.extend_from_slice(&data[start..end]);
            }
        }
        self.sock.write_all(&self.out)?;
        let mut first_error = 0;
        for _ in 0..pieces {
            let mut r = [0u8; w::SIMPLE_REPLY_LEN];
            self.sock.read_exact(&mut r)?;
            let rep = c::decode_simple_reply(&r).map_err(|e| proto(e.to_string()))?;
            let i = rep.cookie.wrapping_sub(cookie);
            if i >= pieces as u64 {
                return Err(proto(format!(
                    "reply for cookie {} while waiting for {cookie}..{}",
                    rep.cookie,
                    cookie + pieces as u64
                )));
            }
            if rep.error == 0 && kind == w::CMD_READ {
                let (_, start, end) = piece(i as usize);
                self.sock.read_exact(&mut read_into[start..end])?;
            }
            if first_error == 0 {
                first_error = rep.error;
            }
        }
        Ok(first_error)
    }
}

/// Where a forwarded request goes.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub volume: &'a str,
    pub node: &'a str,
    pub address: &'a str,
    /// The export name on the owner (the volume's name there, or `VOL@SNAP`).
    pub export: &'a str,
}

/// Idle connections per (address, export).
#[derive(Default)]
pub struct Remotes {
    idle: Mutex<HashMap<(String, String), Vec<Conn>>>,
    cookie: AtomicU64,
}

impl Remotes {
    /// Forget the connections to `address` (its node re-registered or went away).
    pub fn drop_node(&self, address: &str) {
        self.idle.lock().retain(|(a, _), _| a != address);
    }

    /// Forget the idle connections to one export of `address` (its volume moved away: the
    /// old owner's copy is deleted only when no connection holds it open).
    pub fn drop_export(&self, address: &str, export: &str) {
        self.idle
            .lock()
            .remove(&(address.to_string(), export.to_string()));
    }

    fn take(&self, t: &Target) -> Option<Conn> {
        self.idle
            .lock()
            .get_mut(&(t.address.to_string(), t.export.to_string()))
            .and_then(|v| v.pop())
    }

    /// Close the connections idle for longer than `max_idle`.
    pub fn reap(&self, max_idle: Duration) {
        let mut g = self.idle.lock();
        for v in g.values_mut() {
            v.retain(|c| c.idle_since.elapsed() < max_idle);
        }
        g.retain(|_, v| !v.is_empty());
    }

    fn give_back(&self, t: &Target, mut conn: Conn) {
        conn.idle_since = std::time::Instant::now();
        let mut g = self.idle.lock();
        let v = g
            .entry((t.address.to_string(), t.export.to_string()))
            .or_default();
        if v.len() < MAX_IDLE {
            v.push(conn);
        }
    }

    /// Run one request. A pooled connection that turns out dead (the owner restarted) is
    /// replaced once by a fresh one; a fresh connection's failure is the answer. Re-sending
    /// is safe: NBD reads, writes of the same bytes, trims and flushes are idempotent.
    fn run(
        &self,
        t: &Target,
        (what, kind): (&'static str, u16),
        offset: u64,
        len: u32,
        data: &[u8],
        read_into: &mut [u8],
    ) -> Result<u32, RemoteError> {
        let io_err = |source: io::Error| RemoteError::Io {
            volume: t.volume.to_string(),
            node: t.node.to_string(),
            address: t.address.to_string(),
            source,
        };
        // Cookies for every piece of a pipelined request (`Conn::request`).
        let cookie = self.cookie.fetch_add(
            u64::from(len).div_ceil(PIECE as u64).max(1),
            Ordering::Relaxed,
        );
        if let Some(mut conn) = self.take(t) {
            match conn.request(kind, offset, len, data, read_into, cookie) {
                Ok(e) if e != w::ESHUTDOWN => {
                    self.give_back(t, conn);
                    return self.answer(t, what, offset, e);
                }
                // ESHUTDOWN: the volume this connection opened was moved away (`volume
                // move`); the export's name may be a new volume by now (moved back), so the
                // pooled connections are dropped and a fresh one asks again.
                Ok(_) => self.drop_export(t.address, t.export),
                Err(_) => {}
            }
        }
        let mut conn = Conn::open(t.address, t.export).map_err(io_err)?;
        let e = conn
            .request(kind, offset, len, data, read_into, cookie)
            .map_err(io_err)?;
        if e != w::ESHUTDOWN {
            self.give_back(t, conn);
        }
        self.answer(t, what, offset, e)
    }

    fn answer(
        &self,
        t: &Target,
        what: &'static str,
        offset: u64,
        e: u32,
    ) -> Result<u32, RemoteError> {
        if e == 0 {
            Ok(0)
        } else {
            Err(RemoteError::Remote {
                volume: t.volume.to_string(),
                node: t.node.to_string(),
                what,
                offset,
                error: e,
            })
        }
    }

    /// Read `buf.len()` bytes at `offset` (cut at `size`); returns the bytes read.
    pub fn read(
        &self,
        t: &Target,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, RemoteError> {
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - offset) as usize;
        self.run(
            t,
            ("READ", w::CMD_READ),
            offset,
            n as u32,
            &[],
            &mut buf[..n],
        )?;
        Ok(n)
    }

    /// Write `data` at `offset`; a write at or past `size` is refused, one crossing it cut.
    pub fn write(
        &self,
        t: &Target,
        size: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, RemoteError> {
        if offset >= size {
            return Err(RemoteError::BeyondEnd {
                volume: t.volume.to_string(),
                what: "WRITE",
                offset,
                size,
            });
        }
        let n = (data.len() as u64).min(size - offset) as usize;
        self.run(
            t,
            ("WRITE", w::CMD_WRITE),
            offset,
            n as u32,
            &data[..n],
            &mut [],
        )?;
        Ok(n)
    }

    /// Punch (discard) a range.
    pub fn trim(&self, t: &Target, offset: u64, len: u64) -> Result<(), RemoteError> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(1 << 30);
            self.run(
                t,
                ("TRIM", w::CMD_TRIM),
                offset + done,
                n as u32,
                &[],
                &mut [],
            )?;
            done += n;
        }
        Ok(())
    }

    /// Everything acknowledged before is durable on the owner.
    pub fn flush(&self, t: &Target) -> Result<(), RemoteError> {
        self.run(t, ("FLUSH", w::CMD_FLUSH), 0, 0, &[], &mut [])
            .map(|_| ())
    }

    /// Size and transmission flags of an export (a fresh negotiation).
    pub fn probe(&self, t: &Target) -> Result<(u64, u16), RemoteError> {
        let conn = Conn::open(t.address, t.export).map_err(|source| RemoteError::Io {
            volume: t.volume.to_string(),
            node: t.node.to_string(),
            address: t.address.to_string(),
            source,
        })?;
        let r = (conn.size, conn.flags);
        self.give_back(t, conn);
        Ok(r)
    }
}
