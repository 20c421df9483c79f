//! `fusevold POOL MOUNTPOINT`: serve a pool in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Serve a fusevol pool: every volume becomes a regular file under MOUNTPOINT.
///
/// Runs in the foreground until SIGINT or SIGTERM, then unmounts, writes a checkpoint and
/// exits 0. Creates POOL with the default arrays (three sparse 4 GiB arrays, tier "fast") and
/// one thin 8 GiB volume `vol0` if POOL holds no pool yet, and MOUNTPOINT if it is missing. Logging: RUST_LOG=info|debug|warn.
/// Drive the pool with `fusevol -p POOL ...` (control socket POOL/control.sock).
#[derive(Parser, Debug)]
#[command(name = "fusevold", version)]
struct Args {
    /// Pool directory (created with the default arrays if missing).
    pool: PathBuf,
    /// Where to mount the volumes (created if missing).
    mountpoint: PathBuf,
    /// FUSE worker threads, each with its own cloned /dev/fuse descriptor.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Threads of the I/O stage: a read, write or fsync that arrives while another is in
    /// flight runs there, so the FUSE workers keep taking requests while the I/O waits for
    /// the disk. 0 runs every request on the FUSE worker that received it.
    #[arg(long, default_value_t = 16)]
    io_threads: usize,
    /// Serve FUSE requests through io_uring (FUSE over io_uring, Linux 6.14+): one queue
    /// per CPU, no read/write system call per request. Turns on the fuse module's
    /// `enable_uring` parameter when running as root; falls back to /dev/fuse (logging why)
    /// when the kernel does not offer or refuses it. Experimental, off by default.
    #[arg(long, env = "FUSEVOL_URING")]
    uring: bool,
    /// Requests in flight per io_uring queue (with --uring); each entry holds a 1 MiB buffer.
    #[arg(long, default_value_t = fusevol::fuse::uring::DEFAULT_DEPTH, value_name = "N")]
    uring_depth: u16,
    /// Let users other than the daemon's own open the volume files (mount option allow_other).
    #[arg(long)]
    allow_other: bool,
    /// Milliseconds between background flushes of the metadata log and the array files.
    #[arg(long, default_value_t = 1000)]
    flush_ms: u64,
    /// Serve every volume as an NBD export named after it (snapshots read-only as VOL@SNAP)
    /// on ADDR:PORT, or on 127.0.0.1:PORT when only a port is given. Off by default.
    #[arg(long, value_name = "[ADDR:]PORT")]
    nbd: Option<String>,
    /// Serve the NBD exports on a Unix socket too (created mode 0600; a stale one is
    /// replaced), e.g. for `nbd+unix:///VOL?socket=PATH`.
    #[arg(long, value_name = "PATH")]
    nbd_socket: Option<PathBuf>,
    /// Clients allowed to connect over NBD besides loopback ones: ADDR or ADDR/PREFIX,
    /// comma-separated or repeated. Required to listen on a non-loopback address.
    #[arg(long, value_name = "ADDR[/PREFIX],...", requires = "nbd")]
    nbd_allow: Vec<String>,
    /// Let NBD clients write a volume while its file in the mount is open for writing (and
    /// the other way round). Without it the first writer keeps the other side out: NBD writes
    /// get EPERM, opens for writing get EBUSY.
    #[arg(long)]
    nbd_shared: bool,
    /// Damage in the middle of the metadata log: `strict` refuses to start (naming the file
    /// and offset); `salvage` applies the valid prefix, reports what was lost (log and
    /// POOL/salvage-report.json) and serves the pool read-only until `fusevol pool
    /// salvage-confirm`.
    #[arg(long, default_value = "strict", value_name = "MODE")]
    recovery: fusevol::meta::RecoveryMode,
    /// Events kept in the pool's durable ring (POOL/events.jsonl) for `fusevol events`.
    #[arg(long, default_value_t = fusevol::events::DEFAULT_CAPACITY)]
    event_ring: usize,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (a bare PORT binds 127.0.0.1).
    /// Off by default.
    #[arg(long, env = "FUSEVOLD_METRICS", value_name = "ADDR:PORT", value_parser = parse_metrics_addr)]
    metrics: Option<std::net::SocketAddr>,
    /// Do not count per-volume I/O statistics (`fusevol stats` then says they are off and
    /// /metrics has no volume I/O counters). On by default.
    #[arg(long, env = "FUSEVOLD_NO_STATS")]
    no_stats: bool,
    /// Join a cluster: etcd endpoints (comma-separated), e.g. http://127.0.0.1:2379. Needs
    /// --node and --nbd; every node's mount then shows every volume of the cluster.
    #[arg(long, value_name = "URL[,URL...]", requires_all = ["node", "nbd"])]
    cluster: Option<String>,
    /// This node's name in the cluster (unique).
    #[arg(long, value_name = "NAME", requires = "cluster")]
    node: Option<String>,
    /// Lease TTL in seconds: a node that stops renewing shows as down within this.
    #[arg(long, value_name = "SECS", default_value_t = fusevol::cluster::DEFAULT_TTL, requires = "cluster")]
    cluster_ttl: u64,
    /// Where peers reach this node's NBD server (default: the --nbd address).
    #[arg(long, value_name = "ADDR:PORT", requires = "cluster")]
    cluster_address: Option<String>,
    /// Placement priority of this node's pool: `volume create` without --node picks the
    /// lowest number first (then free space in the tier, then load).
    #[arg(long, value_name = "N", default_value_t = fusevol::cluster::records::DEFAULT_PRIORITY, requires = "cluster")]
    cluster_priority: u32,
    /// This node reports itself busy while the requests in flight at its arrays, averaged
    /// over 2 s, are above N: readers of group snapshots go to the group's other site
    /// (`fusevol cluster set --busy-above N | --busy on|off|auto` changes it at run time).
    #[arg(long, value_name = "N", default_value_t = fusevol::cluster::load::DEFAULT_BUSY_ABOVE, requires = "cluster")]
    busy_above: f64,
}

/// `9187`, `:9187` → 127.0.0.1:9187; `0.0.0.0:9187`, `localhost:9187`, `[::1]:9187` as given.
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{s}' names no address"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    // Test builds only: failpoints named in the FAILPOINTS environment variable
    // (e.g. FAILPOINTS=mirror::dual_target::svol_write=return) are armed for the daemon's life.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let nbd = if a.nbd.is_some() || a.nbd_socket.is_some() {
        match fusevol::nbd::NbdOptions::parse(
            a.nbd.as_deref(),
            a.nbd_socket.clone(),
            &a.nbd_allow,
            a.nbd_shared,
        ) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("fusevold: error: {e}");
                return ExitCode::from(2);
            }
        }
    } else if a.nbd_shared {
        eprintln!("fusevold: error: --nbd-shared needs --nbd or --nbd-socket");
        return ExitCode::from(2);
    } else {
        None
    };
    let opts = fusevol::daemon::DaemonOptions {
        pool: a.pool,
        mountpoint: a.mountpoint,
        threads: a.threads,
        allow_other: a.allow_other,
        flush_interval: Duration::from_millis(a.flush_ms.max(10)),
        nbd,
        recovery: a.recovery,
        event_ring: a.event_ring.max(1),
        metrics: a.metrics,
        io_threads: a.io_threads,
        stats: !a.no_stats,
        uring: a.uring.then_some(a.uring_depth),
        cluster: a.cluster.map(|urls| fusevol::daemon::ClusterJoin {
            endpoints: urls
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            node: a.node.clone().unwrap_or_default(),
            ttl: a.cluster_ttl,
            address: a.cluster_address.clone(),
            priority: a.cluster_priority,
            busy_above: a.busy_above,
        }),
    };
    match fusevol::daemon::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fusevold: error: {e}");
            ExitCode::FAILURE
        }
    }
}
