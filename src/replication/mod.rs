//! Journal groups and asynchronous replication through a remote directory.
//!
//! Primary: every write to a group's volumes is appended to the group's journal before the
//! data is written (`journal`), sealed segments are published whole into `<remote>/<group>/`
//! by the shipper, and segments are purged once the secondary acknowledges them.
//! Secondary: the applier reads the published segments, verifies them, applies the records
//! strictly in sequence order, makes the data and its applied sequence number durable, and
//! writes the acknowledgement file.

mod apply;
pub mod error;
pub mod full;
pub mod group;
pub mod handover;
pub mod info;
pub mod lag;
pub mod ops;
pub mod options;
pub mod pitr;
pub mod remote;
pub mod rename;
mod restore;
mod resync;
mod ship;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::meta::State;
use crate::mirror::Mirror;
use crate::pool::{Pool, StateSource};
use crate::snapshot::Snapshots;
use crate::volume::Volumes;
pub use error::ReplicationError;
use group::Group;
pub use group::JournalAdmission;

/// The replication service: journal groups, their journals, shipper, applier, takeover and
/// failback, and their part of the write pipeline (`group.rs`: journal admission before the
/// data write, completion after it).
pub struct Replication {
    pub pool: Arc<Pool>,
    pub volumes: Arc<Volumes>,
    pub snapshots: Arc<Snapshots>,
    pub mirror: Arc<Mirror>,
    /// Journal groups by uid.
    pub(crate) groups: RwLock<HashMap<u64, Arc<Group>>>,
    /// Volume id → the journal group it is in (primary: its writes are journaled;
    /// secondary: it is read-only while the group applies).
    pub(crate) members: RwLock<HashMap<u64, Arc<Group>>>,
    /// Where a secondary puts the volume information an `Info` journal record carries
    /// (set by the owner of the info service, `info.rs`).
    pub(crate) info_sink: RwLock<Option<info::InfoSink>>,
}

impl Replication {
    /// The service; `attach_groups` (ops.rs) loads the recovered groups.
    pub fn new(mirror: Arc<Mirror>) -> Arc<Replication> {
        let me = Arc::new(Replication {
            pool: mirror.pool.clone(),
            volumes: mirror.volumes.clone(),
            snapshots: mirror.snapshots.clone(),
            mirror,
            groups: RwLock::new(HashMap::new()),
            members: RwLock::new(HashMap::new()),
            info_sink: RwLock::new(None),
        });
        let weak: std::sync::Weak<dyn StateSource> = Arc::downgrade(&me) as _;
        me.pool.add_state_source(weak);
        let hook: std::sync::Weak<dyn crate::pool::SyncHook> = Arc::downgrade(&me) as _;
        me.pool.add_sync_hook(hook);
        me
    }

    /// The journal group of a volume, if any.
    pub fn group_of(&self, vol: u64) -> Option<Arc<Group>> {
        self.members.read().get(&vol).cloned()
    }

    /// Put a volume in a group, or take it out (`None`).
    pub(crate) fn set_member(&self, vol: u64, g: Option<Arc<Group>>) {
        let mut m = self.members.write();
        match g {
            Some(g) => {
                m.insert(vol, g);
            }
            None => {
                m.remove(&vol);
            }
        }
    }
}

impl StateSource for Replication {
    fn save(&self, state: &mut State) {
        let mut groups: Vec<crate::format::GroupRec> = self
            .groups
            .read()
            .values()
            .filter(|g| !g.is_gone())
            .map(|g| g.rec.lock().clone())
            .collect();
        groups.sort_by_key(|g| g.uid);
        state.groups = groups;
    }
}
