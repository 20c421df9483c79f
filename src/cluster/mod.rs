//! Several hosts, one set of volumes (`fusevold --cluster URL --node NAME --nbd ADDR:PORT`).
//!
//! The shared state lives in etcd, never in a protocol of our own: each node registers under
//! a lease it keeps alive (`session`), the catalog of global volume names is written only in
//! transactions that compare the revision read (`catalog`), and every daemon watches the
//! prefix into a local cache (`records::Cache`), so lookups cost no round trip. Data moves
//! over NBD: I/O to a volume another node owns is forwarded to that node's NBD server
//! (`remote`).
//!
//! This module sits above `storage` and `nbd`, beside `control`: it reads the local pool
//! (volumes, arrays) to publish it, and `fuse` asks it for the volumes of other nodes. The
//! etcd client is async (tonic); a tokio runtime with one worker thread lives inside this
//! module only, and the rest of the daemon calls in with blocking methods.
//!
//! Without `--cluster` none of this runs and nothing changes.

mod catalog;
// Replica redirection: the node's I/O load, its busy flag, and which site serves a read of a
// group snapshot.
pub mod load;
// `fusevol volume move`: data and ownership to another node.
mod markers;
pub mod moving;
mod placement;
pub mod records;
pub mod remote;
mod replicas;
pub mod requests;
mod session;
// Spread volumes: one global volume from parts on several nodes.
pub mod spread;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::pool::PoolError;
use crate::storage::Storage;
use records::{Cache, NodeRecord, SnapshotEntry, TierSpace, VolumeRecord};
pub use remote::{RemoteError, Target};

/// Default lease TTL in seconds: a dead node shows as unavailable within this.
pub const DEFAULT_TTL: u64 = 10;
/// How long one catalog operation may wait for etcd.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// etcd endpoints (`http://127.0.0.1:2379`, comma-separated on the command line).
    pub endpoints: Vec<String>,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// `ADDR:PORT` where peers reach this node's NBD server.
    pub address: String,
    /// Lease TTL in seconds.
    pub ttl: u64,
    /// Placement priority of this node's pool (lower first; `--cluster-priority`).
    pub priority: u32,
    /// Busy above this I/O load (`--busy-above`; `load`).
    pub busy_above: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster catalog (etcd at {endpoints}) unreachable while trying to {op}: {detail}")]
    Unreachable {
        endpoints: String,
        op: String,
        detail: String,
    },
    #[error("volume '{name}' already exists in the cluster (owner node '{owner}')")]
    Exists { name: String, owner: String },
    #[error("volume '{name}' is owned by node '{owner}': run the command on that node")]
    NotOwner { name: String, owner: String },
    #[error("volume '{name}' was changed by another node while this one updated it (revision {read} read, now {now}); try again")]
    Conflict { name: String, read: i64, now: i64 },
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl ClusterError {
    /// The pool error a control answer carries (its code and this message).
    pub fn into_pool_error(self) -> PoolError {
        match self {
            ClusterError::Pool(e) => e,
            e @ ClusterError::Exists { .. } => PoolError::Exists(e.to_string()),
            e @ ClusterError::NotOwner { .. } => PoolError::Invalid(e.to_string()),
            e @ ClusterError::Conflict { .. } => PoolError::Busy(e.to_string()),
            e @ ClusterError::Unreachable { .. } => PoolError::Inconsistent(e.to_string()),
        }
    }
}

/// A volume of another node as this node's mount shows it.
#[derive(Debug, Clone)]
pub struct RemoteVolume {
    /// Index in this daemon's table of remote names (stable for the daemon's life; the mount
    /// turns it into an inode number).
    pub index: u64,
    pub name: String,
    pub owner: String,
    pub size: u64,
    /// The owner's NBD address while it is registered; None when it is down.
    pub address: Option<String>,
    pub snapshots: Vec<SnapshotEntry>,
    /// The owner's NBD export: the volume's name in the owner's pool (differs from `name`
    /// after a `volume rename`).
    pub export: String,
    /// A spread volume's parts (empty for an ordinary volume): I/O is split by range.
    pub parts: Vec<RemotePart>,
}

impl RemoteVolume {
    pub fn spread(&self) -> bool {
        !self.parts.is_empty()
    }
}

/// A part of a spread volume as this node reaches it.
#[derive(Debug, Clone)]
pub struct RemotePart {
    pub offset: u64,
    pub size: u64,
    pub node: String,
    /// The part's local volume on `node` (its NBD export there).
    pub local_name: String,
    /// The part is in this node's pool: served locally.
    pub local: bool,
    /// `node`'s NBD address while it is registered.
    pub address: Option<String>,
    /// "VOL (part I, bytes A..B)" for messages.
    pub label: String,
}

/// A snapshot of another node's volume (read-only, forwarded to the owner's NBD export
/// `VOL@SNAP`).
#[derive(Debug, Clone)]
pub struct RemoteSnapshot {
    /// Index in the same table as the remote volumes' (its own entry).
    pub index: u64,
    pub volume: RemoteVolume,
    pub name: String,
    pub size: u64,
    /// The owner's NBD export name.
    pub export: String,
}

/// `fusevol cluster nodes`: one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNodeInfo {
    pub name: String,
    pub address: String,
    /// `up` (registered under a live lease) or `down`.
    pub state: String,
    pub pools: Vec<String>,
    pub tiers: Vec<TierSpace>,
    pub capacity: u64,
    pub free: u64,
    pub load: f64,
    /// Placement priority (lower first).
    pub priority: u32,
    /// Volumes the catalog lists with this owner.
    pub volumes: u64,
    /// The node's own I/O load (requests in flight at its arrays, 2 s average).
    #[serde(default)]
    pub io_load: f64,
    /// The node reports itself busy: readers of group snapshots go to another site.
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub busy_above: f64,
}

/// `fusevol cluster volumes`: one catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterVolumeInfo {
    pub name: String,
    pub owner: String,
    pub local_id: u64,
    pub size: u64,
    pub tier: String,
    /// `creating` or `ready`.
    pub state: String,
    /// False when the owner is not registered (down): I/O to it fails with EIO.
    pub available: bool,
    /// Where this node serves it from: `local` or `forwarded`.
    pub served: String,
    pub snapshots: Vec<String>,
    /// The etcd revision of the entry.
    pub revision: i64,
    /// A `volume move` under way: target, phase, pass and bytes copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<String>,
    /// The volume's name in the owner's pool, when a rename made it differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_name: Option<String>,
    /// A spread volume's parts (range → node, local volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<records::PartEntry>,
    /// Group snapshots of this volume held at another site too, and which site served this
    /// node's reads of them (replica redirection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<SnapshotReplicaInfo>,
}

/// A group snapshot held identically at several sites, as one node reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReplicaInfo {
    pub snapshot: String,
    pub group: String,
    /// Every site holding the image (the owner first).
    pub sites: Vec<ReplicaSiteInfo>,
    /// The site that served this node's last read of it, and why.
    pub served_by: Option<String>,
    pub reason: Option<String>,
    /// Reads of it this node sent to each site (since the daemon started).
    pub reads: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSiteInfo {
    pub node: String,
    /// The snapshot there (`VOL@SNAP` in that node's pool).
    pub export: String,
    pub up: bool,
    pub busy: bool,
}

/// Where one read of a snapshot goes (`Cluster::snapshot_route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The owner of the volume the reader opened (the usual way: no redirection).
    Owner,
    /// This node's own copy: snapshot `snapshot` of local volume `volume`.
    Local { volume: String, snapshot: String },
    /// Another node's copy, read over NBD.
    Remote {
        node: String,
        address: String,
        export: String,
    },
}

/// What a node's reads of one group snapshot were served by.
#[derive(Default)]
struct Served {
    reads: std::collections::BTreeMap<String, u64>,
    last: String,
    reason: String,
}

/// `fusevol cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusInfo {
    pub node: String,
    pub address: String,
    pub endpoints: Vec<String>,
    /// The watch is live (the cache follows etcd).
    pub connected: bool,
    /// This node's lease (hex), while registered.
    pub lease: Option<String>,
    pub ttl: u64,
    /// The etcd revision the cache reflects.
    pub revision: i64,
    pub nodes_up: u64,
    pub nodes_known: u64,
    pub volumes: u64,
    pub volumes_unavailable: u64,
    /// The last error talking to etcd, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct SessionState {
    connected: bool,
    lease: Option<i64>,
    last_error: Option<String>,
    /// The cache has been filled by a full read at least once.
    synced: bool,
}

/// Remote names ↔ indexes (stable, never reused while the daemon runs).
#[derive(Default)]
struct Indexes {
    by_name: HashMap<String, u64>,
    names: Vec<String>,
    /// index → what the volume is behind its name (owner node, local name; for a spread
    /// volume its first part's): a handle open across a `volume rename` keeps working.
    ident: HashMap<u64, (String, String)>,
}

/// What a catalog entry is, whatever its global name.
fn identity(rec: &VolumeRecord) -> (String, String) {
    match rec.parts.first() {
        Some(p) => (p.node.clone(), p.local_name.clone()),
        None => (rec.owner.clone(), rec.local().to_string()),
    }
}

struct Inner {
    opts: ClusterOptions,
    st: Arc<Storage>,
    cache: RwLock<Cache>,
    state: Mutex<SessionState>,
    /// Names this node is creating now (their catalog entry says `creating`).
    creating: Mutex<HashSet<String>>,
    /// Names already warned about as shadowed (local volume vs another owner's entry).
    shadow_warned: Mutex<HashSet<String>>,
    client: tokio::sync::Mutex<Option<etcd_client::Client>>,
    stop: tokio::sync::watch::Sender<bool>,
    started: u64,
    /// Create requests addressed to this node go to the request thread.
    requests_tx: Mutex<Option<std::sync::mpsc::Sender<requests::CreateRequest>>>,
    /// Request ids already taken (a re-read of the prefix sees them again until deleted).
    seen_requests: Mutex<HashSet<String>>,
    /// Volumes this node is moving away now (`moving`).
    moving: Mutex<HashSet<String>>,
    /// This node's part in moves not finished (kept in the pool directory).
    markers: moving::Markers,
    /// Local volume ids moved away → their names (old handles of this mount are forwarded).
    moved_ids: Mutex<HashMap<u64, String>>,
    /// Parts of spread volumes held here (kept in the pool directory).
    parts: spread::PartMarkers,
    /// This node's I/O load and busy flag.
    load: load::LoadGauge,
    /// Woken when the busy flag changes: the registration is refreshed at once.
    refresh: tokio::sync::Notify,
    /// (global volume, snapshot) → which sites served this node's reads of it.
    served: Mutex<HashMap<(String, String), Served>>,
    /// Spread volumes this node made whose entry lists parts past their size (a grow under
    /// way on some node, or one that died): since when (the reconcile drops them when old).
    grow_seen: Mutex<HashMap<String, std::time::Instant>>,
}

/// Makes a volume in this node's pool for a request from another node: (name, size, tier)
/// → (local id, size, tier).
pub type Executor =
    Box<dyn Fn(&str, u64, Option<&str>) -> Result<(u64, u64, String), PoolError> + Send + Sync>;

pub struct Cluster {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
    indexes: Mutex<Indexes>,
    pub remotes: remote::Remotes,
    executor: Mutex<Option<Arc<Executor>>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The host's one-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or(0.0)
}

impl Inner {
    fn endpoints(&self) -> String {
        self.opts.endpoints.join(",")
    }

    /// A connected client (connected on first use; tonic reconnects by itself after that).
    async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let mut g = self.client.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let c = etcd_client::Client::connect(&self.opts.endpoints, Some(opts)).await?;
        *g = Some(c.clone());
        Ok(c)
    }

    fn set_error(&self, e: String) {
        self.state.lock().last_error = Some(e);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// This node's registration as it stands now.
    fn node_record(&self) -> NodeRecord {
        let pool = &self.st.pool;
        let mut tiers: Vec<TierSpace> = Vec::new();
        {
            let al = pool.alloc.lock();
            for a in pool.arrays().iter() {
                let (_, free) = al.usage(a.id);
                let cap = a.capacity_extents * a.extent_size;
                let free = free * a.extent_size;
                match tiers.iter_mut().find(|t| t.tier == a.tier) {
                    Some(t) => {
                        t.capacity += cap;
                        t.free += free;
                    }
                    None => tiers.push(TierSpace {
                        tier: a.tier.clone(),
                        capacity: cap,
                        free,
                    }),
                }
            }
        }
        tiers.sort_by(|a, b| a.tier.cmp(&b.tier));
        NodeRecord {
            name: self.opts.node.clone(),
            address: self.opts.address.clone(),
            pools: vec![pool.dir.display().to_string()],
            capacity: tiers.iter().map(|t| t.capacity).sum(),
            free: tiers.iter().map(|t| t.free).sum(),
            tiers,
            load: load_average(),
            started: self.started,
            pid: std::process::id(),
            priority: self.opts.priority,
            // (Rounded: the registration is rewritten when the figure moves, not its noise.)
            io_load: (self.load.io_load() * 10.0).round() / 10.0,
            busy: self.load.busy(),
            busy_above: self.load.busy_above(),
        }
    }
}

impl Cluster {
    /// Start the cluster side: a runtime, the registration (lease + keep-alive) and the
    /// watch. Returns at once; etcd being unreachable now is not an error (the daemon serves
    /// its local volumes and keeps trying, logging why).
    pub fn start(st: Arc<Storage>, opts: ClusterOptions) -> std::io::Result<Arc<Cluster>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cluster")
            .enable_all()
            .build()?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let st_dir = st.pool.dir.clone();
        let opts_busy_above = opts.busy_above;
        let inner = Arc::new(Inner {
            opts,
            st,
            cache: RwLock::new(Cache::default()),
            state: Mutex::new(SessionState::default()),
            creating: Mutex::new(HashSet::new()),
            shadow_warned: Mutex::new(HashSet::new()),
            client: tokio::sync::Mutex::new(None),
            stop,
            started: now_secs(),
            requests_tx: Mutex::new(None),
            seen_requests: Mutex::new(HashSet::new()),
            moving: Mutex::new(HashSet::new()),
            markers: moving::Markers::load(&st_dir, moving::MARKERS_FILE),
            moved_ids: Mutex::new(HashMap::new()),
            parts: spread::PartMarkers::load(&st_dir, spread::PARTS_FILE),
            load: load::LoadGauge::new(opts_busy_above),
            refresh: tokio::sync::Notify::new(),
            served: Mutex::new(HashMap::new()),
            grow_seen: Mutex::new(HashMap::new()),
        });
        let cluster = Arc::new(Cluster {
            inner: inner.clone(),
            rt,
            indexes: Mutex::new(Indexes::default()),
            remotes: remote::Remotes::default(),
            executor: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        *inner.requests_tx.lock() = Some(tx);
        let weak = Arc::downgrade(&cluster);
        std::thread::Builder::new()
            .name("cluster-requests".into())
            .spawn(move || {
                while let Ok(req) = rx.recv() {
                    let Some(c) = weak.upgrade() else { return };
                    c.serve_request(req);
                }
            })?;
        // Forwarding connections left idle are closed (the owner counts them as open handles).
        let weak = Arc::downgrade(&cluster);
        std::thread::Builder::new()
            .name("cluster-idle".into())
            .spawn(move || loop {
                std::thread::sleep(remote::IDLE_CLOSE / 2);
                let Some(c) = weak.upgrade() else { return };
                if c.inner.stopping() {
                    return;
                }
                c.remotes.reap(remote::IDLE_CLOSE);
            })?;
        // The I/O load: requests in flight at the arrays, sampled.
        let weak = Arc::downgrade(&cluster);
        std::thread::Builder::new()
            .name("cluster-load".into())
            .spawn(move || loop {
                std::thread::sleep(load::SAMPLE_EVERY);
                let Some(c) = weak.upgrade() else { return };
                if c.inner.stopping() {
                    return;
                }
                let now: u32 = c
                    .inner
                    .st
                    .pool
                    .arrays()
                    .iter()
                    .map(|a| a.in_flight.now())
                    .sum();
                if c.inner.load.sample(now) {
                    c.announce_busy();
                }
            })?;
        // Moves: finish or undo this node's part of those that are over.
        let weak = Arc::downgrade(&cluster);
        std::thread::Builder::new()
            .name("cluster-moves".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(2));
                let Some(c) = weak.upgrade() else { return };
                if c.inner.stopping() {
                    return;
                }
                if c.inner.state.lock().synced {
                    c.cleanup();
                    c.cleanup_parts();
                }
            })?;
        log::info!(
            "cluster: node '{}' joining etcd at {} (NBD address {}, lease TTL {} s)",
            inner.opts.node,
            inner.endpoints(),
            inner.opts.address,
            inner.opts.ttl
        );
        cluster.rt.spawn(session::watch_loop(inner.clone()));
        cluster.rt.spawn(session::register_loop(inner));
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.inner.opts.node
    }

    /// Stop: revoke the lease (the node shows down at once) and end the tasks.
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
        self.inner.requests_tx.lock().take();
        self.executor.lock().take();
        let lease = self.inner.state.lock().lease.take();
        if let Some(id) = lease {
            let inner = self.inner.clone();
            let r = self.rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(2), async move {
                    let mut c = inner.client().await?;
                    c.lease_revoke(id).await.map(|_| ())
                })
                .await
            });
            match r {
                Ok(Ok(())) => log::info!("cluster: node '{}' left (lease revoked)", self.node()),
                Ok(Err(e)) => log::warn!("cluster: revoke lease at stop: {e}"),
                Err(_) => log::warn!("cluster: revoke lease at stop: timed out"),
            }
        }
    }

    fn block_on<T>(
        &self,
        op: &str,
        f: impl std::future::Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(OP_TIMEOUT * 2, f).await })
        {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Unreachable {
                endpoints: self.inner.endpoints(),
                op: op.to_string(),
                detail: "timed out".into(),
            }),
        }
    }

    // ---- lookups from the cache (no round trip) --------------------------------------------

    fn index_of(&self, name: &str) -> u64 {
        let mut g = self.indexes.lock();
        if let Some(&i) = g.by_name.get(name) {
            return i;
        }
        let i = g.names.len() as u64;
        g.names.push(name.to_string());
        g.by_name.insert(name.to_string(), i);
        i
    }

    fn remote_from(&self, cache: &Cache, rec: &VolumeRecord) -> RemoteVolume {
        let me = &self.inner.opts.node;
        let index = self.index_of(&rec.name);
        self.indexes.lock().ident.insert(index, identity(rec));
        RemoteVolume {
            index,
            name: rec.name.clone(),
            owner: rec.owner.clone(),
            size: rec.size,
            address: if &rec.owner == me {
                Some(self.inner.opts.address.clone())
            } else {
                cache.nodes.get(&rec.owner).map(|n| n.rec.address.clone())
            },
            snapshots: rec.snapshots.clone(),
            export: rec.local().to_string(),
            parts: rec
                .parts
                .iter()
                .enumerate()
                .map(|(i, p)| RemotePart {
                    offset: p.offset,
                    size: p.size,
                    node: p.node.clone(),
                    local_name: p.local_name.clone(),
                    local: &p.node == me,
                    address: cache.nodes.get(&p.node).map(|n| n.rec.address.clone()),
                    label: format!(
                        "{} (part {i}, bytes {}..{})",
                        rec.name,
                        p.offset,
                        p.offset + p.size
                    ),
                })
                .collect(),
        }
    }

    /// Is `rec` a volume this node shows as forwarded (another owner, or a spread volume;
    /// not shadowed by a local volume of the same name, created completely)?
    fn forwarded(&self, cache: &Cache, rec: &VolumeRecord) -> bool {
        (rec.owner != self.inner.opts.node || rec.spread())
            && rec.state == records::STATE_READY
            && (self.inner.st.volumes.volume(&rec.name).is_none()
                || self.hidden_in(cache, &rec.name))
    }

    /// Is local volume `name` one that a rename gave another global name?
    pub(super) fn renamed_from(&self, cache: &Cache, name: &str) -> bool {
        let me = &self.inner.opts.node;
        cache
            .volumes
            .values()
            .any(|e| &e.rec.owner == me && e.rec.local_name.as_deref() == Some(name))
    }

    /// The local name of volume `name` when it is this node's and was renamed in the cluster.
    pub fn local_alias(&self, name: &str) -> Option<String> {
        let cache = self.inner.cache.read();
        let r = &cache.volumes.get(name)?.rec;
        (r.owner == self.inner.opts.node && !r.spread())
            .then(|| r.local_name.clone())
            .flatten()
    }

    /// This node's volumes renamed in the cluster: (global name, local id).
    pub fn renamed_locals(&self) -> Vec<(String, u64)> {
        let cache = self.inner.cache.read();
        let me = &self.inner.opts.node;
        cache
            .volumes
            .values()
            .filter(|e| &e.rec.owner == me && e.rec.local_name.is_some() && !e.rec.spread())
            .filter_map(|e| {
                let v = self.inner.st.volumes.volume(e.rec.local())?;
                (v.id == e.rec.local_id).then(|| (e.rec.name.clone(), v.id))
            })
            .collect()
    }

    /// The name behind a remote index (a volume moved here keeps its old inode working).
    pub fn index_name(&self, index: u64) -> Option<String> {
        let name = self.indexes.lock().names.get(index as usize)?.clone();
        (!name.contains('\0')).then_some(name)
    }

    /// The volume `name` of another node, if the catalog has one (and no local volume has
    /// that name).
    pub fn remote_volume(&self, name: &str) -> Option<RemoteVolume> {
        let cache = self.inner.cache.read();
        let rec = &cache.volumes.get(name)?.rec;
        self.forwarded(&cache, rec)
            .then(|| self.remote_from(&cache, rec))
    }

    /// The remote volume with this index, if it is still in the catalog.
    pub fn remote_by_index(&self, index: u64) -> Option<RemoteVolume> {
        let name = self.indexes.lock().names.get(index as usize)?.clone();
        if name.contains('\0') {
            return None;
        }
        if let Some(r) = self.remote_volume(&name) {
            return Some(r);
        }
        // Renamed since this index was given out: the entry that is the same volume.
        let ident = self.indexes.lock().ident.get(&index).cloned()?;
        let cache = self.inner.cache.read();
        let rec = cache
            .volumes
            .values()
            .map(|v| &v.rec)
            .find(|r| identity(r) == ident && self.forwarded(&cache, r))?;
        let mut r = self.remote_from(&cache, rec);
        r.index = index;
        Some(r)
    }

    /// Snapshot `snap` of remote volume `volume`, if the catalog lists it.
    pub fn remote_snapshot(&self, volume: &str, snap: &str) -> Option<RemoteSnapshot> {
        let v = self.remote_volume(volume)?;
        let e = v.snapshots.iter().find(|s| s.name == snap)?.clone();
        Some(RemoteSnapshot {
            // Names cannot hold NUL, so "VOL\0SNAP" never collides with a volume's entry.
            index: self.index_of(&format!("{volume}\0{snap}")),
            export: format!("{}@{snap}", v.export),
            name: e.name,
            size: e.size,
            volume: v,
        })
    }

    /// The remote snapshot with this index, if it is still in the catalog.
    pub fn remote_snapshot_by_index(&self, index: u64) -> Option<RemoteSnapshot> {
        let key = self.indexes.lock().names.get(index as usize)?.clone();
        let (vol, snap) = key.split_once('\0')?;
        self.remote_snapshot(vol, snap)
    }

    /// Every volume of other nodes, by name.
    pub fn remote_volumes(&self) -> Vec<RemoteVolume> {
        let cache = self.inner.cache.read();
        cache
            .volumes
            .values()
            .filter(|v| self.forwarded(&cache, &v.rec))
            .map(|v| self.remote_from(&cache, &v.rec))
            .collect()
    }

    /// Where to send I/O for `v` (export `export`), or Unavailable naming the owner.
    pub fn target<'a>(
        &self,
        v: &'a RemoteVolume,
        export: &'a str,
    ) -> Result<Target<'a>, RemoteError> {
        match v.address.as_deref() {
            Some(address) => Ok(Target {
                volume: &v.name,
                node: &v.owner,
                address,
                export,
            }),
            None => Err(RemoteError::Unavailable {
                volume: v.name.clone(),
                node: v.owner.clone(),
            }),
        }
    }

    /// Where to send I/O for part `p` of spread volume `v`, or Unavailable naming the node.
    pub fn part_target<'a>(&self, p: &'a RemotePart) -> Result<Target<'a>, RemoteError> {
        match p.address.as_deref() {
            Some(address) => Ok(Target {
                volume: &p.label,
                node: &p.node,
                address,
                export: &p.local_name,
            }),
            None => Err(RemoteError::Unavailable {
                volume: p.label.clone(),
                node: p.node.clone(),
            }),
        }
    }

    /// Can every part of `rec` be reached (its owner, or each part's node, is up)?
    fn reachable(&self, cache: &Cache, rec: &VolumeRecord) -> bool {
        let me = &self.inner.opts.node;
        if rec.spread() {
            rec.parts
                .iter()
                .all(|p| &p.node == me || cache.node_up(&p.node))
        } else {
            &rec.owner == me || cache.node_up(&rec.owner)
        }
    }

    // ---- status ------------------------------------------------------------------------------

    pub fn status(&self) -> ClusterStatusInfo {
        let cache = self.inner.cache.read();
        let s = self.inner.state.lock();
        ClusterStatusInfo {
            node: self.inner.opts.node.clone(),
            address: self.inner.opts.address.clone(),
            endpoints: self.inner.opts.endpoints.clone(),
            connected: s.connected,
            lease: s.lease.map(|l| format!("{l:x}")),
            ttl: self.inner.opts.ttl,
            revision: cache.revision,
            nodes_up: cache.nodes.len() as u64,
            nodes_known: cache
                .members
                .keys()
                .chain(cache.nodes.keys())
                .collect::<HashSet<_>>()
                .len() as u64,
            volumes: cache.volumes.len() as u64,
            volumes_unavailable: cache
                .volumes
                .values()
                .filter(|v| !self.reachable(&cache, &v.rec))
                .count() as u64,
            last_error: s.last_error.clone(),
        }
    }

    pub fn nodes(&self) -> Vec<ClusterNodeInfo> {
        let cache = self.inner.cache.read();
        let mut names: Vec<&String> = cache.members.keys().chain(cache.nodes.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let volumes = cache
                    .volumes
                    .values()
                    .filter(|v| &v.rec.owner == name)
                    .count() as u64;
                match cache.nodes.get(name) {
                    Some(n) => node_info(&n.rec, volumes),
                    None => ClusterNodeInfo {
                        name: name.clone(),
                        address: cache
                            .members
                            .get(name)
                            .map(|m| m.address.clone())
                            .unwrap_or_default(),
                        state: "down".into(),
                        pools: vec![],
                        tiers: vec![],
                        capacity: 0,
                        free: 0,
                        load: 0.0,
                        priority: records::DEFAULT_PRIORITY,
                        volumes,
                        io_load: 0.0,
                        busy: false,
                        busy_above: 0.0,
                    },
                }
            })
            .collect()
    }

    /// This node as it registers now (its load and busy flag as of this moment).
    pub fn this_node(&self) -> ClusterNodeInfo {
        let cache = self.inner.cache.read();
        let me = self.node();
        let volumes = cache.volumes.values().filter(|v| v.rec.owner == me).count() as u64;
        node_info(&self.inner.node_record(), volumes)
    }

    pub fn volumes(&self) -> Vec<ClusterVolumeInfo> {
        let cache = self.inner.cache.read();
        let me = &self.inner.opts.node;
        cache
            .volumes
            .values()
            .map(|v| {
                let r = &v.rec;
                let local = &r.owner == me;
                ClusterVolumeInfo {
                    name: r.name.clone(),
                    owner: r.owner.clone(),
                    local_id: r.local_id,
                    size: r.size,
                    tier: r.tier.clone(),
                    state: r.state.clone(),
                    available: self.reachable(&cache, r),
                    served: if r.spread() {
                        format!(
                            "spread: {}",
                            r.parts
                                .iter()
                                .map(|p| format!(
                                    "{}..{} {} ({})",
                                    p.offset,
                                    p.offset + p.size,
                                    p.node,
                                    if &p.node == me { "local" } else { "forwarded" }
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else if local {
                        "local".into()
                    } else if self.inner.st.volumes.volume(&r.name).is_some()
                        && !self.hidden_in(&cache, &r.name)
                    {
                        "shadowed by a local volume".into()
                    } else {
                        "forwarded".into()
                    },
                    snapshots: r.snapshots.iter().map(|s| s.name.clone()).collect(),
                    revision: v.mod_revision,
                    moving: Cluster::move_progress(&cache, &r.name),
                    local_name: r.local_name.clone(),
                    parts: r.parts.clone(),
                    replicas: self.replica_infos(&cache, r),
                }
            })
            .collect()
    }
}

/// `cluster nodes`: a node that is up, from its registration.
fn node_info(n: &NodeRecord, volumes: u64) -> ClusterNodeInfo {
    ClusterNodeInfo {
        name: n.name.clone(),
        address: n.address.clone(),
        state: "up".into(),
        pools: n.pools.clone(),
        tiers: n.tiers.clone(),
        capacity: n.capacity,
        free: n.free,
        load: n.load,
        priority: n.priority,
        volumes,
        io_load: n.io_load,
        busy: n.busy,
        busy_above: n.busy_above,
    }
}
