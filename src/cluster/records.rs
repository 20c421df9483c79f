//! What lives in etcd: the key layout and the JSON records under it, and the local cache of
//! them that every daemon keeps from its watch (lookups never wait for a round trip).
//!
//! Keys (prefix `/fusevol/`):
//!
//! ```text
//! /fusevol/members/<node>   MemberRecord  every node that ever joined (no lease: a node that
//!                                         is down is still listed, as down)
//! /fusevol/nodes/<node>     NodeRecord    the live registration, attached to the node's lease:
//!                                         present = up; it vanishes when the lease expires
//! /fusevol/volumes/<name>   VolumeRecord  the catalog: one key per global volume name, written
//!                                         only in transactions that compare the revision read
//! /fusevol/moves/<name>     MoveRecord    a `volume move` under way (written by the source
//!                                         node; the switch puts it with the new owner's entry
//!                                         in one transaction)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

pub const PREFIX: &str = "/fusevol/";
pub const MEMBERS: &str = "/fusevol/members/";
pub const NODES: &str = "/fusevol/nodes/";
pub const VOLUMES: &str = "/fusevol/volumes/";
pub const MOVES: &str = "/fusevol/moves/";

pub fn member_key(node: &str) -> String {
    format!("{MEMBERS}{node}")
}
pub fn node_key(node: &str) -> String {
    format!("{NODES}{node}")
}
pub fn volume_key(name: &str) -> String {
    format!("{VOLUMES}{name}")
}
pub fn move_key(name: &str) -> String {
    format!("{MOVES}{name}")
}

/// A volume being moved from one node to another (`fusevol volume move`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub volume: String,
    pub from: String,
    pub to: String,
    /// The copy's id in the target's pool (0 until the target made it).
    pub to_local_id: u64,
    /// `preparing`, `copying`, `final` (writes held for the last pass), `switched`.
    pub phase: String,
    /// Copy passes done (the first copies everything; later ones what was written meanwhile).
    pub pass: u32,
    /// Bytes copied so far (all passes) and the volume's size.
    pub copied: u64,
    pub size: u64,
    /// Unix seconds of the start.
    pub started: u64,
}

/// A node as it joined: name and NBD address (static between starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    /// `ADDR:PORT` of the node's NBD server (where peers forward I/O).
    pub address: String,
    /// Unix seconds of the node's last registration.
    pub joined: u64,
}

/// One tier of a node's pool, with its capacity and free space in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSpace {
    pub tier: String,
    pub capacity: u64,
    pub free: u64,
}

/// A node's live registration (under its lease), refreshed while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub address: String,
    /// Pool directories the node serves.
    pub pools: Vec<String>,
    pub tiers: Vec<TierSpace>,
    pub capacity: u64,
    pub free: u64,
    /// The host's one-minute load average (from /proc/loadavg).
    pub load: f64,
    /// Unix seconds of the daemon's start.
    pub started: u64,
    /// fusevold's process id (for the operator).
    pub pid: u32,
    /// The admin's priority of this node's pool for placement (lower first).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// The node's own I/O load: requests in flight at its arrays, averaged over 2 s
    /// (`cluster::load`).
    #[serde(default)]
    pub io_load: f64,
    /// The node reports itself busy (load above `busy_above`, or set by the operator):
    /// readers of group snapshots go to another site holding the same image.
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub busy_above: f64,
}

pub const DEFAULT_PRIORITY: u32 = 100;

fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}

/// A catalog entry: a global volume name, its owner node and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub owner: String,
    /// The volume's id in the owner's pool (0 while `creating`).
    pub local_id: u64,
    pub size: u64,
    pub tier: String,
    /// `creating` (the name is taken, the owner is making the volume) or `ready`.
    pub state: String,
    /// The volume's snapshots on the owner (served read-only as NBD exports `VOL@SNAP`).
    #[serde(default)]
    pub snapshots: Vec<SnapshotEntry>,
    /// The volume's name in the owner's pool when it differs from the global name (after
    /// `volume rename`); None: the same. Forwarding nodes open this NBD export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_name: Option<String>,
    /// A spread volume (`volume create --spread`): its ranges and the local volumes holding
    /// them, in offset order, covering `0..size`. Empty for an ordinary volume. `owner` is
    /// then the node that made it, and `local_id` 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartEntry>,
}

impl VolumeRecord {
    /// The volume's name in its owner's pool (its NBD export there).
    pub fn local(&self) -> &str {
        self.local_name.as_deref().unwrap_or(&self.name)
    }

    pub fn spread(&self) -> bool {
        !self.parts.is_empty()
    }
}

/// One range of a spread volume: bytes `offset..offset+size` are bytes `0..size` of local
/// volume `local_name` (id `local_id`, 0 while being made) on node `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub offset: u64,
    pub size: u64,
    pub node: String,
    pub local_name: String,
    pub local_id: u64,
}

/// A snapshot in a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub name: String,
    pub size: u64,
    /// A group snapshot: what makes it the same image as its copy at the other site of its
    /// journal group (readers may be sent there: replica redirection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupTag>,
}

/// A group snapshot's identity at both sites: the group (its id, shared by both sites), the
/// marker (epoch, sequence number) and the group's volume (its id at that epoch's primary).
/// Two snapshots with the same tag and name hold the same image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupTag {
    pub uid: u64,
    /// The group's name (for people; not compared).
    pub group: String,
    pub epoch: u64,
    pub seq: u64,
    pub volume: u64,
}

/// What finds the copies of one group snapshot: its tag without the group's name, and the
/// snapshot's name.
pub type ReplicaKey = (u64, u64, u64, u64, String);

pub fn replica_key(tag: &GroupTag, snapshot: &str) -> ReplicaKey {
    (
        tag.uid,
        tag.epoch,
        tag.seq,
        tag.volume,
        snapshot.to_string(),
    )
}

pub const STATE_CREATING: &str = "creating";
pub const STATE_READY: &str = "ready";

/// A record with the revision it was last written at (what a transaction compares).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub rec: T,
    pub mod_revision: i64,
}

/// Everything under the prefix, as this daemon last saw it.
#[derive(Debug, Default, Clone)]
pub struct Cache {
    pub members: BTreeMap<String, MemberRecord>,
    pub nodes: BTreeMap<String, Versioned<NodeRecord>>,
    pub volumes: BTreeMap<String, Versioned<VolumeRecord>>,
    pub moves: BTreeMap<String, Versioned<MoveRecord>>,
    /// The etcd revision the cache reflects.
    pub revision: i64,
    /// Group snapshots → the catalog entries (volume names) listing one with that tag.
    pub replicas: HashMap<ReplicaKey, BTreeSet<String>>,
}

impl Cache {
    /// Apply one put (`value` Some) or delete of `key`; unknown keys and bad JSON are
    /// skipped with a warning (another version of fusevol may share the prefix).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>, mod_revision: i64) {
        fn parse<T: for<'a> Deserialize<'a>>(key: &str, v: &[u8]) -> Option<T> {
            match serde_json::from_slice(v) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::warn!("cluster: ignoring key {key}: {e}");
                    None
                }
            }
        }
        if let Some(name) = key.strip_prefix(MEMBERS) {
            match value.and_then(|v| parse::<MemberRecord>(key, v)) {
                Some(r) => {
                    self.members.insert(name.to_string(), r);
                }
                None => {
                    self.members.remove(name);
                }
            }
        } else if let Some(name) = key.strip_prefix(NODES) {
            match value.and_then(|v| parse::<NodeRecord>(key, v)) {
                Some(rec) => {
                    self.nodes
                        .insert(name.to_string(), Versioned { rec, mod_revision });
                }
                None => {
                    self.nodes.remove(name);
                }
            }
        } else if let Some(name) = key.strip_prefix(VOLUMES) {
            let new = value.and_then(|v| parse::<VolumeRecord>(key, v));
            if let Some(old) = self.volumes.remove(name) {
                self.index_replicas(&old.rec, false);
            }
            if let Some(rec) = new {
                self.index_replicas(&rec, true);
                self.volumes
                    .insert(name.to_string(), Versioned { rec, mod_revision });
            }
        } else if let Some(name) = key.strip_prefix(MOVES) {
            match value.and_then(|v| parse::<MoveRecord>(key, v)) {
                Some(rec) => {
                    self.moves
                        .insert(name.to_string(), Versioned { rec, mod_revision });
                }
                None => {
                    self.moves.remove(name);
                }
            }
        }
    }

    pub fn node_up(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Add (or remove) the group snapshots of `rec` to the replica index.
    fn index_replicas(&mut self, rec: &VolumeRecord, add: bool) {
        for s in &rec.snapshots {
            let Some(tag) = &s.group else { continue };
            let key = replica_key(tag, &s.name);
            if add {
                self.replicas
                    .entry(key)
                    .or_default()
                    .insert(rec.name.clone());
            } else if let Some(set) = self.replicas.get_mut(&key) {
                set.remove(&rec.name);
                if set.is_empty() {
                    self.replicas.remove(&key);
                }
            }
        }
    }

    /// The catalog entries other than `volume` holding snapshot `snap` of `volume`'s image
    /// (the same group snapshot at another site).
    pub fn replicas_of(&self, volume: &str, snap: &str) -> Vec<&VolumeRecord> {
        let Some(rec) = self.volumes.get(volume).map(|v| &v.rec) else {
            return vec![];
        };
        let Some(tag) = rec
            .snapshots
            .iter()
            .find(|s| s.name == snap)
            .and_then(|s| s.group.as_ref())
        else {
            return vec![];
        };
        self.replicas
            .get(&replica_key(tag, snap))
            .into_iter()
            .flatten()
            .filter(|n| n.as_str() != volume)
            .filter_map(|n| self.volumes.get(n).map(|v| &v.rec))
            .filter(|r| !r.spread() && r.state == STATE_READY && r.owner != rec.owner)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, owner: &str) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            owner: owner.into(),
            local_id: 3,
            size: 1 << 20,
            tier: "fast".into(),
            state: STATE_READY.into(),
            snapshots: vec![],
            local_name: None,
            parts: vec![],
        }
    }

    #[test]
    fn replicas_are_found_by_tag_and_name_and_forgotten_with_their_entry() {
        let tag = GroupTag {
            uid: 7,
            group: "db".into(),
            epoch: 1,
            seq: 42,
            volume: 3,
        };
        let snap = |name: &str, tag: Option<GroupTag>| SnapshotEntry {
            name: name.into(),
            size: 1 << 20,
            group: tag,
        };
        let mut c = Cache::default();
        let mut a = vol("data", "a");
        a.snapshots = vec![snap("s1", Some(tag.clone())), snap("hand", None)];
        let mut b = vol("r-data", "b");
        b.snapshots = vec![snap("s1", Some(tag.clone()))];
        // Same tag, another name: another image.
        let mut c2 = vol("other", "c");
        c2.snapshots = vec![snap("s2", Some(tag.clone()))];
        for (i, r) in [&a, &b, &c2].into_iter().enumerate() {
            let v = serde_json::to_vec(r).unwrap();
            c.apply(&volume_key(&r.name), Some(&v), i as i64 + 1);
        }
        let names = |c: &Cache, v: &str, s: &str| {
            c.replicas_of(v, s)
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c, "data", "s1"), ["r-data"]);
        assert_eq!(names(&c, "r-data", "s1"), ["data"]);
        assert!(names(&c, "data", "hand").is_empty());
        assert!(names(&c, "other", "s2").is_empty());
        // The secondary's snapshot deleted: its entry is rewritten without it.
        b.snapshots.clear();
        c.apply(
            &volume_key("r-data"),
            Some(&serde_json::to_vec(&b).unwrap()),
            9,
        );
        assert!(names(&c, "data", "s1").is_empty());
        c.apply(&volume_key("data"), None, 10);
        assert!(c.replicas.is_empty() || !c.replicas.values().any(|s| s.contains("data")));
    }

    #[test]
    fn cache_applies_puts_and_deletes_by_key() {
        let mut c = Cache::default();
        let v = serde_json::to_vec(&vol("v1", "a")).unwrap();
        c.apply(&volume_key("v1"), Some(&v), 5);
        assert_eq!(c.volumes["v1"].rec.owner, "a");
        assert_eq!(c.volumes["v1"].mod_revision, 5);
        let n = NodeRecord {
            name: "a".into(),
            address: "127.0.0.1:1".into(),
            pools: vec![],
            tiers: vec![],
            capacity: 0,
            free: 0,
            load: 0.5,
            started: 0,
            pid: 1,
            priority: DEFAULT_PRIORITY,
            io_load: 0.0,
            busy: false,
            busy_above: 8.0,
        };
        c.apply(&node_key("a"), Some(&serde_json::to_vec(&n).unwrap()), 6);
        assert!(c.node_up("a"));
        c.apply(&node_key("a"), None, 7);
        assert!(!c.node_up("a"));
        c.apply(&volume_key("v1"), None, 8);
        assert!(c.volumes.is_empty());
        // Garbage is skipped, not fatal.
        c.apply(&volume_key("bad"), Some(b"{"), 9);
        assert!(c.volumes.is_empty());
        c.apply("/fusevol/other/x", Some(b"1"), 10);
    }
}
