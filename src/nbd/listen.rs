//! Where NBD clients come from: a TCP listener (`--nbd [ADDR:]PORT`, loopback unless an
//! allow-list is given) and/or a Unix socket (`--nbd-socket PATH`, mode 0600: the file's
//! permissions are the access control). One accept thread per listener, one thread per
//! connection; `NbdServer::stop` closes them all and waits for requests in flight.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;

use super::{serve_connection, ExportTable};
use crate::storage::Storage;

/// A client connection over TCP or a Unix socket.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => (&*s).flush(),
            Sock::Unix(s) => (&*s).flush(),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
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

/// `--nbd`, `--nbd-socket`, `--nbd-allow`, `--nbd-shared`.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    /// TCP listener.
    pub listen: Option<SocketAddr>,
    /// Unix socket listener.
    pub socket: Option<PathBuf>,
    /// TCP clients allowed besides loopback ones; required for a non-loopback `listen`.
    pub allow: Vec<Cidr>,
    /// `--nbd-shared`: NBD clients may write a volume while its file in the mount is open for
    /// writing (and the other way round). Off: the first of the two keeps the other out.
    pub shared: bool,
}

impl NbdOptions {
    /// `PORT` (on 127.0.0.1) or `ADDR:PORT`, a Unix socket path, the allow-list. A
    /// non-loopback address without an allow-list is refused.
    pub fn parse(
        listen: Option<&str>,
        socket: Option<PathBuf>,
        allow: &[String],
        shared: bool,
    ) -> Result<NbdOptions, String> {
        let listen = match listen {
            None => None,
            Some(l) => Some(match l.parse::<u16>() {
                Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
                Err(_) => l
                    .to_socket_addrs()
                    .map_err(|e| format!("--nbd {l}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--nbd {l}: no address"))?,
            }),
        };
        if listen.is_none() && socket.is_none() {
            return Err("NBD needs --nbd [ADDR:]PORT or --nbd-socket PATH".into());
        }
        let allow = allow
            .iter()
            .flat_map(|a| a.split(','))
            .filter(|a| !a.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(l) = listen {
            if !l.ip().is_loopback() && allow.is_empty() {
                return Err(format!(
                    "--nbd {l}: refusing to serve volumes on a non-loopback address without \
                     --nbd-allow ADDR[/PREFIX],... (the NBD protocol has no authentication; use \
                     --nbd-allow 0.0.0.0/0 to let every IPv4 client in)"
                ));
            }
        }
        Ok(NbdOptions {
            listen,
            socket,
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

/// At most this many connections at once (each has a reader and `conn::WORKERS` threads);
/// more are closed at once with a warning.
pub const MAX_CONNECTIONS: usize = 64;

/// Live connections: a clone of each socket (to shut it down) and its thread.
type Conns = Arc<Mutex<HashMap<u64, (Sock, JoinHandle<()>)>>>;

/// The running server: listener threads and one thread per connection.
pub struct NbdServer {
    pub local_addr: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    stopping: Arc<AtomicBool>,
    conns: Conns,
    acceptors: Vec<JoinHandle<()>>,
    /// The run-time export table (`fusevol export-nbd`).
    pub exports: Arc<ExportTable>,
}

/// Bind a Unix socket at `path`, replacing a stale one (a socket nobody answers on).
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Ok(m) = fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another server", path.display()),
            ));
        }
        fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

impl NbdServer {
    /// Bind and start accepting.
    pub fn start(st: Arc<Storage>, opts: NbdOptions) -> io::Result<NbdServer> {
        let stopping = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let next = Arc::new(AtomicU64::new(0));
        let opts = Arc::new(opts);
        let exports = Arc::new(ExportTable::default());
        let mut acceptors = Vec::new();
        let mut local_addr = None;
        if let Some(addr) = opts.listen {
            let listener = TcpListener::bind(addr)?;
            local_addr = Some(listener.local_addr()?);
            log::info!("nbd: serving volumes on {}", listener.local_addr()?);
            let (st, opts, stopping, conns, next, table) = (
                st.clone(),
                opts.clone(),
                stopping.clone(),
                conns.clone(),
                next.clone(),
                exports.clone(),
            );
            acceptors.push(
                thread::Builder::new()
                    .name("nbd-accept".into())
                    .spawn(move || {
                        for s in listener.incoming() {
                            if stopping.load(Ordering::Acquire) {
                                return;
                            }
                            let Some((s, peer)) = accepted(s.and_then(|s| {
                                let p = s.peer_addr()?;
                                Ok((s, p))
                            })) else {
                                continue;
                            };
                            if !opts.admits(peer.ip()) {
                                log::warn!(
                                    "nbd: refused connection from {peer} (not in --nbd-allow)"
                                );
                                let _ = s.shutdown(Shutdown::Both);
                                continue;
                            }
                            let _ = s.set_nodelay(true);
                            spawn_conn(
                                &st,
                                &table,
                                &conns,
                                &next,
                                Sock::Tcp(s),
                                peer.to_string(),
                                opts.shared,
                            );
                        }
                    })?,
            );
        }
        if let Some(path) = &opts.socket {
            let listener = bind_unix(path)?;
            log::info!("nbd: serving volumes on unix socket {}", path.display());
            let (st, opts2, stopping, conns, next, table) = (
                st.clone(),
                opts.clone(),
                stopping.clone(),
                conns.clone(),
                next.clone(),
                exports.clone(),
            );
            acceptors.push(
                thread::Builder::new()
                    .name("nbd-accept-unix".into())
                    .spawn(move || {
                        for s in listener.incoming() {
                            if stopping.load(Ordering::Acquire) {
                                return;
                            }
                            let Some(s) = accepted(s) else {
                                continue;
                            };
                            spawn_conn(
                                &st,
                                &table,
                                &conns,
                                &next,
                                Sock::Unix(s),
                                "unix socket".into(),
                                opts2.shared,
                            );
                        }
                    })?,
            );
        }
        Ok(NbdServer {
            local_addr,
            socket: opts.socket.clone(),
            stopping,
            conns,
            acceptors,
            exports,
        })
    }

    /// Stop accepting, close every connection and wait for their requests in flight.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        // Wake the blocking accept()s.
        if let Some(a) = self.local_addr {
            let _ = TcpStream::connect(a);
        }
        if let Some(p) = &self.socket {
            let _ = UnixStream::connect(p);
        }
        for h in self.acceptors {
            let _ = h.join();
        }
        if let Some(p) = &self.socket {
            let _ = fs::remove_file(p);
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

/// An accepted stream, or None after logging (and a short pause, so a persistent error such
/// as EMFILE does not spin).
fn accepted<T>(r: io::Result<T>) -> Option<T> {
    match r {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("nbd: accept: {e}");
            thread::sleep(std::time::Duration::from_millis(50));
            None
        }
    }
}

fn spawn_conn(
    st: &Arc<Storage>,
    table: &Arc<ExportTable>,
    conns: &Conns,
    next: &AtomicU64,
    sock: Sock,
    peer: String,
    shared: bool,
) {
    {
        let mut c = conns.lock();
        // Drop the entries of connections that ended (their threads are done).
        c.retain(|_, (_, h)| !h.is_finished());
        if c.len() >= MAX_CONNECTIONS {
            log::warn!("nbd: refused connection from {peer}: {MAX_CONNECTIONS} connections open");
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
    }
    let Ok(keep) = sock.try_clone() else {
        return;
    };
    let id = next.fetch_add(1, Ordering::Relaxed);
    let (st, conns2, table) = (st.clone(), conns.clone(), table.clone());
    let spawned = thread::Builder::new()
        .name(format!("nbd-conn-{id}"))
        .spawn(move || {
            serve_connection(st, &table, sock, peer, shared);
            conns2.lock().remove(&id);
        });
    match spawned {
        Ok(h) => {
            conns.lock().insert(id, (keep, h));
        }
        Err(e) => log::warn!("nbd: spawn connection thread: {e}"),
    }
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
        let o = NbdOptions::parse(Some("10809"), None, &[], false).unwrap();
        assert_eq!(o.listen, Some("127.0.0.1:10809".parse().unwrap()));
        assert!(NbdOptions::parse(Some("0.0.0.0:10809"), None, &[], false).is_err());
        let o = NbdOptions::parse(
            Some("0.0.0.0:10809"),
            None,
            &["192.168.0.0/24".into()],
            false,
        )
        .unwrap();
        assert!(o.admits("192.168.0.7".parse().unwrap()));
        assert!(o.admits("127.0.0.1".parse().unwrap()));
        assert!(!o.admits("192.168.1.7".parse().unwrap()));
        assert!(NbdOptions::parse(Some("[::1]:10809"), None, &[], false).is_ok());
        assert!(NbdOptions::parse(None, None, &[], false).is_err());
        assert!(NbdOptions::parse(None, Some("/tmp/x.sock".into()), &[], false).is_ok());
    }
}
