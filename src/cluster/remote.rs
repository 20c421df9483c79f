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
        })
    }

    /// Send one request (with `data` for a WRITE) and read the reply header; a READ's data
    /// goes to `read_into`. Ok(error code): 0 is success.
    fn request(
        &mut self,
        kind: u16,
        offset: u64,
        len: u32,
        data: &[u8],
        read_into: &mut [u8],
        cookie: u64,
    ) -> io::Result<u32> {
        let hdr = w::encode_request(&w::Request {
            flags: 0,
            kind,
            cookie,
            offset,
            len,
        });
        self.out.clear();
        self.out.extend_from_slice(&hdr);
        self.out.extend_from_slice(data);
        self.sock.write_all(&self.out)?;
        let mut r = [0u8; w::SIMPLE_REPLY_LEN];
        self.sock.read_exact(&mut r)?;
        let rep = c::decode_simple_reply(&r).map_err(|e| proto(e.to_string()))?;
        if rep.cookie != cookie {
            return Err(proto(format!(
                "reply for cookie {} while waiting for {cookie}",
                rep.cookie
            )));
        }
        if rep.error == 0 && kind == w::CMD_READ {
            self.sock.read_exact(read_into)?;
        }
        Ok(rep.error)
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

    fn take(&self, t: &Target) -> Option<Conn> {
        self.idle
            .lock()
            .get_mut(&(t.address.to_string(), t.export.to_string()))
            .and_then(|v| v.pop())
    }

    fn give_back(&self, t: &Target, conn: Conn) {
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
        let cookie = self.cookie.fetch_add(1, Ordering::Relaxed);
        if let Some(mut conn) = self.take(t) {
            if let Ok(e) = conn.request(kind, offset, len, data, read_into, cookie) {
                self.give_back(t, conn);
                return self.answer(t, what, offset, e);
            }
        }
        let mut conn = Conn::open(t.address, t.export).map_err(io_err)?;
        let e = conn
            .request(kind, offset, len, data, read_into, cookie)
            .map_err(io_err)?;
        self.give_back(t, conn);
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
