//! NBD server: every volume is an export named after it, every snapshot a read-only export
//! `VOL@SNAP`. A front end beside FUSE: requests go through `Storage`'s one write pipeline
//! (`read`, `write`, `discard`, `fsync_volume`), so snapshots' copy-on-write, pairs' dual
//! writes and journal groups' write-ahead journaling apply as they do to the mount; a journal
//! group secondary's volumes answer writes with EPERM. This is the only place NBD error codes
//! are made (`nbd_error`).
//!
//! Wire format: `format::nbd` (pure encode/decode); negotiation: `handshake`; transmission
//! (reader thread + workers per connection, replies out of order): `conn`.
//!
//! Safety of the listener: by default it binds 127.0.0.1; a non-loopback address is refused
//! unless an allow-list is given, and then only loopback peers and the listed networks get in.
//! `NBD_FLAG_CAN_MULTI_CONN` is set: a FLUSH on any connection syncs the whole pool, so every
//! write acknowledged on any connection before it is durable after it.

pub mod conn;
pub mod handshake;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;

use crate::format::nbd as w;
use crate::pool::IoError;
use crate::snapshot::{Snapshot, SPLIT_SNAPSHOT_PREFIX};
use crate::storage::Storage;
use crate::volume::Volume;
use handshake::{Catalog, HandshakeError};

/// The NBD error code for a data-path error (NBD has no EROFS: read-only is EPERM).
pub fn nbd_error(e: &IoError) -> u32 {
    let errno = match e {
        IoError::BeyondEnd { .. } | IoError::NoSpace { .. } | IoError::JournalFull { .. } => {
            libc::ENOSPC
        }
        IoError::Array { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        IoError::Invalid { .. } => libc::EINVAL,
        IoError::ReadOnly { .. } => libc::EPERM,
        IoError::Journal { source, .. } => source.errno(),
        _ => libc::EIO,
    };
    match errno {
        libc::ENOSPC | libc::EDQUOT => w::ENOSPC,
        libc::EINVAL => w::EINVAL,
        libc::EPERM | libc::EROFS => w::EPERM,
        libc::ENOMEM => w::ENOMEM,
        _ => w::EIO,
    }
}

/// What a connection serves: a volume (read-write) or a snapshot (read-only).
pub enum Export {
    Volume(Arc<Volume>),
    Snapshot(Arc<Snapshot>),
}

impl Export {
    pub fn size(&self) -> u64 {
        match self {
            Export::Volume(v) => v.size(),
            Export::Snapshot(s) => s.size,
        }
    }

    /// Counted as an open handle while a client uses it, so `volume delete` and `snapshot
    /// delete` refuse it as they refuse an open file.
    fn opened(&self) {
        match self {
            Export::Volume(v) => v.opened(),
            Export::Snapshot(s) => s.opened(),
        }
    }

    fn closed(&self) {
        match self {
            Export::Volume(v) => v.closed(),
            Export::Snapshot(s) => s.closed(),
        }
    }
}

/// Export names over a `Storage`.
struct StorageCatalog<'a>(&'a Storage);

impl StorageCatalog<'_> {
    fn lookup(&self, name: &str) -> Option<Export> {
        let st = self.0;
        if let Some(v) = st.volumes.volume(name) {
            return Some(Export::Volume(v));
        }
        let (vol, snap) = name.rsplit_once('@')?;
        if snap.starts_with(SPLIT_SNAPSHOT_PREFIX) {
            return None;
        }
        st.snapshots.snapshot(vol, snap).ok().map(Export::Snapshot)
    }

    /// A secondary's volumes are read-only; tell the client so up front.
    fn read_only(&self, e: &Export) -> bool {
        match e {
            Export::Volume(v) => self
                .0
                .replication
                .group_of(v.id)
                .is_some_and(|g| !g.is_primary()),
            Export::Snapshot(_) => true,
        }
    }
}

impl Catalog for StorageCatalog<'_> {
    fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.0.volumes.volume_list() {
            out.push(v.name.clone());
            for s in self.0.snapshots.snapshots_of(v.id) {
                if !s.name.starts_with(SPLIT_SNAPSHOT_PREFIX) {
                    out.push(format!("{}@{}", v.name, s.name));
                }
            }
        }
        out
    }

    fn describe(&self, name: &str) -> Option<(u64, bool)> {
        let e = self.lookup(name)?;
        Some((e.size(), self.read_only(&e)))
    }
}

/// An IPv4 or IPv6 network, `ADDR` or `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or ADDR/PREFIX network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("'{s}': prefix must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `--nbd` and `--nbd-allow`.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    pub listen: SocketAddr,
    /// Clients allowed besides loopback ones; required for a non-loopback `listen`.
    pub allow: Vec<Cidr>,
    /// `--nbd-shared`: NBD clients may write a volume while its file in the mount is open for
    /// writing (and the other way round). Off: the first of the two keeps the other out.
    pub shared: bool,
}

impl NbdOptions {
    /// `PORT` (on 127.0.0.1) or `ADDR:PORT`, and the allow-list. A non-loopback address
    /// without an allow-list is refused.
    pub fn parse(listen: &str, allow: &[String], shared: bool) -> Result<NbdOptions, String> {
        let listen = match listen.parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => listen
                .to_socket_addrs()
                .map_err(|e| format!("--nbd {listen}: {e}"))?
                .next()
                .ok_or_else(|| format!("--nbd {listen}: no address"))?,
        };
        let allow = allow
            .iter()
            .flat_map(|a| a.split(','))
            .filter(|a| !a.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if !listen.ip().is_loopback() && allow.is_empty() {
            return Err(format!(
                "--nbd {listen}: refusing to serve volumes on a non-loopback address without \
                 --nbd-allow ADDR[/PREFIX],... (the NBD protocol has no authentication; use \
                 --nbd-allow 0.0.0.0/0 to let every IPv4 client in)"
            ));
        }
        Ok(NbdOptions {
            listen,
            allow,
            shared,
        })
    }

    fn admits(&self, peer: IpAddr) -> bool {
        peer.to_canonical().is_loopback()
            || self.allow.is_empty()
            || self.allow.iter().any(|c| c.contains(peer))
    }
}

/// Live connections: a clone of each socket (to shut it down) and its thread.
type Conns = Arc<Mutex<HashMap<u64, (TcpStream, JoinHandle<()>)>>>;

/// The running server: a listener thread and one thread per connection.
pub struct NbdServer {
    pub local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    conns: Conns,
    acceptor: Option<JoinHandle<()>>,
}

impl NbdServer {
    /// Bind and start accepting.
    pub fn start(st: Arc<Storage>, opts: NbdOptions) -> io::Result<NbdServer> {
        let listener = TcpListener::bind(opts.listen)?;
        let local_addr = listener.local_addr()?;
        log::info!("nbd: serving volumes on {local_addr}");
        let stopping = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let acceptor = {
            let (stopping, conns) = (stopping.clone(), conns.clone());
            thread::Builder::new()
                .name("nbd-accept".into())
                .spawn(move || accept_loop(&listener, &st, &opts, &stopping, &conns))?
        };
        Ok(NbdServer {
            local_addr,
            stopping,
            conns,
            acceptor: Some(acceptor),
        })
    }

    /// Stop accepting, close every connection and wait for their requests in flight.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wake the blocking accept().
        let _ = TcpStream::connect(self.local_addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let conns: Vec<_> = self.conns.lock().drain().map(|(_, c)| c).collect();
        for (s, _) in &conns {
            let _ = s.shutdown(Shutdown::Read);
        }
        for (_, h) in conns {
            let _ = h.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    st: &Arc<Storage>,
    opts: &NbdOptions,
    stopping: &Arc<AtomicBool>,
    conns: &Conns,
) {
    let next = AtomicU64::new(0);
    for s in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let stream = match s {
            Ok(s) => s,
            Err(e) => {
                log::warn!("nbd: accept: {e}");
                thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue,
        };
        if !opts.admits(peer.ip()) {
            log::warn!("nbd: refused connection from {peer} (not in --nbd-allow)");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Ok(keep) = stream.try_clone() else {
            continue;
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let (st, conns2, shared) = (st.clone(), conns.clone(), opts.shared);
        let spawned = thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                serve_connection(st, stream, peer, shared);
                conns2.lock().remove(&id);
            });
        match spawned {
            Ok(h) => {
                let mut c = conns.lock();
                // Drop the entries of connections that ended (their threads are done).
                c.retain(|_, (_, h)| !h.is_finished());
                c.insert(id, (keep, h));
            }
            Err(e) => log::warn!("nbd: spawn connection thread: {e}"),
        }
    }
}

fn serve_connection(st: Arc<Storage>, stream: TcpStream, peer: SocketAddr, shared: bool) {
    // The reader's buffer cannot hold transmission bytes when negotiation ends: a client
    // sends its first request only after the reply to NBD_OPT_GO (or EXPORT_NAME).
    let mut r = io::BufReader::new(&stream);
    let mut wr = io::BufWriter::new(&stream);
    let neg = handshake::negotiate(&mut r, &mut wr, &StorageCatalog(&st));
    drop((r, wr));
    let neg = match neg {
        Ok(n) => n,
        Err(HandshakeError::Closed | HandshakeError::Aborted) => return,
        Err(e) => {
            log::warn!("nbd: negotiation with {peer}: {e}");
            return;
        }
    };
    let Some(export) = StorageCatalog(&st).lookup(&neg.export) else {
        log::warn!("nbd: export '{}' went away during negotiation", neg.export);
        return;
    };
    log::info!(
        "nbd: {peer} opened export '{}' (structured replies: {}, base:allocation: {})",
        neg.export,
        neg.structured,
        neg.allocation
    );
    export.opened();
    let name = neg.export.clone();
    let export = Arc::new(export);
    conn::transmit(st, export.clone(), neg, stream, shared);
    export.closed();
    log::info!("nbd: {peer} closed export '{name}'");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn listen_policy() {
        let o = NbdOptions::parse("10809", &[], false).unwrap();
        assert_eq!(o.listen, "127.0.0.1:10809".parse().unwrap());
        assert!(NbdOptions::parse("0.0.0.0:10809", &[], false).is_err());
        let o = NbdOptions::parse("0.0.0.0:10809", &["192.168.0.0/24".into()], false).unwrap();
        assert!(o.admits("192.168.0.7".parse().unwrap()));
        assert!(o.admits("127.0.0.1".parse().unwrap()));
        assert!(!o.admits("192.168.1.7".parse().unwrap()));
        assert!(NbdOptions::parse("[::1]:10809", &[], false).is_ok());
    }
}
