//! The command line: clap definitions of every command, their help texts and parsers.
//! The pair commands are defined in [`pair`], the group commands in [`group`].

mod group;
mod pair;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use fusevol::units::parse_size;

pub(crate) use group::GroupCmd;
pub(crate) use pair::PairCmd;

const AFTER_HELP: &str = "\
Exit status: 0 ok, 1 the daemon refused the request (or check found problems), 2 usage error, \
3 cannot reach the daemon, 4 local error, 5 a pair or group wait timed out, 6 the pair is PSUE. \
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

GROUPS
  A journal group replicates its volumes asynchronously to another pool through a remote
  directory: `group create` on the primary, `group attach` on the secondary. `group status`
  shows the sequence numbers (written, sealed, shipped, applied, acknowledged), the lag in
  records, bytes and seconds, the journal's use and whether the secondary image is consistent.
  `group wait` waits on the pool's events until --applied SEQ, --consistent or --caught-up
  (exit 5 on timeout, 1 at once if the group is in state error).
  A secondary can keep applied segments (`--retain-secs`, `--retain-size`) and rebuild the
  group's volumes as of a sequence number or time with `group restore-to` (no answer timeout
  unless --timeout is given); `--apply-delay` keeps its image a set time behind.

EXIT STATUS
  0  success
  1  the daemon reported an error (any error code), or `check` found problems, or the pair
     was split or deleted by another command during `--wait`
  2  usage error: bad or missing arguments (including a bad --array spec), no pool given
  3  cannot reach the daemon: no control socket, connection refused or lost, timeout,
     unintelligible answer
  4  local error: `init` or `check` could not do their work (pool exists, I/O, not a pool)
  5  `pair wait` timed out before the pair reached the state, or `group wait` before the
     group reached its goal
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
  fusevol group create g1 --volumes vm1,vm2 --remote /mnt/shared/repl   # on the primary
  fusevol group attach g1 --remote /mnt/shared/repl   # on the secondary's pool
  fusevol group status g1
  fusevol group wait g1 --caught-up --timeout 600
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
pub(crate) struct Cli {
    /// Pool directory served by fusevold
    #[arg(
        short = 'p',
        long,
        env = "FUSEVOL_POOL",
        global = true,
        value_name = "POOL"
    )]
    pub(crate) pool: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (data, or {"error":{...}})
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Seconds to wait for the daemon's answer (0: wait forever) [default: 600; a steady
    /// `pair split` and `group restore-to`: forever]
    #[arg(long, global = true, value_name = "SECS")]
    pub(crate) timeout: Option<u64>,

    /// Who is acting: the owner `lock`/`unlock` take and release; changing commands pass the
    /// locks this owner holds (others are refused while an object is locked)
    #[arg(long, global = true, env = "FUSEVOL_OWNER", value_name = "NAME")]
    pub(crate) owner: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Replicate volumes to another pool through a remote directory: journal groups
    ///
    /// The primary journals every write to the group's volumes and ships sealed journal
    /// segments to <DIR>/<GROUP>/; the secondary applies them in order and acknowledges.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Show the pool's events: what the ring holds, then (with --follow) live ones
    ///
    /// Every state change is an event with a pool-wide sequence number: volumes and snapshots
    /// created, resized, deleted, rolled back; pair states (with PSUE's reason) and copies
    /// started and finished; group changes (created, attached, initial copy done, error,
    /// suspended, resync, takeover, failback); the pool out of space; the daemon started and
    /// stopping. The ring survives restarts (POOL/events.jsonl, `fusevold --event-ring N`).
    /// --json prints one JSON object per line, each with "seq".
    Events {
        /// Keep printing events as they happen
        #[arg(long)]
        follow: bool,
        /// Only events after sequence number SEQ (the last one you saw); a warning says
        /// when some of those were already dropped from the ring
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Host I/O of volumes: requests and bytes per second, latency p50/p99/max, discards,
    /// errors by kind; and the I/O of the array files
    ///
    /// Counted for every read, write and discard through the mount since the daemon started.
    /// Rates are over the run time, or with --watch over each interval (like `iostat -x`);
    /// latencies (milliseconds) are since the start. Without VOL a second table shows what
    /// the daemon read from and wrote to each array file (host I/O, copy-on-write, pair
    /// copies, destage: all of it), in-kernel copies and fdatasyncs. --json prints the raw
    /// counters of the volumes (with --arrays: of the arrays).
    Stats {
        /// Only this volume [default: all]
        #[arg(value_name = "VOL", conflicts_with = "arrays")]
        volume: Option<String>,
        /// Only the arrays' I/O
        #[arg(long)]
        arrays: bool,
        /// Print again every SECS seconds, with the rates of that interval
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Change what the daemon exports over NBD at run time (needs fusevold --nbd)
    ///
    /// With --nbd every volume and snapshot is exported; `remove` hides one from new clients
    /// (open connections finish), `add` exports it again, optionally read-only. The table is
    /// runtime-only: a restarted daemon exports everything again.
    #[command(subcommand, name = "export-nbd")]
    ExportNbd(ExportNbdCmd),
    /// The backup catalog: every snapshot, split S-VOL, clone, imported or replicated copy,
    /// oldest first, with its source, time, label, host, kind, size and the space it holds;
    /// `catalog rebuild` rebuilds the index from the volumes' own records
    Catalog(crate::backup::CatalogArgs),
    /// Backup schedules the daemon runs: snapshots every INTERVAL, labelled, pruned by
    /// retention rules (keep N, hourly, daily, weekly)
    #[command(subcommand)]
    Schedule(crate::schedule::ScheduleCmd),
    /// Several hosts: this node's view of the cluster (needs fusevold --cluster)
    ///
    /// Every node shows the same catalog (from etcd): nodes up or down, each volume's owner
    /// and whether it is available.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    // --- The operator's control plane (issue 15): locks, plan/apply, CCI aliases ---
    /// Take (or renew) an operation lock on a volume, pair or journal group (needs --owner)
    ///
    /// While it is held, every changing command on the object from anyone but its owner is
    /// refused (exit 1, naming the holder and since when); reads and host I/O go on. A lock on
    /// a volume also keeps pair and group commands off it. It ends with `unlock`, at --ttl, or
    /// when the daemon restarts. Changing commands given --owner NAME pass NAME's locks.
    Lock {
        /// VOL, `volume VOL`, `pair PVOL` or `group NAME`
        #[arg(value_name = "OBJECT", num_args = 1..=2, required = true)]
        target: Vec<String>,
        /// Seconds until the lock ends by itself [default: until unlocked]
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
    },
    /// Release an operation lock (by its --owner, or anyone with --force)
    Unlock {
        /// VOL, `volume VOL`, `pair PVOL` or `group NAME`
        #[arg(value_name = "OBJECT", num_args = 1..=2, required = true)]
        target: Vec<String>,
        /// Release a lock another owner holds
        #[arg(long)]
        force: bool,
    },
    /// List the operation locks held now
    Locks,
    /// Validate a change set (TOML or JSON) against the live pool(s) and print what would be
    /// created, changed or removed; changes nothing
    ///
    /// The file lists [[volume]] (name, size, tier, absent), [[pair]] (pvol, svol, svol_tier,
    /// group, rate, absent) and [[group]] (name, volumes, remote, secondary_pool, absent)
    /// entries; `pool = DIR` at the top or in an entry names the pool (default: -p). Exit 1
    /// with every problem listed when a pool does not validate it.
    Plan {
        /// The change set
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Execute a change set: every named pool must validate it first; each pool takes the
    /// locks, validates again and executes; on the first failure everything done is undone
    ///
    /// Entries that already hold are left alone, so applying a file twice changes nothing the
    /// second time. Removals run last and cannot be undone.
    Apply {
        /// The change set
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// CCI-style aliases of the pair commands, for array administrators
    ///
    /// paircreate = pair create, pairsplit = pair split, pairresync = pair resync,
    /// pairdisplay = pair status, pairevtwait = pair wait: the same arguments, options and exit
    /// codes. The same names work as argv[0] (a symlink named pairsplit to fusevol).
    #[command(subcommand)]
    Cci(CciCmd),
    /// Write a metadata checkpoint and flush all arrays to stable storage
    Sync,
    /// Check that a fusevold is serving the pool and answering
    Ping,
}

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Directory to create the pool in [default: -p/--pool or FUSEVOL_POOL]
    #[arg(value_name = "POOL")]
    pub(crate) pool_dir: Option<PathBuf>,

    /// An array to create, as NAME:SIZE[:TIER] (e.g. a0:16G:fast); repeat for more.
    /// Without any: three arrays of 4 GiB, tier fast
    #[arg(long = "array", value_name = "NAME:SIZE[:TIER]")]
    pub(crate) arrays: Vec<String>,

    /// Allocation unit of the pool, fixed at creation (e.g. 1M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) extent_size: Option<u64>,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// Pool directory to check [default: -p/--pool or FUSEVOL_POOL]
    #[arg(value_name = "POOL")]
    pub(crate) pool_dir: Option<PathBuf>,
    /// Repair: salvage a damaged log (keep its valid prefix, report the rest, keep the
    /// damaged log as meta.log.damaged-EPOCH) and rewrite damaged or missing metadata copies
    #[arg(long)]
    pub(crate) repair: bool,
}

#[derive(Subcommand)]
pub(crate) enum ArrayCmd {
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
pub(crate) enum PoolCmd {
    /// Show the pool's identity, mount point, capacity, use, provisioning and arrays
    Info,
    /// Confirm a salvage (`fusevold --recovery salvage`): the valid prefix becomes the
    /// pool's state, the damaged log is kept as meta.log.damaged-EPOCH, the daemon stops
    SalvageConfirm,
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// This node, its etcd connection and lease, and counts of nodes and volumes
    Status,
    /// Every node that joined: up or down, address, capacity, free space, load
    Nodes,
    /// The catalog: every volume of the cluster, its owner, and whether it is available;
    /// group snapshots held at two sites, and which site served this node's reads of them
    Volumes,
    /// This node's busy threshold or flag (readers of group snapshots go to the group's other
    /// site while the owner is busy)
    Set {
        /// Busy while the requests in flight at this node's arrays, averaged over 2 s, are
        /// above N
        #[arg(long, value_name = "N")]
        busy_above: Option<f64>,
        /// `on`: busy now (send readers elsewhere, e.g. for maintenance); `off`: never busy;
        /// `auto`: by the threshold
        #[arg(long, value_name = "on|off|auto", value_parser = parse_busy)]
        busy: Option<fusevol::cluster::load::BusyMode>,
    },
}

fn parse_busy(s: &str) -> Result<fusevol::cluster::load::BusyMode, String> {
    fusevol::cluster::load::BusyMode::parse(s)
        .ok_or_else(|| format!("'{s}': expected on, off or auto"))
}

#[derive(Subcommand)]
pub(crate) enum ExportNbdCmd {
    /// Export a volume or snapshot again (VOL or VOL@SNAP)
    Add {
        /// VOL or VOL@SNAP
        name: String,
        /// Export read-only even when the volume is writable
        #[arg(long)]
        read_only: bool,
    },
    /// Stop exporting a volume or snapshot to new clients (open connections finish)
    Remove {
        /// VOL or VOL@SNAP
        name: String,
    },
    /// List the exports with size, read-only and open connections
    List,
}

#[derive(Subcommand)]
pub(crate) enum VolumeCmd {
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
        /// In a cluster: make it on this node [default: placement by priority, free
        /// space in the tier, then load; this node first at equal priority]
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// In a cluster: build the volume from parts on several nodes (also done without
        /// it when no single node has the space)
        #[arg(long, conflicts_with = "node")]
        spread: bool,
    },
    /// In a cluster: give a volume a new global name (every node's mount shows it under
    /// the new name; its name in the owner's pool stays)
    Rename {
        /// Volume name now
        name: String,
        /// The new name
        new_name: String,
    },
    /// List all volumes with size, allocation and tier
    List,
    /// Show one volume in detail (extents per array, volume information), or get, set and
    /// unset its volume information (`volume info set VOL label=nightly host=db1`)
    Info(crate::backup::InfoArgs),
    /// Grow or shrink a volume (shrinking needs --allow-shrink and a closed volume file)
    Resize {
        /// Volume name
        name: String,
        /// New size
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: u64,
        /// Allow a smaller size: the data past the new end is destroyed
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Export a volume or snapshot as a self-describing stream (volume information, only
    /// the allocated extents with CRC32C, a checksummed trailer), or as a raw or qcow2 image
    Export {
        /// VOL or VOL@SNAP
        #[arg(value_name = "VOL[@SNAP]")]
        name: String,
        /// Output file, or - for stdout
        #[arg(value_name = "FILE|-")]
        file: String,
        /// Send only what changed since this older snapshot of the same volume (incremental)
        #[arg(long, value_name = "SNAP")]
        from: Option<String>,
        /// stream (default), raw or qcow2
        #[arg(long, value_enum, default_value = "stream")]
        format: crate::copy::ExportFormat,
    },
    /// Import an export stream into a new volume NAME (with its snapshot and volume
    /// information), or apply an incremental stream onto NAME, whose latest snapshot must
    /// be the stream's base. A damaged or cut stream is refused with nothing left behind
    Import {
        /// Stream file, or - for stdin
        #[arg(value_name = "FILE|-")]
        file: String,
        /// Volume to create (full stream) or to update (incremental stream)
        name: String,
    },
    /// Delete a volume and free its extents (refused while it has snapshots, unless --recursive)
    Delete {
        /// Volume name
        name: String,
        /// Delete the volume's snapshots first, then the volume
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// In a cluster, on the volume's owner: move the volume to another node (the data is
    /// copied while host I/O goes on, then the catalog names the new owner)
    Move {
        /// Volume name
        name: String,
        /// The node that will own it
        #[arg(long, value_name = "NODE")]
        node: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SnapshotCmd {
    /// Take a snapshot of a volume; it appears read-only as
    /// <MOUNTPOINT>/.snapshots/<VOL>/<SNAP>
    Create {
        /// Volume to snapshot
        #[arg(value_name = "VOL")]
        volume: String,
        /// Name of the new snapshot (unique per volume)
        #[arg(value_name = "SNAP")]
        name: String,
        #[command(flatten)]
        hooks: crate::backup::HookArgs,
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

/// `fusevol cci NAME ARGS...`: the arguments are those of the fusevol pair verb.
#[derive(Subcommand)]
pub(crate) enum CciCmd {
    /// = pair create PVOL SVOL [--create-svol] [--svol-tier T] [--group G] [--rate R] [--wait]
    #[command(disable_help_flag = true)]
    Paircreate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// = pair split PVOL... [--group G] [--quick]
    #[command(disable_help_flag = true)]
    Pairsplit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// = pair resync PVOL [--restore] [--rate R] [--wait]
    #[command(disable_help_flag = true)]
    Pairresync {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// = pair status [PVOL]
    #[command(disable_help_flag = true)]
    Pairdisplay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// = pair wait PVOL --state STATE [--timeout SECS]
    #[command(disable_help_flag = true)]
    Pairevtwait {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The CCI names and the pair verb each stands for.
pub(crate) const CCI_ALIASES: &[(&str, &str)] = &[
    ("paircreate", "create"),
    ("pairsplit", "split"),
    ("pairresync", "resync"),
    ("pairdisplay", "status"),
    ("pairevtwait", "wait"),
];

impl CciCmd {
    /// The pair verb and the arguments after it.
    pub(crate) fn verb_and_args(self) -> (&'static str, Vec<String>) {
        match self {
            CciCmd::Paircreate { args } => ("create", args),
            CciCmd::Pairsplit { args } => ("split", args),
            CciCmd::Pairresync { args } => ("resync", args),
            CciCmd::Pairdisplay { args } => ("status", args),
            CciCmd::Pairevtwait { args } => ("wait", args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

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
            Command::Volume(VolumeCmd::Create {
                name,
                size,
                tier,
                node,
                spread,
            }) => {
                assert_eq!(name, "v0");
                assert_eq!(size, 4 << 30);
                assert_eq!(tier.as_deref(), Some("slow"));
                assert_eq!(node, None);
                assert!(!spread);
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
            &[
                "fusevol",
                "volume",
                "resize",
                "v",
                "--size",
                "1G",
                "--allow-shrink",
            ],
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
            Command::Snapshot(SnapshotCmd::Create { volume, name, .. }) => {
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
}
