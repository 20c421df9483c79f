//! `fusevold`: serve one pool — lock it, recover it, mount it, answer the control socket,
//! flush in the background, and unmount cleanly on SIGINT/SIGTERM.

mod backup;
mod guard;
mod handler;
pub mod locks;
pub mod metrics;
pub mod plan;
mod scheduler;
pub mod status;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fuser::{Config, INodeNo, MountOption, Session};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

pub use handler::Handler;

use crate::fuse::{volume_ino, FuseFs};
use crate::pool::{create_pool, default_pool_with_volume, Pool, PoolError};
use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub pool: PathBuf,
    pub mountpoint: PathBuf,
    /// FUSE worker threads (each with its own cloned /dev/fuse fd).
    pub threads: usize,
    /// Let other users open the volume files (mount option allow_other).
    pub allow_other: bool,
    /// Seconds between background flushes of the metadata log and array files.
    pub flush_interval: Duration,
    /// Serve the volumes over NBD too (`--nbd`, `--nbd-allow`).
    pub nbd: Option<crate::nbd::NbdOptions>,
    /// Recovery policy for damage in the middle of the metadata log (`--recovery`).
    pub recovery: crate::meta::RecoveryMode,
    /// Events kept in the pool's durable ring (`POOL/events.jsonl`).
    pub event_ring: usize,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when `None`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Threads of the FUSE adapter's I/O stage (`--io-threads`; 0: none, see `fuse::stage`).
    pub io_threads: usize,
    /// Join a cluster over etcd (`--cluster URL --node NAME`; needs `nbd` with a TCP address).
    pub cluster: Option<ClusterJoin>,
    /// Count per-volume I/O statistics (`fusevol stats`, the metrics' volume counters);
    /// `--no-stats` turns them off.
    pub stats: bool,
    /// Serve FUSE through io_uring with this many entries per queue (`--uring`,
    /// `--uring-depth`; see `fuse::uring`); `None`: `/dev/fuse` only.
    pub uring: Option<u16>,
}

/// `--cluster URL[,URL...] --node NAME [--cluster-ttl SECS] [--cluster-address ADDR:PORT]`.
#[derive(Debug, Clone)]
pub struct ClusterJoin {
    pub endpoints: Vec<String>,
    pub node: String,
    pub ttl: u64,
    /// Where peers reach this node's NBD server; default: the `--nbd` address.
    pub address: Option<String>,
    /// Placement priority of this node's pool (lower first).
    pub priority: u32,
    /// Busy threshold: requests in flight at the arrays (`cluster::load`).
    pub busy_above: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("pool {pool} is already served by another fusevold ({holder}); one daemon per pool")]
    Locked { pool: PathBuf, holder: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Take the pool's lock file; the pid of the holder is written into it.
fn lock_pool(dir: &Path) -> Result<Flock<fs::File>, DaemonError> {
    let path = Pool::lock_path(dir);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)
                .map_err(io_err("truncate lock file", &path))?;
            writeln!(lock, "{}", std::process::id()).map_err(io_err("write lock file", &path))?;
            Ok(lock)
        }
        Err((_, _)) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .map(|s| format!("pid {}", s.trim()))
                .unwrap_or_else(|| "unknown pid".into());
            Err(DaemonError::Locked {
                pool: dir.to_path_buf(),
                holder,
            })
        }
    }
}

/// A FUSE mount left behind by a killed daemon answers ENOTCONN; detach it.
fn clear_stale_mount(mnt: &Path) {
    if let Err(e) = fs::metadata(mnt) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            log::warn!(
                "{}: stale FUSE mount from a dead daemon; detaching it",
                mnt.display()
            );
            let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Create the pool with the default arrays and volume `vol0` when `dir` does not hold one yet.
pub fn ensure_pool(dir: &Path) -> Result<(), DaemonError> {
    // Any trace of a pool counts: with one checkpoint slot destroyed (or both, the log and
    // arrays still there) this must open, or fail, the pool, never create a new one over it.
    let traces = crate::meta::CHECKPOINT_FILES
        .iter()
        .chain(&[crate::meta::LOG_FILE, crate::pool::ARRAYS_DIR]);
    if traces.into_iter().any(|n| dir.join(n).exists()) {
        return Ok(());
    }
    log::info!(
        "{} holds no pool; creating one with the default arrays and volume vol0",
        dir.display()
    );
    create_pool(dir, &default_pool_with_volume())?;
    Ok(())
}

/// Where a salvage start writes its loss report (JSON), in the pool directory.
pub const SALVAGE_REPORT_FILE: &str = "salvage-report.json";

/// The cluster client's options from `--cluster`: the NBD server must listen on TCP (peers
/// forward I/O there), and is made shared (a forwarded writer may write a volume whose file is
/// open for writing in a mount: the cluster, not the front end, decides who writes).
fn cluster_options(
    j: &ClusterJoin,
    nbd: &mut Option<crate::nbd::NbdOptions>,
) -> Result<crate::cluster::ClusterOptions, DaemonError> {
    let bad = |msg: String| DaemonError::Io {
        op: "join the cluster as node",
        path: PathBuf::from(&j.node),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
    };
    crate::names::validate("node", &j.node).map_err(bad)?;
    let listen = nbd.as_mut().and_then(|o| {
        o.shared = true;
        o.listen
    });
    let address = match (&j.address, listen) {
        (Some(a), _) => a.clone(),
        (None, Some(l)) if !l.ip().is_unspecified() => l.to_string(),
        (None, Some(l)) => {
            return Err(bad(format!(
                "--nbd listens on {l}: give --cluster-address ADDR:PORT, the address peers use"
            )))
        }
        (None, None) => {
            return Err(bad(
                "--cluster needs --nbd ADDR:PORT (peers forward I/O to this node over NBD)".into(),
            ))
        }
    };
    if j.ttl < 2 {
        return Err(bad(format!(
            "--cluster-ttl {} is too short (at least 2 s)",
            j.ttl
        )));
    }
    Ok(crate::cluster::ClusterOptions {
        endpoints: j.endpoints.clone(),
        node: j.node.clone(),
        address,
        ttl: j.ttl,
        priority: j.priority,
        busy_above: j.busy_above,
    })
}

pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    ensure_pool(&opts.pool)?;
    let pool_dir = fs::canonicalize(&opts.pool).map_err(io_err("resolve", &opts.pool))?;
    let lock = lock_pool(&pool_dir)?;

    // Signals go to one thread that waits for them; every thread spawned from here on
    // inherits the blocked mask.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGHUP);
    sigs.thread_block().map_err(|e| DaemonError::Io {
        op: "block signals in",
        path: pool_dir.clone(),
        source: e.into(),
    })?;

    let st = Storage::open_with(&pool_dir, opts.recovery)?;
    // A clean pool before serving: checkpoint after a replay, rewrite damaged copies.
    st.finish_recovery()?;
    if let Some(report) = st.pool.salvage_report() {
        // The loss report, for the operator (and the CLI's `pool info` says read-only).
        let path = pool_dir.join(SALVAGE_REPORT_FILE);
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = fs::write(&path, text) {
            log::error!("write {}: {e}", path.display());
        } else {
            log::warn!("salvage loss report written to {}", path.display());
        }
    }

    // In a cluster, peers forward I/O to this node's NBD server: it must listen on TCP, and a
    // forwarded writer may write a volume whose file is open in a mount (shared).
    let mut nbd_opts = opts.nbd.clone();
    let cluster_opts = match &opts.cluster {
        Some(j) => Some(cluster_options(j, &mut nbd_opts)?),
        None => None,
    };
    // NBD before the mount, so a port in use stops the daemon before anything is mounted.
    let nbd =
        match &nbd_opts {
            Some(o) => Some(crate::nbd::NbdServer::start(st.clone(), o.clone()).map_err(
                |source| DaemonError::Io {
                    op: "listen for NBD clients on",
                    path: match (&o.listen, &o.socket) {
                        (Some(l), _) => PathBuf::from(l.to_string()),
                        (None, Some(p)) => p.clone(),
                        (None, None) => PathBuf::new(),
                    },
                    source,
                },
            )?),
            None => None,
        };
    st.pool.events.set_capacity(opts.event_ring);
    st.set_io_stats(opts.stats);
    if !opts.stats {
        log::info!("per-volume I/O statistics are off (--no-stats)");
    }
    let cluster = match cluster_opts {
        Some(o) => Some(
            crate::cluster::Cluster::start(st.clone(), o)
                .map_err(io_err("start the cluster client for", &pool_dir))?,
        ),
        None => None,
    };
    if let Some(c) = &cluster {
        // Volumes other nodes place here are made by the ordinary cluster create.
        let st2 = st.clone();
        c.set_executor(Box::new(move |name, size, tier| {
            let (v, warnings) = st2.volumes.create_volume(name, size, tier)?;
            for w in warnings {
                log::warn!("{w}");
            }
            Ok((v.id, v.size(), v.tier.clone()))
        }));
    }

    clear_stale_mount(&opts.mountpoint);
    fs::create_dir_all(&opts.mountpoint).map_err(io_err("create mountpoint", &opts.mountpoint))?;
    let mnt = fs::canonicalize(&opts.mountpoint).map_err(io_err("resolve", &opts.mountpoint))?;

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("fusevol:{}", pool_dir.display())),
        MountOption::Subtype("fusevol".into()),
        MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config.uring = opts.uring.and_then(crate::fuse::uring::transport_config);
    let fs = FuseFs::with_io_threads(
        st.clone(),
        cluster.clone(),
        opts.io_threads,
        opts.threads.max(1),
    )
    .map_err(io_err("start the I/O stage for", &mnt))?;
    let mut session = Session::new(fs, &mnt, &config).map_err(io_err("mount FUSE at", &mnt))?;
    log::info!("mounted {} at {}", pool_dir.display(), mnt.display());

    let notifier = session.notifier();
    st.pool.set_listener(Box::new(move |id| {
        // Resized or deleted outside the file: drop the kernel's cached size and pages.
        let _ = notifier.inval_inode(INodeNo(volume_ino(id)), 0, 0);
    }));

    let locks = locks::Locks::new(st.pool.events.clone());
    let lock_reaper = locks
        .start_reaper()
        .map_err(io_err("start the lock reaper for", &pool_dir))?;
    let server = crate::control::server::serve(
        &pool_dir.join(crate::pool::SOCKET_FILE),
        Arc::new(Handler {
            storage: st.clone(),
            mountpoint: mnt.display().to_string(),
            started: Instant::now(),
            nbd: nbd.as_ref().map(|n| n.exports.clone()),
            cluster: cluster.clone(),
            plane: guard::ControlPlane::new(locks.clone()),
        }),
    )
    .map_err(io_err("listen on control socket in", &pool_dir))?;

    let metrics = match opts.metrics {
        Some(addr) => Some(
            metrics::MetricsServer::start(addr, st.clone(), mnt.display().to_string())
                .map_err(io_err("serve metrics for", &pool_dir))?,
        ),
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (st, stop, every) = (st.clone(), stop.clone(), opts.flush_interval);
        thread::Builder::new()
            .name("flusher".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    // Wake often enough to stop quickly, flush once per interval.
                    thread::sleep(every.min(Duration::from_millis(200)));
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    if let Err(e) = st
                        .sync()
                        .and_then(|_| st.pool.maybe_checkpoint().map(|_| ()))
                    {
                        log::error!("background flush: {e}");
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .expect("spawn flusher")
    };
    // Completes partial extents (sub-extent copy-on-write) in the background, and starts
    // the journal groups' shippers, appliers and base copiers. Not while an unconfirmed
    // salvage holds the pool read-only.
    if st.pool.read_only().is_none() {
        st.start();
    }
    // Backup schedules (issue 14): runs the due ones, respecting operation locks.
    let scheduler = scheduler::Scheduler::start(st.clone(), locks.clone())
        .map_err(io_err("start the scheduler for", &pool_dir))?;
    st.pool.events.publish(
        "daemon",
        &pool_dir.display().to_string(),
        "started",
        serde_json::json!({"pid": std::process::id(), "mountpoint": mnt.display().to_string()}),
    );

    let mut unmounter = session.unmount_callable();
    let mnt2 = mnt.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                log::info!("{sig:?}: unmounting {}", mnt2.display());
                if let Err(e) = unmounter.unmount() {
                    log::warn!("unmount {}: {e}; detaching it lazily", mnt2.display());
                    let _ = nix::mount::umount2(&mnt2, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        })
        .expect("spawn signal thread");

    let served = session.run();
    stop.store(true, Ordering::Release);
    scheduler.stop();
    // Leave the cluster first: the lease is revoked, peers see this node down at once.
    if let Some(c) = &cluster {
        c.stop();
    }
    if let Some(n) = nbd {
        n.stop();
    }
    // Followers see the stop and their streams end, so the server's connections can close.
    st.pool.events.publish(
        "daemon",
        &pool_dir.display().to_string(),
        "stopping",
        serde_json::Value::Null,
    );
    st.pool.events.close();
    drop(metrics);
    server.stop();
    locks.stop();
    let _ = lock_reaper.join();
    let _ = flusher.join();
    st.shutdown();
    let result = st.checkpoint();
    drop(lock);
    served.map_err(io_err("serve FUSE at", &mnt))?;
    result?;
    log::info!("pool {} closed cleanly", pool_dir.display());
    Ok(())
}
