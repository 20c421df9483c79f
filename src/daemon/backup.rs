//! Control requests of the backup functions (issue 14): volume information, catalog,
//! export/import, schedules.

use super::handler::{ok, Handler};
use crate::control::protocol::{InfoView, Request, Response};
use crate::pool::create::now_secs;
use crate::pool::PoolError;

impl Handler {
    /// The backup requests; `None` for every other request.
    pub(crate) fn dispatch_backup(&self, req: &Request) -> Option<Result<Response, PoolError>> {
        let st = &self.storage;
        let res = match req {
            Request::VolumeInfoGet { name } => st
                .infos
                .resolve(name)
                .and_then(|id| ok(InfoView::of(&st.infos.get(id)), vec![])),
            Request::VolumeInfoSet { name, fields } => (|| {
                let id = st.infos.resolve(name)?;
                if fields.is_empty() {
                    return Err(PoolError::Invalid(format!(
                        "nothing to set on '{name}': give KEY=VALUE pairs"
                    )));
                }
                let now = now_secs();
                st.infos.update(id, |r| {
                    for (k, v) in fields {
                        r.set(k, v, now).map_err(|e| format!("'{name}': {e}"))?;
                    }
                    Ok(())
                })?;
                ok(InfoView::of(&st.infos.get(id)), vec![])
            })(),
            Request::VolumeInfoUnset { name, keys } => (|| {
                let id = st.infos.resolve(name)?;
                let mut absent = Vec::new();
                st.infos.update(id, |r| {
                    for k in keys {
                        if !r.unset(k).map_err(|e| format!("'{name}': {e}"))? {
                            absent.push(k.clone());
                        }
                    }
                    Ok(())
                })?;
                let warnings = absent
                    .iter()
                    .map(|k| format!("'{name}' had no '{k}'"))
                    .collect();
                ok(InfoView::of(&st.infos.get(id)), warnings)
            })(),
            Request::Catalog { volume } => {
                crate::backup::catalog::list(st, volume.as_deref()).and_then(|l| ok(l, vec![]))
            }
            Request::CatalogRebuild => {
                crate::backup::catalog::rebuild(st).and_then(|r| ok(r, vec![]))
            }
            Request::ExportPlan { name, from } => {
                crate::backup::export::plan(st, &self.mountpoint, name, from.as_deref())
                    .and_then(|p| ok(p, vec![]))
            }
            Request::ImportCommit {
                volume,
                snapshot,
                info,
                src_volume,
                src_snapshot,
                src_pool,
            } => crate::backup::export::commit(
                st,
                volume,
                snapshot,
                info,
                src_volume,
                src_snapshot,
                *src_pool,
            )
            .and_then(|()| ok(serde_json::Value::Null, vec![])),
            Request::ScheduleAdd { spec } => crate::backup::schedule::add(st, spec).and_then(|r| {
                let views = crate::backup::schedule::views(st)?;
                ok(views.into_iter().find(|v| v.id == r.id), vec![])
            }),
            Request::ScheduleList => crate::backup::schedule::views(st).and_then(|v| ok(v, vec![])),
            Request::ScheduleRemove { name } => {
                crate::backup::schedule::remove(st, name).and_then(|v| ok(v, vec![]))
            }
            _ => return None,
        };
        Some(res)
    }
}
