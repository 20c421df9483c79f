//! Volume information travels with a journal group's volumes (issue 14): on the primary, a
//! change of a member volume's record (or of one of its snapshots') is journaled as an
//! `Info` record after whatever it describes (a group snapshot's records follow its
//! `Marker`); the secondary applies it in sequence order and hands it to the info service
//! through the sink the owner set (`Storage`), which stores it with origin kind `replica`.
//! Segments without such records (older primaries) apply as before.

use crate::format::journal::{InfoPayload, JournalRecord, RecordKind};
use crate::pool::PoolError;

use super::group::Group;
use super::{Replication, ReplicationError};

/// What the secondary was sent: the local volume or snapshot id it is for, and the
/// primary's record with where it came from.
pub struct ReplicaInfo {
    pub local_id: u64,
    pub payload: InfoPayload,
    /// The primary volume's id.
    pub primary_volume: u64,
}

/// Stores a replicated record on the secondary (logged like any other info change).
pub type InfoSink = Box<dyn Fn(ReplicaInfo) -> Result<(), PoolError> + Send + Sync>;

impl Replication {
    /// Set where applied `Info` records go (the info service's owner calls this once).
    pub fn set_info_sink(&self, sink: InfoSink) {
        *self.info_sink.write() = Some(sink);
    }

    /// Journal the record `info` of volume `volume_id` (or of its snapshot `snapshot`) if
    /// the volume is in a primary journal group; nothing otherwise. Not with the metadata
    /// lock held (the journal's lock comes first elsewhere).
    pub fn journal_info(
        &self,
        volume_id: u64,
        snapshot: &str,
        info: &[u8],
    ) -> Result<(), PoolError> {
        let Some(g) = self.group_of(volume_id) else {
            return Ok(());
        };
        if !g.is_primary() || g.is_gone() {
            return Ok(());
        }
        let Some(vol) = self.volumes.volume_by_id(volume_id) else {
            return Ok(());
        };
        let payload = InfoPayload {
            pool_id: self.pool.pool_id,
            volume: vol.name.clone(),
            snapshot: snapshot.to_string(),
            info: info.to_vec(),
        };
        g.journal()
            .append(RecordKind::Info, volume_id, 0, 0, &payload.encode())
            .map_err(|e| ReplicationError::journal(&g.name, e).into_pool())?;
        Ok(())
    }
}

/// Apply an `Info` record on the secondary: find the local volume (and snapshot) and hand
/// the record to the sink. A record for a volume or snapshot this site does not have (yet,
/// or any more) is skipped with a warning: it describes nothing here.
pub(crate) fn apply_info(
    r: &Replication,
    g: &Group,
    rec: &JournalRecord,
    local: Option<std::sync::Arc<crate::volume::Volume>>,
) -> Result<(), ReplicationError> {
    let h = &rec.head;
    let payload = rec
        .info_payload()
        .map_err(|source| ReplicationError::BadRecord { seq: h.seq, source })?;
    let Some(v) = local else {
        log::warn!(
            "group '{}': volume information of primary volume '{}' (record {}) skipped: no such volume here",
            g.name,
            payload.volume,
            h.seq
        );
        return Ok(());
    };
    let local_id = if payload.snapshot.is_empty() {
        v.id
    } else {
        match r.snapshots.reg.read().get(v.id, &payload.snapshot) {
            Some(s) => s.id,
            None => {
                // A snapshot taken by hand on the primary exists only there.
                log::debug!(
                    "group '{}': volume information of snapshot '{}@{}' (record {}) skipped: no such snapshot here",
                    g.name,
                    v.name,
                    payload.snapshot,
                    h.seq
                );
                return Ok(());
            }
        }
    };
    let sink = r.info_sink.read();
    if let Some(sink) = sink.as_ref() {
        sink(ReplicaInfo {
            local_id,
            payload,
            primary_volume: h.volume,
        })
        .map_err(ReplicationError::from)?;
    }
    Ok(())
}
