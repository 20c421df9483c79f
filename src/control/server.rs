//! The daemon side of the control socket.
//!
//! [`serve`] binds `<POOL>/control.sock` (mode 0600, so only the daemon's user can drive it) and
//! answers requests on it until [`ServerHandle::stop`] (or drop):
//!
//! - one accept thread; every connection gets its own thread, so a slow request (a sync, a
//!   large delete) never holds up `volume list` from another shell;
//! - a connection carries any number of exchanges: one JSON request line in, one JSON response
//!   line out. Empty lines are ignored;
//! - a request line is capped at [`MAX_REQUEST_LINE`] bytes; a longer one is answered with a
//!   `protocol` error and the connection is closed (its remainder cannot be re-synchronised);
//! - a line that is not a valid [`Request`] (bad JSON, unknown `op`, missing or unknown field)
//!   is answered with a `protocol` error and the connection stays usable;
//! - a handler that panics is answered with an `io` error naming the panic; the daemon goes on.
//!
//! Stopping: a flag is set and the accept thread is woken by a connection to its own socket; the
//! socket file is removed only if it is still the one this server bound (same device and inode),
//! so a second daemon that took over the path is left alone. Open connections are then shut
//! down for reading: a request already being handled finishes and its answer is written, and
//! `stop` returns only after every connection thread has ended — so no handler runs after
//! `stop` returns. Handlers that may block for long (waits) should watch the daemon's own
//! shutdown state. Do not call `stop` from inside a handler: it waits for that very thread.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::protocol::{ErrorCode, Request, Response};

/// The longest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// How long writing one response may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A request answered by many lines (`events`); the connection closes after it.
pub type ResponseStream<'a> = Box<dyn Iterator<Item = Response> + Send + 'a>;

/// What the daemon plugs into the server: one call per request, from any connection thread.
pub trait ControlHandler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Response;

    /// `req` arriving on connection `conn` (a number unique for the server's life); a handler
    /// that keeps per-connection state (who is asking, locks held for a connection) uses
    /// this. Default: [`handle`](ControlHandler::handle).
    fn handle_on(&self, _conn: u64, req: Request) -> Response {
        self.handle(req)
    }

    /// Connection `conn` has closed (the client went away or the server stops); per-connection
    /// state can go. Default: nothing.
    fn disconnected(&self, _conn: u64) {}

    /// A streaming answer to `req`, if it is one (default: none). Each item is written as
    /// a line as soon as it comes; the stream should end when the daemon stops.
    fn stream(&self, _req: &Request) -> Option<ResponseStream<'_>> {
        None
    }
}

/// Any `Fn(Request) -> Response` closure is a handler (handy for tests and small tools).
impl<F> ControlHandler for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: Request) -> Response {
        self(req)
    }
}

/// Open connections: a second handle on each stream (to shut it down) and its thread.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, (UnixStream, JoinHandle<()>)>,
}

type Registry = Arc<Mutex<Connections>>;

fn lock(reg: &Registry) -> MutexGuard<'_, Connections> {
    // A panic while holding this lock leaves the map consistent; keep going.
    reg.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running control server; stops when [`stop`](ServerHandle::stop)ped or dropped.
pub struct ServerHandle {
    path: PathBuf,
    /// (device, inode) of the socket file this server bound.
    identity: (u64, u64),
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Registry,
}

/// Bind the control socket at `socket_path` and serve requests with `handler` on background
/// threads. A stale socket file at the path (nothing listening) is replaced; a live one, or a
/// file that is not a socket, is an error. All errors name the path.
pub fn serve(socket_path: &Path, handler: Arc<dyn ControlHandler>) -> io::Result<ServerHandle> {
    remove_stale_socket(socket_path)?;
    let listener = UnixListener::bind(socket_path)
        .map_err(|e| annotate(e, "cannot bind control socket", socket_path))?;
    let identity = match restrict_and_identify(socket_path) {
        Ok(id) => id,
        Err(e) => {
            let _ = fs::remove_file(socket_path);
            return Err(e);
        }
    };
    let stopping = Arc::new(AtomicBool::new(false));
    let conns: Registry = Arc::default();
    let accept = {
        let stopping = Arc::clone(&stopping);
        let conns = Arc::clone(&conns);
        thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || accept_loop(listener, handler, stopping, conns))
    };
    let accept = match accept {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(socket_path);
            return Err(annotate(
                e,
                "cannot start the control thread for",
                socket_path,
            ));
        }
    };
    log::info!("control socket listening at {}", socket_path.display());
    Ok(ServerHandle {
        path: socket_path.to_path_buf(),
        identity,
        stopping,
        accept: Some(accept),
        conns,
    })
}

impl ServerHandle {
    /// The socket path this server listens on.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting, wait for open connections to finish their current request, remove the
    /// socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        if self.socket_is_ours() {
            // Wake the blocking accept(); it sees the flag and returns.
            match UnixStream::connect(&self.path) {
                Ok(_) => {
                    if accept.join().is_err() {
                        log::error!("control accept thread panicked");
                    }
                }
                Err(e) => log::warn!(
                    "cannot wake the control accept thread via {}: {e}; leaving it behind",
                    self.path.display()
                ),
            }
            if let Err(e) = fs::remove_file(&self.path) {
                log::warn!("cannot remove control socket {}: {e}", self.path.display());
            }
        } else {
            log::warn!(
                "control socket {} was removed or replaced by someone else; leaving it alone",
                self.path.display()
            );
        }
        let open = std::mem::take(&mut lock(&self.conns).open);
        for (stream, _) in open.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        for (_, (_, thread)) in open {
            if thread.join().is_err() {
                log::error!("a control connection thread panicked");
            }
        }
        log::info!("control socket {} closed", self.path.display());
    }

    fn socket_is_ours(&self) -> bool {
        match fs::symlink_metadata(&self.path) {
            Ok(m) => m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity,
            Err(_) => false,
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Remove a socket file nobody listens on; refuse to touch anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, "cannot inspect control socket path", path)),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process is already serving control socket {}",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale control socket {}", path.display());
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(annotate(e, "cannot remove stale control socket", path))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(annotate(e, "cannot probe existing control socket", path)),
    }
}

/// Set mode 0600 on the freshly bound socket and return its (device, inode).
fn restrict_and_identify(path: &Path) -> io::Result<(u64, u64)> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| annotate(e, "cannot set mode 0600 on control socket", path))?;
    let meta = fs::symlink_metadata(path)
        .map_err(|e| annotate(e, "cannot inspect control socket", path))?;
    Ok((meta.dev(), meta.ino()))
}

fn accept_loop(
    listener: UnixListener,
    handler: Arc<dyn ControlHandler>,
    stopping: Arc<AtomicBool>,
    conns: Registry,
) {
    for incoming in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        match incoming {
            Ok(stream) => spawn_connection(stream, &handler, &conns),
            Err(e) => {
                log::warn!("control socket accept failed: {e}");
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
}

fn spawn_connection(stream: UnixStream, handler: &Arc<dyn ControlHandler>, conns: &Registry) {
    let spare = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("control connection dropped: cannot clone its socket: {e}");
            return;
        }
    };
    // Hold the registry lock across spawn + insert so the thread's own removal comes after.
    let mut reg = lock(conns);
    let id = reg.next_id;
    reg.next_id += 1;
    let handler = Arc::clone(handler);
    let registry = Arc::clone(conns);
    let spawned = thread::Builder::new()
        .name(format!("control-conn-{id}"))
        .spawn(move || {
            serve_connection(stream, &*handler, id);
            handler.disconnected(id);
            lock(&registry).open.remove(&id);
        });
    match spawned {
        Ok(thread) => {
            reg.open.insert(id, (spare, thread));
        }
        Err(e) => log::warn!("control connection dropped: cannot start its thread: {e}"),
    }
}

/// Answer request lines on one connection until EOF, an I/O error or an oversize line.
fn serve_connection(stream: UnixStream, handler: &dyn ControlHandler, conn: u64) {
    if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
        log::warn!("control connection: cannot set write timeout: {e}");
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_REQUEST_LINE as u64 + 1;
        match reader.by_ref().take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                log::debug!("control connection read failed: {e}");
                return;
            }
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        } else if line.len() > MAX_REQUEST_LINE {
            let resp = Response::failure(
                ErrorCode::Protocol,
                format!(
                    "request line longer than {MAX_REQUEST_LINE} bytes; closing the connection"
                ),
            );
            log::warn!("control connection sent an oversize request line; closing it");
            let _ = write_response(reader.get_mut(), &resp);
            return;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            if let Ok(req) = serde_json::from_slice::<Request>(&line) {
                if let Some(stream) = handler.stream(&req) {
                    for resp in stream {
                        if let Err(e) = write_response(reader.get_mut(), &resp) {
                            log::debug!("control stream ended: {e}");
                            return;
                        }
                    }
                    return;
                }
            }
            let resp = answer(&line, handler, conn);
            if let Err(e) = write_response(reader.get_mut(), &resp) {
                log::debug!("control connection write failed: {e}");
                return;
            }
        }
        if !complete {
            // The last line came without a newline: EOF follows.
            return;
        }
    }
}

/// Parse one request line and let the handler answer it.
fn answer(line: &[u8], handler: &dyn ControlHandler, conn: u64) -> Response {
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            log::debug!("malformed control request: {e}");
            return Response::failure(ErrorCode::Protocol, format!("malformed request: {e}"));
        }
    };
    log::debug!("control request: {req:?}");
    match panic::catch_unwind(AssertUnwindSafe(|| handler.handle_on(conn, req))) {
        Ok(resp) => resp,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!("control request handler panicked: {what}");
            Response::failure(
                ErrorCode::Io,
                format!("internal error in fusevold while handling the request: {what}"),
            )
        }
    }
}

fn write_response(out: &mut UnixStream, resp: &Response) -> io::Result<()> {
    let mut buf = match serde_json::to_vec(resp) {
        Ok(b) => b,
        Err(e) => {
            log::error!("cannot encode control response: {e}");
            let fallback = Response::failure(
                ErrorCode::Io,
                format!("internal error in fusevold: cannot encode the response: {e}"),
            );
            serde_json::to_vec(&fallback).map_err(io::Error::other)?
        }
    };
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::ErrorBody;
    use std::io::BufRead;

    /// Ping → `{"pong":true}`; VolumeInfo "missing" → not_found, "boom" → panic; else echo.
    fn mock(req: Request) -> Response {
        match req {
            Request::Ping => Response::success(serde_json::json!({"pong": true}), vec![]),
            Request::VolumeInfo { name } if name == "missing" => {
                Response::failure(ErrorCode::NotFound, format!("volume '{name}' not found"))
            }
            Request::VolumeInfo { name } if name == "boom" => panic!("mock handler exploded"),
            Request::VolumeInfo { name } => {
                Response::success(serde_json::json!({ "name": name }), vec!["w1".into()])
            }
            _ => Response::success(serde_json::Value::Null, vec![]),
        }
    }

    fn start() -> (tempfile::TempDir, PathBuf, ServerHandle) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = serve(&path, Arc::new(mock)).unwrap();
        (dir, path, server)
    }

    struct Conn {
        reader: BufReader<UnixStream>,
    }

    impl Conn {
        fn open(path: &Path) -> Conn {
            let s = UnixStream::connect(path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Conn {
                reader: BufReader::new(s),
            }
        }

        fn send(&mut self, bytes: &[u8]) {
            self.reader.get_mut().write_all(bytes).unwrap();
        }

        fn recv(&mut self) -> Response {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed without a response");
            assert!(line.ends_with('\n'));
            serde_json::from_str(&line).unwrap()
        }

        fn exchange(&mut self, line: &str) -> Response {
            self.send(format!("{line}\n").as_bytes());
            self.recv()
        }

        fn at_eof(&mut self) -> bool {
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest).unwrap();
            rest.is_empty()
        }
    }

    fn error_of(resp: &Response) -> &ErrorBody {
        assert!(!resp.ok, "expected a failure, got {resp:?}");
        resp.error.as_ref().expect("failure without an error body")
    }

    #[test]
    fn answers_a_good_request() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        let resp = c.exchange(r#"{"op":"ping"}"#);
        assert!(resp.ok);
        assert_eq!(resp.data, Some(serde_json::json!({"pong": true})));
        let resp = c.exchange(r#"{"op":"volume_info","name":"v0"}"#);
        assert!(resp.ok);
        assert_eq!(resp.data, Some(serde_json::json!({"name": "v0"})));
        assert_eq!(resp.warnings, vec!["w1".to_string()]);
    }

    #[test]
    fn handler_errors_pass_through() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        let resp = c.exchange(r#"{"op":"volume_info","name":"missing"}"#);
        assert_eq!(error_of(&resp).code, ErrorCode::NotFound);
    }

    #[test]
    fn malformed_json_is_a_protocol_error_and_the_connection_goes_on() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        for bad in [
            "{not json",
            "[1,2,3]",
            "\"ping\"",
            r#"{"op":"volume_info"}"#,
            r#"{"op":"volume_create","name":"v","size":-1}"#,
            "\u{0}\u{1}\u{2}",
        ] {
            let resp = c.exchange(bad);
            let err = error_of(&resp);
            assert_eq!(err.code, ErrorCode::Protocol, "for {bad:?}");
            assert!(err.message.starts_with("malformed request: "), "{err:?}");
        }
        // Invalid UTF-8 too.
        c.send(b"{\"op\":\"\xff\xfe\"}\n");
        assert_eq!(error_of(&c.recv()).code, ErrorCode::Protocol);
        // Same connection still serves.
        assert!(c.exchange(r#"{"op":"ping"}"#).ok);
        // And a new one as well.
        assert!(Conn::open(&path).exchange(r#"{"op":"ping"}"#).ok);
    }

    #[test]
    fn unknown_op_and_unknown_fields_are_protocol_errors() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        let resp = c.exchange(r#"{"op":"format_everything"}"#);
        let err = error_of(&resp);
        assert_eq!(err.code, ErrorCode::Protocol);
        assert!(err.message.contains("format_everything"), "{err:?}");
        let resp = c.exchange(r#"{"op":"volume_delete","name":"v","force":true}"#);
        assert_eq!(error_of(&resp).code, ErrorCode::Protocol);
        let resp = c.exchange(r#"{"name":"v"}"#);
        assert_eq!(error_of(&resp).code, ErrorCode::Protocol);
        assert!(c.exchange(r#"{"op":"ping"}"#).ok);
    }

    #[test]
    fn empty_lines_are_ignored_and_requests_pipeline() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        c.send(b"\n\r\n   \n{\"op\":\"ping\"}\r\n\n{\"op\":\"sync\"}\n");
        assert_eq!(c.recv().data, Some(serde_json::json!({"pong": true})));
        let synced = c.recv();
        assert!(synced.ok);
        // `"data":null` reads back as `None`.
        assert!(synced.data.unwrap_or_default().is_null());
    }

    #[test]
    fn last_line_without_newline_is_answered() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        c.send(br#"{"op":"ping"}"#);
        c.reader.get_ref().shutdown(Shutdown::Write).unwrap();
        assert!(c.recv().ok);
        assert!(c.at_eof());
    }

    #[test]
    fn oversize_line_gets_an_error_and_the_connection_closes() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        let mut writer = c.reader.get_ref().try_clone().unwrap();
        let sender = thread::spawn(move || {
            // The server stops reading after 1 MiB + 1 byte; later writes may fail.
            let mut big = vec![b'x'; MAX_REQUEST_LINE + 4096];
            big.push(b'\n');
            let _ = writer.write_all(&big);
        });
        let resp = c.recv();
        let err = error_of(&resp);
        assert_eq!(err.code, ErrorCode::Protocol);
        assert!(err.message.contains("longer than"), "{err:?}");
        sender.join().unwrap();
        // The server keeps serving other connections.
        assert!(Conn::open(&path).exchange(r#"{"op":"ping"}"#).ok);
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        let head = r#"{"op":"ping"}"#;
        let mut line = head.as_bytes().to_vec();
        line.resize(MAX_REQUEST_LINE, b' ');
        line.push(b'\n');
        let mut writer = c.reader.get_ref().try_clone().unwrap();
        let sender = thread::spawn(move || writer.write_all(&line).unwrap());
        assert!(c.recv().ok);
        sender.join().unwrap();
        assert!(c.exchange(head).ok);
    }

    #[test]
    fn panicking_handler_is_answered_and_the_server_survives() {
        let (_dir, path, _server) = start();
        let mut c = Conn::open(&path);
        let resp = c.exchange(r#"{"op":"volume_info","name":"boom"}"#);
        let err = error_of(&resp);
        assert_eq!(err.code, ErrorCode::Io);
        assert!(err.message.contains("mock handler exploded"), "{err:?}");
        assert!(c.exchange(r#"{"op":"ping"}"#).ok);
    }

    #[test]
    fn socket_mode_is_0600() {
        let (_dir, path, _server) = start();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    }

    #[test]
    fn stop_removes_the_socket_and_ends_connections() {
        let (_dir, path, server) = start();
        let mut idle = Conn::open(&path);
        assert!(idle.exchange(r#"{"op":"ping"}"#).ok);
        assert_eq!(server.socket_path(), path.as_path());
        server.stop();
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).is_err());
        // The idle connection was closed by the server.
        assert!(idle.at_eof());
    }

    #[test]
    fn drop_stops_too() {
        let (_dir, path, server) = start();
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
        assert!(path.exists());
        let server = serve(&path, Arc::new(mock)).unwrap();
        assert!(Conn::open(&path).exchange(r#"{"op":"ping"}"#).ok);
        server.stop();
    }

    #[test]
    fn live_socket_and_regular_file_are_not_replaced() {
        let (dir, path, server) = start();
        let err = serve(&path, Arc::new(mock))
            .err()
            .expect("second serve must fail");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("control.sock"), "{err}");
        // The first server still works.
        assert!(Conn::open(&path).exchange(r#"{"op":"ping"}"#).ok);
        server.stop();

        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"keep me").unwrap();
        let err = serve(&file, Arc::new(mock))
            .err()
            .expect("must refuse a file");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn replaced_socket_is_left_alone_on_stop() {
        let (_dir, path, server) = start();
        fs::remove_file(&path).unwrap();
        let other = UnixListener::bind(&path).unwrap();
        server.stop();
        assert!(path.exists(), "stop removed a socket it did not create");
        drop(other);
    }

    #[test]
    fn many_concurrent_clients() {
        let (_dir, path, server) = start();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                thread::spawn(move || {
                    let mut c = Conn::open(&path);
                    for j in 0..50 {
                        let name = format!("v{i}-{j}");
                        let line = format!(r#"{{"op":"volume_info","name":"{name}"}}"#);
                        let resp = c.exchange(&line);
                        assert_eq!(resp.data, Some(serde_json::json!({ "name": name })));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        server.stop();
    }
}
