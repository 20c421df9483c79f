//! Control requests → storage operations; the one place pool errors become protocol codes.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::status;
use crate::control::protocol::{
    ErrorCode, Event, EventsEnd, EventsHeader, GroupInfo, NbdExportInfo, Request, Response,
};
use crate::control::server::{ControlHandler, ResponseStream};
use crate::events::LiveEvents;
use crate::names;
use crate::pool::PoolError;
use crate::storage::Storage;

pub struct Handler {
    pub storage: Arc<Storage>,
    pub mountpoint: String,
    /// When the daemon started (the statistics count from here).
    pub started: std::time::Instant,
    /// The NBD export table, when the daemon runs with `--nbd`.
    pub nbd: Option<Arc<crate::nbd::ExportTable>>,
    /// The cluster, when the daemon runs with `--cluster`: volume create, resize and delete
    /// go through its catalog.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Sessions, operation locks and two-phase changes (`guard.rs`).
    pub plane: super::guard::ControlPlane,
}

fn export_info(r: crate::nbd::ExportRow) -> NbdExportInfo {
    NbdExportInfo {
        name: r.name,
        size: r.size,
        read_only: r.read_only,
        connections: r.connections,
    }
}

pub(super) fn code_of(e: &PoolError) -> ErrorCode {
    match e {
        PoolError::Invalid(_) => ErrorCode::Invalid,
        PoolError::NotFound(_) => ErrorCode::NotFound,
        PoolError::Exists(_) => ErrorCode::Exists,
        PoolError::Busy(_) => ErrorCode::Busy,
        PoolError::NoSpace(_) => ErrorCode::NoSpace,
        _ => ErrorCode::Io,
    }
}

pub(crate) fn ok<T: Serialize>(v: T, warnings: Vec<String>) -> Result<Response, PoolError> {
    Ok(Response::success(
        serde_json::to_value(v).expect("protocol types serialize"),
        warnings,
    ))
}

/// A group name as a file name in the remote directory and in the pool.
fn validate_group(name: &str) -> Result<(), PoolError> {
    names::validate("group", name).map_err(PoolError::Invalid)
}

/// The remote directory of a group request: the CLI sends it absolute.
fn remote_dir(group: &str, remote: &str) -> Result<PathBuf, PoolError> {
    let path = PathBuf::from(remote);
    if !path.is_absolute() {
        return Err(PoolError::Invalid(format!(
            "remote directory '{remote}' of group '{group}' is not an absolute path"
        )));
    }
    Ok(path)
}

/// Make sure a failed group operation's message names the group (the code stays).
fn naming<T>(group: &str, result: Result<T, PoolError>) -> Result<T, PoolError> {
    let prefix = |msg: String| {
        if msg.contains(&format!("'{group}'")) {
            msg
        } else {
            format!("group '{group}': {msg}")
        }
    };
    result.map_err(|e| match e {
        PoolError::Invalid(m) => PoolError::Invalid(prefix(m)),
        PoolError::NotFound(m) => PoolError::NotFound(prefix(m)),
        PoolError::Exists(m) => PoolError::Exists(prefix(m)),
        PoolError::Busy(m) => PoolError::Busy(prefix(m)),
        PoolError::NoSpace(m) => PoolError::NoSpace(prefix(m)),
        other => other,
    })
}

impl Handler {
    /// The group called `name`, or not found naming it.
    fn one_group(&self, name: &str) -> Result<GroupInfo, PoolError> {
        status::group_info(&self.storage, Some(name))?
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| PoolError::NotFound(format!("group '{name}' not found")))
    }

    /// The export table, or invalid naming the export when NBD is off.
    fn exports(&self, name: &str) -> Result<&crate::nbd::ExportTable, PoolError> {
        self.nbd.as_deref().ok_or_else(|| {
            let what = if name.is_empty() {
                String::new()
            } else {
                format!("cannot change export '{name}': ")
            };
            PoolError::Invalid(format!(
                "{what}the daemon is not serving NBD (start fusevold with --nbd ADDR:PORT)"
            ))
        })
    }

    /// The cluster, or invalid when the daemon runs alone.
    fn cluster(&self) -> Result<&crate::cluster::Cluster, PoolError> {
        self.cluster.as_deref().ok_or_else(|| {
            PoolError::Invalid(
                "this fusevold is not in a cluster (start it with --cluster URL --node NAME \
                 --nbd ADDR:PORT)"
                    .into(),
            )
        })
    }

    fn dispatch(&self, req: Request) -> Result<Response, PoolError> {
        let st = &self.storage;
        if let Some(res) = self.dispatch_backup(&req) {
            return res;
        }
        match req {
            Request::ExportNbdAdd { name, read_only } => {
                let row = self.exports(&name)?.add(st, &name, read_only)?;
                ok(export_info(row), vec![])
            }
            Request::ExportNbdRemove { name } => {
                self.exports(&name)?.remove(st, &name)?;
                ok(json!(null), vec![])
            }
            Request::ExportNbdList => {
                let rows = self.exports("")?.list(st);
                ok(
                    rows.into_iter().map(export_info).collect::<Vec<_>>(),
                    vec![],
                )
            }
            Request::ClusterStatus => ok(self.cluster()?.status(), vec![]),
            Request::ClusterNodes => ok(self.cluster()?.nodes(), vec![]),
            Request::ClusterVolumes => ok(self.cluster()?.volumes(), vec![]),
            Request::ClusterSet { busy_above, busy } => {
                let c = self.cluster()?;
                c.set_busy(busy_above.map(|t| t.0), busy)
                    .map_err(PoolError::Invalid)?;
                ok(c.this_node(), vec![])
            }
            Request::Ping | Request::PoolInfo => {
                ok(status::pool_info(st, &self.mountpoint), vec![])
            }
            Request::ArrayList => ok(status::array_infos(st), vec![]),
            Request::ArrayAdd { name, size, tier } => {
                let a = st.pool.add_array(&name, size, &tier)?;
                let info = status::array_infos(st)
                    .into_iter()
                    .find(|i| i.id == a.id)
                    .expect("just added");
                ok(info, vec![])
            }
            Request::VolumeCreate {
                name,
                size,
                tier,
                node,
                spread,
            } => {
                if let Some(c) = &self.cluster {
                    names::validate("volume", &name).map_err(PoolError::Invalid)?;
                    crate::volume::check_size(&name, size)?;
                    if spread && node.is_some() {
                        return Err(PoolError::Invalid(format!(
                            "volume '{name}': --spread and --node exclude each other (the \
                             cluster places a spread volume's parts)"
                        )));
                    }
                    // --spread, or no single node has the space: parts on several nodes.
                    let placed = match (&node, spread) {
                        (Some(n), _) => Ok(n.clone()),
                        (None, true) => Err(None),
                        (None, false) => c.place(size, tier.as_deref()).map_err(Some),
                    };
                    let target = match placed {
                        Ok(n) => n,
                        Err(single) => {
                            let plan = match c.plan_spread(size, tier.as_deref(), spread) {
                                Ok(p) if spread || p.len() > 1 => p,
                                Ok(_) => {
                                    return Err(single.map(|e| e.into_pool_error()).unwrap_or_else(
                                        || {
                                            PoolError::NoSpace(format!(
                                                "cannot place volume '{name}'"
                                            ))
                                        },
                                    ))
                                }
                                Err(e) => return Err(e.into_pool_error()),
                            };
                            let rec = c
                                .create_spread(&name, size, tier.as_deref(), &plan)
                                .map_err(|e| e.into_pool_error())?;
                            return ok(spread_info(&rec), vec![]);
                        }
                    };
                    if target != c.node() {
                        let r = c
                            .create_remote(&target, &name, size, tier.as_deref())
                            .map_err(|e| e.into_pool_error())?;
                        let info =
                            made_elsewhere(name, r.local_id.unwrap_or(0), r.size, r.tier, target);
                        return ok(info, vec![]);
                    }
                } else if spread {
                    return Err(PoolError::Invalid(format!(
                        "cannot create volume '{name}' spread over several nodes: this fusevold \
                         is not in a cluster (--spread needs fusevold --cluster)"
                    )));
                } else if let Some(n) = node {
                    return Err(PoolError::Invalid(format!(
                        "cannot create volume '{name}' on node '{n}': this fusevold is not in a \
                         cluster (--node needs fusevold --cluster)"
                    )));
                }
                let make = || {
                    let (v, warnings) = st.volumes.create_volume(&name, size, tier.as_deref())?;
                    let (id, size, tier) = (v.id, v.size(), v.tier.clone());
                    Ok(((v, warnings), id, size, tier))
                };
                let (v, warnings) = match &self.cluster {
                    Some(c) => {
                        names::validate("volume", &name).map_err(PoolError::Invalid)?;
                        c.create_volume(&name, size, tier.as_deref().unwrap_or(""), make)
                            .map_err(|e| e.into_pool_error())?
                    }
                    None => make()?.0,
                };
                ok(status::volume_info(st, &v), warnings)
            }
            Request::VolumeList => {
                let list: Vec<_> = st
                    .volumes
                    .volume_list()
                    .iter()
                    .map(|v| status::volume_info(st, v))
                    .collect();
                ok(list, vec![])
            }
            Request::VolumeInfo { name } => ok(status::volume_info_by_name(st, &name)?, vec![]),
            Request::VolumeResize {
                name,
                size,
                allow_shrink,
            } => {
                if let Some(c) = self.cluster.as_ref().filter(|c| c.is_spread(&name)) {
                    crate::volume::check_size(&name, size)?;
                    let rec = c
                        .grow_spread(&name, size)
                        .map_err(|e| e.into_pool_error())?;
                    return ok(spread_info(&rec), vec![]);
                }
                let local = self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.local_alias(&name))
                    .unwrap_or_else(|| name.clone());
                let resize = || {
                    let v = st.resize_volume(&local, size, allow_shrink)?;
                    let size = v.size();
                    Ok((v, size))
                };
                let v = match &self.cluster {
                    Some(c) => c
                        .resize_volume(&name, resize)
                        .map_err(|e| e.into_pool_error())?,
                    None => resize()?.0,
                };
                ok(status::volume_info(st, &v), vec![])
            }
            Request::VolumeDelete { name, recursive } => {
                if let Some(c) = self.cluster.as_ref().filter(|c| c.is_spread(&name)) {
                    let warnings = c.delete_spread(&name).map_err(|e| e.into_pool_error())?;
                    return ok(json!(null), warnings);
                }
                // A volume renamed in the cluster is deleted under its local name.
                let local = self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.local_alias(&name))
                    .unwrap_or_else(|| name.clone());
                let delete = || st.delete_volume(&local, recursive);
                match &self.cluster {
                    Some(c) => c
                        .delete_volume(&name, delete)
                        .map_err(|e| e.into_pool_error())?,
                    None => delete()?,
                }
                ok(json!(null), vec![])
            }
            Request::VolumeRename { name, new_name } => {
                self.cluster()
                    .map_err(|_| {
                        PoolError::Invalid(format!(
                            "cannot rename volume '{name}': renaming is offered in a cluster \
                             only (fusevold --cluster), where it changes the global name"
                        ))
                    })?
                    .rename_volume(&name, &new_name)
                    .map_err(|e| e.into_pool_error())?;
                ok(json!(null), vec![])
            }
            Request::VolumeMove { name, node } => {
                self.cluster()?
                    .move_volume(&name, &node)
                    .map_err(|e| e.into_pool_error())?;
                ok(json!(null), vec![])
            }
            Request::SnapshotCreate { volume, name } => {
                let s = st.snapshot_with_info(&volume, &name, &[])?;
                ok(
                    status::fresh_snapshot_info(st, &s, &self.mountpoint),
                    vec![],
                )
            }
            Request::SnapshotList { volume } => ok(
                status::snapshot_infos(st, volume.as_deref(), &self.mountpoint)?,
                vec![],
            ),
            Request::SnapshotDelete { volume, name } => {
                st.snapshots.delete_snapshot(&volume, &name)?;
                ok(json!(null), vec![])
            }
            Request::SnapshotRollback { volume, name } => {
                let v = st.rollback_snapshot(&volume, &name)?;
                ok(status::volume_info(st, &v), vec![])
            }
            Request::SnapshotClone {
                volume,
                name,
                new_volume,
            } => {
                let v = st.clone_with_info(&volume, &name, &new_volume)?;
                ok(status::volume_info(st, &v), vec![])
            }
            Request::PairCreate {
                pvol,
                svol,
                create_svol,
                svol_tier,
                group,
                rate,
            } => {
                let pair = st.create_pair(
                    &pvol,
                    &svol,
                    create_svol,
                    svol_tier.as_deref(),
                    group.as_deref(),
                    rate,
                )?;
                let mut warnings = Vec::new();
                if !pair.separate_arrays {
                    warnings.push(format!(
                        "S-VOL '{svol}' shares arrays with P-VOL '{pvol}': losing one array file can lose both copies (add arrays, or put the S-VOL on another tier)"
                    ));
                }
                ok(status::pair_info(st, &pair), warnings)
            }
            Request::PairSplit {
                pvols,
                group,
                quick,
            } => {
                let pairs = st.split_with_info(&pvols, group.as_deref(), quick)?;
                ok(
                    pairs
                        .iter()
                        .map(|x| status::pair_info(st, x))
                        .collect::<Vec<_>>(),
                    vec![],
                )
            }
            Request::PairResync {
                pvol,
                restore,
                rate,
            } => {
                let pair = st.mirror.resync_pair(&pvol, restore, rate)?;
                ok(status::pair_info(st, &pair), vec![])
            }
            Request::PairDelete { pvol } => {
                st.mirror.delete_pair(&pvol)?;
                ok(json!(null), vec![])
            }
            Request::PairStatus { pvol } => ok(status::pair_infos(st, pvol.as_deref())?, vec![]),
            Request::GroupCreate {
                name,
                volumes,
                remote,
                options,
            } => {
                validate_group(&name)?;
                if volumes.is_empty() {
                    return Err(PoolError::Invalid(format!(
                        "group '{name}' needs at least one volume"
                    )));
                }
                let remote = remote_dir(&name, &remote)?;
                naming(
                    &name,
                    st.replication
                        .group_create(&name, &volumes, &remote, &options),
                )?;
                st.journal_group_infos(&name);
                ok(self.one_group(&name)?, vec![])
            }
            Request::GroupAttach {
                name,
                remote,
                pitr,
                names,
            } => {
                validate_group(&name)?;
                let remote = remote_dir(&name, &remote)?;
                naming(
                    &name,
                    st.replication
                        .group_attach_named(&name, &remote, &pitr, &names),
                )?;
                ok(self.one_group(&name)?, vec![])
            }
            Request::GroupAddVolume { name, volume } => {
                naming(&name, st.replication.group_add_volume(&name, &volume))?;
                st.journal_group_infos(&name);
                ok(self.one_group(&name)?, vec![])
            }
            Request::GroupRemoveVolume { name, volume } => {
                naming(&name, st.replication.group_remove_volume(&name, &volume))?;
                ok(self.one_group(&name)?, vec![])
            }
            Request::GroupSnapshot { name, snapshot } => {
                naming(&name, st.group_snapshot_with_info(&name, &snapshot))?;
                ok(json!(null), vec![])
            }
            Request::GroupDelete { name } => {
                naming(&name, st.replication.group_delete(&name))?;
                ok(json!(null), vec![])
            }
            Request::GroupTakeover { name, at_marker } => {
                validate_group(&name)?;
                let detail = naming(
                    &name,
                    st.replication.group_takeover(&name, at_marker.as_deref()),
                )?;
                ok(
                    naming(&name, status::handover_report(st, &name, detail))?,
                    vec![],
                )
            }
            Request::GroupFailback {
                name,
                keep_snapshot,
            } => {
                validate_group(&name)?;
                let detail = naming(&name, st.replication.group_failback(&name, keep_snapshot))?;
                ok(
                    naming(&name, status::handover_report(st, &name, detail))?,
                    vec![],
                )
            }
            Request::GroupSet {
                name,
                options,
                pitr,
                lag_alert_ms,
            } => {
                validate_group(&name)?;
                if options == crate::control::GroupSetOptions::default()
                    && pitr.is_empty()
                    && lag_alert_ms.is_none()
                {
                    return Err(PoolError::Invalid(format!(
                        "group '{name}': name at least one setting to change"
                    )));
                }
                // Journal-full settings belong to the primary, retention and apply delay
                // to the secondary (or a primary that may become one).
                if options != crate::control::GroupSetOptions::default() {
                    naming(&name, st.replication.group_set(&name, &options))?;
                }
                if !pitr.is_empty() {
                    naming(&name, st.replication.group_set_pitr(&name, &pitr))?;
                }
                if let Some(ms) = lag_alert_ms {
                    naming(&name, st.replication.group_set_lag_alert(&name, ms))?;
                }
                ok(self.one_group(&name)?, vec![])
            }
            Request::GroupResync { name } => {
                validate_group(&name)?;
                naming(&name, st.replication.group_resync(&name))?;
                ok(self.one_group(&name)?, vec![])
            }
            Request::GroupRestore {
                name,
                seq,
                time_ns,
                prefix,
                into,
            } => {
                validate_group(&name)?;
                let target = match (seq, time_ns) {
                    (Some(n), None) => crate::replication::pitr::RestoreTarget::Seq(n),
                    (None, Some(t)) => crate::replication::pitr::RestoreTarget::Time(t),
                    _ => {
                        return Err(PoolError::Invalid(format!(
                            "group '{name}': restore needs exactly one of seq and time_ns"
                        )))
                    }
                };
                let into = into.map(PathBuf::from);
                ok(
                    naming(
                        &name,
                        st.replication.group_restore(
                            &name,
                            target,
                            prefix.as_deref(),
                            into.as_deref(),
                        ),
                    )?,
                    vec![],
                )
            }
            Request::GroupStatus { name: None } => ok(status::group_info(st, None)?, vec![]),
            Request::GroupStatus { name: Some(name) } => ok(vec![self.one_group(&name)?], vec![]),
            Request::Stats { volume } => ok(
                status::volume_stats(st, volume.as_deref(), self.started)?,
                vec![],
            ),
            Request::ArrayStats => ok(status::array_stats(st, self.started)?, vec![]),
            Request::Session { .. }
            | Request::Lock { .. }
            | Request::Unlock { .. }
            | Request::LockList
            | Request::Plan { .. }
            | Request::PlanUndo { .. } => Err(PoolError::Invalid(
                "locks and plans are answered per connection by the control plane".into(),
            )),
            Request::Events { .. } => Err(PoolError::Invalid(
                "events is answered as a stream by the control server".into(),
            )),
            // Answered by `dispatch_backup` (daemon/backup.rs) before this match.
            Request::VolumeInfoGet { .. }
            | Request::VolumeInfoSet { .. }
            | Request::VolumeInfoUnset { .. }
            | Request::Catalog { .. }
            | Request::CatalogRebuild
            | Request::ExportPlan { .. }
            | Request::ImportCommit { .. }
            | Request::ScheduleAdd { .. }
            | Request::ScheduleList
            | Request::ScheduleRemove { .. } => Err(PoolError::Invalid(
                "backup request reached the general dispatcher".into(),
            )),
            Request::Sync => {
                st.checkpoint()?;
                ok(json!(null), vec![])
            }
            Request::SalvageConfirm => {
                let (report, epoch) = st.pool.commit_salvage()?;
                // The daemon stops (as on SIGTERM) so that the next start serves the pool
                // read-write from the committed checkpoint, with pairs and groups started
                // and the lost records' extents scrubbed.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGTERM,
                );
                ok(
                    report,
                    vec![format!(
                        "salvage confirmed (checkpoint epoch {epoch}); fusevold stops: start it again (without --recovery salvage) to serve the pool read-write"
                    )],
                )
            }
        }
    }
}

/// An `events` stream: header, backlog, live events, and how it ended.
struct EventStream {
    header: Option<EventsHeader>,
    backlog: std::vec::IntoIter<Arc<Event>>,
    live: Option<LiveEvents>,
    done: bool,
}

fn event_line(ev: &Event) -> Response {
    Response::success(serde_json::to_value(ev).expect("events serialize"), vec![])
}

impl Iterator for EventStream {
    type Item = Response;

    fn next(&mut self) -> Option<Response> {
        if let Some(h) = self.header.take() {
            return Some(Response::success(
                serde_json::to_value(h).expect("protocol types serialize"),
                vec![],
            ));
        }
        if let Some(ev) = self.backlog.next() {
            return Some(event_line(&ev));
        }
        if self.done {
            return None;
        }
        let end = match &self.live {
            None => "backlog",
            Some(live) => match live.rx.recv() {
                Ok(ev) => return Some(event_line(&ev)),
                Err(_) if live.was_cut_off() => {
                    self.done = true;
                    return Some(Response::failure(
                        ErrorCode::Busy,
                        format!(
                            "cut off: this observer fell {} events behind the daemon; reconnect with --since the last sequence number it printed",
                            crate::events::OBSERVER_QUEUE
                        ),
                    ));
                }
                Err(_) => "daemon-stopping",
            },
        };
        self.done = true;
        Some(Response::success(
            serde_json::to_value(EventsEnd { end: end.into() }).expect("protocol types serialize"),
            vec![],
        ))
    }
}

impl ControlHandler for Handler {
    fn stream(&self, req: &Request) -> Option<ResponseStream<'_>> {
        let Request::Events {
            since,
            follow,
            from_now,
        } = req
        else {
            return None;
        };
        let events = &self.storage.pool.events;
        let since = if *from_now { Some(u64::MAX) } else { *since };
        let sub = events.subscribe(since, *follow);
        let header = EventsHeader {
            last_seq: sub.last_seq,
            first_kept: sub.first_kept,
            capacity: events.capacity() as u64,
            dropped: sub.dropped,
        };
        Some(Box::new(EventStream {
            header: Some(header),
            backlog: sub.backlog.into_iter(),
            live: sub.live,
            done: false,
        }))
    }

    fn handle_on(&self, conn: u64, req: Request) -> Response {
        use super::guard::{AnnotateKind, Intercepted};
        let pool = self.storage.pool.dir.display().to_string();
        match self.plane.intercept(&self.storage, &pool, conn, req) {
            Intercepted::Answered(resp) => resp,
            Intercepted::Pass(req) => {
                let kind = AnnotateKind::of(&req);
                let mut resp = self.handle(req);
                self.plane.annotate(kind, &mut resp);
                resp
            }
        }
    }

    fn disconnected(&self, conn: u64) {
        self.plane.disconnected(conn);
    }

    fn handle(&self, req: Request) -> Response {
        log::debug!("control request {req:?}");
        match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("control request failed: {e}");
                Response::failure(code_of(&e), e.to_string())
            }
        }
    }
}

/// What `volume create`/`volume resize` answer for a spread volume (it has no local id).
fn spread_info(
    rec: &crate::cluster::records::VolumeRecord,
) -> crate::control::protocol::VolumeInfo {
    let nodes: Vec<&str> = rec.parts.iter().map(|p| p.node.as_str()).collect();
    let node = format!(
        "{} (spread over {} parts)",
        nodes.join(" and "),
        nodes.len()
    );
    made_elsewhere(rec.name.clone(), 0, rec.size, rec.tier.clone(), node)
}

/// What `volume create` answers for a volume made on other nodes (nothing of it is here).
fn made_elsewhere(
    name: String,
    id: u64,
    size: u64,
    tier: String,
    node: String,
) -> crate::control::protocol::VolumeInfo {
    crate::control::protocol::VolumeInfo {
        id,
        name,
        size,
        tier,
        allocated: 0,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        open_handles: 0,
        extents_per_array: vec![],
        info: Default::default(),
        node: Some(node),
        lock: None,
    }
}
