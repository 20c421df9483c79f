//! A real etcd (Debian package `etcd-server`, installed by scripts/install-deps.sh) for the
//! cluster tests: one member on free loopback ports, its data in a temporary directory,
//! stopped by pid (restartable on the same ports and data, to test reconnection). A missing
//! `etcd` binary fails the test, naming install-deps.sh.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::tool;

/// How long etcd may take to answer /health after a start.
const ETCD_START: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Etcd {
    dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Etcd {
    /// Start a one-member etcd and wait until it is healthy.
    pub fn start() -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("fusevol-test-etcd-")
            .tempdir_in("/var/tmp")
            .expect("etcd temp dir");
        let mut e = Etcd {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            starts: 0,
        };
        // A port found free can be taken by another process before etcd binds it (other
        // tests run beside this one): then new ports, a few times.
        for _ in 0..5 {
            match e.try_spawn() {
                Ok(()) => return e,
                Err(log) if log.contains("address already in use") => {
                    e.client_port = free_port();
                    e.peer_port = free_port();
                }
                Err(log) => panic!("etcd exited during start:\n{log}"),
            }
        }
        panic!("etcd found no free ports in 5 tries:\n{}", e.log());
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("etcd-{i}.log"));
            s.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        s
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("etcd exited during start:\n{log}");
        }
    }

    /// Start etcd and wait until it is healthy; Err(its log) when it exited first.
    fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "etcd already running");
        self.starts += 1;
        let log = File::create(self.dir.path().join(format!("etcd-{}.log", self.starts)))
            .expect("etcd log");
        let data: PathBuf = self.dir.path().join("data");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(tool("etcd"))
            .arg("--name")
            .arg("t0")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(self.url())
            .arg("--advertise-client-urls")
            .arg(self.url())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t0={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let end = Instant::now() + ETCD_START;
        while !self.healthy() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("(exit: {st})\n{}", self.log()));
            }
            assert!(
                Instant::now() < end,
                "etcd not healthy within {ETCD_START:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// GET /health answers `"health":"true"`.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// Stop etcd (SIGTERM, then SIGKILL after 10 s) and reap it. Its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Start again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
