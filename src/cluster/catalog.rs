//! Catalog changes: create, resize and delete of a global volume name, each an etcd
//! transaction that compares what it read (the key's create revision for a new name, its mod
//! revision for a change), so two nodes racing for one name get exactly one winner and the
//! loser a clear error naming the owner.
//!
//! Create: (1) take the name (`creating`, this node as owner) if the key does not exist;
//! (2) make the volume in the local pool; (3) publish it `ready` with its local id, comparing
//! the revision of step 1. A failure in (2) gives the name back. A daemon killed between (1)
//! and (3) leaves a `creating` entry that its next registration finishes or drops
//! (`session::reconcile`).

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::records::{self, VolumeRecord, STATE_CREATING, STATE_READY};
use super::{Cluster, ClusterError, Inner};
use crate::pool::PoolError;

fn unreachable(inner: &Inner, op: &str, e: etcd_client::Error) -> ClusterError {
    ClusterError::Unreachable {
        endpoints: inner.endpoints(),
        op: op.to_string(),
        detail: e.to_string(),
    }
}

/// The record now at `key` and its mod revision (from a txn's else-branch get).
fn current(resp: &etcd_client::TxnResponse) -> Option<(VolumeRecord, i64)> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .and_then(|kv| Some((serde_json::from_slice(kv.value()).ok()?, kv.mod_revision()))),
        _ => None,
    })
}

/// The catalog entry of `name` read from etcd itself (not the cache), with its revision.
async fn read(
    inner: &Inner,
    name: &str,
    op: &str,
) -> Result<Option<(VolumeRecord, i64)>, ClusterError> {
    let mut c = inner
        .client()
        .await
        .map_err(|e| unreachable(inner, op, e))?;
    let r = c
        .get(records::volume_key(name), None)
        .await
        .map_err(|e| unreachable(inner, op, e))?;
    Ok(r.kvs()
        .first()
        .and_then(|kv| Some((serde_json::from_slice(kv.value()).ok()?, kv.mod_revision()))))
}

/// The catalog entry of `name` read from etcd itself, with its revision (for `moving`).
pub(super) async fn read_entry(
    inner: &Inner,
    name: &str,
    op: &str,
) -> Result<Option<(VolumeRecord, i64)>, ClusterError> {
    read(inner, name, op).await
}

/// Refuse unless this node owns `name`; a name the catalog does not know is the local pool's
/// business (NotFound comes from there).
async fn owned(
    inner: &Inner,
    name: &str,
    op: &str,
) -> Result<Option<(VolumeRecord, i64)>, ClusterError> {
    if inner.moving.lock().contains(name) {
        return Err(ClusterError::Pool(PoolError::Busy(format!(
            "volume '{name}' is being moved to another node; {op} after the move (on its new owner)"
        ))));
    }
    let cur = read(inner, name, op).await?;
    if let Some((rec, _)) = &cur {
        if rec.owner != inner.opts.node {
            return Err(ClusterError::NotOwner {
                name: name.to_string(),
                owner: rec.owner.clone(),
            });
        }
    }
    Ok(cur)
}

/// Put `rec` if the key is still at `rev`; Conflict (with the revision now) otherwise.
pub(super) async fn put_if(
    inner: &Inner,
    rec: &VolumeRecord,
    rev: i64,
    op: &str,
) -> Result<i64, ClusterError> {
    let mut c = inner
        .client()
        .await
        .map_err(|e| unreachable(inner, op, e))?;
    let key = records::volume_key(&rec.name);
    let resp = c
        .txn(
            Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(
                    key.clone(),
                    serde_json::to_vec(rec).expect("serialize"),
                    None,
                )])
                .or_else([TxnOp::get(key, None)]),
        )
        .await
        .map_err(|e| unreachable(inner, op, e))?;
    if resp.succeeded() {
        Ok(resp.header().map(|h| h.revision()).unwrap_or(rev))
    } else {
        Err(ClusterError::Conflict {
            name: rec.name.clone(),
            read: rev,
            now: current(&resp).map(|(_, r)| r).unwrap_or(0),
        })
    }
}

impl Cluster {
    /// Put `rec` under its name only if nobody has the name (create revision 0 = no such key):
    /// the revision it was written at, or `Exists` naming the owner.
    pub(super) fn take_name(&self, op: &str, rec: &VolumeRecord) -> Result<i64, ClusterError> {
        let inner = self.inner.clone();
        let key = records::volume_key(&rec.name);
        self.block_on(op, async {
            let mut c = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, op, e))?;
            let resp = c
                .txn(
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.clone(),
                            serde_json::to_vec(rec).expect("serialize"),
                            None,
                        )])
                        .or_else([TxnOp::get(key.clone(), None)]),
                )
                .await
                .map_err(|e| unreachable(&inner, op, e))?;
            if !resp.succeeded() {
                let owner = current(&resp)
                    .map(|(r, _)| r.owner)
                    .unwrap_or_else(|| "?".into());
                return Err(ClusterError::Exists {
                    name: rec.name.clone(),
                    owner,
                });
            }
            Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
        })
    }

    /// Delete the entry at `key` only if it is still at revision `rev`.
    pub(super) fn delete_if_at(
        &self,
        op: &str,
        key: &str,
        rev: i64,
    ) -> Result<etcd_client::TxnResponse, ClusterError> {
        let inner = self.inner.clone();
        self.block_on(op, async {
            let mut c = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, op, e))?;
            c.txn(
                Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await
            .map_err(|e| unreachable(&inner, op, e))
        })
    }

    /// A create that failed after `take_name` gives the name back (best effort: the next
    /// reconcile drops an entry left behind).
    pub(super) fn give_back_name(&self, op: &str, name: &str, taken: i64) {
        if let Err(g) = self.delete_if_at(op, &records::volume_key(name), taken) {
            log::warn!("cluster: {op} failed and the name could not be given back yet ({g}); the next reconcile drops it");
        }
    }

    /// Create volume `name` cluster-wide on this node: `make` creates it in the local pool
    /// and returns (its result, local id, size, tier).
    pub fn create_volume<T>(
        &self,
        name: &str,
        size: u64,
        tier: &str,
        make: impl FnOnce() -> Result<(T, u64, u64, String), PoolError>,
    ) -> Result<T, ClusterError> {
        let inner = self.inner.clone();
        let op = format!("create volume '{name}'");
        let mut rec = VolumeRecord {
            name: name.to_string(),
            owner: inner.opts.node.clone(),
            local_id: 0,
            size,
            tier: tier.to_string(),
            state: STATE_CREATING.into(),
            snapshots: vec![],
            local_name: None,
            parts: vec![],
        };
        inner.creating.lock().insert(name.to_string());
        let _done = Finally(|| {
            inner.creating.lock().remove(name);
        });
        // (1) Take the name: only if nobody has it.
        let taken = self.take_name(&op, &rec)?;
        // (2) Make it here; give the name back if that fails.
        let (out, id, real_size, real_tier) = match make() {
            Ok(r) => r,
            Err(e) => {
                self.give_back_name(&op, name, taken);
                return Err(ClusterError::Pool(e));
            }
        };
        // (3) Publish it ready.
        rec.local_id = id;
        rec.size = real_size;
        rec.tier = real_tier;
        rec.state = STATE_READY.into();
        if let Err(e) = self.block_on(&op, put_if(&inner, &rec, taken, &op)) {
            // The volume exists here; the reconcile publishes it when etcd answers again.
            log::warn!("cluster: {op}: made locally, catalog not updated yet: {e}");
        }
        log::info!(
            "cluster: volume '{name}' created on node '{}' (local id {id})",
            inner.opts.node
        );
        Ok(out)
    }

    /// Resize a volume this node owns: locally first, then the catalog entry.
    pub fn resize_volume<T>(
        &self,
        name: &str,
        resize: impl FnOnce() -> Result<(T, u64), PoolError>,
    ) -> Result<T, ClusterError> {
        let inner = self.inner.clone();
        let op = format!("resize volume '{name}'");
        let cur = self.block_on(&op, owned(&inner, name, &op))?;
        let (out, size) = resize()?;
        if let Some((mut rec, rev)) = cur {
            rec.size = size;
            if let Err(e) = self.block_on(&op, put_if(&inner, &rec, rev, &op)) {
                log::warn!("cluster: {op}: resized locally, catalog not updated yet: {e}");
            }
        }
        Ok(out)
    }

    /// Delete a volume this node owns: locally first (it may be refused: open, paired), then
    /// its catalog entry, comparing the revision read.
    pub fn delete_volume(
        &self,
        name: &str,
        delete: impl FnOnce() -> Result<(), PoolError>,
    ) -> Result<(), ClusterError> {
        let inner = self.inner.clone();
        let op = format!("delete volume '{name}'");
        let cur = self.block_on(&op, owned(&inner, name, &op))?;
        delete()?;
        if let Some((_, rev)) = cur {
            let key = records::volume_key(name);
            let r = self.block_on(&op, async {
                let mut c = inner
                    .client()
                    .await
                    .map_err(|e| unreachable(&inner, &op, e))?;
                c.txn(
                    Txn::new()
                        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                        .and_then([TxnOp::delete(key.clone(), None)]),
                )
                .await
                .map_err(|e| unreachable(&inner, &op, e))
            });
            match r {
                Ok(resp) if resp.succeeded() => {}
                Ok(_) => log::warn!(
                    "cluster: {op}: the entry changed meanwhile; the next reconcile drops it"
                ),
                Err(e) => {
                    log::warn!("cluster: {op}: deleted locally, catalog not updated yet: {e}")
                }
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// Give volume `name` the global name `new_name`: one transaction that compares the
    /// revision of the entry read and takes the new name only if nobody has it (two renames
    /// to one name → exactly one wins). The volume keeps its name in its owner's pool (the
    /// entry's `local_name`), so it can run on any node; every mount shows the new name as
    /// soon as its watch delivers the change.
    pub fn rename_volume(&self, name: &str, new_name: &str) -> Result<(), ClusterError> {
        crate::names::validate("volume", new_name)
            .map_err(|m| ClusterError::Pool(PoolError::Invalid(m)))?;
        let inner = self.inner.clone();
        let op = format!("rename volume '{name}' to '{new_name}'");
        if name == new_name {
            return Err(ClusterError::Pool(PoolError::Invalid(format!(
                "volume '{name}' already has that name"
            ))));
        }
        if self.inner.cache.read().moves.contains_key(name) {
            return Err(ClusterError::Pool(PoolError::Busy(format!(
                "volume '{name}' is being moved to another node; rename it after the move"
            ))));
        }
        let Some((mut rec, rev)) = self.block_on(&op, read(&inner, name, &op))? else {
            return Err(ClusterError::Pool(PoolError::NotFound(format!(
                "volume '{name}' is not in the cluster catalog"
            ))));
        };
        if rec.state != STATE_READY {
            return Err(ClusterError::Pool(PoolError::Busy(format!(
                "volume '{name}' is still being created; rename it once it is ready"
            ))));
        }
        let local = rec.local().to_string();
        rec.name = new_name.to_string();
        rec.local_name = (!rec.spread() && local != new_name).then_some(local);
        let (old_key, new_key) = (records::volume_key(name), records::volume_key(new_name));
        let resp = self.block_on(&op, async {
            let mut c = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            c.txn(
                Txn::new()
                    .when([
                        Compare::mod_revision(old_key.clone(), CompareOp::Equal, rev),
                        Compare::create_revision(new_key.clone(), CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::delete(old_key.clone(), None),
                        TxnOp::put(
                            new_key.clone(),
                            serde_json::to_vec(&rec).expect("serialize"),
                            None,
                        ),
                    ])
                    .or_else([TxnOp::get(new_key.clone(), None)]),
            )
            .await
            .map_err(|e| unreachable(&inner, &op, e))
        })?;
        if resp.succeeded() {
            log::info!("cluster: volume '{name}' renamed to '{new_name}'");
            return Ok(());
        }
        if let Some((other, _)) = current(&resp) {
            return Err(ClusterError::Exists {
                name: new_name.to_string(),
                owner: other.owner,
            });
        }
        let now = self
            .block_on(&op, read(&inner, name, &op))?
            .map(|(_, r)| r)
            .unwrap_or(0);
        Err(ClusterError::Conflict {
            name: name.to_string(),
            read: rev,
            now,
        })
    }
}

/// Runs a closure when dropped.
pub(super) struct Finally<F: FnMut()>(pub(super) F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
