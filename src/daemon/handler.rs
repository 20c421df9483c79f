//! Control requests → pool operations; the one place pool errors become protocol codes.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::control::protocol::{ErrorCode, Request, Response};
use crate::control::server::ControlHandler;
use crate::pool::{Pool, PoolError};

pub struct Handler {
    pub pool: Arc<Pool>,
    pub mountpoint: String,
}

fn code_of(e: &PoolError) -> ErrorCode {
    match e {
        PoolError::Invalid(_) => ErrorCode::Invalid,
        PoolError::NotFound(_) => ErrorCode::NotFound,
        PoolError::Exists(_) => ErrorCode::Exists,
        PoolError::Busy(_) => ErrorCode::Busy,
        PoolError::NoSpace(_) => ErrorCode::NoSpace,
        _ => ErrorCode::Io,
    }
}

fn ok<T: Serialize>(v: T, warnings: Vec<String>) -> Result<Response, PoolError> {
    Ok(Response::success(
        serde_json::to_value(v).expect("protocol types serialize"),
        warnings,
    ))
}

impl Handler {
    fn dispatch(&self, req: Request) -> Result<Response, PoolError> {
        let p = &self.pool;
        match req {
            Request::Ping | Request::PoolInfo => ok(p.pool_info(&self.mountpoint), vec![]),
            Request::ArrayList => ok(p.array_infos(), vec![]),
            Request::ArrayAdd { name, size, tier } => ok(p.add_array(&name, size, &tier)?, vec![]),
            Request::VolumeCreate { name, size, tier } => {
                let (v, warnings) = p.create_volume(&name, size, tier.as_deref())?;
                ok(p.volume_info(&v), warnings)
            }
            Request::VolumeList => {
                let list: Vec<_> = p.volume_list().iter().map(|v| p.volume_info(v)).collect();
                ok(list, vec![])
            }
            Request::VolumeInfo { name } => ok(p.volume_info_by_name(&name)?, vec![]),
            Request::VolumeResize { name, size } => {
                let v = p.resize_volume(&name, size)?;
                ok(p.volume_info(&v), vec![])
            }
            Request::VolumeDelete { name, recursive } => {
                p.delete_volume(&name, recursive)?;
                ok(json!(null), vec![])
            }
            Request::SnapshotCreate { volume, name } => {
                let s = p.create_snapshot(&volume, &name)?;
                ok(p.fresh_snapshot_info(&s, &self.mountpoint), vec![])
            }
            Request::SnapshotList { volume } => ok(
                p.snapshot_infos(volume.as_deref(), &self.mountpoint)?,
                vec![],
            ),
            Request::SnapshotDelete { volume, name } => {
                p.delete_snapshot(&volume, &name)?;
                ok(json!(null), vec![])
            }
            Request::SnapshotRollback { volume, name } => {
                let v = p.rollback_snapshot(&volume, &name)?;
                ok(p.volume_info(&v), vec![])
            }
            Request::SnapshotClone {
                volume,
                name,
                new_volume,
            } => {
                let v = p.clone_snapshot(&volume, &name, &new_volume)?;
                ok(p.volume_info(&v), vec![])
            }
            Request::PairCreate {
                pvol,
                svol,
                create_svol,
                svol_tier,
                group,
                rate,
            } => {
                let pair = p.create_pair(
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
                ok(p.pair_info(&pair), warnings)
            }
            Request::PairSplit {
                pvols,
                group,
                quick,
            } => {
                let pairs = p.split_pairs(&pvols, group.as_deref(), quick)?;
                ok(
                    pairs.iter().map(|x| p.pair_info(x)).collect::<Vec<_>>(),
                    vec![],
                )
            }
            Request::PairResync {
                pvol,
                restore,
                rate,
            } => {
                let pair = p.resync_pair(&pvol, restore, rate)?;
                ok(p.pair_info(&pair), vec![])
            }
            Request::PairDelete { pvol } => {
                p.delete_pair(&pvol)?;
                ok(json!(null), vec![])
            }
            Request::PairStatus { pvol } => ok(p.pair_infos(pvol.as_deref())?, vec![]),
            Request::Sync => {
                p.checkpoint()?;
                ok(json!(null), vec![])
            }
        }
    }
}

impl ControlHandler for Handler {
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
