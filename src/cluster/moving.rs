//! `fusevol volume move VOL --node N`: hand a volume over to another node, data and ownership.
//!
//! Run on the owner (the source). Steps:
//!
//! 1. A transaction takes `/fusevol/moves/VOL` (only if no move of VOL is under way) comparing
//!    the catalog entry's revision: the entry stays the source's until the switch.
//! 2. The target makes an empty copy in its pool (asked through `requests/`, as a remote
//!    create, but outside the catalog) and notes it in its pool directory
//!    (`cluster-moves.json`); its mount keeps showing the source's volume.
//! 3. The source pushes the volume to the copy over NBD (the target's export of the same name):
//!    a first pass of everything allocated, then passes of what was written meanwhile
//!    (`volume::moving` records written ranges after each data write), while host I/O goes on.
//! 4. When little is left, the last pass runs with the volume's requests held at its gate and
//!    no write in flight; the copy is flushed; then one transaction (comparing the catalog
//!    entry's and the move record's revisions) names the target owner, with its local id.
//! 5. The source fences its copy (every request there fails with `IoError::Moved`, NBD
//!    ESHUTDOWN, so a forwarding node asks the new owner: requests in flight at the switch are
//!    retried there, never served from the old copy) and deletes it.
//!
//! Whatever fails before the switch (the target dies, the copy fails, etcd is lost) ends the
//! move: the volume stays the source's, untouched (a move only reads it); the target drops its
//! partial copy when it sees the move gone (at once, or when it comes back). A switch whose
//! answer was lost with etcd keeps the volume's requests held until etcd says which way it
//! went. Both sides note their part in `cluster-moves.json` before acting, so a daemon killed
//! half-way finishes or undoes its part when it comes back (`cleanup`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::records::{self, MoveRecord, VolumeRecord, STATE_READY};
use super::remote::{RemoteError, Target};
use super::{now_secs, Cluster, ClusterError, Inner, RemoteVolume};
use crate::pool::PoolError;
use crate::volume::Volume;

/// Copy unit of a pass.
const CHUNK: u64 = 1 << 20;
/// The last pass starts when at most this much was written during the previous one.
const FINAL_MAX: u64 = 32 << 20;
/// Passes before the last one is forced (a writer faster than the copy).
const MAX_PASSES: u32 = 10;
/// How often progress goes to etcd and to the events.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a forwarding node waits for the catalog to name a moved volume's new owner.
pub const REROUTE_WAIT: Duration = Duration::from_secs(20);
/// How long the source asks etcd about a switch whose answer was lost before `volume move`
/// returns (the cleanup thread keeps asking).
const SWITCH_WAIT: Duration = Duration::from_secs(20);
/// File in the pool directory with this node's part in moves not finished.
pub const MARKERS_FILE: &str = "cluster-moves.json";

/// This node's part in a move, kept in the pool directory until finished or undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalMove {
    pub name: String,
    /// The local volume's id (0: not made yet).
    pub local_id: u64,
    /// `incoming` (this node is the target: the copy) or `outgoing` (the source, written just
    /// before the switch).
    pub role: String,
    /// The other node.
    pub peer: String,
}

const INCOMING: &str = "incoming";
const OUTGOING: &str = "outgoing";

impl super::markers::Marker for LocalMove {
    fn key(&self) -> &str {
        &self.name
    }
}

/// The markers file and its contents.
pub(super) type Markers = super::markers::MarkerFile<LocalMove>;

fn unreachable(inner: &Inner, op: &str, e: etcd_client::Error) -> ClusterError {
    ClusterError::Unreachable {
        endpoints: inner.endpoints(),
        op: op.to_string(),
        detail: e.to_string(),
    }
}

fn busy(msg: String) -> ClusterError {
    ClusterError::Pool(PoolError::Busy(msg))
}

fn invalid(msg: String) -> ClusterError {
    ClusterError::Pool(PoolError::Invalid(msg))
}

/// The result of the switch transaction.
enum Switch {
    Done,
    /// The compare failed: someone changed the entry or the move record.
    Refused,
    /// etcd did not answer: the switch may or may not have happened.
    Unknown(ClusterError),
}

/// A move in progress on the source.
struct Mover<'a> {
    c: &'a Cluster,
    vol: Arc<Volume>,
    rec: MoveRecord,
    /// The move record's revision (each progress put moves it).
    move_rev: i64,
    last_progress: Instant,
    address: String,
}

impl Mover<'_> {
    fn target(&self) -> Target<'_> {
        Target {
            volume: &self.vol.name,
            node: &self.rec.to,
            address: &self.address,
            export: &self.vol.name,
        }
    }

    /// Put the move record (progress), keeping its revision. Best effort while copying: etcd
    /// being away does not stop a copy (the switch needs it, and waits for it).
    fn publish(&mut self, force: bool) {
        if !force && self.last_progress.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_progress = Instant::now();
        let inner = self.c.inner.clone();
        let rec = self.rec.clone();
        let op = format!("record the progress of the move of '{}'", rec.volume);
        let r = self.c.block_on(&op, async {
            let mut cl = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let r = cl
                .put(
                    records::move_key(&rec.volume),
                    serde_json::to_vec(&rec).expect("serialize"),
                    None,
                )
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            Ok(r.header().map(|h| h.revision()).unwrap_or(0))
        });
        match r {
            Ok(rev) => self.move_rev = rev,
            Err(e) => log::warn!("cluster: {e}"),
        }
        self.c.inner.st.pool.events.publish(
            "volume",
            &self.rec.volume,
            "move",
            serde_json::json!({
                "phase": self.rec.phase, "to": self.rec.to, "pass": self.rec.pass,
                "copied": self.rec.copied, "size": self.rec.size,
            }),
        );
    }

    /// Copy [start, end) to the target: data as data, holes as trims (a range discarded
    /// during the move must read as zeros there too).
    fn copy_range(&mut self, start: u64, end: u64, first: bool) -> Result<(), ClusterError> {
        let st = self.c.inner.st.clone();
        let size = self.vol.size();
        let end = end.min(size);
        let mut off = start;
        let mut buf = vec![0u8; CHUNK as usize];
        for (len, data) in st.allocation(&self.vol, start, end.saturating_sub(start)) {
            let run_end = off + len;
            if !data {
                // A fresh copy is all zeros: the first pass skips holes.
                if !first {
                    self.c
                        .remotes
                        .trim(&self.target(), off, len)
                        .map_err(|e| self.failed(e))?;
                }
                off = run_end;
                continue;
            }
            while off < run_end {
                fail::fail_point!("cluster::move::chunk");
                let n = (run_end - off).min(CHUNK) as usize;
                // Not `Storage::read`: its gate is closed during the last pass, and a move
                // has no pair whose rules would apply.
                let got = st
                    .volumes
                    .read_plain(&self.vol, off, &mut buf[..n])
                    .map_err(|e| {
                        busy(format!(
                            "move of volume '{}': reading it at offset {off}: {e}",
                            self.vol.name
                        ))
                    })?;
                if got == 0 {
                    break;
                }
                self.c
                    .remotes
                    .write(&self.target(), size, off, &buf[..got])
                    .map_err(|e| self.failed(e))?;
                off += got as u64;
                self.rec.copied += got as u64;
                self.publish(false);
            }
            off = run_end;
        }
        Ok(())
    }

    fn failed(&self, e: RemoteError) -> ClusterError {
        busy(format!(
            "move of volume '{}' to node '{}' failed: {e}",
            self.vol.name, self.rec.to
        ))
    }

    fn copy_ranges(&mut self, ranges: &[(u64, u64)]) -> Result<(), ClusterError> {
        for &(s, e) in ranges {
            self.copy_range(s, e, false)?;
        }
        Ok(())
    }

    /// Passes until little is left, then the last one with the gate closed. Returns with
    /// the gate closed and the io_lock's exclusive guard taken by the caller's closure.
    fn copy(&mut self) -> Result<(), ClusterError> {
        self.rec.phase = "copying".into();
        self.rec.pass = 1;
        self.publish(true);
        let size = self.vol.size();
        self.copy_range(0, size, true)?;
        loop {
            self.check_target()?;
            let dirty = self.vol.moving.take();
            let bytes: u64 = dirty.iter().map(|(s, e)| e - s).sum();
            self.rec.pass += 1;
            if bytes <= FINAL_MAX || self.rec.pass > MAX_PASSES {
                // Copy these with writes still flowing, then close the gate for the rest.
                self.copy_ranges(&dirty)?;
                return Ok(());
            }
            self.publish(true);
            self.copy_ranges(&dirty)?;
        }
    }

    fn check_target(&self) -> Result<(), ClusterError> {
        if self.c.inner.cache.read().node_up(&self.rec.to) {
            Ok(())
        } else {
            Err(busy(format!(
                "move of volume '{}' failed: target node '{}' went down",
                self.vol.name, self.rec.to
            )))
        }
    }

    /// The catalog switch: the target owns the volume (its local id), in one transaction
    /// comparing the entry's and the move record's revisions.
    fn switch(&self, entry: &VolumeRecord, entry_rev: i64) -> Switch {
        let inner = self.c.inner.clone();
        let op = format!("switch volume '{}' to node '{}'", entry.name, self.rec.to);
        let mut new = entry.clone();
        new.owner = self.rec.to.clone();
        new.local_id = self.rec.to_local_id;
        new.size = self.vol.size();
        new.state = STATE_READY.into();
        new.snapshots.clear();
        let mut m = self.rec.clone();
        m.phase = "switched".into();
        let (vkey, mkey) = (
            records::volume_key(&entry.name),
            records::move_key(&entry.name),
        );
        let move_rev = self.move_rev;
        let r = self.c.block_on(&op, async {
            let mut cl = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let resp = cl
                .txn(
                    Txn::new()
                        .when([
                            Compare::mod_revision(vkey.clone(), CompareOp::Equal, entry_rev),
                            Compare::mod_revision(mkey.clone(), CompareOp::Equal, move_rev),
                        ])
                        .and_then([
                            TxnOp::put(vkey, serde_json::to_vec(&new).expect("serialize"), None),
                            TxnOp::put(mkey, serde_json::to_vec(&m).expect("serialize"), None),
                        ]),
                )
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            Ok(resp.succeeded())
        });
        match r {
            Ok(true) => Switch::Done,
            Ok(false) => Switch::Refused,
            Err(e) => Switch::Unknown(e),
        }
    }
}

impl Cluster {
    /// Is `name` a local volume this node must not show (a move's copy not switched yet, or
    /// the old copy of a volume moved away)?
    pub fn hides_local(&self, name: &str) -> bool {
        let cache = self.inner.cache.read();
        self.hidden_in(&cache, name)
    }

    /// `hides_local` with the cache already read.
    pub(super) fn hidden_in(&self, cache: &records::Cache, name: &str) -> bool {
        // A part of a spread volume, or a local volume renamed in the cluster (shown under
        // its global name).
        if self.inner.parts.get(name).is_some() || self.renamed_from(cache, name) {
            return true;
        }
        if self.inner.markers.get(name).is_none() {
            return false;
        }
        if !self.inner.state.lock().synced {
            return true;
        }
        match cache.volumes.get(name) {
            Some(e) => e.rec.owner != self.inner.opts.node,
            None => true,
        }
    }

    /// The name of a local volume id this node moved away (its mount turns old handles into
    /// forwarded ones).
    pub fn moved_away(&self, id: u64) -> Option<String> {
        self.inner.moved_ids.lock().get(&id).cloned()
    }

    /// `fusevol cluster volumes`: the move of `name`, if one is under way.
    pub(super) fn move_progress(cache: &records::Cache, name: &str) -> Option<String> {
        let m = &cache.moves.get(name)?.rec;
        let pct = (m.copied.min(m.size) * 100)
            .checked_div(m.size)
            .unwrap_or(100);
        Some(format!(
            "to {}: {} (pass {}, {} bytes copied, {pct}% of the size)",
            m.to, m.phase, m.pass, m.copied
        ))
    }

    /// Move volume `name` (owned here) to node `to`; returns when the target owns it.
    pub fn move_volume(&self, name: &str, to: &str) -> Result<(), ClusterError> {
        let inner = self.inner.clone();
        let me = inner.opts.node.clone();
        let op = format!("move volume '{name}' to node '{to}'");
        if let Some(v) = inner.cache.read().volumes.get(name) {
            if v.rec.spread() {
                return Err(invalid(format!(
                    "volume '{name}' is spread over several nodes: moving a spread volume is not supported"
                )));
            }
            if let Some(l) = &v.rec.local_name {
                return Err(invalid(format!(
                    "volume '{name}' was renamed in the cluster (its name in this pool is '{l}'): \
                     moving a renamed volume is not supported; rename it back to '{l}' first"
                )));
            }
        }
        if to == me {
            return Err(invalid(format!(
                "volume '{name}': node '{to}' is this node; run `volume move` on the owner and name the target"
            )));
        }
        let address = match inner.cache.read().nodes.get(to) {
            Some(n) => n.rec.address.clone(),
            None => {
                return Err(invalid(format!(
                    "cannot move volume '{name}' to node '{to}': the node is not up"
                )))
            }
        };
        let st = inner.st.clone();
        let (entry, entry_rev) = self
            .block_on(&op, super::catalog::read_entry(&inner, name, &op))?
            .ok_or_else(|| match st.volumes.volume(name) {
                Some(_) => busy(format!(
                    "volume '{name}' is not in the cluster catalog yet (published within a few seconds); try again"
                )),
                None => ClusterError::Pool(PoolError::NotFound(format!(
                    "volume '{name}' does not exist in the cluster"
                ))),
            })?;
        if entry.owner != me {
            return Err(ClusterError::NotOwner {
                name: name.to_string(),
                owner: entry.owner,
            });
        }
        let vol = st.volumes.volume_or_err(name)?;
        if entry.local_id != vol.id || entry.state != STATE_READY {
            return Err(busy(format!(
                "volume '{name}': the catalog entry is not settled (state {}, local id {}); try again",
                entry.state, entry.local_id
            )));
        }
        refuse_unmovable(&st, &vol)?;
        if !inner.moving.lock().insert(name.to_string()) {
            return Err(busy(format!("volume '{name}' is being moved already")));
        }
        let _done = super::catalog::Finally(|| {
            inner.moving.lock().remove(name);
        });
        // (1) Take the move record.
        let mut rec = MoveRecord {
            volume: name.to_string(),
            from: me.clone(),
            to: to.to_string(),
            to_local_id: 0,
            phase: "preparing".into(),
            pass: 0,
            copied: 0,
            size: vol.size(),
            started: now_secs(),
        };
        let mkey = records::move_key(name);
        let vkey = records::volume_key(name);
        let move_rev = self.block_on(&op, async {
            let mut cl = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let resp = cl
                .txn(
                    Txn::new()
                        .when([
                            Compare::create_revision(mkey.clone(), CompareOp::Equal, 0),
                            Compare::mod_revision(vkey.clone(), CompareOp::Equal, entry_rev),
                        ])
                        .and_then([TxnOp::put(
                            mkey.clone(),
                            serde_json::to_vec(&rec).expect("serialize"),
                            None,
                        )]),
                )
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            if !resp.succeeded() {
                return Err(busy(format!(
                    "volume '{name}' is being moved already, or its catalog entry changed meanwhile; try again"
                )));
            }
            Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
        })?;
        log::info!("cluster: moving volume '{name}' to node '{to}'");
        // (2) The target's copy.
        let made = self.create_remote_incoming(to, name, vol.size(), &vol.tier);
        let to_id = match made {
            Ok(id) => id,
            Err(e) => {
                self.drop_move_record(name);
                return Err(e);
            }
        };
        rec.to_local_id = to_id;
        let mut m = Mover {
            c: self,
            vol: vol.clone(),
            rec,
            move_rev,
            last_progress: Instant::now(),
            address,
        };
        // (3) Passes with host I/O flowing.
        vol.moving.start();
        if let Err(e) = m.copy() {
            return Err(self.abort_move(&vol, e));
        }
        // (4) The last pass: requests wait at the gate, in-flight writes finish.
        m.rec.phase = "final".into();
        m.publish(true);
        vol.moving.close();
        let guard = match vol.io_lock.try_write_for(crate::volume::moving::GATE_WAIT) {
            Some(g) => g,
            None => {
                return Err(self.abort_move(
                    &vol,
                    busy(format!(
                        "move of volume '{name}': writes in flight did not finish within {} s",
                        crate::volume::moving::GATE_WAIT.as_secs()
                    )),
                ))
            }
        };
        st.destaging.wait(vol.id, 0, u64::MAX);
        let last = vol.moving.take();
        let fin = m
            .copy_ranges(&last)
            .and_then(|_| m.c.remotes.flush(&m.target()).map_err(|e| m.failed(e)))
            .and_then(|_| refuse_unmovable(&st, &vol))
            .and_then(|_| m.check_target());
        if let Err(e) = fin {
            drop(guard);
            return Err(self.abort_move(&vol, e));
        }
        m.rec.pass += 1;
        if let Err(e) = inner.markers.put(LocalMove {
            name: name.to_string(),
            local_id: vol.id,
            role: OUTGOING.into(),
            peer: to.to_string(),
        }) {
            drop(guard);
            return Err(self.abort_move(
                &vol,
                busy(format!(
                    "move of volume '{name}': note it in the pool directory: {e}"
                )),
            ));
        }
        // (5) The switch.
        let mut outcome = m.switch(&entry, entry_rev);
        let mut undecided: Option<ClusterError> = None;
        let end = Instant::now() + SWITCH_WAIT;
        while let Switch::Unknown(e) = &outcome {
            // The answer was lost: ask etcd what it holds (requests stay held meanwhile).
            log::warn!("cluster: {op}: {e}; asking etcd whether the switch happened");
            if Instant::now() > end {
                undecided = Some(busy(format!("{e}")));
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            outcome = match self.block_on(&op, super::catalog::read_entry(&inner, name, &op)) {
                Ok(Some((r, _))) if r.owner == to && r.local_id == to_id => Switch::Done,
                Ok(_) => Switch::Refused,
                Err(e) => Switch::Unknown(e),
            };
        }
        if let Some(e) = undecided {
            // Requests stay held at the closed gate; the cleanup thread settles the move from
            // etcd's answer when it comes (the marker says what to look for).
            drop(guard);
            return Err(busy(format!(
                "move of volume '{name}' to node '{to}': the catalog switch is undecided ({e}); \
                 the volume's requests are held until etcd answers"
            )));
        }
        match outcome {
            Switch::Done => {
                self.finish_source(&vol, to);
                drop(guard);
                self.retire(&vol, to);
                log::info!("cluster: volume '{name}' moved to node '{to}'");
                Ok(())
            }
            _ => {
                drop(guard);
                inner.markers.remove(name);
                Err(self.abort_move(
                    &vol,
                    busy(format!(
                        "move of volume '{name}': its catalog entry or move record changed during the move; the volume stays on node '{me}'"
                    )),
                ))
            }
        }
    }

    /// Fence the old copy: from now on every request to it is refused (forwarders retry).
    fn finish_source(&self, vol: &Arc<Volume>, to: &str) {
        vol.moving.fence(to);
        self.inner.moved_ids.lock().insert(vol.id, vol.name.clone());
        self.inner.st.pool.events.publish(
            "volume",
            &vol.name,
            "moved",
            serde_json::json!({"to": to}),
        );
    }

    /// Delete the old copy (fenced) and the move record; the marker goes last.
    fn retire(&self, vol: &Arc<Volume>, to: &str) {
        let name = vol.name.clone();
        let mut tries = 0;
        loop {
            match self.inner.st.delete_volume(&name, false) {
                Ok(()) | Err(PoolError::NotFound(_)) => break,
                Err(e) => {
                    tries += 1;
                    if tries >= 5 {
                        log::warn!(
                            "cluster: volume '{name}' moved to node '{to}': deleting the old copy here: {e}; the next reconcile retries"
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        self.drop_move_record(&name);
        self.inner.markers.remove(&name);
    }

    /// A move that did not switch: stop tracking, let held requests through, drop the move
    /// record (the target then drops its copy). Returns `e` with the event published.
    fn abort_move(&self, vol: &Arc<Volume>, e: ClusterError) -> ClusterError {
        vol.moving.abort();
        self.drop_move_record(&vol.name);
        log::warn!("cluster: {e}; volume '{}' stays on this node", vol.name);
        self.inner.st.pool.events.publish(
            "volume",
            &vol.name,
            "move-failed",
            serde_json::json!({"message": e.to_string()}),
        );
        e
    }

    fn drop_move_record(&self, name: &str) {
        let inner = self.inner.clone();
        let op = format!("drop the move record of '{name}'");
        let r = self.block_on(&op, async {
            let mut cl = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            cl.delete(records::move_key(name), None)
                .await
                .map_err(|e| unreachable(&inner, &op, e))
                .map(|_| ())
        });
        if let Err(e) = r {
            log::warn!("cluster: {e}; the next reconcile drops it");
        }
    }

    /// The target's side of step 2: make the copy outside the catalog, noted first.
    pub(super) fn make_incoming(
        &self,
        from: &str,
        name: &str,
        size: u64,
        tier: Option<&str>,
    ) -> Result<(u64, u64, String), PoolError> {
        if self.inner.st.volumes.volume(name).is_some() {
            return Err(PoolError::Exists(format!(
                "node '{}' has a volume '{name}' of its own; delete it there before moving '{name}' to it",
                self.inner.opts.node
            )));
        }
        let exec = self.executor.lock().clone().ok_or_else(|| {
            PoolError::Busy(format!("node '{}' is stopping", self.inner.opts.node))
        })?;
        let mark = |id| LocalMove {
            name: name.to_string(),
            local_id: id,
            role: INCOMING.into(),
            peer: from.to_string(),
        };
        self.inner.markers.put(mark(0)).map_err(|e| {
            PoolError::Busy(format!(
                "note the move of '{name}' in the pool directory: {e}"
            ))
        })?;
        match exec(name, size, tier) {
            Ok((id, size, tier)) => {
                if let Err(e) = self.inner.markers.put(mark(id)) {
                    log::warn!("cluster: note the copy of '{name}': {e}");
                }
                log::info!("cluster: made the copy of volume '{name}' moving here from node '{from}' (local id {id})");
                Ok((id, size, tier))
            }
            Err(e) => {
                self.inner.markers.remove(name);
                Err(e)
            }
        }
    }

    /// A forwarded request failed because the volume moved (or while it moves): wait for the
    /// catalog to name another owner (or to drop the move), and return where to retry.
    pub fn reroute(&self, r: &RemoteVolume, e: &RemoteError) -> Option<RemoteVolume> {
        let moved = matches!(e, RemoteError::Remote { error, .. } if *error == crate::format::nbd::ESHUTDOWN);
        let (moving, changed) = {
            let cache = self.inner.cache.read();
            let owner = cache.volumes.get(&r.name).map(|v| v.rec.owner.clone());
            (
                cache.moves.contains_key(&r.name),
                owner.is_some_and(|o| o != r.owner),
            )
        };
        let io = matches!(e, RemoteError::Io { .. } | RemoteError::Unavailable { .. });
        if !moved && !((moving || changed) && io) {
            return None;
        }
        let end = Instant::now() + REROUTE_WAIT;
        while Instant::now() < end {
            {
                let cache = self.inner.cache.read();
                if let Some(e) = cache.volumes.get(&r.name) {
                    let rec = &e.rec;
                    if rec.owner != r.owner || !cache.moves.contains_key(&r.name) {
                        let mut nr = self.remote_from(&cache, rec);
                        if rec.owner == self.inner.opts.node {
                            // Moved here: this node's own NBD server serves the retry.
                            nr.address = Some(self.inner.opts.address.clone());
                        }
                        if rec.owner != r.owner {
                            if let Some(a) = &r.address {
                                self.remotes.drop_export(a, &r.name);
                            }
                        }
                        return Some(nr);
                    }
                } else {
                    return None;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The catalog entry and the move record of `name`, read from etcd itself.
    fn read_move(
        &self,
        name: &str,
    ) -> Result<(Option<VolumeRecord>, Option<MoveRecord>), ClusterError> {
        let inner = self.inner.clone();
        let op = format!("read the move of '{name}'");
        self.block_on(&op, async {
            let mut cl = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let v = cl
                .get(records::volume_key(name), None)
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let m = cl
                .get(records::move_key(name), None)
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let v = v
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice(kv.value()).ok());
            let m = m
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice(kv.value()).ok());
            Ok((v, m))
        })
    }

    /// Finish or undo this node's part of moves that are over (the cleanup thread, every few
    /// seconds; decisions from etcd itself, never from a cache that may lag): a target's copy
    /// whose move is gone is deleted, a switched one kept; a source's old copy is deleted once
    /// the catalog names the target, and let go again if it does not; stale move records of
    /// this node are dropped.
    pub(super) fn cleanup(&self) {
        let me = self.inner.opts.node.clone();
        let st = self.inner.st.clone();
        for m in self.inner.markers.all() {
            if self.inner.moving.lock().contains(&m.name) {
                continue;
            }
            let Ok((entry, mv)) = self.read_move(&m.name) else {
                continue;
            };
            let owner = entry.as_ref().map(|e| e.owner.clone());
            let local = st
                .volumes
                .volume(&m.name)
                .filter(|v| m.local_id == 0 || v.id == m.local_id);
            if m.role == INCOMING {
                if owner.as_deref() == Some(me.as_str()) {
                    self.inner.markers.remove(&m.name);
                    continue;
                }
                if mv.is_some_and(|r| r.to == me && r.from == m.peer && r.phase != "switched") {
                    continue;
                }
                if let Some(v) = local {
                    v.moving.start();
                    v.moving.fence(&m.peer);
                    match st.delete_volume(&m.name, false) {
                        Ok(()) => log::info!(
                            "cluster: dropped the copy of volume '{}' (its move from node '{}' did not finish)",
                            m.name, m.peer
                        ),
                        Err(e) => {
                            log::warn!("cluster: drop the unfinished copy of '{}': {e}", m.name);
                            continue;
                        }
                    }
                }
                self.inner.markers.remove(&m.name);
            } else if owner.as_deref() == Some(m.peer.as_str()) {
                match local {
                    Some(v) => {
                        if !v.moving.fenced() {
                            v.moving.start();
                            self.finish_source(&v, &m.peer);
                        }
                        self.retire(&v, &m.peer);
                    }
                    None => {
                        self.drop_move_record(&m.name);
                        self.inner.markers.remove(&m.name);
                    }
                }
            } else {
                // The switch did not happen: the volume stays here; release held requests.
                if let Some(v) = local {
                    if v.moving.active() && !v.moving.fenced() {
                        v.moving.abort();
                        log::warn!(
                            "cluster: the move of volume '{}' to node '{}' did not switch; it stays here",
                            m.name, m.peer
                        );
                    }
                }
                self.drop_move_record(&m.name);
                self.inner.markers.remove(&m.name);
            }
        }
        let stale: Vec<String> = self
            .inner
            .cache
            .read()
            .moves
            .iter()
            .filter(|(_, r)| r.rec.from == me)
            .map(|(k, _)| k.clone())
            .collect();
        for name in stale {
            if !self.inner.moving.lock().contains(&name) && self.inner.markers.get(&name).is_none()
            {
                log::info!("cluster: dropping the record of an unfinished move of '{name}'");
                self.drop_move_record(&name);
            }
        }
    }
}

/// Volumes a move cannot take: paired, in a journal group, with snapshots (they would be
/// lost: snapshots stay with the pool that made them).
fn refuse_unmovable(st: &crate::storage::Storage, vol: &Volume) -> Result<(), ClusterError> {
    let name = &vol.name;
    if st.mirror.pair_of_volume(vol.id).is_some() {
        return Err(busy(format!(
            "volume '{name}' is in a pair; split or delete the pair before moving it"
        )));
    }
    if st.replication.group_of(vol.id).is_some() {
        return Err(busy(format!(
            "volume '{name}' is in a journal group; remove it from the group before moving it"
        )));
    }
    let snaps = st.snapshots.snapshots_of(vol.id);
    if !snaps.is_empty() {
        return Err(busy(format!(
            "volume '{name}' has {} snapshot(s) (e.g. '{}'); snapshots do not move: delete them before moving it",
            snaps.len(),
            snaps[0].name
        )));
    }
    Ok(())
}
