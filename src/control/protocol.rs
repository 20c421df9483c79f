//! The control protocol spoken on `<POOL>/control.sock`.
//!
//! One request per connection line: the client writes one JSON object followed by `\n`, the
//! daemon answers with one JSON object followed by `\n`. A connection may carry several
//! request/response exchanges in sequence. Requests are tagged by `op`:
//!
//! ```text
//! {"op":"volume_create","name":"vol0","size":1073741824,"tier":null}
//! {"ok":true,"data":{...VolumeInfo...},"warnings":["pool is overcommitted ..."]}
//! {"ok":false,"error":{"code":"exists","message":"volume 'vol0' already exists"}}
//! ```
//!
//! The types here are the whole contract between `fusevold` and `fusevol`; both sides use them.

use serde::{Deserialize, Serialize};

// Request and answer types that belong to the services; defined there, part of the wire
// format here.
pub use crate::backup::catalog::{CatalogEntry, RebuildReport};
pub use crate::backup::export::ExportPlan;
pub use crate::backup::schedule::{ScheduleSpec, ScheduleView};
pub use crate::cluster::{ClusterNodeInfo, ClusterStatusInfo, ClusterVolumeInfo};
pub use crate::events::Event;
pub use crate::info::InfoView;
pub use crate::replication::options::{GroupOptions, GroupSetOptions, PitrOptions, VolumeNames};
pub use crate::replication::pitr::RestoreReport;

/// A request from the CLI to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; answers `PoolInfo`.
    Ping,
    /// Pool summary; answers `PoolInfo`.
    PoolInfo,
    /// All arrays; answers `Vec<ArrayInfo>`.
    ArrayList,
    /// Add an array file to the live pool; answers `ArrayInfo`.
    ArrayAdd {
        name: String,
        size: u64,
        tier: String,
    },
    /// Create a volume; answers `VolumeInfo` (warnings when the pool is overcommitted).
    VolumeCreate {
        name: String,
        size: u64,
        #[serde(default)]
        tier: Option<String>,
        /// In a cluster: the node to make it on (without it the cluster places it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        /// In a cluster: build it from parts on several nodes (`--spread`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        spread: bool,
    },
    /// All volumes; answers `Vec<VolumeInfo>`.
    VolumeList,
    /// One volume; answers `VolumeInfo`.
    VolumeInfo { name: String },
    /// Grow or shrink a volume; answers `VolumeInfo`. A shrink needs `allow_shrink` and a
    /// closed volume file.
    VolumeResize {
        name: String,
        size: u64,
        #[serde(default)]
        allow_shrink: bool,
    },
    /// Delete a volume and free its extents; answers `null`. A volume with snapshots is
    /// refused unless `recursive` (then its snapshots go first).
    VolumeDelete {
        name: String,
        #[serde(default)]
        recursive: bool,
    },
    /// In a cluster, on the volume's owner: move it to node `node` (data, then ownership in
    /// one catalog transaction); answers `null` when the target owns it.
    VolumeMove { name: String, node: String },
    /// In a cluster: give a volume another global name (one catalog transaction).
    VolumeRename { name: String, new_name: String },
    /// Export `VOL` or `VOL@SNAP` over NBD again (read-only if asked); answers `NbdExportInfo`.
    /// Refused (invalid) when the daemon runs without `--nbd`.
    ExportNbdAdd {
        name: String,
        #[serde(default)]
        read_only: bool,
    },
    /// Stop exporting `VOL` or `VOL@SNAP` to new NBD clients; answers `null`.
    ExportNbdRemove { name: String },
    /// The NBD exports shown now; answers `Vec<NbdExportInfo>`.
    ExportNbdList,
    /// This node's view of the cluster (`fusevold --cluster`); answers `ClusterStatusInfo`.
    /// Refused (invalid) when the daemon runs without `--cluster`.
    ClusterStatus,
    /// Every node that joined, up or down; answers `Vec<ClusterNodeInfo>`.
    ClusterNodes,
    /// The cluster's catalog of volumes; answers `Vec<ClusterVolumeInfo>`.
    ClusterVolumes,
    /// This node's busy threshold and/or the operator's override of its busy flag (replica
    /// redirection); answers this node's `ClusterNodeInfo` as it registers now.
    ClusterSet {
        #[serde(default)]
        busy_above: Option<crate::cluster::load::Threshold>,
        #[serde(default)]
        busy: Option<crate::cluster::load::BusyMode>,
    },
    /// Take a snapshot of a volume; answers `SnapshotInfo`.
    SnapshotCreate { volume: String, name: String },
    /// Snapshots of one volume, or of all volumes; answers `Vec<SnapshotInfo>` (oldest first).
    SnapshotList {
        #[serde(default)]
        volume: Option<String>,
    },
    /// Delete a snapshot and free the extents only it held; answers `null`.
    SnapshotDelete { volume: String, name: String },
    /// Return a volume to a snapshot's content; refused while the volume file is open.
    /// Answers `VolumeInfo`.
    SnapshotRollback { volume: String, name: String },
    /// A new writable volume starting as the snapshot, sharing its extents; answers `VolumeInfo`.
    SnapshotClone {
        volume: String,
        name: String,
        new_volume: String,
    },
    /// Write a checkpoint of the metadata now and sync everything; answers `null`.
    Sync,
    /// Confirm a salvage (`fusevold --recovery salvage` opened the pool read-only): the
    /// salvaged state becomes the pool's, the damaged log is kept aside, and the daemon
    /// stops so that it can be started again read-write. Answers the `SalvageReport`.
    SalvageConfirm,
    /// Pair `pvol` (P-VOL) with `svol` (S-VOL, at least as large; created on the fly with
    /// `create_svol`, on `svol_tier` if given). Starts the initial copy (state COPY).
    /// `rate`: background copy limit in bytes per second (0 or none: the daemon default).
    /// Answers `PairInfo`.
    PairCreate {
        pvol: String,
        svol: String,
        #[serde(default)]
        create_svol: bool,
        #[serde(default)]
        svol_tier: Option<String>,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        rate: Option<u64>,
    },
    /// Split the pairs of the named P-VOLs and/or of a group at one instant. Steady (default):
    /// waits until every pair is PAIR, then splits. Quick: splits at once; the rest of the
    /// copy runs in the background and the S-VOL only ever shows the split-time image.
    /// Answers `Vec<PairInfo>`.
    PairSplit {
        #[serde(default)]
        pvols: Vec<String>,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        quick: bool,
    },
    /// Resynchronize a split or suspended pair: P→S (COPY(RS)), or S→P with `restore`
    /// (COPY(RS-R)); only regions changed on either side are copied. Answers `PairInfo`.
    PairResync {
        pvol: String,
        #[serde(default)]
        restore: bool,
        #[serde(default)]
        rate: Option<u64>,
    },
    /// Dissolve a pair (back to SMPL); both volumes keep their data. Answers `null`.
    PairDelete { pvol: String },
    /// The pool's events: a stream, not one answer. First an `EventsHeader`, then one line
    /// per `Event` (`data` has `seq`) — those of the ring after `since` (all without it, none
    /// with `from_now`), then, with `follow`, live ones as they happen — and a last line: an
    /// `EventsEnd` (`data` has `end`), or an error (`busy`) when this observer fell behind and
    /// was cut off. The connection closes after the stream.
    Events {
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        from_now: bool,
    },
    /// Host I/O statistics of one volume or all; answers `Vec<VolumeStats>`.
    Stats {
        #[serde(default)]
        volume: Option<String>,
    },
    /// I/O of every array file since the daemon started; answers `Vec<ArrayStatsInfo>`.
    ArrayStats,
    /// Pairs, all or the one of `pvol`; answers `Vec<PairInfo>`.
    PairStatus {
        #[serde(default)]
        pvol: Option<String>,
    },
    /// Put `volumes` in a new journal group replicated through `<remote>/<name>/` (this pool
    /// is the primary). `remote` is an absolute path. Answers `GroupInfo`.
    GroupCreate {
        name: String,
        volumes: Vec<String>,
        remote: String,
        /// Journal settings; absent fields take the defaults.
        #[serde(default)]
        options: GroupOptions,
    },
    /// Attach this pool as the secondary of the group published in `<remote>/<name>/`
    /// (`remote` absolute). Answers `GroupInfo`.
    GroupAttach {
        name: String,
        remote: String,
        /// Retention and apply delay (absent: off).
        #[serde(default, skip_serializing_if = "PitrOptions::is_empty")]
        pitr: PitrOptions,
        /// The names this pool keeps the group's volumes under (absent: the primary's).
        #[serde(default, skip_serializing_if = "VolumeNames::is_empty")]
        names: VolumeNames,
    },
    /// Add a volume to a group; answers `GroupInfo`.
    GroupAddVolume { name: String, volume: String },
    /// Take a volume out of a group; answers `GroupInfo`.
    GroupRemoveVolume { name: String, volume: String },
    /// Snapshot every volume of the group at one instant (and mark it in the journal);
    /// answers `null`.
    GroupSnapshot { name: String, snapshot: String },
    /// Stop journaling (primary) or applying (secondary); the volumes stay. Answers `null`.
    GroupDelete { name: String },
    /// Groups, all or the named one (not found if it does not exist); answers
    /// `Vec<GroupInfo>` sorted by name.
    GroupStatus {
        #[serde(default)]
        name: Option<String>,
    },
    /// On the secondary: become the primary under a new epoch, after applying every complete
    /// record (or up to the marker `at_marker`). Answers `HandoverReport`.
    GroupTakeover {
        name: String,
        #[serde(default)]
        at_marker: Option<String>,
    },
    /// On an old primary that was taken over: become the secondary of the new epoch with a
    /// delta. Answers `HandoverReport`.
    GroupFailback {
        name: String,
        #[serde(default)]
        keep_snapshot: bool,
    },
    /// On the primary: change the journal limit, the journal-full policy or the block
    /// timeout of an existing group (absent fields stay). Answers `GroupInfo`.
    /// Retention and apply delay (`pitr`, the secondary's settings) go in the same request.
    GroupSet {
        name: String,
        #[serde(default, skip_serializing_if = "GroupSetOptions::is_empty")]
        options: GroupSetOptions,
        /// Retention and apply delay (the secondary's settings).
        #[serde(default, skip_serializing_if = "PitrOptions::is_empty")]
        pitr: PitrOptions,
        /// Publish `lag-above` when the lag reaches this many milliseconds and `lag-below`
        /// when it is under half of it again (0: off). Either site.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lag_alert_ms: Option<u64>,
    },
    /// On a suspended primary: journal again and journal the regions written while
    /// suspended (the secondary is inconsistent until that ends). Answers `GroupInfo`.
    GroupResync { name: String },
    /// Rebuild the group's volumes as of sequence number `seq` or of time `time_ns` (the
    /// last record at or before it) from a group snapshot or the initial image plus the
    /// retained segments: into new volumes `<prefix><volume>` of this pool, or into raw image
    /// files `<into>/<volume>.img` (`into` absolute). Answers `RestoreReport`.
    GroupRestore {
        name: String,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        time_ns: Option<u64>,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        into: Option<String>,
    },
    /// The volume information of `VOL` or `VOL@SNAP`; answers `InfoView`.
    VolumeInfoGet { name: String },
    /// Set fields of the volume information (`label`, `host`, `mountpoint`, `app`, `time`,
    /// `user.<key>`); answers `InfoView`.
    VolumeInfoSet {
        name: String,
        fields: Vec<(String, String)>,
    },
    /// Remove fields of the volume information; answers `InfoView`.
    VolumeInfoUnset { name: String, keys: Vec<String> },
    /// The backup catalog, all or the copies of one volume, oldest first; answers
    /// `Vec<CatalogEntry>`.
    Catalog {
        #[serde(default)]
        volume: Option<String>,
    },
    /// Rebuild the catalog index from the volumes' records; answers `RebuildReport`.
    CatalogRebuild,
    /// What to send for `volume export` of `VOL` or `VOL@SNAP` (incremental from snapshot
    /// `from`); answers `ExportPlan`.
    ExportPlan {
        name: String,
        #[serde(default)]
        from: Option<String>,
    },
    /// An import's data is written: snapshot `snapshot` of `volume` (if not empty) and the
    /// volume information (`info`, encoded; origin import from the stream's source).
    /// Answers `null`.
    ImportCommit {
        volume: String,
        #[serde(default)]
        snapshot: String,
        #[serde(default)]
        info: Vec<u8>,
        src_volume: String,
        #[serde(default)]
        src_snapshot: String,
        src_pool: u64,
    },
    // --- Backup schedules (issue 14) ---
    /// Add a backup schedule; answers `ScheduleView`.
    ScheduleAdd { spec: ScheduleSpec },
    /// Every schedule with its next run and last result; answers `Vec<ScheduleView>`.
    ScheduleList,
    /// Remove the schedule with this name (or id); its snapshots stay. Answers
    /// `ScheduleView` (as it was).
    ScheduleRemove { name: String },
    // --- Locks and two-phase changes (issue 15) ---
    /// Say who is asking on this connection: changing requests on objects locked by this
    /// owner pass; others are refused while locked by someone else. Answers `null`.
    Session { owner: String },
    /// Take (or renew, by the same owner) an operation lock on a volume, pair (its P-VOL) or
    /// journal group. `ttl`: seconds until it ends by itself (none: until `unlock`).
    /// `session`: it ends when this connection closes too. Answers `LockInfo`.
    Lock {
        object: LockObject,
        name: String,
        owner: String,
        #[serde(default)]
        ttl: Option<u64>,
        #[serde(default)]
        session: bool,
    },
    /// Release a lock: by its owner, or by anyone with `force`. Answers `LockInfo` (the lock
    /// that ended).
    Unlock {
        object: LockObject,
        name: String,
        #[serde(default)]
        owner: Option<String>,
        #[serde(default)]
        force: bool,
    },
    /// The locks held now; answers `Vec<LockInfo>`.
    LockList,
    /// Validate a change set against this pool (`execute: false`: changes nothing), or take
    /// its locks for this connection, validate again and execute it, undoing the steps done
    /// on the first failure. Answers `PlanReport`.
    Plan {
        plan: crate::control::plan::PoolPlan,
        #[serde(default)]
        execute: bool,
    },
    /// Undo a change this connection executed (`PlanReport::change`), e.g. because another
    /// pool of the same plan failed. Answers `PlanReport`.
    PlanUndo { change: String },
}

/// A group snapshot whose marker this site applied (a base for `group restore-to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerInfo {
    pub name: String,
    pub seq: u64,
    /// Primary time of the marker, ns since the Unix epoch.
    pub time_ns: u64,
    /// Its snapshots are still there (it can be a base).
    pub usable: bool,
}

/// Retention, apply delay and restore bases of a group (`GroupInfo::pitr`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PitrInfo {
    /// Retention limits (0: none; both 0: retention off).
    pub retain_secs: u64,
    pub retain_bytes: u64,
    /// Segments and bytes in `REMOTE/GROUP/retained/`.
    pub retained_segments: u64,
    pub retained_bytes: u64,
    /// First sequence number and its time (ns) of the oldest retained segment (0: none).
    pub retained_oldest_seq: u64,
    pub retained_oldest_time_ns: u64,
    /// Apply delay in seconds: the applier holds the image this far behind the primary
    /// (`lag_seconds` is at least this much while records wait).
    pub apply_delay: u64,
    /// Group snapshots applied here, oldest first.
    pub markers: Vec<MarkerInfo>,
}

/// What a takeover or failback did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverReport {
    /// The group's status afterwards.
    pub info: GroupInfo,
    /// Where it stopped and why, what was asked for, which snapshot holds what.
    pub detail: String,
}

/// Everything the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Host I/O of one volume since the daemon started (`fusevol stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStats {
    pub volume: String,
    /// Seconds the counters have been running (since the daemon started).
    pub seconds: f64,
    #[serde(flatten)]
    pub io: crate::stats::IoCounts,
}

/// What the daemon read from and wrote to one array file since it started
/// (`fusevol stats --arrays`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayStatsInfo {
    pub array: String,
    pub tier: String,
    /// Seconds the counters have been running (since the daemon started).
    pub seconds: f64,
    #[serde(flatten)]
    pub io: crate::stats::ArrayCounts,
}

/// The first line of an `events` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsHeader {
    /// The last sequence number given out when the stream started (0: none yet).
    pub last_seq: u64,
    /// The oldest sequence number still in the ring (`last_seq + 1` when it is empty).
    pub first_kept: u64,
    /// Events the ring keeps.
    pub capacity: u64,
    /// `[first, last]` asked for with `since` but already dropped from the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<(u64, u64)>,
}

/// The last line of an `events` stream that was not cut off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsEnd {
    /// `backlog` (no `follow`: the ring was sent) or `daemon-stopping`.
    pub end: String,
}

/// A failed request: a stable machine-readable code and a message naming the thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Error classes; the CLI maps them to exit codes in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be parsed or is not a known operation.
    Protocol,
    /// An argument is invalid (bad name, size, tier ...).
    Invalid,
    /// The named thing does not exist.
    NotFound,
    /// The named thing already exists.
    Exists,
    /// The thing is in use (open volume, ...).
    Busy,
    /// Not enough space in the pool.
    NoSpace,
    /// An I/O error on a pool file.
    Io,
    /// The object is locked by another owner (`fusevol lock`).
    Locked,
}

/// One array of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    pub id: u32,
    pub name: String,
    pub tier: String,
    /// Path of the backing image file.
    pub path: String,
    /// Data capacity in bytes.
    pub capacity: u64,
    /// Bytes held by allocated extents.
    pub used: u64,
    /// Bytes still free for allocation.
    pub free: u64,
    /// Bytes the backing file really occupies on its file system (like `du`).
    pub on_disk: u64,
    /// Why the array's file could not be used when the daemon started (deleted,
    /// unreadable); None when it is online. Its extents fail with EIO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// One NBD export (`export-nbd list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NbdExportInfo {
    /// `VOL` or `VOL@SNAP`.
    pub name: String,
    pub size: u64,
    pub read_only: bool,
    /// NBD connections open on it now.
    pub connections: u64,
}

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub id: u64,
    pub name: String,
    /// Size in bytes, as the volume file shows it.
    pub size: u64,
    pub tier: String,
    /// Bytes of allocated extents mapped by this volume.
    pub allocated: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Number of open file handles on the volume file.
    pub open_handles: u64,
    /// How many extents the volume has on each array (array name, extents).
    pub extents_per_array: Vec<(String, u64)>,
    /// Its volume information (backups).
    #[serde(default)]
    pub info: InfoView,
    /// In a cluster, the node that made it, when not the one answering (`volume create`
    /// placed elsewhere); `id` is then its id in that node's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The operation lock on it, if one is held (`fusevol lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockInfo>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: u64,
    pub volume: String,
    pub name: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Size of the volume when the snapshot was taken.
    pub size: u64,
    /// Bytes held only by this snapshot (freed when it is deleted).
    pub exclusive: u64,
    /// Bytes this snapshot shares with its volume, other snapshots or clones.
    pub shared: u64,
    /// Path of the read-only file in the mount.
    pub path: String,
    /// Its volume information (backups).
    #[serde(default)]
    pub info: InfoView,
}

/// One pair (local split mirror).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairInfo {
    pub id: u64,
    pub pvol: String,
    pub svol: String,
    pub group: Option<String>,
    /// SMPL, COPY, PAIR, PSUS, COPY(RS), COPY(RS-R) or PSUE.
    pub state: String,
    /// Progress of the running copy in percent (100 when nothing is left to copy).
    pub progress: f64,
    /// Bytes the running copy still has to copy.
    pub bytes_left: u64,
    /// Measured copy rate, bytes per second (0 when no copy runs).
    pub rate: u64,
    /// Copy rate limit, bytes per second.
    pub rate_limit: u64,
    /// Bytes changed on either side since the split (what a resync or restore copies).
    pub diff_bytes: u64,
    /// A quick split's background copy is still filling the S-VOL.
    pub quick_split_copying: bool,
    /// The S-VOL's extents are on arrays that hold none of the P-VOL's.
    pub separate_arrays: bool,
    /// Why the pair is PSUE, or the last error.
    pub error: Option<String>,
    /// The operation lock on it, if one is held (`fusevol lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockInfo>,
}

/// The journal limit, its policy and the suspension / resync of a group (`GroupInfo.full`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FullInfo {
    /// "block" or "suspend" (primary; the secondary shows its last known "block").
    pub policy: String,
    /// Primary: "journaling", "suspended" or "resync"; secondary: "journaling" or "resync".
    pub state: String,
    pub block_timeout_ms: u64,
    /// Bytes of journal at which the high-water warning starts (80 % of the limit).
    pub high_water: u64,
    /// Set while the journal is at or above the high-water mark, or full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// When the group was suspended (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_since: Option<u64>,
    /// Last sequence number journaled before the suspension.
    pub suspended_seq: u64,
    /// Regions (extents) and bytes changed while suspended and not journaled yet.
    pub dirty_regions: u64,
    pub dirty_bytes: u64,
    /// The running resync: its start record, bytes to send and sent.
    pub resync_seq: u64,
    pub resync_total: u64,
    pub resync_done: u64,
    /// Secondary in a resync: the snapshot of each volume holding the last consistent image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_snapshot: Option<String>,
    /// Resyncs completed.
    pub resyncs: u64,
}

/// One journal group (consistency group replicated through a remote directory), as seen
/// from this side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// "primary" (journals and ships) or "secondary" (applies).
    pub role: String,
    /// primary: "initial-copy", "replicating", "remote-error";
    /// secondary: "initial-copy" (inconsistent until it ends), "consistent", "error".
    pub state: String,
    pub epoch: u64,
    /// The group's volumes (names in this pool).
    pub volumes: Vec<String>,
    /// The remote directory (the group's files are in `<remote>/<name>/`).
    pub remote: String,
    /// Last sequence number written to the journal (primary) or seen in the remote
    /// directory (secondary).
    pub written: u64,
    /// Last sequence number in a sealed segment.
    pub sealed: u64,
    /// Last sequence number published to the remote directory.
    pub shipped: u64,
    /// Last sequence number applied and durable at the secondary.
    pub applied: u64,
    /// Last sequence number the secondary acknowledged (what the primary may purge).
    pub acknowledged: u64,
    /// Records, journal bytes and seconds the secondary is behind.
    pub lag_records: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    /// Bytes of journal segments held in this pool, the limit, and what is left.
    pub journal_bytes: u64,
    pub journal_limit: u64,
    pub journal_free: u64,
    /// Bytes of purged segment files the journal keeps for reuse (not counted as used).
    #[serde(default)]
    pub journal_spare_bytes: u64,
    /// The secondary image is a consistent image of the primary at `applied`.
    pub consistent: bool,
    /// When the secondary became consistent (seconds since the Unix epoch).
    pub consistent_since: Option<u64>,
    pub last_error: Option<String>,
    /// This epoch's journal continues after this sequence number (the takeover point; 0 in
    /// epoch 1).
    #[serde(default)]
    pub start_seq: u64,
    /// Primary: why it refuses to go on (a newer epoch took over); None when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
    /// Secondary made from an old primary: the failback in progress (inconsistent until the
    /// delta is applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<String>,
    /// Bytes of the last failback delta (sent by the primary, received by the secondary).
    #[serde(default)]
    pub failback_bytes: u64,
    /// Journal limit policy, high-water warning, suspension and resync.
    #[serde(default)]
    pub full: FullInfo,
    /// Retention, apply delay and the group snapshots known (secondary; primary when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<PitrInfo>,
    /// Primary: the initial copy while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_copy: Option<BaseCopyInfo>,
    /// The operation lock on the group, if one is held (`fusevol lock group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockInfo>,
    /// Volumes this pool keeps under other names than the group's (`group attach
    /// --rename/--map`): local name → the group's (the primary's) name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub renamed: std::collections::BTreeMap<String, String>,
    /// The lag alert threshold in seconds (`group set --lag-alert`), when set, and whether
    /// the lag is above it now (`lag-above` published, `lag-below` not yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_alert_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lag_above: bool,
}

/// Where a primary's initial copy (base copy) is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseCopyInfo {
    /// The volume being copied (its allocated extents are journaled in order).
    pub volume: String,
    /// Logical extents of that volume gone through, and its size in extents.
    pub extents_done: u64,
    pub extents_total: u64,
    /// Volumes still to copy after this one.
    pub volumes_after: u64,
}

/// Pool summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub pool_id: String,
    pub path: String,
    pub mountpoint: String,
    pub extent_size: u64,
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
    /// Sum of all volume sizes.
    pub provisioned: u64,
    pub arrays: Vec<ArrayInfo>,
    pub volumes: u64,
    /// Why the pool is read-only (an unconfirmed salvage), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<String>,
}

/// What an operation lock is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockObject {
    Volume,
    Pair,
    Group,
}

impl LockObject {
    pub fn as_str(self) -> &'static str {
        match self {
            LockObject::Volume => "volume",
            LockObject::Pair => "pair",
            LockObject::Group => "group",
        }
    }
}

/// One operation lock (`fusevol lock`, or the implicit lock of `apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub object: LockObject,
    pub name: String,
    pub owner: String,
    /// When it was taken (or last renewed), RFC 3339 UTC.
    pub since: String,
    /// Its time to live in seconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Seconds left until it ends by itself, if it has a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// It ends when the connection that took it closes (the lock of a running `apply`).
    #[serde(default)]
    pub session: bool,
}

impl Response {
    pub fn success(data: serde_json::Value, warnings: Vec<String>) -> Self {
        Response {
            ok: true,
            data: Some(data),
            warnings,
            error: None,
        }
    }

    pub fn failure(code: ErrorCode, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            warnings: Vec::new(),
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn group_requests_on_the_wire() {
        for (req, wire) in [
            (
                Request::GroupCreate {
                    name: "g1".into(),
                    volumes: vec!["v1".into(), "v2".into()],
                    remote: "/r".into(),
                    options: GroupOptions::default(),
                },
                json!({"op":"group_create","name":"g1","volumes":["v1","v2"],"remote":"/r","options":{}}),
            ),
            (
                Request::GroupAttach {
                    name: "g1".into(),
                    remote: "/r".into(),
                    pitr: PitrOptions::default(),
                    names: VolumeNames::default(),
                },
                json!({"op":"group_attach","name":"g1","remote":"/r"}),
            ),
            (
                Request::GroupAttach {
                    name: "g1".into(),
                    remote: "/r".into(),
                    pitr: PitrOptions::default(),
                    names: VolumeNames {
                        prefix: Some("r-".into()),
                        map: [("vol0".to_string(), "pvol0".to_string())].into(),
                    },
                },
                json!({"op":"group_attach","name":"g1","remote":"/r","names":{"prefix":"r-","map":{"vol0":"pvol0"}}}),
            ),
            (
                Request::GroupAddVolume {
                    name: "g1".into(),
                    volume: "v3".into(),
                },
                json!({"op":"group_add_volume","name":"g1","volume":"v3"}),
            ),
            (
                Request::GroupRemoveVolume {
                    name: "g1".into(),
                    volume: "v3".into(),
                },
                json!({"op":"group_remove_volume","name":"g1","volume":"v3"}),
            ),
            (
                Request::GroupSnapshot {
                    name: "g1".into(),
                    snapshot: "s1".into(),
                },
                json!({"op":"group_snapshot","name":"g1","snapshot":"s1"}),
            ),
            (
                Request::GroupDelete { name: "g1".into() },
                json!({"op":"group_delete","name":"g1"}),
            ),
            (
                Request::GroupStatus { name: None },
                json!({"op":"group_status","name":null}),
            ),
            (
                Request::GroupTakeover {
                    name: "g1".into(),
                    at_marker: Some("m1".into()),
                },
                json!({"op":"group_takeover","name":"g1","at_marker":"m1"}),
            ),
            (
                Request::GroupFailback {
                    name: "g1".into(),
                    keep_snapshot: true,
                },
                json!({"op":"group_failback","name":"g1","keep_snapshot":true}),
            ),
        ] {
            assert_eq!(serde_json::to_value(&req).unwrap(), wire);
            assert_eq!(serde_json::from_value::<Request>(wire).unwrap(), req);
        }
        // `name` may be left out of a status request.
        assert_eq!(
            serde_json::from_value::<Request>(json!({"op":"group_status"})).unwrap(),
            Request::GroupStatus { name: None }
        );
        assert_eq!(
            serde_json::from_value::<Request>(json!({"op":"group_takeover","name":"g"})).unwrap(),
            Request::GroupTakeover {
                name: "g".into(),
                at_marker: None
            }
        );
    }

    #[test]
    fn point_in_time_requests_on_the_wire() {
        let pitr = PitrOptions {
            retain_secs: Some(60),
            retain_size: None,
            apply_delay: Some(5),
        };
        for (req, wire) in [
            (
                Request::GroupAttach {
                    name: "g1".into(),
                    remote: "/r".into(),
                    pitr: pitr.clone(),
                    names: VolumeNames::default(),
                },
                json!({"op":"group_attach","name":"g1","remote":"/r","pitr":{"retain_secs":60,"apply_delay":5}}),
            ),
            (
                Request::GroupSet {
                    name: "g1".into(),
                    options: GroupSetOptions::default(),
                    pitr,
                    lag_alert_ms: None,
                },
                json!({"op":"group_set","name":"g1","pitr":{"retain_secs":60,"apply_delay":5}}),
            ),
            (
                Request::GroupRestore {
                    name: "g1".into(),
                    seq: Some(9),
                    time_ns: None,
                    prefix: Some("p-".into()),
                    into: None,
                },
                json!({"op":"group_restore","name":"g1","seq":9,"time_ns":null,"prefix":"p-","into":null}),
            ),
        ] {
            assert_eq!(serde_json::to_value(&req).unwrap(), wire);
            assert_eq!(serde_json::from_value::<Request>(wire).unwrap(), req);
        }
        assert_eq!(
            serde_json::from_value::<Request>(json!({"op":"group_restore","name":"g","time_ns":5}))
                .unwrap(),
            Request::GroupRestore {
                name: "g".into(),
                seq: None,
                time_ns: Some(5),
                prefix: None,
                into: None
            }
        );
    }

    #[test]
    fn set_and_resync_requests_on_the_wire() {
        let set = Request::GroupSet {
            name: "g".into(),
            options: GroupSetOptions {
                journal_full: Some("suspend".into()),
                journal_limit: None,
                block_timeout_ms: Some(500),
            },
            pitr: Default::default(),
            lag_alert_ms: None,
        };
        let want = json!({"op":"group_set","name":"g","options":{"journal_full":"suspend","block_timeout_ms":500}});
        assert_eq!(serde_json::to_value(&set).unwrap(), want);
        assert_eq!(serde_json::from_value::<Request>(want).unwrap(), set);
        let r = Request::GroupResync { name: "g".into() };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"op":"group_resync","name":"g"})
        );
        // An unknown setting is refused, not ignored.
        assert!(serde_json::from_value::<Request>(
            json!({"op":"group_set","name":"g","options":{"journal_fulll":"block"}})
        )
        .is_err());
        // Old clients' status answers (no `full`) still parse.
        let old = json!({"name":"g","role":"primary","state":"replicating","epoch":1,"volumes":[],
            "remote":"/r","written":0,"sealed":0,"shipped":0,"applied":0,"acknowledged":0,
            "lag_records":0,"lag_bytes":0,"lag_seconds":0.0,"journal_bytes":0,"journal_limit":0,
            "journal_free":0,"consistent":true,"consistent_since":null,"last_error":null});
        let i: GroupInfo = serde_json::from_value(old).unwrap();
        assert_eq!(i.full, FullInfo::default());
    }
}
