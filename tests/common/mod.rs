//! Test harness for the FUSE integration tests.
//!
//! `TestPool` owns a temporary directory (under /var/tmp, a real disk file system), a pool in
//! it (`<dir>/pool`), a mount point (`<dir>/mnt`) and a running `fusevold`. Every wait has a
//! time limit, and a watchdog thread kills the daemon (which aborts every FUSE request a test
//! may be blocked in) when a test runs over its budget, so a broken daemon fails a test instead
//! of hanging it. Drop always cleans up: mounts made on top (ext4), loop devices, the daemon
//! (SIGKILL), the FUSE mount (lazy unmount) and the directory.
//!
//! Missing tools (fio, mkfs.ext4, losetup, ...) fail the test with a message pointing at
//! `scripts/install-deps.sh`; a daemon that does not come up fails the test with its stderr.
//! Nothing is ever skipped.
//!
//! Submodules: `images` (library-level pools opened as a `Storage`, whole images of volumes
//! and snapshots) and `sites` (the two-site setup of the replication tests, at library level
//! and with two daemons).
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub mod cluster;
pub mod etcd;
pub mod images;
pub mod sites;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// How long a daemon may take to mount and answer on its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a CLI command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Default budget for one test (the watchdog fires after it).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(420);

/// `--uring` when the suite runs over FUSE over io_uring (`FUSEVOL_TEST_URING=1`, set by
/// scripts/test.sh for its second pass), nothing otherwise.
pub fn uring_args() -> &'static [&'static str] {
    if std::env::var("FUSEVOL_TEST_URING").as_deref() == Ok("1") {
        &["--uring"]
    } else {
        &[]
    }
}

pub fn fusevold_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fusevold")
}

pub fn fusevol_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fusevol")
}

// ---------------------------------------------------------------------------------------------
// Running commands with time limits
// ---------------------------------------------------------------------------------------------

/// Find a required external tool, or fail the test telling how to install it.
pub fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "required tool `{name}` was not found in PATH or /usr/sbin, /sbin: \
         run scripts/install-deps.sh to install the test dependencies"
    );
}

/// Run a command with stdin closed and a time limit; the test fails when the limit passes.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("waiting for {desc}: {e}"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let out = rx.recv_timeout(Duration::from_secs(10));
            let (so, se) = match out {
                Ok(Ok(o)) => (
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                ),
                _ => (String::new(), String::new()),
            };
            panic!(
                "{desc} did not finish within {timeout:?} (killed)\nstdout:\n{so}\nstderr:\n{se}"
            )
        }
    }
}

/// Run a command and require exit status 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let out = run(cmd, timeout);
    assert!(
        out.status.success(),
        "{desc} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Mount table
// ---------------------------------------------------------------------------------------------

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// File system type of the mount at `path` (exact mount point), if one is listed.
pub fn mount_type(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 {
            continue;
        }
        if unescape_mountinfo(fields[4]) != want {
            continue;
        }
        let fstype = line
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("")
            .to_string();
        // Later lines stack on top of earlier ones: keep the last.
        found = Some(fstype);
    }
    found
}

pub fn is_mounted(path: &Path) -> bool {
    mount_type(path).is_some()
}

/// Lazily unmount `path` (umount -l, then fusermount3 -uz as a fallback). Never panics.
pub fn lazy_umount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if is_mounted(path) {
        for fm in ["fusermount3", "fusermount"] {
            let _ = Command::new(fm)
                .arg("-uz")
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !is_mounted(path) {
                break;
            }
        }
    }
}

fn detach_loop_quiet(dev: &str) {
    let _ = Command::new("losetup")
        .arg("-d")
        .arg(dev)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------------------------
// The pool under test
// ---------------------------------------------------------------------------------------------

/// State shared with the watchdog thread.
struct Shared {
    pid: AtomicI32,
    done: AtomicBool,
    fired: AtomicBool,
    deadline: Mutex<Instant>,
    mnt: PathBuf,
    loops: Mutex<Vec<String>>,
    mounts: Mutex<Vec<PathBuf>>,
}

impl Shared {
    fn emergency_cleanup(&self) {
        for m in self.mounts.lock().unwrap().iter().rev() {
            lazy_umount(m);
        }
        for d in self.loops.lock().unwrap().iter() {
            detach_loop_quiet(d);
        }
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        lazy_umount(&self.mnt);
    }
}

/// How a daemon start that was expected to fail ended.
#[derive(Debug)]
pub struct DaemonExit {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A handle for running the CLI against one pool; cheap to clone into threads.
#[derive(Clone, Debug)]
pub struct Cli {
    pub pool: PathBuf,
}

impl Cli {
    /// `fusevol -p POOL ARGS...`
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut c = Command::new(fusevol_bin());
        c.arg("-p").arg(&self.pool).args(args);
        c.env_remove("FUSEVOL_POOL");
        run(&mut c, CLI_TIMEOUT)
    }

    /// `fusevol -p POOL ARGS...`, requiring exit 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "fusevol {args:?} failed: {}",
            describe(&out)
        );
        text(&out.stdout)
    }

    /// `fusevol -p POOL --json ARGS...`, requiring exit 0; returns the parsed stdout.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "fusevol --json {args:?} failed: {}",
            describe(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "fusevol --json {args:?} printed no JSON ({e}): {}",
                describe(&out)
            )
        })
    }

    pub fn volume_info(&self, name: &str) -> Value {
        self.cli_json(&["volume", "info", name])
    }

    pub fn pool_info(&self) -> Value {
        self.cli_json(&["pool", "info"])
    }

    /// `volume delete`, retrying while the daemon reports the volume busy (FUSE sends RELEASE
    /// asynchronously after close, so a just-closed volume can still count as open).
    pub fn delete_volume_retry(&self, name: &str, within: Duration) -> Output {
        let end = Instant::now() + within;
        loop {
            let out = self.cli(&["volume", "delete", name]);
            if out.status.success() || Instant::now() > end {
                return out;
            }
            let err = text(&out.stderr).to_lowercase();
            if !(err.contains("busy") || err.contains("open")) {
                return out;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

pub struct TestPool {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pool: PathBuf,
    mnt: PathBuf,
    child: Option<Child>,
    starts: u32,
    log_files: Vec<PathBuf>,
    shared: Arc<Shared>,
    pub rust_log: String,
    /// Extra `fusevold` arguments after POOL MOUNTPOINT (e.g. `--nbd 127.0.0.1:PORT`,
    /// `--recovery salvage`), kept for every (re)start.
    pub daemon_args: Vec<String>,
}

fn test_tmp_root() -> PathBuf {
    if let Some(p) = std::env::var_os("FUSEVOL_TEST_TMPDIR") {
        return PathBuf::from(p);
    }
    let vt = Path::new("/var/tmp");
    if vt.is_dir() {
        return vt.to_path_buf();
    }
    std::env::temp_dir()
}

impl TestPool {
    /// A new pool (`fusevol init` with `arrays` as `NAME:SIZE[:TIER]` and `extent_size`),
    /// served by a running daemon.
    pub fn new(arrays: &[&str], extent_size: &str) -> TestPool {
        let mut p = TestPool::init(arrays, extent_size);
        p.start();
        p
    }

    /// A new pool created with `fusevol init` but not served yet.
    pub fn init(arrays: &[&str], extent_size: &str) -> TestPool {
        let p = TestPool::empty();
        let mut c = Command::new(fusevol_bin());
        c.arg("init").arg(&p.pool);
        for a in arrays {
            c.arg("--array").arg(a);
        }
        if !extent_size.is_empty() {
            c.arg("--extent-size").arg(extent_size);
        }
        let out = run(&mut c, CLI_TIMEOUT);
        assert!(
            out.status.success(),
            "fusevol init {arrays:?} --extent-size {extent_size} failed: {}",
            describe(&out)
        );
        p
    }

    /// A temporary directory with neither pool nor mount point created.
    pub fn empty() -> TestPool {
        let dir = tempfile::Builder::new()
            .prefix("fusevol-test-")
            .tempdir_in(test_tmp_root())
            .expect("create test directory");
        let root = fs::canonicalize(dir.path()).expect("canonicalize test directory");
        let pool = root.join("pool");
        let mnt = root.join("mnt");
        let shared = Arc::new(Shared {
            pid: AtomicI32::new(0),
            done: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            deadline: Mutex::new(Instant::now() + DEFAULT_BUDGET),
            mnt: mnt.clone(),
            loops: Mutex::new(Vec::new()),
            mounts: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        thread::spawn(move || watchdog(sh));
        TestPool {
            dir: Some(dir),
            root,
            pool,
            mnt,
            child: None,
            starts: 0,
            log_files: Vec::new(),
            shared,
            rust_log: std::env::var("FUSEVOL_TEST_LOG").unwrap_or_else(|_| "info".into()),
            daemon_args: Vec::new(),
        }
    }

    /// Give this test `budget` from now before the watchdog fires.
    pub fn set_budget(&self, budget: Duration) {
        *self.shared.deadline.lock().unwrap() = Instant::now() + budget;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn pool(&self) -> &Path {
        &self.pool
    }
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }
    /// `MOUNTPOINT/NAME`
    pub fn vol(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }
    pub fn handle(&self) -> Cli {
        Cli {
            pool: self.pool.clone(),
        }
    }
    pub fn cli(&self, args: &[&str]) -> Output {
        self.handle().cli(args)
    }
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.handle().cli_ok(args)
    }
    pub fn cli_json(&self, args: &[&str]) -> Value {
        self.handle().cli_json(args)
    }
    pub fn volume_info(&self, name: &str) -> Value {
        self.handle().volume_info(name)
    }
    pub fn pool_info(&self) -> Value {
        self.handle().pool_info()
    }

    /// Create a volume, requiring success, and check that its file appears with the size.
    pub fn create_volume(&self, name: &str, size: &str) -> Value {
        let v = self.cli_json(&["volume", "create", name, "--size", size]);
        let path = self.vol(name);
        let meta = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("volume file {} missing after create: {e}", path.display()));
        assert_eq!(
            Some(meta.len()),
            v["size"].as_u64(),
            "volume file size vs VolumeInfo.size"
        );
        v
    }

    /// `group create GROUP --volumes V1,V2 --remote DIR` on this (primary) pool, requiring
    /// success.
    pub fn create_group(&self, group: &str, volumes: &[&str], remote: &Path) -> String {
        self.cli_ok(&[
            "group",
            "create",
            group,
            "--volumes",
            &volumes.join(","),
            "--remote",
            remote.to_str().expect("UTF-8 remote path"),
        ])
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The stderr (log) of the most recent daemon start.
    pub fn daemon_log(&self) -> String {
        self.log_files
            .last()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// All daemon logs so far.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for p in &self.log_files {
            s.push_str(&format!("==== {} ====\n", p.display()));
            s.push_str(&fs::read_to_string(p).unwrap_or_default());
        }
        s
    }

    fn spawn_daemon(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let out_path = self.root.join(format!("daemon-{}.stdout", self.starts));
        let err_path = self.root.join(format!("daemon-{}.stderr", self.starts));
        let out = File::create(&out_path).expect("daemon stdout file");
        let err = File::create(&err_path).expect("daemon stderr file");
        let mut c = Command::new(fusevold_bin());
        let over_uring =
            !uring_args().is_empty() && !self.daemon_args.iter().any(|a| a == "--uring");
        // Over io_uring the daemon's line about its transport is needed whatever the level.
        let rust_log = if over_uring {
            format!("{},fuser::session=info", self.rust_log)
        } else {
            self.rust_log.clone()
        };
        c.arg(&self.pool)
            .arg(&self.mnt)
            .args(&self.daemon_args)
            .args(if over_uring { uring_args() } else { &[] })
            .env("RUST_LOG", rust_log)
            .env_remove("FUSEVOL_POOL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("spawn fusevold");
        self.shared.pid.store(child.id() as i32, Ordering::SeqCst);
        self.child = Some(child);
        self.log_files.push(err_path);
    }

    fn ready(&self) -> bool {
        if !matches!(mount_type(&self.mnt), Some(t) if t.starts_with("fuse")) {
            return false;
        }
        let mut c = Command::new(fusevol_bin());
        c.arg("-p")
            .arg(&self.pool)
            .args(["--json", "pool", "info"])
            .env_remove("FUSEVOL_POOL");
        let out = run(&mut c, Duration::from_secs(10));
        out.status.success()
    }

    /// With `FUSEVOL_TEST_URING=1` the suite runs over FUSE over io_uring: the daemon must say
    /// that its rings are registered (a run that asked for the transport and fell back to
    /// /dev/fuse would test the wrong thing, so it fails).
    fn check_uring_active(&self) {
        if uring_args().is_empty() || self.daemon_args.iter().any(|a| a == "--uring") {
            return;
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.daemon_log();
            if log.contains("FUSE over io_uring: ") {
                return;
            }
            if log.contains("FUSE over io_uring not used") || Instant::now() > end {
                panic!(
                    "FUSEVOL_TEST_URING=1 but fusevold at {} is not serving through io_uring\nstderr:\n{log}",
                    self.mnt.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start the daemon; Ok when the mount is live and the control socket answers, Err when
    /// the daemon exited first. Fails the test when neither happens within START_TIMEOUT.
    pub fn try_start_env(&mut self, env: &[(&str, &str)]) -> Result<(), DaemonExit> {
        self.spawn_daemon(env);
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                self.shared.pid.store(0, Ordering::SeqCst);
                // The daemon is gone: a mount left behind would be dead.
                lazy_umount(&self.mnt);
                return Err(DaemonExit {
                    status,
                    stderr: self.daemon_log(),
                });
            }
            if self.ready() {
                self.check_uring_active();
                return Ok(());
            }
            if Instant::now() > end {
                let log = self.daemon_log();
                self.kill9();
                lazy_umount(&self.mnt);
                panic!(
                    "fusevold {} {} did not mount and answer `pool info` within {:?}\nstderr:\n{}",
                    self.pool.display(),
                    self.mnt.display(),
                    START_TIMEOUT,
                    log
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn try_start(&mut self) -> Result<(), DaemonExit> {
        self.try_start_env(&[])
    }

    /// Start the daemon and wait until it serves; fails the test with its stderr otherwise.
    pub fn start_env(&mut self, env: &[(&str, &str)]) {
        if let Err(e) = self.try_start_env(env) {
            panic!(
                "fusevold exited during start-up with {}\nstderr:\n{}",
                e.status, e.stderr
            );
        }
    }

    pub fn start(&mut self) {
        self.start_env(&[])
    }

    /// Start the daemon expecting it to refuse: it must exit non-zero within START_TIMEOUT
    /// without leaving a mount.
    pub fn start_expect_failure(&mut self, env: &[(&str, &str)]) -> DaemonExit {
        match self.try_start_env(env) {
            Ok(()) => {
                let log = self.daemon_log();
                self.kill9();
                lazy_umount(&self.mnt);
                panic!("fusevold started although it should have refused\nstderr:\n{log}");
            }
            Err(e) => {
                assert!(
                    !e.status.success(),
                    "fusevold exited with status 0 instead of an error\nstderr:\n{}",
                    e.stderr
                );
                assert!(
                    !is_mounted(&self.mnt),
                    "a failed fusevold left a mount at {}",
                    self.mnt.display()
                );
                e
            }
        }
    }

    fn wait_child(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    self.shared.pid.store(0, Ordering::SeqCst);
                    return Some(st);
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for fusevold: {e}"),
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the daemon and reap it. The mount is left as it is (dead).
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if self.wait_child(Duration::from_secs(30)).is_none() {
                panic!("fusevold did not die within 30 s of SIGKILL");
            }
        }
    }

    /// Send a signal and require a clean exit (status 0) with the mount gone.
    pub fn stop_with(&mut self, sig: Signal) {
        let pid = self.child.as_ref().expect("daemon not running").id();
        kill(Pid::from_raw(pid as i32), sig).expect("signal fusevold");
        let st = match self.wait_child(Duration::from_secs(30)) {
            Some(st) => st,
            None => {
                let log = self.daemon_log();
                self.kill9();
                lazy_umount(&self.mnt);
                panic!("fusevold did not exit within 30 s of {sig:?}\nstderr:\n{log}");
            }
        };
        assert!(
            st.success(),
            "fusevold exited with {st} after {sig:?}\nstderr:\n{}",
            self.daemon_log()
        );
        let end = Instant::now() + Duration::from_secs(5);
        while is_mounted(&self.mnt) {
            if Instant::now() > end {
                lazy_umount(&self.mnt);
                panic!(
                    "fusevold exited after {sig:?} but left its mount at {}\nstderr:\n{}",
                    self.mnt.display(),
                    self.daemon_log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, require exit 0 and the mount gone.
    pub fn stop(&mut self) {
        self.stop_with(Signal::SIGTERM)
    }

    /// Remove a dead mount left by a killed daemon.
    pub fn clear_dead_mount(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        lazy_umount(&self.mnt);
        let end = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.mnt) {
            assert!(
                Instant::now() < end,
                "cannot unmount the dead mount at {}",
                self.mnt.display()
            );
            thread::sleep(Duration::from_millis(50));
            lazy_umount(&self.mnt);
        }
    }

    /// Restart the daemon on the same pool and mount point: a running daemon is stopped
    /// cleanly; after a kill the dead mount is lazily unmounted first.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        } else if self.child.is_some() {
            // Exited on its own: reap it.
            self.wait_child(Duration::from_secs(5));
        }
        self.clear_dead_mount();
        self.start();
    }

    /// Offline `fusevol check POOL` (the daemon must not be running); returns the output.
    pub fn check(&self) -> Output {
        let mut c = Command::new(fusevol_bin());
        c.arg("check").arg(&self.pool);
        run(&mut c, Duration::from_secs(120))
    }

    /// Offline check that must be clean (exit 0).
    pub fn check_clean(&self) {
        let out = self.check();
        assert!(
            out.status.success(),
            "fusevol check {} is not clean: {}",
            self.pool.display(),
            describe(&out)
        );
    }

    /// Attach `file` to a loop device (registered for cleanup); returns the device path.
    pub fn losetup(&self, file: &Path, direct_io: bool) -> String {
        let mut c = Command::new(tool("losetup"));
        if direct_io {
            c.arg("--direct-io=on");
        }
        c.arg("--find").arg("--show").arg(file);
        let out = run_ok(&mut c, Duration::from_secs(60));
        let dev = text(&out.stdout).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        self.shared.loops.lock().unwrap().push(dev.clone());
        dev
    }

    /// Detach a loop device and wait until it no longer holds its backing file.
    pub fn detach_loop(&self, dev: &str) {
        run_ok(
            Command::new(tool("losetup")).arg("-d").arg(dev),
            Duration::from_secs(60),
        );
        let name = dev.trim_start_matches("/dev/");
        let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
        let end = Instant::now() + Duration::from_secs(20);
        while backing.exists() {
            assert!(
                Instant::now() < end,
                "{dev} still holds its backing file 20 s after losetup -d"
            );
            thread::sleep(Duration::from_millis(50));
        }
        self.shared.loops.lock().unwrap().retain(|d| d != dev);
    }

    /// Mount `dev` at `dir` (registered for cleanup).
    pub fn mount(&self, dev: &str, dir: &Path) {
        fs::create_dir_all(dir).expect("create mount dir");
        self.shared.mounts.lock().unwrap().push(dir.to_path_buf());
        run_ok(
            Command::new(tool("mount")).arg(dev).arg(dir),
            Duration::from_secs(120),
        );
    }

    pub fn umount(&self, dir: &Path) {
        run_ok(
            Command::new(tool("umount")).arg(dir),
            Duration::from_secs(120),
        );
        self.shared.mounts.lock().unwrap().retain(|d| d != dir);
    }

    /// Paths of the array image files (from `array list --json`).
    pub fn array_paths(&self) -> Vec<PathBuf> {
        let v = self.cli_json(&["array", "list"]);
        v.as_array()
            .expect("array list is a JSON array")
            .iter()
            .map(|a| PathBuf::from(a["path"].as_str().expect("ArrayInfo.path")))
            .collect()
    }

    /// Array image files found in POOL/arrays (works while the daemon is stopped).
    pub fn array_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.pool.join("arrays"))
            .expect("read POOL/arrays")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().map(|e| e == "img").unwrap_or(false))
            .collect();
        v.sort();
        v
    }
}

fn watchdog(sh: Arc<Shared>) {
    loop {
        if sh.done.load(Ordering::SeqCst) {
            return;
        }
        if Instant::now() > *sh.deadline.lock().unwrap() {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "WATCHDOG: the test ran over its time budget; killing fusevold (pid {}) and unmounting {}",
        sh.pid.load(Ordering::SeqCst),
        sh.mnt.display()
    );
    sh.fired.store(true, Ordering::SeqCst);
    sh.emergency_cleanup();
    // The kill aborts every FUSE request, so the test should now fail and drop its pool.
    let end = Instant::now() + Duration::from_secs(90);
    while Instant::now() < end {
        if sh.done.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("WATCHDOG: the test is still stuck 90 s after the kill; exiting the test process");
    sh.emergency_cleanup();
    std::process::exit(101);
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        // Mounts stacked on top (ext4 on a loop device), then loop devices.
        let mounts: Vec<PathBuf> = self.shared.mounts.lock().unwrap().clone();
        for m in mounts.iter().rev() {
            lazy_umount(m);
        }
        let loops: Vec<String> = self.shared.loops.lock().unwrap().clone();
        for d in &loops {
            detach_loop_quiet(d);
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        let _ = self.wait_child(Duration::from_secs(20));
        lazy_umount(&self.mnt);
        self.shared.done.store(true, Ordering::SeqCst);
        if panicking || self.shared.fired.load(Ordering::SeqCst) {
            for p in &self.log_files {
                let s = fs::read_to_string(p).unwrap_or_default();
                let tail = if s.len() > 6000 {
                    let mut i = s.len() - 6000;
                    while !s.is_char_boundary(i) {
                        i += 1;
                    }
                    &s[i..]
                } else {
                    &s[..]
                };
                eprintln!("---- {} (tail) ----\n{}", p.display(), tail);
            }
        }
        let still = is_mounted(&self.mnt) || mounts.iter().any(|m| is_mounted(m));
        if still || std::env::var_os("FUSEVOL_TEST_KEEP").is_some() {
            // Never delete through a live mount: leave the directory behind.
            if let Some(d) = self.dir.take() {
                let p = d.keep();
                eprintln!("test directory kept at {}", p.display());
            }
        }
        if self.shared.fired.load(Ordering::SeqCst) && !panicking {
            panic!("the watchdog fired: the test ran over its time budget");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data patterns, buffers, I/O helpers
// ---------------------------------------------------------------------------------------------

pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic PRNG (no rand crate in the dependencies).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Seeded from FUSEVOL_TEST_SEED or the clock; the seed is printed for reproduction.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("FUSEVOL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (set FUSEVOL_TEST_SEED={seed} to repeat)");
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }
    /// Uniform in lo..hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo);
        lo + self.next_u64() % (hi - lo)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Fill `buf` with the pattern of stream `seed` at absolute byte `offset` (8-byte aligned).
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    assert!(offset.is_multiple_of(8) && buf.len().is_multiple_of(8));
    let base = offset / 8;
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        let v = splitmix64(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (base + i as u64));
        w.copy_from_slice(&v.to_le_bytes());
    }
}

/// First byte offset (absolute) where `buf` differs from the pattern, if any.
pub fn check_pattern(seed: u64, offset: u64, buf: &[u8]) -> Option<u64> {
    let mut exp = vec![0u8; buf.len()];
    fill_pattern(seed, offset, &mut exp);
    buf.iter()
        .zip(exp.iter())
        .position(|(a, b)| a != b)
        .map(|p| offset + p as u64)
}

/// A page-aligned buffer (anonymous mapping) for O_DIRECT.
pub fn aligned(len: usize) -> memmap2::MmapMut {
    memmap2::MmapMut::map_anon(len).expect("map_anon")
}

pub fn open_rw(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

pub fn open_ro(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Write `len` bytes of pattern `seed` at `offset` in 1 MiB chunks, then fdatasync.
pub fn write_pattern(path: &Path, seed: u64, offset: u64, len: u64, direct: bool) {
    let f = open_rw(path, direct).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = aligned(MIB as usize);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(MIB) as usize;
        fill_pattern(seed, offset + pos, &mut buf[..n]);
        f.write_all_at(&buf[..n], offset + pos)
            .unwrap_or_else(|e| panic!("write {} at {}: {e}", path.display(), offset + pos));
        pos += n as u64;
    }
    f.sync_data()
        .unwrap_or_else(|e| panic!("fdatasync {}: {e}", path.display()));
}

/// Read `len` bytes at `offset` (1 MiB chunks); fails the test on a short read.
pub fn read_range(path: &Path, offset: u64, len: u64, direct: bool) -> Vec<u8> {
    let f = open_ro(path, direct).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::with_capacity(len as usize);
    let mut buf = aligned(MIB as usize);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + pos)
            .unwrap_or_else(|e| panic!("read {} at {}: {e}", path.display(), offset + pos));
        out.extend_from_slice(&buf[..n]);
        pos += n as u64;
    }
    out
}

/// Verify `len` bytes of pattern `seed` at `offset`; panics naming the first bad byte.
pub fn verify_pattern(path: &Path, seed: u64, offset: u64, len: u64, direct: bool) {
    let f = open_ro(path, direct).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = aligned(MIB as usize);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + pos)
            .unwrap_or_else(|e| panic!("read {} at {}: {e}", path.display(), offset + pos));
        if let Some(bad) = check_pattern(seed, offset + pos, &buf[..n]) {
            panic!(
                "{}: data differs from what was written at byte {bad} (range {offset}+{len}, direct={direct})",
                path.display()
            );
        }
        pos += n as u64;
    }
}

/// Require `len` bytes at `offset` to read as zeros.
pub fn verify_zeros(path: &Path, offset: u64, len: u64, direct: bool) {
    let f = open_ro(path, direct).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = aligned(MIB as usize);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + pos)
            .unwrap_or_else(|e| panic!("read {} at {}: {e}", path.display(), offset + pos));
        if let Some(p) = buf[..n].iter().position(|&b| b != 0) {
            panic!(
                "{}: expected zeros in {offset}+{len} but byte {} is {:#04x} (direct={direct})",
                path.display(),
                offset + pos + p as u64,
                buf[p]
            );
        }
        pos += n as u64;
    }
}

/// Punch a hole (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) through the file descriptor.
pub fn punch_hole(f: &File, offset: u64, len: u64) -> nix::Result<()> {
    use nix::fcntl::FallocateFlags as F;
    nix::fcntl::fallocate(
        f.as_raw_fd(),
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    )
}

/// Bytes a file really occupies on disk (st_blocks * 512, like du).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .blocks()
        * 512
}

pub fn read_file(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    v
}

/// Sum of a numeric field over a JSON array of objects.
pub fn sum_field(arr: &Value, field: &str) -> u64 {
    arr.as_array()
        .expect("JSON array")
        .iter()
        .map(|x| {
            x[field]
                .as_u64()
                .unwrap_or_else(|| panic!("field {field} missing in {x}"))
        })
        .sum()
}

/// Find every number that follows the word "offset" in `s`.
pub fn offsets_named(s: &str) -> Vec<u64> {
    let lower = s.to_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find("offset") {
        let rest = &lower[from + i + 6..];
        let skip: usize = rest
            .char_indices()
            .take_while(|(_, c)| !c.is_ascii_digit() && (*c == ' ' || *c == '=' || *c == ':'))
            .map(|(i, c)| i + c.len_utf8())
            .last()
            .unwrap_or(0);
        let num = &rest[skip..];
        if let Some(hex) = num.strip_prefix("0x") {
            let h: String = hex.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if let Ok(v) = u64::from_str_radix(&h, 16) {
                out.push(v);
            }
        } else {
            let d: String = num.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(v) = d.parse() {
                out.push(v);
            }
        }
        from += i + 6;
    }
    out
}

/// Wait until `f` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
