//! `fusevol` — the command-line interface to a fusevol pool.
//!
//! `init` and `check` work on the pool files directly (no daemon); every other command sends
//! one request to the `fusevold` serving the pool, through `<POOL>/control.sock`.
//!
//! Output: text for people (aligned tables, human sizes; warnings on stderr), or with `--json`
//! the answer's `data` on stdout for scripts. Exit codes are decided in one place,
//! [`exit_code`], and documented in `--help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use fusevol::control::client::error_code_name;
use fusevol::control::protocol::SnapshotInfo;
use fusevol::control::{ArrayInfo, Client, ClientError, ErrorBody, PoolInfo, Request, VolumeInfo};
use fusevol::units::{format_size, parse_size};

const AFTER_HELP: &str = "\
Exit status: 0 ok, 1 the daemon refused the request (or check found problems), 2 usage error, \
3 cannot reach the daemon, 4 local error. See --help for details.";

const AFTER_LONG_HELP: &str = "\
FINDING THE POOL
  Commands that talk to the daemon need the pool directory, from -p/--pool or the FUSEVOL_POOL
  environment variable; they reach fusevold through <POOL>/control.sock. `init` and `check`
  work offline on the pool files and take the pool as an argument (or from -p/FUSEVOL_POOL).

SIZES
  Binary units, case-insensitive, `B`/`iB` optional: 4G = 4GiB = 4096M, 64K, 1.5G, or plain bytes.

OUTPUT
  Text by default: tables with human sizes; warnings go to stderr as `warning: ...`, errors as
  `error: ...`. With --json the answer's data is printed to stdout as JSON (`null` for commands
  that answer nothing); an error is printed to stdout as
  {\"error\":{\"code\":\"<code>\",\"message\":\"<message>\"}} and the exit status is non-zero.
  Daemon error codes: protocol, invalid, not_found, exists, busy, no_space, io. Client-side codes:
  no_daemon, connect, timeout, connection, closed, bad_response, usage, local.

EXIT STATUS
  0  success
  1  the daemon reported an error (any error code), or `check` found problems
  2  usage error: bad or missing arguments (including a bad --array spec), no pool given
  3  cannot reach the daemon: no control socket, connection refused or lost, timeout,
     unintelligible answer
  4  local error: `init` or `check` could not do their work (pool exists, I/O, not a pool)

EXAMPLES
  fusevol init /srv/pool --array a0:16G:fast --array a1:64G:slow --extent-size 1M
  fusevold /srv/pool /mnt/fusevol &
  export FUSEVOL_POOL=/srv/pool
  fusevol volume create vm1 --size 20G
  fusevol volume list
  fusevol --json volume info vm1
  fusevol snapshot create vm1 pre-upgrade    # read-only: /mnt/fusevol/.snapshots/vm1/pre-upgrade
  fusevol snapshot list vm1
  fusevol snapshot rollback vm1 pre-upgrade  # with vm1's file closed (umount, losetup -d)
  fusevol check /srv/pool        # with fusevold stopped";

/// Manage a fusevol storage pool: arrays, volumes, snapshots and the daemon serving them.
#[derive(Parser)]
#[command(
    name = "fusevol",
    version,
    about = "Manage a fusevol storage pool: arrays, volumes, snapshots and the daemon serving them",
    long_about = "Manage a fusevol storage pool: arrays, volumes, snapshots and the daemon serving \
        them.\n\n\
        fusevold serves a pool directory and shows every volume as a file in its FUSE mount (and \
        every snapshot as a read-only file under .snapshots/<VOL>/); \
        this tool creates and checks pools offline, and drives a running fusevold through the \
        pool's control socket.",
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Pool directory served by fusevold
    #[arg(
        short = 'p',
        long,
        env = "FUSEVOL_POOL",
        global = true,
        value_name = "POOL"
    )]
    pool: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (data, or {"error":{...}})
    #[arg(long, global = true)]
    json: bool,

    /// Seconds to wait for the daemon's answer (0: wait forever)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 600)]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new pool directory with its arrays (offline: no daemon needed)
    Init(InitArgs),
    /// Check a pool's metadata and allocation for consistency (offline: stop fusevold first)
    Check(CheckArgs),
    /// Add arrays (backing image files) to the served pool, or list them
    #[command(subcommand)]
    Array(ArrayCmd),
    /// Show the served pool: capacity, use, provisioning, arrays
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Create, list, inspect, resize and delete volumes
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Take, list, delete, roll back to and clone snapshots of volumes
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Write a metadata checkpoint and flush all arrays to stable storage
    Sync,
    /// Check that a fusevold is serving the pool and answering
    Ping,
}

#[derive(Args)]
struct InitArgs {
    /// Directory to create the pool in [default: -p/--pool or FUSEVOL_POOL]
    #[arg(value_name = "POOL")]
    pool_dir: Option<PathBuf>,

    /// An array to create, as NAME:SIZE[:TIER] (e.g. a0:16G:fast); repeat for more.
    /// Without any: three arrays of 4 GiB, tier fast
    #[arg(long = "array", value_name = "NAME:SIZE[:TIER]")]
    arrays: Vec<String>,

    /// Allocation unit of the pool, fixed at creation (e.g. 1M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    extent_size: Option<u64>,
}

#[derive(Args)]
struct CheckArgs {
    /// Pool directory to check [default: -p/--pool or FUSEVOL_POOL]
    #[arg(value_name = "POOL")]
    pool_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ArrayCmd {
    /// Create a new array file in the pool and start allocating from it
    Add {
        /// Name of the new array
        name: String,
        /// Data capacity of the array (the file is sparse)
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: u64,
        /// Tier the array belongs to (volumes ask for a tier)
        #[arg(long, value_name = "TIER", default_value = "fast")]
        tier: String,
    },
    /// List the arrays with capacity, use and space taken on disk
    List,
}

#[derive(Subcommand)]
enum PoolCmd {
    /// Show the pool's identity, mount point, capacity, use, provisioning and arrays
    Info,
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create a volume; it appears as <MOUNTPOINT>/<NAME>
    Create {
        /// Volume name (also its file name in the mount)
        name: String,
        /// Size of the volume (thin: space is allocated on first write)
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: u64,
        /// Place the volume's extents on arrays of this tier [default: the pool's choice]
        #[arg(long, value_name = "TIER")]
        tier: Option<String>,
    },
    /// List all volumes with size, allocation and tier
    List,
    /// Show one volume in detail, including its extents per array
    Info {
        /// Volume name
        name: String,
    },
    /// Grow or shrink a volume
    Resize {
        /// Volume name
        name: String,
        /// New size
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: u64,
    },
    /// Delete a volume and free its extents (refused while it has snapshots, unless --recursive)
    Delete {
        /// Volume name
        name: String,
        /// Delete the volume's snapshots first, then the volume
        #[arg(short = 'r', long)]
        recursive: bool,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Take a snapshot of a volume; it appears read-only as
    /// <MOUNTPOINT>/.snapshots/<VOL>/<SNAP>
    Create {
        /// Volume to snapshot
        #[arg(value_name = "VOL")]
        volume: String,
        /// Name of the new snapshot (unique per volume)
        #[arg(value_name = "SNAP")]
        name: String,
    },
    /// List snapshots, of one volume or of all, oldest first, with the space they hold
    ///
    /// EXCLUSIVE is the space held only by the snapshot (freed when it is deleted); SHARED is
    /// the space it shares with its volume, other snapshots or clones.
    List {
        /// Only the snapshots of this volume [default: all volumes]
        #[arg(value_name = "VOL")]
        volume: Option<String>,
    },
    /// Delete a snapshot and free the extents only it held (refused while its file is open)
    Delete {
        /// Volume the snapshot belongs to
        #[arg(value_name = "VOL")]
        volume: String,
        /// Snapshot name
        #[arg(value_name = "SNAP")]
        name: String,
    },
    /// Return a volume to a snapshot's content and size; refused while the volume file is
    /// open: close it first (umount, losetup -d)
    Rollback {
        /// Volume to roll back
        #[arg(value_name = "VOL")]
        volume: String,
        /// Snapshot to return to
        #[arg(value_name = "SNAP")]
        name: String,
    },
    /// Create a new writable volume that starts as a snapshot (sharing its extents); it appears
    /// as <MOUNTPOINT>/<NEWVOL>
    Clone {
        /// Volume the snapshot belongs to
        #[arg(value_name = "VOL")]
        volume: String,
        /// Snapshot to clone
        #[arg(value_name = "SNAP")]
        name: String,
        /// Name of the new volume
        #[arg(value_name = "NEWVOL")]
        new_volume: String,
    },
}

/// Why a command did not succeed. Every failure ends up in [`exit_code`] and [`report`].
enum Failure {
    /// The daemon answered with an error.
    Daemon(ErrorBody),
    /// `check` found problems; the report has been printed already.
    Unclean { problems: usize },
    /// Bad or missing arguments.
    Usage(String),
    /// The daemon could not be reached or did not answer sensibly.
    Unreachable(ClientError),
    /// An offline command (`init`, `check`) failed.
    Local(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Daemon(body) => Failure::Daemon(body),
            other => Failure::Unreachable(other),
        }
    }
}

/// The one place that maps outcomes to exit codes (documented in `--help`).
fn exit_code(outcome: &Result<(), Failure>) -> ExitCode {
    ExitCode::from(match outcome {
        Ok(()) => 0,
        Err(Failure::Daemon(_) | Failure::Unclean { .. }) => 1,
        Err(Failure::Usage(_)) => 2,
        Err(Failure::Unreachable(_)) => 3,
        Err(Failure::Local(_)) => 4,
    })
}

/// Tell the user (or the script) what failed.
fn report(failure: &Failure, json_mode: bool) {
    let (code, message) = match failure {
        Failure::Daemon(body) => (error_code_name(body.code), body.message.clone()),
        Failure::Unclean { problems } => {
            // The report itself is the output; in JSON mode it was printed already.
            if !json_mode {
                eprintln!("error: pool check found {problems} problem(s)");
            }
            return;
        }
        Failure::Usage(msg) => ("usage", msg.clone()),
        Failure::Unreachable(e) => (e.code(), e.to_string()),
        Failure::Local(msg) => ("local", msg.clone()),
    };
    if json_mode {
        println!(
            "{}",
            json!({ "error": { "code": code, "message": message } })
        );
    } else {
        eprintln!("error: {message}");
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    let json_mode = cli.json;
    let outcome = run(cli);
    if let Err(failure) = &outcome {
        report(failure, json_mode);
    }
    exit_code(&outcome)
}

/// Help and version are not failures; anything else clap rejects is a usage error.
fn clap_failure(e: clap::Error) -> ExitCode {
    if e.exit_code() == 0 {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let json_mode = std::env::args_os().any(|a| a == "--json");
    if !json_mode {
        let _ = e.print(); // clap's own message, with usage and hints, on stderr
    }
    let message = e.render().to_string();
    let message = message
        .trim()
        .trim_start_matches("error: ")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let outcome = Err(Failure::Usage(message));
    if json_mode {
        if let Err(f) = &outcome {
            report(f, true);
        }
    }
    exit_code(&outcome)
}

/// What every command needs: where the pool is and how to print.
struct Ctx {
    pool: Option<PathBuf>,
    json: bool,
    timeout: Duration,
}

impl Ctx {
    /// The pool from an explicit argument, else -p/--pool or FUSEVOL_POOL.
    fn pool<'a>(&'a self, explicit: Option<&'a Path>) -> Result<&'a Path, Failure> {
        explicit.or(self.pool.as_deref()).ok_or_else(|| {
            Failure::Usage("no pool given: use -p/--pool <POOL> or set FUSEVOL_POOL".into())
        })
    }

    fn client(&self) -> Result<Client, Failure> {
        let mut client = Client::connect(self.pool(None)?)?;
        client.set_timeout(self.timeout);
        Ok(client)
    }

    /// Send `req`; print the data as JSON in `--json` mode, else decode it as `T` and hand it
    /// to `show`. Warnings go to stderr either way.
    fn request<T: DeserializeOwned>(
        &self,
        req: Request,
        show: impl FnOnce(T),
    ) -> Result<(), Failure> {
        let mut client = self.client()?;
        if self.json {
            let (data, warnings) = client.call_ok::<Value>(&req)?;
            print_warnings(&warnings);
            print_json(&data);
        } else {
            let (data, warnings) = client.call_ok::<T>(&req)?;
            print_warnings(&warnings);
            show(data);
        }
        Ok(())
    }
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        pool: cli.pool,
        json: cli.json,
        timeout: Duration::from_secs(cli.timeout),
    };
    match cli.command {
        Command::Init(args) => init(&ctx, args),
        Command::Check(args) => check(&ctx, args),
        Command::Array(cmd) => array(&ctx, cmd),
        Command::Pool(PoolCmd::Info) => ctx.request(Request::PoolInfo, show_pool),
        Command::Volume(cmd) => volume(&ctx, cmd),
        Command::Snapshot(cmd) => snapshot(&ctx, cmd),
        Command::Sync => ctx.request(Request::Sync, |()| println!("synced")),
        Command::Ping => ctx.request(Request::Ping, |info: PoolInfo| {
            println!(
                "fusevold is serving pool {} at {}",
                info.path, info.mountpoint
            )
        }),
    }
}

fn init(ctx: &Ctx, args: InitArgs) -> Result<(), Failure> {
    use fusevol::pool::{create_pool, ArraySpec, PoolSpec};
    let pool = ctx.pool(args.pool_dir.as_deref())?;
    let mut spec = PoolSpec::default();
    if !args.arrays.is_empty() {
        spec.arrays = args
            .arrays
            .iter()
            .map(|text| {
                ArraySpec::parse(text)
                    .map_err(|e| Failure::Usage(format!("invalid --array '{text}': {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(extent_size) = args.extent_size {
        spec.extent_size = extent_size;
    }
    create_pool(pool, &spec)
        .map_err(|e| Failure::Local(format!("cannot create pool {}: {e}", pool.display())))?;
    let arrays: Vec<(String, u64, String)> = spec
        .arrays
        .iter()
        .map(|a| (a.name.to_string(), a.size, a.tier.to_string()))
        .collect();
    if ctx.json {
        let arrays: Vec<Value> = arrays
            .iter()
            .map(|(name, size, tier)| json!({ "name": name, "size": size, "tier": tier }))
            .collect();
        print_json(&json!({
            "pool": pool.display().to_string(),
            "extent_size": spec.extent_size,
            "arrays": arrays,
        }));
    } else {
        let total: u64 = arrays.iter().map(|(_, size, _)| size).sum();
        println!(
            "created pool {} (extent size {}, {} arrays, {} in all)",
            pool.display(),
            format_size(spec.extent_size),
            arrays.len(),
            format_size(total)
        );
        let rows = arrays
            .into_iter()
            .map(|(name, size, tier)| vec![name, format_size(size), tier])
            .collect();
        print!("{}", table(&[("ARRAY", L), ("SIZE", R), ("TIER", L)], rows));
        println!("serve it with: fusevold {} <MOUNTPOINT>", pool.display());
    }
    Ok(())
}

fn check(ctx: &Ctx, args: CheckArgs) -> Result<(), Failure> {
    let pool = ctx.pool(args.pool_dir.as_deref())?;
    if Client::connect(pool).is_ok() {
        eprintln!(
            "warning: a fusevold is serving {}; the check may see changes in flight",
            pool.display()
        );
    }
    let report = fusevol::meta::check_pool(pool)
        .map_err(|e| Failure::Local(format!("cannot check pool {}: {e}", pool.display())))?;
    if ctx.json {
        let value = serde_json::to_value(&report)
            .map_err(|e| Failure::Local(format!("cannot encode the check report: {e}")))?;
        print_json(&value);
    } else {
        println!("{report}");
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::Unclean {
            problems: report.problems.len(),
        })
    }
}

fn array(ctx: &Ctx, cmd: ArrayCmd) -> Result<(), Failure> {
    match cmd {
        ArrayCmd::Add { name, size, tier } => {
            ctx.request(Request::ArrayAdd { name, size, tier }, |a: ArrayInfo| {
                println!(
                    "added array {} (id {}): {}, tier {}, file {}",
                    a.name,
                    a.id,
                    format_size(a.capacity),
                    a.tier,
                    a.path
                )
            })
        }
        ArrayCmd::List => ctx.request(Request::ArrayList, |arrays: Vec<ArrayInfo>| {
            print!("{}", array_table(&arrays))
        }),
    }
}

fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Result<(), Failure> {
    match cmd {
        VolumeCmd::Create { name, size, tier } => ctx.request(
            Request::VolumeCreate { name, size, tier },
            |v: VolumeInfo| {
                println!(
                    "created volume {}: {}, tier {}",
                    v.name,
                    format_size(v.size),
                    v.tier
                )
            },
        ),
        VolumeCmd::List => ctx.request(Request::VolumeList, |vols: Vec<VolumeInfo>| {
            if vols.is_empty() {
                println!("no volumes");
                return;
            }
            let rows = vols
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        format_size(v.size),
                        format_size(v.allocated),
                        percent(v.allocated, v.size),
                        v.tier.clone(),
                        v.open_handles.to_string(),
                        format_time(v.created),
                    ]
                })
                .collect();
            let header = [
                ("NAME", L),
                ("SIZE", R),
                ("ALLOCATED", R),
                ("ALLOC%", R),
                ("TIER", L),
                ("OPEN", R),
                ("CREATED", L),
            ];
            print!("{}", table(&header, rows));
        }),
        VolumeCmd::Info { name } => ctx.request(Request::VolumeInfo { name }, show_volume),
        VolumeCmd::Resize { name, size } => {
            ctx.request(Request::VolumeResize { name, size }, |v: VolumeInfo| {
                println!(
                    "volume {} is now {} ({} bytes)",
                    v.name,
                    format_size(v.size),
                    v.size
                )
            })
        }
        VolumeCmd::Delete { name, recursive } => {
            let shown = name.clone();
            ctx.request(Request::VolumeDelete { name, recursive }, move |()| {
                if recursive {
                    println!("deleted volume {shown} and its snapshots")
                } else {
                    println!("deleted volume {shown}")
                }
            })
        }
    }
}

fn snapshot(ctx: &Ctx, cmd: SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Create { volume, name } => ctx.request(
            Request::SnapshotCreate { volume, name },
            |s: SnapshotInfo| {
                println!(
                    "created snapshot {} of volume {} at {}: {}",
                    s.name,
                    s.volume,
                    format_time(s.created),
                    s.path
                )
            },
        ),
        SnapshotCmd::List { volume } => {
            let of = volume.clone();
            ctx.request(
                Request::SnapshotList { volume },
                move |snaps: Vec<SnapshotInfo>| match (&of, snaps.is_empty()) {
                    (Some(vol), true) => println!("no snapshots of volume {vol}"),
                    (None, true) => println!("no snapshots"),
                    // The daemon answers oldest first.
                    _ => print!("{}", snapshot_table(&snaps)),
                },
            )
        }
        SnapshotCmd::Delete { volume, name } => {
            let shown = format!("deleted snapshot {name} of volume {volume}");
            ctx.request(Request::SnapshotDelete { volume, name }, move |()| {
                println!("{shown}")
            })
        }
        SnapshotCmd::Rollback { volume, name } => {
            let snap = name.clone();
            ctx.request(
                Request::SnapshotRollback { volume, name },
                move |v: VolumeInfo| {
                    println!(
                        "rolled back volume {} to snapshot {snap}: {} ({} bytes)",
                        v.name,
                        format_size(v.size),
                        v.size
                    )
                },
            )
        }
        SnapshotCmd::Clone {
            volume,
            name,
            new_volume,
        } => {
            let from = format!("snapshot {name} of volume {volume}");
            ctx.request(
                Request::SnapshotClone {
                    volume,
                    name,
                    new_volume,
                },
                move |v: VolumeInfo| {
                    println!(
                        "created volume {} from {from}: {}, tier {}",
                        v.name,
                        format_size(v.size),
                        v.tier
                    )
                },
            )
        }
    }
}

fn snapshot_table(snaps: &[SnapshotInfo]) -> String {
    let rows = snaps
        .iter()
        .map(|s| {
            vec![
                s.volume.clone(),
                s.name.clone(),
                format_time(s.created),
                format_size(s.size),
                format_size(s.exclusive),
                format_size(s.shared),
            ]
        })
        .collect();
    let header = [
        ("VOLUME", L),
        ("SNAPSHOT", L),
        ("CREATED", L),
        ("SIZE", R),
        ("EXCLUSIVE", R),
        ("SHARED", R),
    ];
    table(&header, rows)
}

fn show_pool(p: PoolInfo) {
    let overcommit = if p.provisioned > p.capacity {
        "  (overcommitted)"
    } else {
        ""
    };
    let fields = [
        ("pool", p.pool_id.clone()),
        ("path", p.path.clone()),
        ("mountpoint", p.mountpoint.clone()),
        ("extent size", format_size(p.extent_size)),
        ("capacity", format_size(p.capacity)),
        (
            "used",
            format!("{} ({})", format_size(p.used), percent(p.used, p.capacity)),
        ),
        ("free", format_size(p.free)),
        (
            "provisioned",
            format!(
                "{} ({} of capacity){overcommit}",
                format_size(p.provisioned),
                percent(p.provisioned, p.capacity)
            ),
        ),
        ("volumes", p.volumes.to_string()),
        ("arrays", p.arrays.len().to_string()),
    ];
    print!("{}", key_values(&fields));
    if !p.arrays.is_empty() {
        println!();
        print!("{}", array_table(&p.arrays));
    }
}

fn show_volume(v: VolumeInfo) {
    let extents = if v.extents_per_array.is_empty() {
        "none".to_string()
    } else {
        v.extents_per_array
            .iter()
            .map(|(array, n)| format!("{array}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fields = [
        ("name", v.name.clone()),
        ("id", v.id.to_string()),
        (
            "size",
            format!("{} ({} bytes)", format_size(v.size), v.size),
        ),
        ("tier", v.tier.clone()),
        (
            "allocated",
            format!(
                "{} ({} of size)",
                format_size(v.allocated),
                percent(v.allocated, v.size)
            ),
        ),
        ("created", format_time(v.created)),
        ("open handles", v.open_handles.to_string()),
        ("extents", extents),
    ];
    print!("{}", key_values(&fields));
}

fn array_table(arrays: &[ArrayInfo]) -> String {
    if arrays.is_empty() {
        return "no arrays\n".into();
    }
    let rows = arrays
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.tier.clone(),
                format_size(a.capacity),
                format_size(a.used),
                percent(a.used, a.capacity),
                format_size(a.free),
                format_size(a.on_disk),
                a.path.clone(),
            ]
        })
        .collect();
    let header = [
        ("ID", R),
        ("NAME", L),
        ("TIER", L),
        ("CAPACITY", R),
        ("USED", R),
        ("USE%", R),
        ("FREE", R),
        ("ON-DISK", R),
        ("PATH", L),
    ];
    table(&header, rows)
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}
use Align::{Left as L, Right as R};

/// Render rows under a header, columns padded to their widest cell; no trailing spaces.
fn table(header: &[(&str, Align)], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let head: Vec<String> = header.iter().map(|(h, _)| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&head).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match header[i].1 {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key   value` lines with the values aligned.
fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// `part` as a percentage of `whole`, one decimal (`-` when `whole` is 0).
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_time(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_interface() {
        let cli = Cli::try_parse_from([
            "fusevol",
            "init",
            "/p",
            "--array",
            "a0:1G:fast",
            "--array",
            "a1:2G",
            "--extent-size",
            "1M",
        ])
        .unwrap();
        match cli.command {
            Command::Init(a) => {
                assert_eq!(a.pool_dir.as_deref(), Some(Path::new("/p")));
                assert_eq!(a.arrays, vec!["a0:1G:fast", "a1:2G"]);
                assert_eq!(a.extent_size, Some(1 << 20));
            }
            _ => panic!("wrong command"),
        }
        let cli = Cli::try_parse_from([
            "fusevol", "volume", "create", "v0", "--size", "4G", "--tier", "slow", "-p", "/p",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.pool.as_deref(), Some(Path::new("/p")));
        match cli.command {
            Command::Volume(VolumeCmd::Create { name, size, tier }) => {
                assert_eq!(name, "v0");
                assert_eq!(size, 4 << 30);
                assert_eq!(tier.as_deref(), Some("slow"));
            }
            _ => panic!("wrong command"),
        }
        let cli = Cli::try_parse_from([
            "fusevol", "--pool", "/q", "array", "add", "a9", "--size", "8G",
        ])
        .unwrap();
        match cli.command {
            Command::Array(ArrayCmd::Add { tier, size, .. }) => {
                assert_eq!(tier, "fast");
                assert_eq!(size, 8 << 30);
            }
            _ => panic!("wrong command"),
        }
        for args in [
            &["fusevol", "volume", "list"][..],
            &["fusevol", "volume", "info", "v"],
            &["fusevol", "volume", "resize", "v", "--size", "1G"],
            &["fusevol", "volume", "delete", "v"],
            &["fusevol", "snapshot", "list"],
            &["fusevol", "array", "list"],
            &["fusevol", "pool", "info"],
            &["fusevol", "sync"],
            &["fusevol", "check", "/p", "--json"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn parses_volume_delete_and_snapshot_commands() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
                .command
        };
        for (args, want) in [
            (&["fusevol", "volume", "delete", "v"][..], false),
            (&["fusevol", "volume", "delete", "v", "--recursive"], true),
            (&["fusevol", "volume", "delete", "-r", "v"], true),
        ] {
            match parse(args) {
                Command::Volume(VolumeCmd::Delete { name, recursive }) => {
                    assert_eq!(name, "v", "{args:?}");
                    assert_eq!(recursive, want, "{args:?}");
                }
                _ => panic!("wrong command: {args:?}"),
            }
        }
        match parse(&["fusevol", "snapshot", "create", "v0", "s1"]) {
            Command::Snapshot(SnapshotCmd::Create { volume, name }) => {
                assert_eq!((volume.as_str(), name.as_str()), ("v0", "s1"));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "snapshot", "list"]) {
            Command::Snapshot(SnapshotCmd::List { volume }) => assert_eq!(volume, None),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "--json", "snapshot", "list", "v0"]) {
            Command::Snapshot(SnapshotCmd::List { volume }) => {
                assert_eq!(volume.as_deref(), Some("v0"))
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "snapshot", "delete", "v0", "s1", "-p", "/p"]) {
            Command::Snapshot(SnapshotCmd::Delete { volume, name }) => {
                assert_eq!((volume.as_str(), name.as_str()), ("v0", "s1"));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "snapshot", "rollback", "v0", "s1"]) {
            Command::Snapshot(SnapshotCmd::Rollback { volume, name }) => {
                assert_eq!((volume.as_str(), name.as_str()), ("v0", "s1"));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "snapshot", "clone", "v0", "s1", "v1"]) {
            Command::Snapshot(SnapshotCmd::Clone {
                volume,
                name,
                new_volume,
            }) => {
                assert_eq!(
                    (volume.as_str(), name.as_str(), new_volume.as_str()),
                    ("v0", "s1", "v1")
                );
            }
            _ => panic!("wrong command"),
        }
    }

    #[test]
    fn rejects_bad_snapshot_usage() {
        for args in [
            &["fusevol", "snapshot"][..],
            &["fusevol", "snapshot", "create", "v0"],
            &["fusevol", "snapshot", "create", "v0", "s1", "extra"],
            &["fusevol", "snapshot", "list", "v0", "v1"],
            &["fusevol", "snapshot", "delete", "v0"],
            &["fusevol", "snapshot", "rollback", "v0"],
            &["fusevol", "snapshot", "clone", "v0", "s1"],
            &["fusevol", "snapshot", "frobnicate"],
            &["fusevol", "volume", "delete", "v", "--recursive=maybe"],
            &["fusevol", "volume", "delete"],
        ] {
            let err = Cli::try_parse_from(args).err().expect("must fail");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn snapshot_table_lists_in_the_given_order() {
        let snap = |volume: &str, name: &str, created, exclusive| SnapshotInfo {
            id: 0,
            volume: volume.into(),
            name: name.into(),
            created,
            size: 1 << 30,
            exclusive,
            shared: 1 << 20,
            path: format!("/m/.snapshots/{volume}/{name}"),
        };
        let out = snapshot_table(&[
            snap("vm1", "old", 0, 0),
            snap("vm10", "new", 1_700_000_000, 3 << 20),
        ]);
        let (gib, mib, three_mib, zero) = (
            format_size(1 << 30),
            format_size(1 << 20),
            format_size(3 << 20),
            format_size(0),
        );
        let expected = table(
            &[
                ("VOLUME", L),
                ("SNAPSHOT", L),
                ("CREATED", L),
                ("SIZE", R),
                ("EXCLUSIVE", R),
                ("SHARED", R),
            ],
            vec![
                vec![
                    "vm1".into(),
                    "old".into(),
                    "1970-01-01 00:00:00 UTC".into(),
                    gib.clone(),
                    zero,
                    mib.clone(),
                ],
                vec![
                    "vm10".into(),
                    "new".into(),
                    "2023-11-14 22:13:20 UTC".into(),
                    gib,
                    three_mib,
                    mib,
                ],
            ],
        );
        assert_eq!(out, expected);
        assert!(out.starts_with("VOLUME  SNAPSHOT  CREATED "), "{out}");
    }

    #[test]
    fn rejects_bad_usage() {
        for args in [
            &["fusevol", "volume", "create", "v"][..],
            &["fusevol", "volume", "create", "v", "--size", "12X"],
            &["fusevol", "volume", "frobnicate"],
            &["fusevol", "init", "/p", "--extent-size", "lots"],
        ] {
            let err = Cli::try_parse_from(args).err().expect("must fail");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn exit_codes() {
        let code = |r: Result<(), Failure>| format!("{:?}", exit_code(&r));
        let body = ErrorBody {
            code: fusevol::control::ErrorCode::NotFound,
            message: "x".into(),
        };
        assert_eq!(code(Ok(())), format!("{:?}", ExitCode::from(0)));
        assert_eq!(
            code(Err(Failure::Daemon(body))),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(Err(Failure::Unclean { problems: 2 })),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(Err(Failure::Usage("u".into()))),
            format!("{:?}", ExitCode::from(2))
        );
        let unreachable = ClientError::NoDaemon { pool: "/p".into() };
        assert_eq!(
            code(Err(Failure::Unreachable(unreachable))),
            format!("{:?}", ExitCode::from(3))
        );
        assert_eq!(
            code(Err(Failure::Local("l".into()))),
            format!("{:?}", ExitCode::from(4))
        );
    }

    #[test]
    fn tables_align() {
        let out = table(
            &[("NAME", L), ("SIZE", R), ("TIER", L)],
            vec![
                vec!["a".into(), "4.0 GiB".into(), "fast".into()],
                vec!["longname".into(), "17 B".into(), "s".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         SIZE  TIER\n\
             a         4.0 GiB  fast\n\
             longname     17 B  s\n"
        );
    }

    #[test]
    fn formats_times_and_percentages() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(1, 0), "-");
    }
}
