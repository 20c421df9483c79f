//! The node's life in etcd: registration under a lease kept alive, re-registration after the
//! lease is lost (the daemon was stopped longer than the TTL, or etcd lost it), the watch that
//! keeps the local cache, and the publication of the local volumes in the catalog.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

use super::records::{
    self, GroupTag, MemberRecord, SnapshotEntry, VolumeRecord, STATE_CREATING, STATE_READY,
};
use super::{now_secs, Inner};
use crate::snapshot::SPLIT_SNAPSHOT_PREFIX;

/// Pause between attempts while etcd cannot be reached.
const RETRY: Duration = Duration::from_secs(1);
/// The catalog is reconciled with the local pool this often.
const RECONCILE_EVERY: Duration = Duration::from_secs(3);
/// Parts a grow of a spread volume listed past its size for this long belong to a grow that
/// died (a live one makes its parts within the request timeouts, well under this).
const GROW_ABANDONED: Duration = Duration::from_secs(120);

type EResult<T> = Result<T, etcd_client::Error>;

fn other(msg: String) -> etcd_client::Error {
    etcd_client::Error::LeaseKeepAliveError(msg)
}

/// Wait `d`, or less when the daemon stops; true when stopping.
async fn pause(inner: &Inner, d: Duration) -> bool {
    let mut rx = inner.stop.subscribe();
    if *rx.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => inner.stopping(),
        _ = rx.changed() => true,
    }
}

/// Keep this node registered until the daemon stops.
pub(super) async fn register_loop(inner: Arc<Inner>) {
    let mut failures = 0u32;
    while !inner.stopping() {
        match session(&inner).await {
            Ok(()) => return,
            Err(e) => {
                inner.state.lock().lease = None;
                inner.set_error(e.to_string());
                // The first failure and then one in 30 are logged (etcd may be down for long).
                if failures.is_multiple_of(30) {
                    log::warn!(
                        "cluster: node '{}' not registered (etcd at {}): {e}; retrying",
                        inner.opts.node,
                        inner.endpoints()
                    );
                }
                failures += 1;
            }
        }
        if pause(&inner, RETRY).await {
            return;
        }
    }
}

/// One registration: grant a lease, put the node under it, keep it alive, refresh the node
/// record and reconcile the catalog. Returns Err when the lease is lost or etcd fails.
async fn session(inner: &Inner) -> EResult<()> {
    let mut c = inner.client().await?;
    let ttl = inner.opts.ttl as i64;
    let lease = c.lease_grant(ttl, None).await?.id();
    let member = MemberRecord {
        name: inner.opts.node.clone(),
        address: inner.opts.address.clone(),
        joined: now_secs(),
    };
    c.put(
        records::member_key(&inner.opts.node),
        serde_json::to_vec(&member).expect("serialize"),
        None,
    )
    .await?;
    let mut node = inner.node_record();
    c.put(
        records::node_key(&inner.opts.node),
        serde_json::to_vec(&node).expect("serialize"),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await?;
    {
        let mut s = inner.state.lock();
        s.lease = Some(lease);
        s.last_error = None;
    }
    log::info!(
        "cluster: node '{}' registered (lease {lease:x}, TTL {ttl} s)",
        inner.opts.node
    );
    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
    let every = Duration::from_millis((inner.opts.ttl * 1000 / 3).max(300));
    let mut last_reconcile = tokio::time::Instant::now() - RECONCILE_EVERY;
    loop {
        if last_reconcile.elapsed() >= RECONCILE_EVERY && inner.state.lock().synced {
            reconcile(inner, &mut c).await?;
            last_reconcile = tokio::time::Instant::now();
        }
        // (A change of the busy flag wakes this early: readers elsewhere react to it.)
        let woken = tokio::select! {
            stop = pause(inner, every) => stop,
            _ = inner.refresh.notified() => inner.stopping(),
        };
        if woken {
            return Ok(());
        }
        keeper.keep_alive().await?;
        let answer = tokio::time::timeout(Duration::from_secs(inner.opts.ttl), stream.message())
            .await
            .map_err(|_| other("no keep-alive answer from etcd".into()))??;
        match answer {
            Some(r) if r.ttl() > 0 => {}
            Some(_) => {
                log::warn!(
                    "cluster: node '{}': lease {lease:x} expired (the daemon was stopped or cut \
                     off longer than {ttl} s); registering again",
                    inner.opts.node
                );
                return Err(other(format!("lease {lease:x} expired")));
            }
            None => return Err(other("keep-alive stream closed".into())),
        }
        // Free space and load change: refresh the registration when they do.
        let now = inner.node_record();
        if now.free != node.free
            || now.capacity != node.capacity
            || (now.load - node.load).abs() >= 0.1
            || now.tiers != node.tiers
            || now.busy != node.busy
            || now.busy_above != node.busy_above
            || (now.io_load - node.io_load).abs() >= 0.5
        {
            c.put(
                records::node_key(&inner.opts.node),
                serde_json::to_vec(&now).expect("serialize"),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
            node = now;
        }
    }
}

/// Make the catalog say what the local pool holds: publish local volumes it lacks (made
/// before joining, by a clone, by a pair's S-VOL ...), update size and snapshots, and drop
/// entries of this node whose volume is gone (deleted while etcd was unreachable, or a
/// create that died half-way). Each write compares the revision the cache read; a lost race
/// is simply seen again next round.
async fn reconcile(inner: &Inner, c: &mut etcd_client::Client) -> EResult<()> {
    let me = &inner.opts.node;
    let st = &inner.st;
    let locals = st.volumes.volume_list();
    let creating = inner.creating.lock().clone();
    let mut ops: Vec<Txn> = Vec::new();
    // Group snapshots held here, by (local volume id, snapshot name): published with their
    // tags so readers find the copy at the group's other site.
    let tags: std::collections::HashMap<(u64, String), GroupTag> = st
        .replication
        .group_snapshots_here()
        .into_iter()
        .map(|g| {
            let tag = GroupTag {
                uid: g.uid,
                group: g.group,
                epoch: g.epoch,
                seq: g.seq,
                volume: g.primary_volume,
            };
            ((g.local_volume, g.snapshot), tag)
        })
        .collect();
    {
        let cache = inner.cache.read();
        for v in &locals {
            // A move's copies and volumes being moved are the move's business (`moving`).
            if creating.contains(&v.name)
                || inner.moving.lock().contains(&v.name)
                || inner.markers.get(&v.name).is_some()
                || inner.parts.get(&v.name).is_some()
            {
                continue;
            }
            let mut snapshots: Vec<SnapshotEntry> = st
                .snapshots
                .snapshots_of(v.id)
                .iter()
                .filter(|s| !s.name.starts_with(SPLIT_SNAPSHOT_PREFIX))
                .map(|s| SnapshotEntry {
                    name: s.name.clone(),
                    size: s.size,
                    group: tags.get(&(v.id, s.name.clone())).cloned(),
                })
                .collect();
            snapshots.sort_by(|a, b| a.name.cmp(&b.name));
            // A volume renamed in the cluster keeps its local name: its entry is the one of
            // this node that names it as its local volume.
            let renamed = cache.volumes.values().find(|e| {
                &e.rec.owner == me
                    && e.rec.local_name.as_deref() == Some(v.name.as_str())
                    && e.rec.local_id == v.id
            });
            let want = VolumeRecord {
                name: renamed
                    .map(|e| e.rec.name.clone())
                    .unwrap_or_else(|| v.name.clone()),
                owner: me.clone(),
                local_id: v.id,
                size: v.size(),
                tier: v.tier.clone(),
                state: STATE_READY.into(),
                snapshots,
                local_name: renamed.and_then(|e| e.rec.local_name.clone()),
                parts: vec![],
            };
            let key = records::volume_key(&want.name);
            let value = serde_json::to_vec(&want).expect("serialize");
            if let Some(e) = renamed {
                if e.rec != want {
                    ops.push(at_revision(
                        &key,
                        e.mod_revision,
                        TxnOp::put(key.clone(), value, None),
                    ));
                }
                continue;
            }
            match cache.volumes.get(&v.name) {
                None => ops.push(
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, value, None)]),
                ),
                Some(e) if &e.rec.owner == me && !e.rec.spread() && e.rec.local_name.is_none() => {
                    if e.rec != want {
                        ops.push(at_revision(
                            &key,
                            e.mod_revision,
                            TxnOp::put(key.clone(), value, None),
                        ));
                    }
                }
                Some(e) => {
                    if inner.shadow_warned.lock().insert(v.name.clone()) {
                        log::warn!(
                            "cluster: local volume '{}' is not in the catalog: the name belongs \
                             to node '{}'; this node's mount shows its own volume under that \
                             name, the others show node '{}''s",
                            v.name,
                            e.rec.owner,
                            e.rec.owner
                        );
                    }
                }
            }
        }
        // A grow of a spread volume made here that died half-way: its parts past the size are
        // unlisted (their nodes then delete them) once they have been listed for long.
        {
            let mut seen = inner.grow_seen.lock();
            seen.retain(|n, _| {
                cache
                    .volumes
                    .get(n)
                    .is_some_and(|e| e.rec.parts.iter().any(|p| p.offset >= e.rec.size))
            });
            for (name, e) in &cache.volumes {
                let r = &e.rec;
                if &r.owner != me
                    || !r.spread()
                    || r.state != STATE_READY
                    || creating.contains(name)
                    || !r.parts.iter().any(|p| p.offset >= r.size)
                {
                    continue;
                }
                let since = *seen
                    .entry(name.clone())
                    .or_insert_with(std::time::Instant::now);
                if since.elapsed() < GROW_ABANDONED {
                    continue;
                }
                let mut kept = r.clone();
                kept.parts.retain(|p| p.offset < r.size);
                let key = records::volume_key(name);
                log::warn!(
                    "cluster: spread volume '{name}': a grow left parts past its size for {} s; unlisting them",
                    GROW_ABANDONED.as_secs()
                );
                ops.push(at_revision(
                    &key,
                    e.mod_revision,
                    TxnOp::put(
                        key.clone(),
                        serde_json::to_vec(&kept).expect("serialize"),
                        None,
                    ),
                ));
            }
        }
        for (name, e) in &cache.volumes {
            // A spread volume's entry stays while it is ready (its parts are checked by
            // their nodes); one left `creating` by a create that died is dropped.
            let gone = &e.rec.owner == me
                && !creating.contains(name)
                && inner.markers.get(name).is_none()
                && if e.rec.spread() {
                    e.rec.state == STATE_CREATING
                } else {
                    !locals.iter().any(|v| v.name == e.rec.local())
                };
            if gone {
                let key = records::volume_key(name);
                ops.push(at_revision(
                    &key,
                    e.mod_revision,
                    TxnOp::delete(key.clone(), None),
                ));
                if e.rec.state == STATE_CREATING {
                    log::info!("cluster: dropping unfinished catalog entry '{name}'");
                } else {
                    log::info!("cluster: volume '{name}' is gone here; dropping its catalog entry");
                }
            }
        }
    }
    for t in ops {
        c.txn(t).await?;
    }
    Ok(())
}

/// Keep the cache: a full read, then a watch from the next revision; on any failure (etcd
/// restarted, connection lost) start over. While etcd is away the cache keeps what it last
/// saw (forwarding then goes straight to the owners' NBD servers, which answer or fail).
pub(super) async fn watch_loop(inner: Arc<Inner>) {
    let mut failures = 0u32;
    while !inner.stopping() {
        if let Err(e) = watch_once(&inner).await {
            let was = std::mem::replace(&mut inner.state.lock().connected, false);
            inner.set_error(e.to_string());
            if was || failures.is_multiple_of(30) {
                log::warn!(
                    "cluster: watch of etcd at {} lost: {e}; reconnecting",
                    inner.endpoints()
                );
            }
            failures += 1;
        }
        if pause(&inner, RETRY).await {
            return;
        }
    }
}

async fn watch_once(inner: &Inner) -> EResult<()> {
    let mut c = inner.client().await?;
    let resp = c
        .get(records::PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    {
        let mut fresh = records::Cache::default();
        for kv in resp.kvs() {
            if let Ok(k) = kv.key_str() {
                fresh.apply(k, Some(kv.value()), kv.mod_revision());
                super::requests::offer(inner, k, kv.value());
            }
        }
        fresh.revision = rev;
        *inner.cache.write() = fresh;
    }
    let (_watcher, mut stream) = c
        .watch(
            records::PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1)
                    .with_progress_notify(),
            ),
        )
        .await?;
    {
        let mut s = inner.state.lock();
        if !s.connected {
            log::info!(
                "cluster: watching etcd at {} from revision {rev}",
                inner.endpoints()
            );
        }
        s.connected = true;
        s.synced = true;
    }
    let mut stop = inner.stop.subscribe();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m?,
            _ = stop.changed() => return Ok(()),
        };
        let Some(resp) = msg else {
            return Err(other("watch stream closed".into()));
        };
        if resp.canceled() {
            return Err(other(format!("watch canceled: {}", resp.cancel_reason())));
        }
        let mut cache = inner.cache.write();
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            match ev.event_type() {
                etcd_client::EventType::Put => {
                    cache.apply(key, Some(kv.value()), kv.mod_revision());
                    super::requests::offer(inner, key, kv.value());
                }
                etcd_client::EventType::Delete => {
                    if let Some(node) = key.strip_prefix(records::NODES) {
                        if cache.node_up(node) && node != inner.opts.node {
                            log::warn!(
                                "cluster: node '{node}' is unavailable (its lease ended); \
                                 its volumes fail with EIO until it registers again"
                            );
                        }
                    }
                    cache.apply(key, None, kv.mod_revision())
                }
            }
        }
        if let Some(h) = resp.header() {
            cache.revision = cache.revision.max(h.revision());
        }
    }
}

/// A transaction doing `op` on `key` only if the key is still at revision `rev` (a lost race
/// is simply seen again at the next reconcile).
fn at_revision(key: &str, rev: i64, op: TxnOp) -> Txn {
    Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
        .and_then([op])
}
