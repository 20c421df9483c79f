//! `fusevol` — the command-line interface to a fusevol pool.
//!
//! `init` and `check` work on the pool files directly (no daemon); every other command sends
//! one request to the `fusevold` serving the pool, through `<POOL>/control.sock`.
//!
//! Output: text for people (aligned tables, human sizes; warnings on stderr), or with `--json`
//! the answer's `data` on stdout for scripts. Exit codes are decided in one place,
//! [`exit_code`], and documented in `--help`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use fusevol::control::client::error_code_name;
use fusevol::control::protocol::SnapshotInfo;
use fusevol::control::{
    ArrayInfo, Client, ClientError, ErrorBody, ErrorCode, PairInfo, PoolInfo, Request, VolumeInfo,
};
use fusevol::units::{format_size, parse_size};

const AFTER_HELP: &str = "\
Exit status: 0 ok, 1 the daemon refused the request (or check found problems), 2 usage error, \
3 cannot reach the daemon, 4 local error, 5 a pair wait timed out, 6 the pair is PSUE. \
See --help for details.";

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
  no_daemon, connect, timeout, connection, closed, bad_response, usage, local, wait_timeout,
  pair_suspended, pair_changed.

PAIRS
  A pair is a local split mirror: the S-VOL follows the P-VOL (states COPY, then PAIR) until it
  is split (PSUS) and keeps the P-VOL's image of that instant; resync copies only what changed
  (COPY(RS), or COPY(RS-R) to restore the P-VOL from the S-VOL). PSUE: suspended by an error.
  Rates are bytes per second with size units: --rate 200M = 200 MiB/s. `pair create --wait` and
  `pair resync --wait` show the copy's progress until the pair is PAIR; a steady `pair split`
  waits for the copy inside the daemon, with no answer timeout unless --timeout is given.

EXIT STATUS
  0  success
  1  the daemon reported an error (any error code), or `check` found problems, or the pair
     was split or deleted by another command during `--wait`
  2  usage error: bad or missing arguments (including a bad --array spec), no pool given
  3  cannot reach the daemon: no control socket, connection refused or lost, timeout,
     unintelligible answer
  4  local error: `init` or `check` could not do their work (pool exists, I/O, not a pool)
  5  `pair wait` timed out before the pair reached the state
  6  the pair is PSUE (suspended by an error) while `pair wait` or `--wait` waited for
     another state

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
  fusevol pair create vm1 vm1-bk --create-svol --svol-tier slow --rate 200M --wait
  fusevol pair split vm1         # vm1-bk keeps vm1's image of this instant (read-only)
  fusevol pair status
  fusevol pair resync vm1 --wait # copy only what changed since the split, back to PAIR
  fusevol pair wait vm1 --state PAIR --timeout 3600
  fusevol check /srv/pool        # with fusevold stopped";

/// Manage a fusevol storage pool: arrays, volumes, snapshots and the daemon serving them.
#[derive(Parser)]
#[command(
    name = "fusevol",
    version,
    about = "Manage a fusevol storage pool: arrays, volumes, snapshots, pairs and the daemon \
        serving them",
    long_about = "Manage a fusevol storage pool: arrays, volumes, snapshots, pairs (split \
        mirrors) and the daemon serving them.\n\n\
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

    /// Seconds to wait for the daemon's answer (0: wait forever) [default: 600; a steady
    /// `pair split`: forever]
    #[arg(long, global = true, value_name = "SECS")]
    timeout: Option<u64>,

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
    /// Pair volumes as split mirrors: create, split, resync, delete, status, wait
    ///
    /// A pair mirrors a P-VOL onto an S-VOL inside the pool. States: COPY (initial copy
    /// running), PAIR (mirrored: writes go to both), PSUS (split: the S-VOL keeps the P-VOL's
    /// image of the split instant, read-only), COPY(RS) (resync P-VOL to S-VOL, changed regions
    /// only), COPY(RS-R) (restore: S-VOL to P-VOL), PSUE (suspended by an error); an unpaired
    /// volume is SMPL.
    #[command(subcommand)]
    Pair(PairCmd),
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

#[derive(Subcommand)]
enum PairCmd {
    /// Pair PVOL with SVOL (at least as large) and start the initial copy (state COPY)
    Create {
        /// The P-VOL: the volume to mirror
        #[arg(value_name = "PVOL")]
        pvol: String,
        /// The S-VOL: the mirror; its content is overwritten
        #[arg(value_name = "SVOL")]
        svol: String,
        /// Create SVOL, as large as PVOL
        #[arg(long)]
        create_svol: bool,
        /// Tier of the S-VOL created with --create-svol [default: the pool's choice]
        #[arg(long, value_name = "TIER", requires = "create_svol")]
        svol_tier: Option<String>,
        /// Put the pair in this group (a group is split at one instant)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Copy rate limit per second, e.g. 200M = 200 MiB/s [default: the daemon's]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        rate: Option<u64>,
        /// Show the copy's progress and return when the pair is PAIR (exit 6 if it is PSUE)
        #[arg(long)]
        wait: bool,
    },
    /// Split pairs at one instant: named P-VOLs and/or a whole group (state PSUS)
    ///
    /// Steady (default): the daemon waits until every pair is PAIR, then splits; there is no
    /// answer timeout unless --timeout is given. Quick: splits at once; the rest of the copy
    /// runs in the background and the S-VOL only ever shows the split-time image.
    Split {
        /// P-VOLs of the pairs to split
        #[arg(value_name = "PVOL", required_unless_present = "group")]
        pvols: Vec<String>,
        /// Split every pair of this group
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Split at once, without waiting for the copy to finish
        #[arg(long)]
        quick: bool,
    },
    /// Resynchronize a split or suspended pair, copying only changed regions
    Resync {
        /// The P-VOL of the pair
        #[arg(value_name = "PVOL")]
        pvol: String,
        /// Copy S-VOL to P-VOL instead (COPY(RS-R)): return the P-VOL to the split-time image
        #[arg(long)]
        restore: bool,
        /// Copy rate limit per second, e.g. 200M = 200 MiB/s [default: the daemon's]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        rate: Option<u64>,
        /// Show the copy's progress and return when the pair is PAIR (exit 6 if it is PSUE)
        #[arg(long)]
        wait: bool,
    },
    /// Dissolve a pair (both volumes become SMPL and keep their data)
    Delete {
        /// The P-VOL of the pair
        #[arg(value_name = "PVOL")]
        pvol: String,
    },
    /// Show pairs, all or the one of PVOL: state, copy progress, bytes left, rate, differences
    ///
    /// LEFT is what the running copy still has to copy; DIFF is what changed on either side
    /// since the split (what a resync or restore copies).
    Status {
        /// Only the pair of this P-VOL [default: all pairs]
        #[arg(value_name = "PVOL")]
        pvol: Option<String>,
    },
    /// Wait until a pair reaches a state (exit 5 on timeout, 6 if the pair is PSUE)
    Wait {
        /// The P-VOL of the pair
        #[arg(value_name = "PVOL")]
        pvol: String,
        /// State to wait for: SMPL (no pair), COPY, PAIR, PSUS, COPY(RS) or COPY-RS,
        /// COPY(RS-R) or COPY-RS-R, PSUE; case-insensitive
        #[arg(long, value_name = "STATE", value_parser = parse_pair_state)]
        state: String,
        /// Give up after SECS seconds (exit 5); 0: wait forever [default: wait forever]
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
}

/// Pair state names as the daemon reports them; SMPL is a volume without a pair.
const PAIR_STATES: [&str; 7] = [
    "SMPL",
    "COPY",
    "PAIR",
    "PSUS",
    "COPY(RS)",
    "COPY(RS-R)",
    "PSUE",
];

/// A state name as typed (any case; `COPY-RS`, `COPY-RS-R` for the parenthesized names) as the
/// daemon spells it.
fn parse_pair_state(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase().replace('_', "-");
    let name = match upper.as_str() {
        "COPY-RS" => "COPY(RS)",
        "COPY-RS-R" => "COPY(RS-R)",
        other => other,
    };
    PAIR_STATES
        .iter()
        .find(|s| **s == name)
        .map(|s| s.to_string())
        .ok_or_else(|| {
            format!(
                "unknown pair state '{text}' (expected one of {}; or COPY-RS, COPY-RS-R)",
                PAIR_STATES.join(", ")
            )
        })
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
    /// `pair wait` gave up: the pair did not reach the state in time.
    WaitTimeout(String),
    /// The pair is PSUE while waiting for another state.
    PairSuspended(String),
    /// `--wait`: the pair was split or deleted meanwhile and will not reach PAIR.
    PairChanged(String),
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
        Err(Failure::Daemon(_) | Failure::Unclean { .. } | Failure::PairChanged(_)) => 1,
        Err(Failure::Usage(_)) => 2,
        Err(Failure::Unreachable(_)) => 3,
        Err(Failure::Local(_)) => 4,
        Err(Failure::WaitTimeout(_)) => 5,
        Err(Failure::PairSuspended(_)) => 6,
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
        Failure::WaitTimeout(msg) => ("wait_timeout", msg.clone()),
        Failure::PairSuspended(msg) => ("pair_suspended", msg.clone()),
        Failure::PairChanged(msg) => ("pair_changed", msg.clone()),
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
#[derive(Clone)]
struct Ctx {
    pool: Option<PathBuf>,
    json: bool,
    /// Answer timeout (`Duration::ZERO`: none).
    timeout: Duration,
    /// --timeout as given, if it was.
    timeout_given: Option<u64>,
}

/// The answer timeout when --timeout is not given.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// How often `pair wait` and `--wait` ask for the pair's state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

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
        timeout: Duration::from_secs(cli.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
        timeout_given: cli.timeout,
    };
    match cli.command {
        Command::Init(args) => init(&ctx, args),
        Command::Check(args) => check(&ctx, args),
        Command::Array(cmd) => array(&ctx, cmd),
        Command::Pool(PoolCmd::Info) => ctx.request(Request::PoolInfo, show_pool),
        Command::Volume(cmd) => volume(&ctx, cmd),
        Command::Snapshot(cmd) => snapshot(&ctx, cmd),
        Command::Pair(cmd) => pair(&ctx, cmd),
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

fn pair(ctx: &Ctx, cmd: PairCmd) -> Result<(), Failure> {
    match cmd {
        PairCmd::Create {
            pvol,
            svol,
            create_svol,
            svol_tier,
            group,
            rate,
            wait,
        } => {
            let req = Request::PairCreate {
                pvol,
                svol,
                create_svol,
                svol_tier,
                group,
                rate,
            };
            pair_change(ctx, req, wait, |p| {
                let group = match &p.group {
                    Some(g) => format!(" in group {g}"),
                    None => String::new(),
                };
                format!(
                    "paired volume {} (P-VOL) with {} (S-VOL){group}: {}, {} to copy{}",
                    p.pvol,
                    p.svol,
                    p.state,
                    format_size(p.bytes_left),
                    rate_limit_text(p.rate_limit)
                )
            })
        }
        PairCmd::Split {
            pvols,
            group,
            quick,
        } => {
            if pvols.is_empty() && group.is_none() {
                return Err(Failure::Usage(
                    "pair split needs at least one PVOL or --group NAME".into(),
                ));
            }
            let req = Request::PairSplit {
                pvols,
                group,
                quick,
            };
            let mut ctx = ctx.clone();
            if !quick && ctx.timeout_given.is_none() {
                // A steady split answers once the copies are done: no answer timeout.
                ctx.timeout = Duration::ZERO;
            }
            ctx.request(req, move |pairs: Vec<PairInfo>| show_split(&pairs, quick))
        }
        PairCmd::Resync {
            pvol,
            restore,
            rate,
            wait,
        } => {
            let req = Request::PairResync {
                pvol,
                restore,
                rate,
            };
            pair_change(ctx, req, wait, move |p| {
                let direction = if restore {
                    "restoring P-VOL from S-VOL"
                } else {
                    "resyncing S-VOL from P-VOL"
                };
                format!(
                    "{direction} of pair {} -> {}: {}, {} to copy{}",
                    p.pvol,
                    p.svol,
                    p.state,
                    format_size(p.bytes_left),
                    rate_limit_text(p.rate_limit)
                )
            })
        }
        PairCmd::Delete { pvol } => {
            let shown = format!("deleted the pair of volume {pvol}; both volumes keep their data");
            ctx.request(Request::PairDelete { pvol }, move |()| println!("{shown}"))
        }
        PairCmd::Status { pvol } => {
            let of = pvol.clone();
            ctx.request(
                Request::PairStatus { pvol },
                move |pairs: Vec<PairInfo>| match (&of, pairs.is_empty()) {
                    (Some(vol), true) => println!("volume {vol} is not paired (SMPL)"),
                    (None, true) => println!("no pairs"),
                    _ => print!("{}", pair_table(&pairs)),
                },
            )
        }
        PairCmd::Wait {
            pvol,
            state,
            timeout,
        } => {
            // `--timeout` after `wait` is this one; before `pair` it is the global one, which
            // then bounds the wait as well.
            let limit = timeout.or(ctx.timeout_given).filter(|&secs| secs > 0);
            pair_wait(ctx, &pvol, &state, limit)
        }
    }
}

/// Send a request answering `PairInfo` (create, resync). Without `wait`, show the answer; with
/// it, follow the copy (a progress bar when stdout is a terminal and not `--json`) until the
/// pair is PAIR and show the final status.
fn pair_change(
    ctx: &Ctx,
    req: Request,
    wait: bool,
    describe: impl FnOnce(&PairInfo) -> String,
) -> Result<(), Failure> {
    if !wait {
        return ctx.request(req, |p: PairInfo| println!("{}", describe(&p)));
    }
    let mut client = ctx.client()?;
    let (first, warnings) = client.call_ok::<PairInfo>(&req)?;
    print_warnings(&warnings);
    if !ctx.json {
        println!("{}", describe(&first));
    }
    let bar = (!ctx.json && std::io::stdout().is_terminal()).then(|| progress_bar(&first));
    let outcome = follow_copy(&mut client, first, bar.as_ref());
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let last = outcome?;
    if ctx.json {
        print_json(&serde_json::to_value(&last).unwrap_or(Value::Null));
    } else {
        print!("{}", pair_table(std::slice::from_ref(&last)));
    }
    Ok(())
}

/// Poll the pair until it is PAIR; PSUE, a split or a delete meanwhile end the wait.
fn follow_copy(
    client: &mut Client,
    mut info: PairInfo,
    bar: Option<&ProgressBar>,
) -> Result<PairInfo, Failure> {
    let pvol = info.pvol.clone();
    loop {
        if let Some(bar) = bar {
            update_bar(bar, &info);
        }
        match info.state.as_str() {
            "PAIR" => return Ok(info),
            "PSUE" => return Err(Failure::PairSuspended(suspended_message(&info))),
            "COPY" | "COPY(RS)" | "COPY(RS-R)" => {}
            other => {
                return Err(Failure::PairChanged(format!(
                    "pair {pvol} is {other} (split by another command?) and will not reach PAIR"
                )))
            }
        }
        std::thread::sleep(POLL_INTERVAL);
        info = fetch_pair(client, &pvol)?.ok_or_else(|| {
            Failure::PairChanged(format!(
                "pair {pvol} was deleted by another command before reaching PAIR"
            ))
        })?;
    }
}

/// `pair wait`: poll until the pair of `pvol` is in `want` (SMPL: no pair).
fn pair_wait(ctx: &Ctx, pvol: &str, want: &str, limit: Option<u64>) -> Result<(), Failure> {
    let mut client = ctx.client()?;
    let start = Instant::now();
    let deadline = limit.map(|secs| start + Duration::from_secs(secs));
    loop {
        let info = match fetch_pair(&mut client, pvol) {
            Ok(info) => info,
            // Waiting for a pair to go away: a volume the daemon does not know has no pair.
            Err(ClientError::Daemon(body))
                if body.code == ErrorCode::NotFound && want == "SMPL" =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let state = info.as_ref().map_or("SMPL", |p| p.state.as_str());
        if state == want {
            if ctx.json {
                print_json(&serde_json::to_value(&info).unwrap_or(Value::Null));
            } else {
                println!("pair {pvol} is {state}");
            }
            return Ok(());
        }
        if let Some(p) = info.as_ref().filter(|p| p.state == "PSUE") {
            return Err(Failure::PairSuspended(format!(
                "{} (waiting for {want})",
                suspended_message(p)
            )));
        }
        let now = Instant::now();
        if let (Some(deadline), Some(secs)) = (deadline, limit) {
            if now >= deadline {
                return Err(Failure::WaitTimeout(format!(
                    "timed out after {secs} s waiting for pair {pvol} to reach {want} (it is {state})"
                )));
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        } else {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// The pair of `pvol`, or `None` if it has none.
fn fetch_pair(client: &mut Client, pvol: &str) -> Result<Option<PairInfo>, ClientError> {
    let (pairs, _warnings) = client.call_ok::<Vec<PairInfo>>(&Request::PairStatus {
        pvol: Some(pvol.to_string()),
    })?;
    Ok(pairs.into_iter().find(|p| p.pvol == pvol))
}

fn suspended_message(p: &PairInfo) -> String {
    format!(
        "pair {} is PSUE (suspended by an error): {}",
        p.pvol,
        p.error.as_deref().unwrap_or("no error reported")
    )
}

fn progress_bar(info: &PairInfo) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix} {elapsed:>4} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} -> {}", info.pvol, info.svol));
    update_bar(&bar, info);
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

fn update_bar(bar: &ProgressBar, info: &PairInfo) {
    bar.set_position((info.progress.clamp(0.0, 100.0) * 10.0).round() as u64);
    bar.set_message(progress_text(info));
}

/// `COPY  42.0%  1.2 GiB left  120.0 MiB/s`
fn progress_text(info: &PairInfo) -> String {
    format!(
        "{} {:5.1}%  {} left  {}",
        info.state,
        info.progress,
        format_size(info.bytes_left),
        format_rate(info.rate)
    )
}

fn show_split(pairs: &[PairInfo], quick: bool) {
    if pairs.is_empty() {
        println!("no pairs to split");
        return;
    }
    let how = if quick {
        "; the S-VOLs show the split-time image while the copy completes in the background"
    } else {
        ""
    };
    println!(
        "split {} pair{} at one instant{how}",
        pairs.len(),
        if pairs.len() == 1 { "" } else { "s" }
    );
    print!("{}", pair_table(pairs));
}

fn pair_table(pairs: &[PairInfo]) -> String {
    let rows = pairs
        .iter()
        .map(|p| {
            let mut notes = Vec::new();
            if let Some(e) = &p.error {
                notes.push(e.clone());
            }
            if p.quick_split_copying {
                notes.push("quick split copying".to_string());
            }
            if !p.separate_arrays {
                notes.push("S-VOL shares arrays with P-VOL".to_string());
            }
            vec![
                p.pvol.clone(),
                p.svol.clone(),
                p.group.clone().unwrap_or_else(|| "-".into()),
                p.state.clone(),
                format!("{:.1}%", p.progress),
                format_size(p.bytes_left),
                if p.rate == 0 {
                    "-".into()
                } else {
                    format_rate(p.rate)
                },
                format_size(p.diff_bytes),
                notes.join("; "),
            ]
        })
        .collect();
    let header = [
        ("PVOL", L),
        ("SVOL", L),
        ("GROUP", L),
        ("STATE", L),
        ("PROGRESS", R),
        ("LEFT", R),
        ("RATE", R),
        ("DIFF", R),
        ("NOTE", L),
    ];
    table(&header, rows)
}

/// ` at up to 200.0 MiB/s`, or nothing without a limit.
fn rate_limit_text(limit: u64) -> String {
    if limit == 0 {
        String::new()
    } else {
        format!(" at up to {}", format_rate(limit))
    }
}

/// Bytes per second for people: `120.0 MiB/s`.
fn format_rate(bytes_per_sec: u64) -> String {
    format!("{}/s", format_size(bytes_per_sec))
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
        assert_eq!(
            code(Err(Failure::PairChanged("c".into()))),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(Err(Failure::WaitTimeout("t".into()))),
            format!("{:?}", ExitCode::from(5))
        );
        assert_eq!(
            code(Err(Failure::PairSuspended("s".into()))),
            format!("{:?}", ExitCode::from(6))
        );
    }

    #[test]
    fn parses_pair_commands() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match parse(&[
            "fusevol",
            "pair",
            "create",
            "v0",
            "v0s",
            "--create-svol",
            "--svol-tier",
            "slow",
            "--group",
            "g1",
            "--rate",
            "200M",
            "--wait",
        ])
        .command
        {
            Command::Pair(PairCmd::Create {
                pvol,
                svol,
                create_svol,
                svol_tier,
                group,
                rate,
                wait,
            }) => {
                assert_eq!((pvol.as_str(), svol.as_str()), ("v0", "v0s"));
                assert!(create_svol && wait);
                assert_eq!(svol_tier.as_deref(), Some("slow"));
                assert_eq!(group.as_deref(), Some("g1"));
                assert_eq!(rate, Some(200 << 20));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "create", "v0", "v1"]).command {
            Command::Pair(PairCmd::Create {
                create_svol,
                svol_tier,
                group,
                rate,
                wait,
                ..
            }) => {
                assert!(!create_svol && !wait);
                assert_eq!((svol_tier, group, rate), (None, None, None));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "split", "v0", "v1", "--quick"]).command {
            Command::Pair(PairCmd::Split {
                pvols,
                group,
                quick,
            }) => {
                assert_eq!(pvols, vec!["v0", "v1"]);
                assert_eq!(group, None);
                assert!(quick);
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "split", "--group", "g1"]).command {
            Command::Pair(PairCmd::Split {
                pvols,
                group,
                quick,
            }) => {
                assert!(pvols.is_empty());
                assert_eq!(group.as_deref(), Some("g1"));
                assert!(!quick);
            }
            _ => panic!("wrong command"),
        }
        match parse(&[
            "fusevol",
            "pair",
            "resync",
            "v0",
            "--restore",
            "--rate",
            "1G",
        ])
        .command
        {
            Command::Pair(PairCmd::Resync {
                pvol,
                restore,
                rate,
                wait,
            }) => {
                assert_eq!(pvol, "v0");
                assert!(restore && !wait);
                assert_eq!(rate, Some(1 << 30));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "resync", "v0", "--wait"]).command {
            Command::Pair(PairCmd::Resync {
                restore,
                rate,
                wait,
                ..
            }) => {
                assert!(!restore && wait);
                assert_eq!(rate, None);
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "delete", "v0"]).command {
            Command::Pair(PairCmd::Delete { pvol }) => assert_eq!(pvol, "v0"),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "status"]).command {
            Command::Pair(PairCmd::Status { pvol }) => assert_eq!(pvol, None),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "--json", "pair", "status", "v0"]).command {
            Command::Pair(PairCmd::Status { pvol }) => assert_eq!(pvol.as_deref(), Some("v0")),
            _ => panic!("wrong command"),
        }
        // No timeout: wait forever; the global answer timeout stays unset.
        let cli = parse(&["fusevol", "pair", "wait", "v0", "--state", "copy-rs-r"]);
        assert_eq!(cli.timeout, None);
        match cli.command {
            Command::Pair(PairCmd::Wait {
                pvol,
                state,
                timeout,
            }) => {
                assert_eq!(pvol, "v0");
                assert_eq!(state, "COPY(RS-R)");
                assert_eq!(timeout, None);
            }
            _ => panic!("wrong command"),
        }
        let cli = parse(&[
            "fusevol",
            "pair",
            "wait",
            "v0",
            "--state",
            "PAIR",
            "--timeout",
            "30",
        ]);
        assert_eq!(
            cli.timeout,
            Some(30),
            "the wait's limit bounds each answer too"
        );
        match cli.command {
            Command::Pair(PairCmd::Wait { state, timeout, .. }) => {
                assert_eq!(state, "PAIR");
                assert_eq!(timeout, Some(30));
            }
            _ => panic!("wrong command"),
        }
        // Before the subcommand, --timeout is the same option.
        let cli = parse(&[
            "fusevol",
            "--timeout",
            "7",
            "pair",
            "wait",
            "v0",
            "--state",
            "psus",
        ]);
        assert_eq!(cli.timeout, Some(7));
        match cli.command {
            Command::Pair(PairCmd::Wait { state, timeout, .. }) => {
                assert_eq!(state, "PSUS");
                assert_eq!(timeout, Some(7));
            }
            _ => panic!("wrong command"),
        }
        let cli = parse(&["fusevol", "pair", "split", "v0", "--timeout", "9"]);
        assert_eq!(cli.timeout, Some(9));
        assert_eq!(parse(&["fusevol", "volume", "list"]).timeout, None);
    }

    #[test]
    fn rejects_bad_pair_usage() {
        for args in [
            &["fusevol", "pair"][..],
            &["fusevol", "pair", "create", "v0"],
            &["fusevol", "pair", "create", "v0", "v1", "--rate", "fast"],
            &[
                "fusevol",
                "pair",
                "create",
                "v0",
                "v1",
                "--svol-tier",
                "slow",
            ],
            &["fusevol", "pair", "split"],
            &["fusevol", "pair", "split", "--quick"],
            &["fusevol", "pair", "resync"],
            &["fusevol", "pair", "resync", "v0", "--rate", "12X"],
            &["fusevol", "pair", "delete"],
            &["fusevol", "pair", "delete", "v0", "v1"],
            &["fusevol", "pair", "status", "v0", "v1"],
            &["fusevol", "pair", "wait", "v0"],
            &["fusevol", "pair", "wait", "--state", "PAIR"],
            &["fusevol", "pair", "wait", "v0", "--state", "SPLIT"],
            &[
                "fusevol",
                "pair",
                "wait",
                "v0",
                "--state",
                "PAIR",
                "--timeout",
                "soon",
            ],
            &["fusevol", "pair", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(args).err().expect("must fail");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn normalizes_pair_state_names() {
        for (input, want) in [
            ("SMPL", "SMPL"),
            ("smpl", "SMPL"),
            ("copy", "COPY"),
            ("Pair", "PAIR"),
            ("psus", "PSUS"),
            ("PSUE", "PSUE"),
            ("COPY(RS)", "COPY(RS)"),
            ("copy(rs)", "COPY(RS)"),
            ("COPY-RS", "COPY(RS)"),
            ("copy-rs", "COPY(RS)"),
            ("copy_rs", "COPY(RS)"),
            ("COPY(RS-R)", "COPY(RS-R)"),
            ("copy(rs-r)", "COPY(RS-R)"),
            ("COPY-RS-R", "COPY(RS-R)"),
            ("copy-rs-r", "COPY(RS-R)"),
            (" pair ", "PAIR"),
        ] {
            assert_eq!(parse_pair_state(input).as_deref(), Ok(want), "{input}");
        }
        for bad in [
            "",
            "SPLIT",
            "COPY(RS",
            "COPY-R",
            "COPYRS",
            "PAIRED",
            "COPY(RS)-R",
        ] {
            let err = parse_pair_state(bad).expect_err(bad);
            assert!(err.contains("unknown pair state"), "{bad}: {err}");
        }
        // Every name the daemon reports parses to itself.
        for state in PAIR_STATES {
            assert_eq!(parse_pair_state(state).as_deref(), Ok(state));
        }
    }

    #[test]
    fn pair_table_shows_progress_rates_and_notes() {
        let pair = |pvol: &str, state: &str| PairInfo {
            id: 1,
            pvol: pvol.into(),
            svol: format!("{pvol}s"),
            group: None,
            state: state.into(),
            progress: 100.0,
            bytes_left: 0,
            rate: 0,
            rate_limit: 200 << 20,
            diff_bytes: 0,
            quick_split_copying: false,
            separate_arrays: true,
            error: None,
        };
        let copying = PairInfo {
            group: Some("g1".into()),
            progress: 42.25,
            bytes_left: 3 << 30,
            rate: 120 << 20,
            ..pair("vm1", "COPY")
        };
        let split = PairInfo {
            diff_bytes: 5 << 20,
            quick_split_copying: true,
            separate_arrays: false,
            ..pair("vm2", "PSUS")
        };
        let broken = PairInfo {
            error: Some("I/O error on array a1".into()),
            ..pair("vm3", "PSUE")
        };
        let out = pair_table(&[copying, split, broken]);
        let expected = table(
            &[
                ("PVOL", L),
                ("SVOL", L),
                ("GROUP", L),
                ("STATE", L),
                ("PROGRESS", R),
                ("LEFT", R),
                ("RATE", R),
                ("DIFF", R),
                ("NOTE", L),
            ],
            vec![
                vec![
                    "vm1".into(),
                    "vm1s".into(),
                    "g1".into(),
                    "COPY".into(),
                    "42.2%".into(),
                    "3.0 GiB".into(),
                    "120.0 MiB/s".into(),
                    "0 B".into(),
                    String::new(),
                ],
                vec![
                    "vm2".into(),
                    "vm2s".into(),
                    "-".into(),
                    "PSUS".into(),
                    "100.0%".into(),
                    "0 B".into(),
                    "-".into(),
                    "5.0 MiB".into(),
                    "quick split copying; S-VOL shares arrays with P-VOL".into(),
                ],
                vec![
                    "vm3".into(),
                    "vm3s".into(),
                    "-".into(),
                    "PSUE".into(),
                    "100.0%".into(),
                    "0 B".into(),
                    "-".into(),
                    "0 B".into(),
                    "I/O error on array a1".into(),
                ],
            ],
        );
        assert_eq!(out, expected);
        assert!(
            out.starts_with("PVOL  SVOL  GROUP  STATE  PROGRESS "),
            "{out}"
        );
        assert_eq!(format_rate(120 << 20), "120.0 MiB/s");
        assert_eq!(rate_limit_text(0), "");
        assert_eq!(rate_limit_text(200 << 20), " at up to 200.0 MiB/s");
        let copying = PairInfo {
            progress: 42.0,
            bytes_left: 3 << 30,
            rate: 120 << 20,
            ..pair("vm1", "COPY")
        };
        assert_eq!(
            progress_text(&copying),
            "COPY  42.0%  3.0 GiB left  120.0 MiB/s"
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
