//! The CLI side of the control socket: connect to `<POOL>/control.sock`, send a request line,
//! read the response line.
//!
//! A [`Client`] keeps its connection for several calls. After a failed exchange (timeout, lost
//! connection, garbled answer) the connection is dropped — a late answer must never be taken for
//! the next request's — and the next call connects afresh. If sending on a reused connection
//! fails (the daemon closed an idle connection), the request was not delivered and is sent once
//! more on a new connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::protocol::{ErrorBody, ErrorCode, Request, Response};
use super::socket_path;

/// How long [`Client::call`] waits for an answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest response line accepted (a list of many volumes is still far below).
const MAX_RESPONSE_LINE: u64 = 256 << 20;

/// Why a call did not produce an answer (or produced an error answer).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No control socket, or a stale one nobody listens on.
    #[error(
        "no fusevold is serving pool {} (no control socket at {})",
        pool.display(),
        socket_path(pool).display()
    )]
    NoDaemon { pool: PathBuf },
    /// Connecting failed for another reason (permissions, path too long ...).
    #[error("cannot connect to fusevold at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon did not answer in time.
    #[error(
        "fusevold at {} did not answer within {} s",
        socket.display(),
        timeout.as_secs_f64()
    )]
    Timeout { socket: PathBuf, timeout: Duration },
    /// Sending or receiving failed.
    #[error("lost the connection to fusevold at {}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon closed the connection before answering (it stopped or crashed).
    #[error("fusevold at {} closed the connection without answering", socket.display())]
    Closed { socket: PathBuf },
    /// The answer is not a valid response, or its data is not of the expected shape.
    #[error("unexpected answer from fusevold at {}: {reason}", socket.display())]
    BadResponse { socket: PathBuf, reason: String },
    /// The daemon answered with an error.
    #[error("{}", .0.message)]
    Daemon(ErrorBody),
}

impl ClientError {
    /// A stable short name for scripts (`--json` error output): the daemon's error code for
    /// [`ClientError::Daemon`], otherwise what went wrong on the way.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::NoDaemon { .. } => "no_daemon",
            ClientError::Connect { .. } => "connect",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Io { .. } => "connection",
            ClientError::Closed { .. } => "closed",
            ClientError::BadResponse { .. } => "bad_response",
            ClientError::Daemon(body) => error_code_name(body.code),
        }
    }
}

/// The wire name of an error code (`not_found`, ...).
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Protocol => "protocol",
        ErrorCode::Invalid => "invalid",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Exists => "exists",
        ErrorCode::Busy => "busy",
        ErrorCode::NoSpace => "no_space",
        ErrorCode::Io => "io",
        ErrorCode::Locked => "locked",
    }
}

/// A connection to the daemon serving one pool.
pub struct Client {
    pool: PathBuf,
    socket: PathBuf,
    conn: Option<BufReader<UnixStream>>,
    timeout: Duration,
    /// The start of a streamed line whose rest had not arrived when a read timed out.
    pending: Vec<u8>,
}

impl Client {
    /// Connect to the daemon serving the pool at `pool_dir` (socket `<pool_dir>/control.sock`).
    pub fn connect(pool_dir: &Path) -> Result<Client, ClientError> {
        let mut client = Client {
            pool: pool_dir.to_path_buf(),
            socket: socket_path(pool_dir),
            conn: None,
            timeout: DEFAULT_TIMEOUT,
            pending: Vec::new(),
        };
        client.conn = Some(client.open()?);
        Ok(client)
    }

    /// The pool directory this client talks to.
    pub fn pool(&self) -> &Path {
        &self.pool
    }

    /// The control socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// How long a call waits for its answer; `Duration::ZERO` means wait forever.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The current answer timeout (`Duration::ZERO`: none).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send one request and return the daemon's response, `ok` or not.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadResponse {
            socket: self.socket.clone(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        line.push(b'\n');
        let reused = self.conn.is_some();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.open()?,
        };
        let sent = self.send(&mut conn, &line);
        let sent = match sent {
            Err(_) if reused => {
                log::debug!("reused control connection failed; reconnecting");
                conn = self.open()?;
                self.send(&mut conn, &line)
            }
            other => other,
        };
        sent?;
        let resp = self.receive(&mut conn)?;
        // Only a clean exchange leaves the connection usable for the next call.
        self.conn = Some(conn);
        Ok(resp)
    }

    /// The next line of a streaming answer (`events`), after `call` returned its first.
    ///
    /// Unlike [`Client::call`], a timeout here keeps the stream: the daemon sends lines only
    /// when something happens, so a quiet period is not a failed exchange. A line cut by the
    /// timeout is kept and completed by the next call.
    pub fn next_response(&mut self) -> Result<Response, ClientError> {
        let mut conn = self.conn.take().ok_or_else(|| ClientError::Closed {
            socket: self.socket.clone(),
        })?;
        conn.get_ref()
            .set_read_timeout(self.limit())
            .map_err(|e| self.io_error(e))?;
        let mut pending = std::mem::take(&mut self.pending);
        let room = (MAX_RESPONSE_LINE + 1).saturating_sub(pending.len() as u64);
        let read = conn.by_ref().take(room).read_until(b'\n', &mut pending);
        if let Err(e) = read {
            let err = self.io_error(e);
            if matches!(err, ClientError::Timeout { .. }) {
                self.pending = pending;
                self.conn = Some(conn);
            }
            return Err(err);
        }
        let resp = self.parse_line(&pending)?;
        self.conn = Some(conn);
        Ok(resp)
    }

    /// Send one request and return its `data` decoded as `T` with the warnings; an `ok:false`
    /// answer becomes [`ClientError::Daemon`]. A missing `data` decodes as JSON `null` (so `()`
    /// works for requests that answer nothing).
    pub fn call_ok<T: DeserializeOwned>(
        &mut self,
        req: &Request,
    ) -> Result<(T, Vec<String>), ClientError> {
        let resp = self.call(req)?;
        if !resp.ok {
            return Err(ClientError::Daemon(resp.error.unwrap_or_else(|| {
                ErrorBody {
                    code: ErrorCode::Io,
                    message: "fusevold reported a failure without saying what failed".into(),
                }
            })));
        }
        let data = resp.data.unwrap_or(serde_json::Value::Null);
        let value = serde_json::from_value(data).map_err(|e| ClientError::BadResponse {
            socket: self.socket.clone(),
            reason: format!("the answer's data does not have the expected shape: {e}"),
        })?;
        Ok((value, resp.warnings))
    }

    fn open(&self) -> Result<BufReader<UnixStream>, ClientError> {
        match UnixStream::connect(&self.socket) {
            Ok(s) => Ok(BufReader::new(s)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::NotADirectory
                ) =>
            {
                Err(ClientError::NoDaemon {
                    pool: self.pool.clone(),
                })
            }
            Err(source) => Err(ClientError::Connect {
                socket: self.socket.clone(),
                source,
            }),
        }
    }

    fn limit(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then_some(self.timeout)
    }

    fn io_error(&self, source: io::Error) -> ClientError {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
            },
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => ClientError::Closed {
                socket: self.socket.clone(),
            },
            _ => ClientError::Io {
                socket: self.socket.clone(),
                source,
            },
        }
    }

    fn send(&self, conn: &mut BufReader<UnixStream>, line: &[u8]) -> Result<(), ClientError> {
        let stream = conn.get_mut();
        stream
            .set_write_timeout(self.limit())
            .and_then(|()| stream.write_all(line))
            .and_then(|()| stream.flush())
            .map_err(|e| self.io_error(e))
    }

    fn receive(&self, conn: &mut BufReader<UnixStream>) -> Result<Response, ClientError> {
        conn.get_ref()
            .set_read_timeout(self.limit())
            .map_err(|e| self.io_error(e))?;
        let mut line = Vec::new();
        conn.by_ref()
            .take(MAX_RESPONSE_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.io_error(e))?;
        self.parse_line(&line)
    }

    /// One complete response line (ending in a newline), or why it is not one.
    fn parse_line(&self, line: &[u8]) -> Result<Response, ClientError> {
        if line.last() != Some(&b'\n') {
            if line.len() as u64 > MAX_RESPONSE_LINE {
                return Err(ClientError::BadResponse {
                    socket: self.socket.clone(),
                    reason: format!("response longer than {MAX_RESPONSE_LINE} bytes"),
                });
            }
            return Err(ClientError::Closed {
                socket: self.socket.clone(),
            });
        }
        serde_json::from_slice(line).map_err(|e| ClientError::BadResponse {
            socket: self.socket.clone(),
            reason: format!("not a valid response: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::VolumeInfo;
    use crate::control::server::{serve, ServerHandle};
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;
    use std::thread;

    fn volume(name: &str) -> VolumeInfo {
        VolumeInfo {
            id: 7,
            name: name.into(),
            size: 1 << 30,
            tier: "fast".into(),
            allocated: 0,
            created: 1_700_000_000,
            open_handles: 0,
            extents_per_array: vec![("a0".into(), 3)],
            info: Default::default(),
            node: None,
            lock: None,
        }
    }

    fn mock(req: Request) -> Response {
        match req {
            Request::VolumeInfo { name } if name == "missing" => {
                Response::failure(ErrorCode::NotFound, format!("volume '{name}' not found"))
            }
            Request::VolumeInfo { name } => Response::success(
                serde_json::to_value(volume(&name)).unwrap(),
                vec!["pool is overcommitted".into()],
            ),
            Request::Sync => Response {
                ok: true,
                data: None,
                warnings: vec![],
                error: None,
            },
            _ => Response::success(serde_json::json!({"pong": true}), vec![]),
        }
    }

    fn start() -> (tempfile::TempDir, ServerHandle) {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(&socket_path(dir.path()), Arc::new(mock)).unwrap();
        (dir, server)
    }

    /// A fake daemon that accepts one connection, reads one line and does `then` with it.
    fn fake_daemon(
        dir: &Path,
        then: impl FnOnce(&mut BufReader<UnixStream>) + Send + 'static,
    ) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(socket_path(dir)).unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            then(&mut reader);
        })
    }

    #[test]
    fn missing_socket_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(dir.path()).err().unwrap();
        assert!(matches!(err, ClientError::NoDaemon { .. }), "{err:?}");
        let msg = err.to_string();
        let pool = dir.path().display().to_string();
        assert_eq!(
            msg,
            format!(
                "no fusevold is serving pool {pool} (no control socket at {pool}/control.sock)"
            )
        );
        assert_eq!(err.code(), "no_daemon");
        // A pool directory that does not exist at all, or is a file.
        let err = Client::connect(&dir.path().join("nope")).err().unwrap();
        assert!(matches!(err, ClientError::NoDaemon { .. }), "{err:?}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = Client::connect(&file).err().unwrap();
        assert!(matches!(err, ClientError::NoDaemon { .. }), "{err:?}");
    }

    #[test]
    fn stale_socket_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        drop(UnixListener::bind(socket_path(dir.path())).unwrap());
        let err = Client::connect(dir.path()).err().unwrap();
        assert!(matches!(err, ClientError::NoDaemon { .. }), "{err:?}");
    }

    #[test]
    fn call_and_call_ok() {
        let (dir, _server) = start();
        let mut c = Client::connect(dir.path()).unwrap();
        assert_eq!(c.pool(), dir.path());
        assert_eq!(c.timeout(), DEFAULT_TIMEOUT);
        let resp = c.call(&Request::Ping).unwrap();
        assert!(resp.ok);
        let req = Request::VolumeInfo { name: "v1".into() };
        let (info, warnings): (VolumeInfo, _) = c.call_ok(&req).unwrap();
        assert_eq!(info, volume("v1"));
        assert_eq!(warnings, vec!["pool is overcommitted".to_string()]);
        // No data decodes as () / null.
        let ((), w) = c.call_ok(&Request::Sync).unwrap();
        assert!(w.is_empty());
        // Many calls on one client.
        for _ in 0..100 {
            assert!(c.call(&Request::Ping).unwrap().ok);
        }
    }

    #[test]
    fn daemon_errors_become_client_errors() {
        let (dir, _server) = start();
        let mut c = Client::connect(dir.path()).unwrap();
        let req = Request::VolumeInfo {
            name: "missing".into(),
        };
        // `call` returns the failure as a response ...
        let resp = c.call(&req).unwrap();
        assert!(!resp.ok);
        // ... `call_ok` as an error.
        match c.call_ok::<VolumeInfo>(&req) {
            Err(ClientError::Daemon(body)) => {
                assert_eq!(body.code, ErrorCode::NotFound);
                assert_eq!(body.message, "volume 'missing' not found");
            }
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
        let err = c.call_ok::<VolumeInfo>(&req).err().unwrap();
        assert_eq!(err.code(), "not_found");
        assert_eq!(err.to_string(), "volume 'missing' not found");
        // The connection is still fine afterwards.
        assert!(c.call(&Request::Ping).unwrap().ok);
    }

    #[test]
    fn wrong_data_shape_is_bad_response() {
        let (dir, _server) = start();
        let mut c = Client::connect(dir.path()).unwrap();
        let err = c.call_ok::<VolumeInfo>(&Request::Ping).err().unwrap();
        assert!(matches!(err, ClientError::BadResponse { .. }), "{err:?}");
    }

    #[test]
    fn silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let daemon = fake_daemon(dir.path(), move |_| {
            let _ = rx.recv(); // hold the connection open without answering
        });
        let mut c = Client::connect(dir.path()).unwrap();
        c.set_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = c.call(&Request::Ping).err().unwrap();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.to_string().contains("did not answer within 0.2 s"),
            "{err}"
        );
        assert_eq!(err.code(), "timeout");
        tx.send(()).unwrap();
        daemon.join().unwrap();
    }

    #[test]
    fn a_quiet_stream_survives_timeouts_and_split_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let daemon = fake_daemon(dir.path(), move |r| {
            let w = r.get_mut();
            w.write_all(b"{\"ok\":true,\"data\":{\"header\":1}}\n")
                .unwrap();
            // A quiet period, then an event line cut in two around another one.
            rx.recv().unwrap();
            w.write_all(b"{\"ok\":true,\"da").unwrap();
            w.flush().unwrap();
            rx.recv().unwrap();
            w.write_all(b"ta\":{\"end\":\"backlog\"}}\n").unwrap();
            rx.recv().unwrap();
        });
        let mut c = Client::connect(dir.path()).unwrap();
        assert!(c.call(&Request::Ping).unwrap().ok);
        c.set_timeout(Duration::from_millis(100));
        let err = c.next_response().err().unwrap();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let err = c.next_response().err().unwrap();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        tx.send(()).unwrap();
        let resp = c.next_response().unwrap();
        assert!(resp.ok);
        assert_eq!(resp.data.unwrap()["end"], "backlog");
        tx.send(()).unwrap();
        daemon.join().unwrap();
        let err = c.next_response().err().unwrap();
        assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
    }

    #[test]
    fn daemon_closing_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = fake_daemon(dir.path(), |_| {});
        let mut c = Client::connect(dir.path()).unwrap();
        let err = c.call(&Request::Ping).err().unwrap();
        assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
        daemon.join().unwrap();
    }

    #[test]
    fn garbage_answer_is_bad_response() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = fake_daemon(dir.path(), |r| {
            r.get_mut().write_all(b"this is not json\n").unwrap();
        });
        let mut c = Client::connect(dir.path()).unwrap();
        let err = c.call(&Request::Ping).err().unwrap();
        assert!(matches!(err, ClientError::BadResponse { .. }), "{err:?}");
        daemon.join().unwrap();
    }

    #[test]
    fn reconnects_after_the_daemon_restarts() {
        let (dir, server) = start();
        let mut c = Client::connect(dir.path()).unwrap();
        assert!(c.call(&Request::Ping).unwrap().ok);
        server.stop();
        let err = c.call(&Request::Ping).err().unwrap();
        assert!(
            matches!(
                err,
                ClientError::NoDaemon { .. } | ClientError::Closed { .. }
            ),
            "{err:?}"
        );
        let _server = serve(&socket_path(dir.path()), Arc::new(mock)).unwrap();
        assert!(c.call(&Request::Ping).unwrap().ok);
    }
}
