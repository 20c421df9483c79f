//! Spread volumes (`fusevol volume create NAME --size S --spread`, or automatically when no
//! single node has S free): one global volume made of parts on several nodes. The catalog
//! entry lists its ranges (offset, size → node, local volume); every node's mount shows it as
//! one file of size S and splits each request by range, serving a piece from its own pool
//! when the part is here and forwarding it over NBD to the part's node otherwise.
//!
//! A part is an ordinary local volume named `NAME~partI.TAG` in its node's pool, kept out of the
//! catalog and hidden from the mount, and noted in `POOL/cluster-parts.json` before it is
//! made. Create: (1) a transaction takes the name with the whole plan (`creating`, parts
//! without local ids); (2) each part is made on its node (here directly, elsewhere through
//! a request, as a placed create); (3) the entry is published `ready` with the local ids,
//! comparing the revision of step 1. Anything failing gives the name back. A part whose entry
//! no longer lists it (the volume was deleted, or its create failed) is deleted by its node's
//! cleanup, from what etcd itself says — also when that node was down at the time.

use serde::{Deserialize, Serialize};

use super::catalog::Finally;
use super::records::{self, PartEntry, VolumeRecord, STATE_CREATING, STATE_READY};
use super::{placement, Cluster, ClusterError, Inner};
use crate::pool::PoolError;

pub const PARTS_FILE: &str = "cluster-parts.json";
/// Parts start on multiples of this (the last one ends at the volume's size).
pub const PART_ALIGN: u64 = 1 << 20;

/// The local name of part `i` of spread volume `name` made at `tag` (a per-create stamp, so
/// a volume renamed away and a new one of its old name never want the same local name).
pub fn part_name(name: &str, i: usize, tag: u64) -> String {
    format!("{name}~part{i}.{tag:x}")
}

/// A part of a spread volume held here (noted before it is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPart {
    /// The spread volume's global name (at the time the part was made).
    pub spread: String,
    pub local_name: String,
    /// 0 until made.
    pub local_id: u64,
}

impl super::markers::Marker for LocalPart {
    fn key(&self) -> &str {
        &self.local_name
    }
}

pub(super) type PartMarkers = super::markers::MarkerFile<LocalPart>;

/// The pieces of request `[offset, offset+len)` of a spread volume: (part index, offset in
/// the part, offset in the request, length). The range must lie inside the volume.
/// `parts`: (offset, size) of each part.
pub fn pieces(
    parts: impl IntoIterator<Item = (u64, u64)>,
    offset: u64,
    len: u64,
) -> Vec<(usize, u64, u64, u64)> {
    let end = offset + len;
    let mut out = Vec::new();
    for (i, (po, ps)) in parts.into_iter().enumerate() {
        let (s, e) = (po.max(offset), (po + ps).min(end));
        if s < e {
            out.push((i, s - po, s - offset, e - s));
        }
    }
    out
}

fn unreachable(inner: &Inner, op: &str, e: etcd_client::Error) -> ClusterError {
    ClusterError::Unreachable {
        endpoints: inner.endpoints(),
        op: op.to_string(),
        detail: e.to_string(),
    }
}

impl Cluster {
    /// Is `name` a spread volume in the catalog?
    pub fn is_spread(&self, name: &str) -> bool {
        self.inner
            .cache
            .read()
            .volumes
            .get(name)
            .is_some_and(|v| v.rec.spread())
    }

    /// Plan a spread volume over the nodes up (`placement::spread`).
    pub fn plan_spread(
        &self,
        size: u64,
        tier: Option<&str>,
        explicit: bool,
    ) -> Result<Vec<(String, u64)>, ClusterError> {
        let cache = self.inner.cache.read();
        let nodes: Vec<_> = cache.nodes.values().map(|v| &v.rec).collect();
        placement::spread(&nodes, &self.inner.opts.node, size, tier, explicit).map_err(|m| {
            ClusterError::Pool(PoolError::NoSpace(format!("cannot place the volume: {m}")))
        })
    }

    /// Create spread volume `name` of `size` bytes from `plan` ((node, bytes) in offset
    /// order). Returns its catalog entry.
    pub fn create_spread(
        &self,
        name: &str,
        size: u64,
        tier: Option<&str>,
        plan: &[(String, u64)],
    ) -> Result<VolumeRecord, ClusterError> {
        let inner = self.inner.clone();
        let me = inner.opts.node.clone();
        let op = format!("create spread volume '{name}'");
        let mut parts = Vec::new();
        let mut offset = 0;
        let tag = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        for (i, (node, bytes)) in plan.iter().enumerate() {
            parts.push(PartEntry {
                offset,
                size: *bytes,
                node: node.clone(),
                local_name: part_name(name, i, tag),
                local_id: 0,
            });
            offset += bytes;
        }
        if offset != size {
            return Err(ClusterError::Pool(PoolError::Invalid(format!(
                "volume '{name}': the parts cover {offset} bytes of {size}"
            ))));
        }
        let mut rec = VolumeRecord {
            name: name.to_string(),
            owner: me.clone(),
            local_id: 0,
            size,
            tier: tier.unwrap_or("").to_string(),
            state: STATE_CREATING.into(),
            snapshots: vec![],
            local_name: None,
            parts,
        };
        inner.creating.lock().insert(name.to_string());
        let _done = Finally(|| {
            inner.creating.lock().remove(name);
        });
        // (1) Take the name with the plan.
        let taken = self.take_name(&op, &rec)?;
        // (2) Make each part on its node.
        let made = self.make_parts(name, tier, &mut rec.parts);
        let tiers = match made {
            Ok(t) => t,
            Err(e) => {
                // Give the name back; the parts made are deleted by their nodes' cleanup (the
                // entry no longer lists them), this node's at once.
                self.give_back_name(&op, name, taken);
                self.cleanup_parts();
                return Err(e);
            }
        };
        // (3) Publish it ready.
        if rec.tier.is_empty() {
            rec.tier = tiers.first().cloned().unwrap_or_default();
        }
        rec.state = STATE_READY.into();
        self.block_on(&op, super::catalog::put_if(&inner, &rec, taken, &op))?;
        log::info!(
            "cluster: spread volume '{name}' created: {}",
            describe_parts(&rec.parts)
        );
        Ok(rec)
    }

    /// Grow spread volume `name` (from any node) to `new_size` bytes with new parts, placed as
    /// a create places them, after its end: (1) a transaction comparing the revision read
    /// lists them (local ids 0, past the volume's size: no I/O reaches them yet, and every
    /// node's cleanup leaves them alone); (2) each node makes its part; (3) a transaction
    /// comparing the revision of (1) sets their ids and the new size. A grow that fails puts
    /// the entry back as it was (and if even that fails, the reconcile of the node that made
    /// the entry drops parts past the size). Shrinking is refused: the last parts hold data.
    pub fn grow_spread(&self, name: &str, new_size: u64) -> Result<VolumeRecord, ClusterError> {
        let inner = self.inner.clone();
        let op = format!("resize spread volume '{name}'");
        let Some((rec, rev)) = self.block_on(&op, super::catalog::read_entry(&inner, name, &op))?
        else {
            return Err(ClusterError::Pool(PoolError::NotFound(format!(
                "volume '{name}' does not exist"
            ))));
        };
        let nodes = || {
            let mut n: Vec<&str> = rec.parts.iter().map(|p| p.node.as_str()).collect();
            n.dedup();
            n.join(", ")
        };
        if !rec.spread() {
            return Err(ClusterError::Pool(PoolError::Invalid(format!(
                "volume '{name}' is not a spread volume"
            ))));
        }
        if rec.state != STATE_READY || rec.parts.iter().any(|p| p.local_id == 0) {
            return Err(ClusterError::Pool(PoolError::Busy(format!(
                "volume '{name}' is being created or resized; try again"
            ))));
        }
        if new_size < rec.size {
            return Err(ClusterError::Pool(PoolError::Invalid(format!(
                "volume '{name}' is spread over nodes {}: shrinking a spread volume is not \
                 supported (its last parts hold data); grow it, or create a smaller volume and \
                 copy the data",
                nodes()
            ))));
        }
        if new_size == rec.size {
            return Ok(rec);
        }
        let tier = (!rec.tier.is_empty()).then_some(rec.tier.as_str());
        let plan = self.plan_spread(new_size - rec.size, tier, false)?;
        let tag = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let first = rec.parts.len();
        let mut grown = rec.clone();
        let mut offset = rec.size;
        for (i, (node, bytes)) in plan.iter().enumerate() {
            grown.parts.push(PartEntry {
                offset,
                size: *bytes,
                node: node.clone(),
                local_name: part_name(name, first + i, tag),
                local_id: 0,
            });
            offset += bytes;
        }
        inner.creating.lock().insert(name.to_string());
        let _done = Finally(|| {
            inner.creating.lock().remove(name);
        });
        // (1) List the new parts.
        let listed = self.block_on(&op, super::catalog::put_if(&inner, &grown, rev, &op))?;
        // (2) Make them.
        if let Err(e) = self.make_parts(name, tier, &mut grown.parts[first..]) {
            if let Err(g) = self.block_on(&op, super::catalog::put_if(&inner, &rec, listed, &op)) {
                log::warn!("cluster: {op} failed and its parts could not be unlisted yet ({g}); the next reconcile drops them");
            }
            self.cleanup_parts();
            return Err(e);
        }
        // (3) The new size.
        grown.size = new_size;
        self.block_on(&op, super::catalog::put_if(&inner, &grown, listed, &op))?;
        log::info!(
            "cluster: spread volume '{name}' grown to {new_size} bytes: {}",
            describe_parts(&grown.parts)
        );
        Ok(grown)
    }

    /// Make each of `parts` (local ids 0) of spread volume `name` on its node, filling in
    /// their local ids; returns their tiers. The first failure stops it, naming the part.
    fn make_parts(
        &self,
        name: &str,
        tier: Option<&str>,
        parts: &mut [PartEntry],
    ) -> Result<Vec<String>, ClusterError> {
        let me = self.inner.opts.node.clone();
        let mut tiers = Vec::new();
        for p in parts.iter_mut() {
            let made = if p.node == me {
                self.make_part(&me, name, &p.local_name, p.size, tier)
                    .map_err(ClusterError::Pool)
            } else {
                self.ask_create(&p.node, &p.local_name, p.size, tier, false, Some(name))
                    .and_then(|r| {
                        r.local_id.map(|id| (id, r.size, r.tier)).ok_or_else(|| {
                            ClusterError::Pool(PoolError::Inconsistent(format!(
                                "node '{}' answered without a local id",
                                p.node
                            )))
                        })
                    })
            };
            match made {
                Ok((id, _, t)) => {
                    p.local_id = id;
                    tiers.push(t);
                }
                Err(e) => {
                    let e = e.into_pool_error();
                    return Err(ClusterError::Pool(match e {
                        PoolError::NoSpace(m) => PoolError::NoSpace(format!(
                            "volume '{name}': part {} on node '{}': {m}",
                            p.local_name, p.node
                        )),
                        PoolError::Exists(m) => PoolError::Exists(format!(
                            "volume '{name}': part {} on node '{}': {m}",
                            p.local_name, p.node
                        )),
                        PoolError::Invalid(m) => PoolError::Invalid(format!(
                            "volume '{name}': part {} on node '{}': {m}",
                            p.local_name, p.node
                        )),
                        other => PoolError::Inconsistent(format!(
                            "volume '{name}': part {} on node '{}': {other}",
                            p.local_name, p.node
                        )),
                    }));
                }
            }
        }
        Ok(tiers)
    }

    /// Make part `local_name` of spread volume `spread` in this pool (noted first).
    pub(super) fn make_part(
        &self,
        from: &str,
        spread: &str,
        local_name: &str,
        size: u64,
        tier: Option<&str>,
    ) -> Result<(u64, u64, String), PoolError> {
        if self.inner.st.volumes.volume(local_name).is_some() {
            return Err(PoolError::Exists(format!(
                "node '{}' has a volume '{local_name}' already",
                self.inner.opts.node
            )));
        }
        let exec = self.executor.lock().clone().ok_or_else(|| {
            PoolError::Busy(format!("node '{}' is stopping", self.inner.opts.node))
        })?;
        let mark = |id| LocalPart {
            spread: spread.to_string(),
            local_name: local_name.to_string(),
            local_id: id,
        };
        self.inner.parts.put(mark(0)).map_err(|e| {
            PoolError::Busy(format!(
                "note part '{local_name}' in the pool directory: {e}"
            ))
        })?;
        match exec(local_name, size, tier) {
            Ok((id, size, tier)) => {
                if let Err(e) = self.inner.parts.put(mark(id)) {
                    log::warn!("cluster: note part '{local_name}': {e}");
                }
                log::info!(
                    "cluster: made part '{local_name}' of spread volume '{spread}' for node '{from}' ({size} bytes, local id {id})"
                );
                Ok((id, size, tier))
            }
            Err(e) => {
                self.inner.parts.remove(local_name);
                Err(e)
            }
        }
    }

    /// Delete spread volume `name` (from any node): its entry goes in one transaction
    /// comparing the revision read, then each node deletes its parts (this one at once, the
    /// others within seconds, a node that is down when it comes back).
    pub fn delete_spread(&self, name: &str) -> Result<Vec<String>, ClusterError> {
        let inner = self.inner.clone();
        let op = format!("delete spread volume '{name}'");
        let Some((rec, rev)) = self.block_on(&op, super::catalog::read_entry(&inner, name, &op))?
        else {
            return Err(ClusterError::Pool(PoolError::NotFound(format!(
                "volume '{name}' does not exist"
            ))));
        };
        if !rec.spread() {
            return Err(ClusterError::Pool(PoolError::Invalid(format!(
                "volume '{name}' is not a spread volume"
            ))));
        }
        let key = records::volume_key(name);
        let resp = self.delete_if_at(&op, &key, rev)?;
        if !resp.succeeded() {
            return Err(ClusterError::Conflict {
                name: name.to_string(),
                read: rev,
                now: 0,
            });
        }
        self.cleanup_parts();
        let cache = self.inner.cache.read();
        let mut warnings = Vec::new();
        for p in &rec.parts {
            if p.node != inner.opts.node && !cache.node_up(&p.node) {
                warnings.push(format!(
                    "node '{}' is down: it deletes part '{}' when it comes back",
                    p.node, p.local_name
                ));
            }
        }
        log::info!("cluster: spread volume '{name}' deleted");
        Ok(warnings)
    }

    /// Delete the parts held here that no catalog entry lists any more (decided from etcd
    /// itself, never from a cache that may lag); parts of creates under way are left alone.
    pub(super) fn cleanup_parts(&self) {
        let me = self.inner.opts.node.clone();
        let st = self.inner.st.clone();
        let markers = self.inner.parts.all();
        if markers.is_empty() {
            return;
        }
        let op = "check the parts of spread volumes held here".to_string();
        let inner = self.inner.clone();
        let Ok(entries) = self.block_on(&op, async {
            let mut c = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let r = c
                .get(
                    records::VOLUMES,
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            Ok(r.kvs()
                .iter()
                .filter_map(|kv| serde_json::from_slice::<VolumeRecord>(kv.value()).ok())
                .collect::<Vec<_>>())
        }) else {
            return;
        };
        for m in markers {
            if m.local_id == 0 && self.inner.creating.lock().contains(&m.spread) {
                continue;
            }
            let listed = entries.iter().any(|e| {
                e.parts.iter().any(|p| {
                    p.node == me
                        && p.local_name == m.local_name
                        && (p.local_id == 0 || m.local_id == 0 || p.local_id == m.local_id)
                })
            });
            if listed {
                continue;
            }
            if let Some(vol) = st.volumes.volume(&m.local_name) {
                if m.local_id != 0 && vol.id != m.local_id {
                    // Not the part: a volume made under that name since.
                    self.inner.parts.remove(&m.local_name);
                    continue;
                }
                // Peers may hold NBD connections to it: refuse their requests and delete.
                vol.moving.start();
                vol.moving.fence("(deleted)");
                match st.delete_volume(&m.local_name, true) {
                    Ok(()) | Err(PoolError::NotFound(_)) => {}
                    Err(e) => {
                        vol.moving.abort();
                        log::warn!(
                            "cluster: deleting part '{}' of spread volume '{}': {e}; retrying",
                            m.local_name,
                            m.spread
                        );
                        continue;
                    }
                }
                log::info!(
                    "cluster: deleted part '{}' of spread volume '{}' (no longer in the catalog)",
                    m.local_name,
                    m.spread
                );
            }
            self.inner.parts.remove(&m.local_name);
        }
    }
}

/// "a 0..64 MiB, b 64..128 MiB" for logs and `cluster volumes`.
pub fn describe_parts(parts: &[PartEntry]) -> String {
    parts
        .iter()
        .map(|p| {
            format!(
                "{} bytes {}..{} on node '{}' ({})",
                p.size,
                p.offset,
                p.offset + p.size,
                p.node,
                p.local_name
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_a_request_at_part_boundaries() {
        let parts = [(0, 100), (100, 50), (150, 10)];
        assert_eq!(pieces(parts, 0, 10), vec![(0, 0, 0, 10)]);
        assert_eq!(pieces(parts, 90, 20), vec![(0, 90, 0, 10), (1, 0, 10, 10)]);
        assert_eq!(
            pieces(parts, 95, 65),
            vec![(0, 95, 0, 5), (1, 0, 5, 50), (2, 0, 55, 10)]
        );
        assert_eq!(pieces(parts, 150, 10), vec![(2, 0, 0, 10)]);
        assert!(pieces(parts, 160, 0).is_empty());
    }
}
