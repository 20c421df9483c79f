//! The operator's control plane in the request path: who is asking on a connection, operation
//! locks on the objects a changing request touches, and two-phase changes (`plan`/`apply`).
//!
//! [`ControlPlane::intercept`] sees every request before the handler's `dispatch`: it answers
//! the lock and plan requests itself, refuses a changing request on an object locked by another
//! owner (code `locked`, exit 1 in the CLI, naming the holder and since when), and lets
//! everything else through. [`ControlPlane::annotate`] adds the lock to the volume, pair and
//! group descriptions an answer carries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::locks::{Locks, Refusal};
use super::plan::{self, Undo};
use super::status;
use crate::control::plan::PlanReport;
use crate::control::protocol::{ErrorCode, LockObject, Request, Response};
use crate::storage::Storage;

type Key = (LockObject, String);

/// A change `apply` executed on a connection (kept until the connection closes, so the CLI
/// can undo it when another pool of the same plan fails).
struct Change {
    conn: u64,
    undo: Vec<Undo>,
}

/// Per-daemon state of the control plane.
pub struct ControlPlane {
    pub locks: Arc<Locks>,
    sessions: Mutex<HashMap<u64, String>>,
    changes: Mutex<HashMap<String, Change>>,
    next_change: AtomicU64,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`ControlPlane::intercept`] decided.
pub enum Intercepted {
    Answered(Response),
    Pass(Request),
}

fn vol(n: &str) -> Key {
    (LockObject::Volume, n.to_string())
}

/// The pair of P-VOL `pvol`: its key and its volumes' keys.
fn pair_keys(st: &Storage, pvol: &str, out: &mut Vec<Key>) {
    out.push((LockObject::Pair, pvol.to_string()));
    out.push(vol(pvol));
    if let Some((p, _)) = st
        .volumes
        .volume(pvol)
        .and_then(|v| st.mirror.pair_of_volume(v.id))
    {
        out.push(vol(&p.svol.name));
    }
}

/// A journal group's key and its volumes' keys.
fn group_keys(st: &Storage, name: &str, out: &mut Vec<Key>) {
    out.push((LockObject::Group, name.to_string()));
    if let Ok(gs) = status::group_info(st, Some(name)) {
        for g in gs.iter().filter(|g| g.name == name) {
            out.extend(g.volumes.iter().map(|v| vol(v)));
        }
    }
}

/// The objects a changing request changes (empty for reads and pool-wide requests).
pub fn touched(st: &Storage, req: &Request) -> Vec<Key> {
    let mut k = Vec::new();
    match req {
        Request::VolumeCreate { name, .. }
        | Request::VolumeResize { name, .. }
        | Request::VolumeDelete { name, .. }
        | Request::VolumeMove { name, .. } => k.push(vol(name)),
        Request::VolumeRename { name, new_name } => {
            k.push(vol(name));
            k.push(vol(new_name));
        }
        Request::SnapshotCreate { volume, .. }
        | Request::SnapshotDelete { volume, .. }
        | Request::SnapshotRollback { volume, .. } => k.push(vol(volume)),
        Request::SnapshotClone { new_volume, .. } => k.push(vol(new_volume)),
        Request::PairCreate { pvol, svol, .. } => {
            k.push((LockObject::Pair, pvol.clone()));
            k.push(vol(pvol));
            k.push(vol(svol));
        }
        Request::PairSplit { pvols, group, .. } => {
            for p in pvols {
                pair_keys(st, p, &mut k);
            }
            if let Some(g) = group {
                for p in st.mirror.pair_list().iter().filter(|p| &p.group == g) {
                    pair_keys(st, &p.pvol.name, &mut k);
                }
            }
        }
        Request::PairResync { pvol, .. } | Request::PairDelete { pvol } => {
            pair_keys(st, pvol, &mut k)
        }
        Request::GroupCreate { name, volumes, .. } => {
            k.push((LockObject::Group, name.clone()));
            k.extend(volumes.iter().map(|v| vol(v)));
        }
        Request::GroupAttach { name, .. } => k.push((LockObject::Group, name.clone())),
        Request::GroupAddVolume { name, volume } | Request::GroupRemoveVolume { name, volume } => {
            group_keys(st, name, &mut k);
            k.push(vol(volume));
        }
        Request::GroupSnapshot { name, .. }
        | Request::GroupDelete { name }
        | Request::GroupTakeover { name, .. }
        | Request::GroupFailback { name, .. }
        | Request::GroupSet { name, .. }
        | Request::GroupResync { name } => group_keys(st, name, &mut k),
        Request::GroupRestore { name, .. } => group_keys(st, name, &mut k),
        // Volume information of `VOL` or `VOL@SNAP` belongs to the volume.
        Request::VolumeInfoSet { name, .. } | Request::VolumeInfoUnset { name, .. } => {
            k.push(vol(name.split('@').next().unwrap_or(name)))
        }
        Request::ImportCommit { volume, .. } => k.push(vol(volume)),
        // A schedule snapshots and prunes its volume or group: adding one is a change to it.
        Request::ScheduleAdd { spec } if spec.group => group_keys(st, &spec.target, &mut k),
        Request::ScheduleAdd { spec } => k.push(vol(&spec.target)),
        _ => {}
    }
    k
}

fn locked(r: Refusal) -> Response {
    Response::failure(ErrorCode::Locked, r.0)
}

fn data<T: serde::Serialize>(v: T) -> Response {
    Response::success(
        serde_json::to_value(v).expect("protocol types serialize"),
        vec![],
    )
}

impl ControlPlane {
    pub fn new(locks: Arc<Locks>) -> ControlPlane {
        ControlPlane {
            locks,
            sessions: Mutex::default(),
            changes: Mutex::default(),
            next_change: AtomicU64::new(1),
        }
    }

    fn owner(&self, conn: u64) -> Option<String> {
        guard(&self.sessions).get(&conn).cloned()
    }

    /// Connection `conn` closed: forget who it was, its changes, its session locks.
    pub fn disconnected(&self, conn: u64) {
        guard(&self.sessions).remove(&conn);
        guard(&self.changes).retain(|_, c| c.conn != conn);
        self.locks.release_connection(conn);
    }

    fn exists(st: &Storage, object: LockObject, name: &str) -> bool {
        match object {
            LockObject::Volume => st.volumes.volume(name).is_some(),
            LockObject::Pair => st
                .volumes
                .volume(name)
                .and_then(|v| st.mirror.pair_of_volume(v.id))
                .is_some_and(|(p, _)| p.pvol.name == name),
            LockObject::Group => status::group_info(st, None)
                .unwrap_or_default()
                .iter()
                .any(|g| g.name == name),
        }
    }

    /// Answer the control plane's own requests; refuse a change to a locked object.
    pub fn intercept(&self, st: &Storage, pool: &str, conn: u64, req: Request) -> Intercepted {
        let resp = match req {
            Request::Session { owner } => {
                if owner.is_empty() {
                    Response::failure(ErrorCode::Invalid, "the owner name is empty")
                } else {
                    guard(&self.sessions).insert(conn, owner);
                    data(Value::Null)
                }
            }
            Request::Lock {
                object,
                name,
                owner,
                ttl,
                session,
            } => {
                if !Self::exists(st, object, &name) {
                    return Intercepted::Answered(Response::failure(
                        ErrorCode::NotFound,
                        format!(
                            "cannot lock {} '{name}': it does not exist",
                            object.as_str()
                        ),
                    ));
                }
                match self
                    .locks
                    .lock(object, &name, &owner, ttl, session.then_some(conn))
                {
                    Ok(l) => data(l),
                    Err(r) => locked(r),
                }
            }
            Request::Unlock {
                object,
                name,
                owner,
                force,
            } => {
                let owner = owner.or_else(|| self.owner(conn));
                match self.locks.unlock(object, &name, owner.as_deref(), force) {
                    Ok(l) => data(l),
                    Err(r) if r.0.ends_with("is not locked") => {
                        Response::failure(ErrorCode::NotFound, r.0)
                    }
                    Err(r) => locked(r),
                }
            }
            Request::LockList => data(self.locks.list()),
            Request::Plan { plan, execute } => self.plan(st, pool, conn, &plan, execute),
            Request::PlanUndo { change } => {
                let c = {
                    let mut ch = guard(&self.changes);
                    match ch.get(&change) {
                        Some(c) if c.conn == conn => ch.remove(&change),
                        _ => None,
                    }
                };
                match c {
                    None => Response::failure(
                        ErrorCode::NotFound,
                        format!("change '{change}' was not executed on this connection"),
                    ),
                    Some(mut c) => {
                        let notes = plan::undo_all(st, &mut c.undo);
                        st.pool.events.publish(
                            "change",
                            &change,
                            "undone",
                            json!({ "problems": notes }),
                        );
                        if notes.is_empty() {
                            data(PlanReport {
                                pool: pool.to_string(),
                                change,
                                steps: vec![],
                                executed: true,
                                undone: true,
                            })
                        } else {
                            Response::failure(
                                ErrorCode::Io,
                                format!("change '{change}': undo incomplete: {}", notes.join("; ")),
                            )
                        }
                    }
                }
            }
            other => {
                let keys = touched(st, &other);
                let me = self.owner(conn);
                return match self.locks.check(&keys, me.as_deref()) {
                    Ok(()) => Intercepted::Pass(other),
                    Err(r) => Intercepted::Answered(locked(Refusal(format!(
                        "{}; refused{}",
                        r.0,
                        match &me {
                            Some(o) => format!(" for owner '{o}'"),
                            None => " (this client named no owner: --owner)".into(),
                        }
                    )))),
                };
            }
        };
        Intercepted::Answered(resp)
    }

    fn plan(
        &self,
        st: &Storage,
        pool: &str,
        conn: u64,
        p: &crate::control::plan::PoolPlan,
        execute: bool,
    ) -> Response {
        let session_owner = self.owner(conn);
        let fail = |problems: Vec<String>| {
            let code = if problems.iter().any(|m| m.contains(" is locked by ")) {
                ErrorCode::Locked
            } else {
                ErrorCode::Invalid
            };
            Response::failure(
                code,
                format!(
                    "the plan does not hold for pool {pool} ({} problem(s)): {}",
                    problems.len(),
                    problems.join("; ")
                ),
            )
        };
        if !execute {
            let check = |keys: &[Key]| {
                self.locks
                    .check(keys, session_owner.as_deref())
                    .map_err(|r| r.0)
            };
            return match plan::validate(st, p, &check) {
                Ok(v) => data(PlanReport {
                    pool: pool.to_string(),
                    change: String::new(),
                    steps: v.steps.into_iter().map(|(s, _)| s).collect(),
                    executed: false,
                    undone: false,
                }),
                Err(problems) => fail(problems),
            };
        }
        let n = self.next_change.fetch_add(1, Ordering::Relaxed);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let change = format!("c{secs}-{n}");
        let owner = session_owner
            .clone()
            .unwrap_or_else(|| format!("apply {change}"));
        // Phase 1: what it touches; take those locks for this connection.
        let lock_check = |keys: &[Key]| self.locks.check(keys, Some(&owner)).map_err(|r| r.0);
        let first = match plan::validate(st, p, &lock_check) {
            Ok(v) => v,
            Err(problems) => return fail(problems),
        };
        let needs_work = first.steps.iter().any(|(_, op)| op.is_some());
        let mut taken: Vec<Key> = Vec::new();
        if needs_work {
            for (object, name) in &first.touched {
                if self
                    .locks
                    .get(*object, name)
                    .is_some_and(|l| l.owner == owner)
                {
                    continue; // the requester's own lock already
                }
                if let Err(r) = self.locks.lock(*object, name, &owner, None, Some(conn)) {
                    for (o, n) in &taken {
                        let _ = self.locks.unlock(*o, n, Some(&owner), false);
                    }
                    return locked(r);
                }
                taken.push((*object, name.clone()));
            }
        }
        // Phase 2: under the locks, validate again and execute.
        let v = match plan::validate(st, p, &lock_check) {
            Ok(v) => v,
            Err(problems) => return fail(problems),
        };
        match plan::execute(st, &change, &v) {
            Ok(undo) => {
                if !undo.is_empty() {
                    guard(&self.changes).insert(change.clone(), Change { conn, undo });
                }
                data(PlanReport {
                    pool: pool.to_string(),
                    change,
                    steps: v.steps.into_iter().map(|(s, _)| s).collect(),
                    executed: true,
                    undone: false,
                })
            }
            Err(e) => Response::failure(super::handler::code_of(&e), e.to_string()),
        }
    }

    /// Add `"lock"` to the volume / pair / group descriptions in an answer to `req`.
    pub fn annotate(&self, req_kind: AnnotateKind, resp: &mut Response) {
        let Some(d) = resp.data.as_mut() else {
            return;
        };
        let (object, field) = match req_kind {
            AnnotateKind::None => return,
            AnnotateKind::Volume => (LockObject::Volume, "name"),
            AnnotateKind::Pair => (LockObject::Pair, "pvol"),
            AnnotateKind::Group => (LockObject::Group, "name"),
        };
        let mut one = |o: &mut Value| {
            let Some(m) = o.as_object_mut() else {
                return;
            };
            let Some(name) = m.get(field).and_then(Value::as_str) else {
                return;
            };
            if let Some(l) = self.locks.get(object, name) {
                m.insert(
                    "lock".into(),
                    serde_json::to_value(l).expect("protocol types serialize"),
                );
            }
        };
        match d {
            Value::Array(items) => items.iter_mut().for_each(&mut one),
            other => one(other),
        }
    }
}

/// Which descriptions an answer carries (for [`ControlPlane::annotate`]).
#[derive(Clone, Copy)]
pub enum AnnotateKind {
    None,
    Volume,
    Pair,
    Group,
}

impl AnnotateKind {
    pub fn of(req: &Request) -> AnnotateKind {
        match req {
            Request::VolumeInfo { .. }
            | Request::VolumeList
            | Request::VolumeCreate { .. }
            | Request::VolumeResize { .. } => AnnotateKind::Volume,
            Request::PairStatus { .. }
            | Request::PairCreate { .. }
            | Request::PairSplit { .. }
            | Request::PairResync { .. } => AnnotateKind::Pair,
            Request::GroupStatus { .. }
            | Request::GroupCreate { .. }
            | Request::GroupAttach { .. }
            | Request::GroupSet { .. }
            | Request::GroupResync { .. }
            | Request::GroupAddVolume { .. }
            | Request::GroupRemoveVolume { .. } => AnnotateKind::Group,
            _ => AnnotateKind::None,
        }
    }
}
