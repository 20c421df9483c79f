//! Volume information: the management record of each volume and snapshot, kept in the pool's
//! metadata outside the volume's address space (seed 001). Set by the administrator (CLI,
//! extended attributes in the mount) and by the array when it makes a copy: a copy carries
//! its source's record plus where it came from, written only after the copy's data is in
//! place (`storage/copies.rs` decides when).
//!
//! Every change is one `InfoPut` metadata record (logged, checkpointed, replayed like the
//! extent maps); the record is kept encoded so that a damaged or newer one is shown as
//! invalid rather than dropped. An id's record goes with its volume or snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::format::volinfo::InfoRecord;
use crate::format::MetaRecord;
use crate::meta::{MetaLog, State};
use crate::pool::{Pool, PoolError, StateSource};
use crate::replication::info::ReplicaInfo;
use crate::replication::Replication;
use crate::snapshot::Snapshots;

/// What the pool holds for one volume or snapshot.
// Short-lived values (one per lookup); boxing the record would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoState {
    /// No record (never set, and not a copy made by the array).
    Missing,
    Valid(InfoRecord),
    /// A record that does not decode (damage, or a newer format): why.
    Invalid(String),
}

impl InfoState {
    /// The record, or an empty one when there is none or it is invalid.
    pub fn record(&self) -> InfoRecord {
        match self {
            InfoState::Valid(r) => r.clone(),
            _ => InfoRecord::default(),
        }
    }
}

/// The info service: records by volume or snapshot id.
pub struct Infos {
    pub pool: Arc<Pool>,
    pub snapshots: Arc<Snapshots>,
    /// A grouped volume's record travels to the secondary through the journal.
    pub replication: Arc<Replication>,
    map: RwLock<BTreeMap<u64, Vec<u8>>>,
}

impl StateSource for Infos {
    /// Registered after the volume and snapshot services, so `state` already lists the
    /// objects that exist: records of deleted ones are not carried into the checkpoint.
    fn save(&self, state: &mut State) {
        let map = self.map.read();
        state.infos = map
            .iter()
            .filter(|(id, _)| {
                state.volumes.iter().any(|v| v.id == **id)
                    || state.snapshots.iter().any(|s| s.id == **id)
            })
            .map(|(id, b)| (*id, b.clone()))
            .collect();
    }
}

impl Infos {
    pub fn new(replication: Arc<Replication>, infos: BTreeMap<u64, Vec<u8>>) -> Arc<Infos> {
        let me = Arc::new(Infos {
            pool: replication.pool.clone(),
            snapshots: replication.snapshots.clone(),
            replication: replication.clone(),
            map: RwLock::new(infos),
        });
        let weak: std::sync::Weak<dyn StateSource> = Arc::downgrade(&me) as _;
        me.pool.add_state_source(weak);
        // A secondary stores what the journal brings (`replication/info.rs`).
        let sink = Arc::downgrade(&me);
        replication.set_info_sink(Box::new(move |ri| match sink.upgrade() {
            Some(infos) => infos.put_replica(ri),
            None => Ok(()),
        }));
        me
    }

    /// Journal the current record of `id` when it belongs to a primary group's volume (or
    /// to one of its snapshots), so the secondary gets it in order with the data. A failure
    /// is logged: the record itself is stored; the next change sends it again.
    pub fn replicate(&self, id: u64) {
        let (vol, snap) = match self.snapshots.snapshot_by_id(id) {
            Some(s) => (s.volume, s.name.clone()),
            None => (id, String::new()),
        };
        let bytes = self.map.read().get(&id).cloned().unwrap_or_default();
        if let Err(e) = self.replication.journal_info(vol, &snap, &bytes) {
            log::warn!("volume information of id {id} was not journaled for the secondary: {e}");
        }
    }

    /// Store a record the journal brought to this secondary: the primary's record, with
    /// origin kind `replica` naming the primary volume (and snapshot) and pool.
    fn put_replica(&self, ri: ReplicaInfo) -> Result<(), PoolError> {
        let p = &ri.payload;
        if p.info.is_empty() {
            return self.put(ri.local_id, &InfoRecord::default());
        }
        let rec = match InfoRecord::decode(&p.info) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "volume information of '{}{}{}' from pool {:016x} is invalid ({e}); not stored",
                    p.volume,
                    if p.snapshot.is_empty() { "" } else { "@" },
                    p.snapshot,
                    p.pool_id
                );
                return Ok(());
            }
        };
        let origin = crate::format::volinfo::Origin {
            kind: "replica".into(),
            volume: p.volume.clone(),
            snapshot: p.snapshot.clone(),
            volume_id: ri.primary_volume,
            pool_id: p.pool_id,
            time: crate::pool::create::now_secs(),
            ..Default::default()
        };
        self.put(ri.local_id, &rec.for_copy(origin))
    }

    /// The record of volume or snapshot `id`.
    pub fn get(&self, id: u64) -> InfoState {
        match self.map.read().get(&id) {
            None => InfoState::Missing,
            Some(b) => match InfoRecord::decode(b) {
                Ok(r) => InfoState::Valid(r),
                Err(e) => InfoState::Invalid(e.to_string()),
            },
        }
    }

    fn exists(&self, id: u64) -> bool {
        self.snapshots.volumes.volume_by_id(id).is_some()
            || self.snapshots.snapshot_by_id(id).is_some()
    }

    /// Replace the record of `id`; the caller holds the metadata lock. Refused when `id` is
    /// not a volume or snapshot any more (a delete won the race) or the record is too large.
    pub fn put_locked(
        &self,
        log: &mut MetaLog,
        id: u64,
        rec: &InfoRecord,
    ) -> Result<(), PoolError> {
        rec.check_size().map_err(PoolError::Invalid)?;
        if !self.exists(id) {
            return Err(PoolError::NotFound(format!(
                "volume or snapshot id {id} does not exist (deleted meanwhile)"
            )));
        }
        let info = if rec.is_empty() {
            Vec::new()
        } else {
            rec.encode()
        };
        log.append(&MetaRecord::InfoPut {
            id,
            info: info.clone(),
        })?;
        let mut map = self.map.write();
        if info.is_empty() {
            map.remove(&id);
        } else {
            map.insert(id, info);
        }
        Ok(())
    }

    /// Replace the record of `id`.
    pub fn put(&self, id: u64, rec: &InfoRecord) -> Result<(), PoolError> {
        let mut log = self.pool.meta.lock();
        self.put_locked(&mut log, id, rec)?;
        drop(log);
        self.replicate(id);
        Ok(())
    }

    /// Change the record of `id` with `f` (under the metadata lock, so two changes do not
    /// lose each other's keys). `f` refuses with a message (invalid).
    pub fn update(
        &self,
        id: u64,
        f: impl FnOnce(&mut InfoRecord) -> Result<(), String>,
    ) -> Result<InfoRecord, PoolError> {
        let mut log = self.pool.meta.lock();
        let mut rec = match self.get(id) {
            InfoState::Invalid(why) => {
                log::warn!("volume information of id {id} was invalid ({why}); starting afresh");
                InfoRecord::default()
            }
            s => s.record(),
        };
        f(&mut rec).map_err(PoolError::Invalid)?;
        self.put_locked(&mut log, id, &rec)?;
        drop(log);
        self.replicate(id);
        Ok(rec)
    }
}

/// A record as the control protocol shows it: `fields` flat (`label`, `user.<k>`,
/// `origin.kind`, ...), `status` valid, missing or invalid (with `error`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct InfoView {
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl InfoView {
    pub fn of(s: &InfoState) -> InfoView {
        match s {
            InfoState::Missing => InfoView {
                status: "missing".into(),
                ..Default::default()
            },
            InfoState::Invalid(e) => InfoView {
                status: "invalid".into(),
                error: e.clone(),
                ..Default::default()
            },
            InfoState::Valid(r) => InfoView {
                status: "valid".into(),
                error: String::new(),
                fields: r.pairs().into_iter().collect(),
            },
        }
    }
}

impl Infos {
    /// The id of `VOL` or `VOL@SNAP`, or not found naming it.
    pub fn resolve(&self, name: &str) -> Result<u64, PoolError> {
        match name.split_once('@') {
            Some((vol, snap)) => Ok(self.snapshots.snapshot(vol, snap)?.id),
            None => Ok(self.snapshots.volumes.volume_or_err(name)?.id),
        }
    }
}
