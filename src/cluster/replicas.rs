//! Replica redirection on the read path: which site serves a read of a group snapshot
//! (`load::choose` on the sites the catalog lists), what this node tells the others about its
//! own load, and what `fusevol cluster volumes` shows of it.

use std::sync::Arc;

use super::load::{self, BusyMode, Site};
use super::records::{Cache, VolumeRecord};
use super::{Cluster, ReplicaSiteInfo, Route, SnapshotReplicaInfo};
use crate::snapshot::Snapshot;

impl Cluster {
    /// The busy flag changed: refresh the registration now, not at the next keep-alive.
    pub(super) fn announce_busy(&self) {
        let l = &self.inner.load;
        log::info!(
            "cluster: node '{}' is {} (I/O load {:.1}, threshold {:.1}, mode {})",
            self.node(),
            if l.busy() { "busy" } else { "no longer busy" },
            l.io_load(),
            l.busy_above(),
            l.mode().as_str()
        );
        self.inner.refresh.notify_one();
    }

    /// `fusevol cluster set`: the busy threshold and/or the operator's override.
    pub fn set_busy(&self, above: Option<f64>, mode: Option<BusyMode>) -> Result<(), String> {
        if let Some(a) = above {
            if !a.is_finite() || a < 0.0 {
                return Err(format!(
                    "busy threshold {a} is not a number of requests in flight (0 or more)"
                ));
            }
        }
        if self.inner.load.set(above, mode) {
            self.announce_busy();
        } else {
            // The figures in the registration change even when the flag does not.
            self.inner.refresh.notify_one();
        }
        Ok(())
    }

    /// This node's busy flag now.
    pub fn busy(&self) -> bool {
        self.inner.load.busy()
    }

    /// The site record of `node` for a snapshot whose export there is `export`.
    fn site(&self, cache: &Cache, node: &str, export: String, owner: bool) -> Site {
        let me = node == self.node();
        let (up, busy, io_load, busy_above) = if me {
            let l = &self.inner.load;
            (true, l.busy(), l.io_load(), l.busy_above())
        } else {
            match cache.nodes.get(node) {
                Some(n) => (true, n.rec.busy, n.rec.io_load, n.rec.busy_above),
                None => (false, false, 0.0, 0.0),
            }
        };
        Site {
            node: node.to_string(),
            export,
            owner,
            here: me,
            up,
            busy,
            io_load,
            busy_above,
        }
    }

    /// Every site holding snapshot `snap` of catalog entry `rec`'s image, the owner first
    /// (just the owner for a snapshot that is no group snapshot or has no copy elsewhere).
    fn sites(&self, cache: &Cache, rec: &VolumeRecord, snap: &str) -> Vec<(Site, String)> {
        let mut out = vec![(
            self.site(cache, &rec.owner, format!("{}@{snap}", rec.local()), true),
            rec.local().to_string(),
        )];
        for r in cache.replicas_of(&rec.name, snap) {
            out.push((
                self.site(cache, &r.owner, format!("{}@{snap}", r.local()), false),
                r.local().to_string(),
            ));
        }
        out
    }

    /// Where a read of snapshot `snap` of global volume `volume` goes: the owner unless it is
    /// busy or down and another site holds the same group snapshot (`load::choose`). None:
    /// no site is up. The choice is counted for `cluster volumes`.
    pub fn snapshot_route(&self, volume: &str, snap: &str) -> Option<Route> {
        // (No cost for a snapshot that is no group snapshot held elsewhere.)
        let cache = self.inner.cache.read();
        let Some(rec) = cache.volumes.get(volume).map(|v| &v.rec) else {
            return Some(Route::Owner);
        };
        let sites = self.sites(&cache, rec, snap);
        if sites.len() == 1 {
            return Some(Route::Owner);
        }
        let plain: Vec<Site> = sites.iter().map(|(s, _)| s.clone()).collect();
        let (i, why) = load::choose(&plain)?;
        let (site, local_volume) = &sites[i];
        let route = if site.owner {
            Route::Owner
        } else if site.here {
            Route::Local {
                volume: local_volume.clone(),
                snapshot: snap.to_string(),
            }
        } else {
            Route::Remote {
                node: site.node.clone(),
                address: cache.nodes.get(&site.node)?.rec.address.clone(),
                export: site.export.clone(),
            }
        };
        drop(cache);
        self.note_served(volume, snap, &site.node, why);
        Some(route)
    }

    /// For a read of this node's own snapshot `s` while this node is busy: another site's
    /// copy to read instead, if one is up and not busy. None: read it here.
    pub fn redirect_local(&self, s: &Arc<Snapshot>) -> Option<Route> {
        if !self.busy() {
            return None;
        }
        let v = self.inner.st.volumes.volume_by_id(s.volume)?;
        let global = {
            let cache = self.inner.cache.read();
            let me = self.node();
            cache
                .volumes
                .values()
                .find(|e| {
                    e.rec.owner == me
                        && !e.rec.spread()
                        && e.rec.local() == v.name
                        && e.rec.local_id == v.id
                })?
                .rec
                .name
                .clone()
        };
        match self.snapshot_route(&global, &s.name)? {
            r @ Route::Remote { .. } => Some(r),
            _ => None,
        }
    }

    fn note_served(&self, volume: &str, snap: &str, node: &str, why: String) {
        let mut g = self.inner.served.lock();
        let e = g.entry((volume.to_string(), snap.to_string())).or_default();
        *e.reads.entry(node.to_string()).or_insert(0) += 1;
        if e.last != node || e.reason != why {
            log::info!("cluster: reads of '{volume}@{snap}' served by node '{node}': {why}");
            e.last = node.to_string();
            e.reason = why;
        }
    }

    /// The group snapshots of catalog entry `rec` held at another site too.
    pub(super) fn replica_infos(
        &self,
        cache: &Cache,
        rec: &VolumeRecord,
    ) -> Vec<SnapshotReplicaInfo> {
        let served = self.inner.served.lock();
        rec.snapshots
            .iter()
            .filter_map(|s| {
                let tag = s.group.as_ref()?;
                let sites = self.sites(cache, rec, &s.name);
                if sites.len() < 2 {
                    return None;
                }
                let seen = served.get(&(rec.name.clone(), s.name.clone()));
                Some(SnapshotReplicaInfo {
                    snapshot: s.name.clone(),
                    group: tag.group.clone(),
                    sites: sites
                        .into_iter()
                        .map(|(x, _)| ReplicaSiteInfo {
                            node: x.node,
                            export: x.export,
                            up: x.up,
                            busy: x.busy,
                        })
                        .collect(),
                    served_by: seen.map(|e| e.last.clone()),
                    reason: seen.map(|e| e.reason.clone()),
                    reads: seen.map(|e| e.reads.clone()).unwrap_or_default(),
                })
            })
            .collect()
    }
}
