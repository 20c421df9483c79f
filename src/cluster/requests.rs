//! Creating a volume on another node (`volume create --node N`, or where placement chose):
//! the asking node puts a request under the chosen node's prefix, the chosen node (which
//! watches the prefix anyway) runs its ordinary cluster create (so the name's uniqueness is the
//! same transaction as any create) and puts the result; the asking node waits for it. The
//! request carries the asker's lease, so it vanishes if the asker dies first.
//!
//! ```text
//! /fusevol/requests/<node>/<id>   CreateRequest   (lease of the asking node)
//! /fusevol/results/<id>           CreateResult    (read and deleted by the asking node)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::PutOptions;
use serde::{Deserialize, Serialize};

use super::{placement, Cluster, ClusterError, Executor, Inner};
use crate::pool::PoolError;

pub const REQUESTS: &str = "/fusevol/requests/";
pub const RESULTS: &str = "/fusevol/results/";
/// How long the asking node waits for the chosen node's answer.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn request_key(node: &str, id: &str) -> String {
    format!("{REQUESTS}{node}/{id}")
}
pub fn result_key(id: &str) -> String {
    format!("{RESULTS}{id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    /// The asking node.
    pub from: String,
    pub name: String,
    pub size: u64,
    pub tier: Option<String>,
    /// The copy of a volume moving here from `from` (`moving`): made outside the catalog.
    #[serde(default)]
    pub incoming: bool,
    /// A part of this spread volume (`spread`): made outside the catalog under `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateResult {
    /// The volume's id in the chosen node's pool, when made.
    pub local_id: Option<u64>,
    pub size: u64,
    pub tier: String,
    /// (code, message) when refused: `exists`, `invalid`, `no_space`, `busy`, `io`.
    pub error: Option<(String, String)>,
}

pub fn error_code(e: &PoolError) -> &'static str {
    match e {
        PoolError::Invalid(_) => "invalid",
        PoolError::NotFound(_) => "not_found",
        PoolError::Exists(_) => "exists",
        PoolError::Busy(_) => "busy",
        PoolError::NoSpace(_) => "no_space",
        _ => "io",
    }
}

pub fn pool_error(code: &str, message: String) -> PoolError {
    match code {
        "invalid" => PoolError::Invalid(message),
        "not_found" => PoolError::NotFound(message),
        "exists" => PoolError::Exists(message),
        "busy" => PoolError::Busy(message),
        "no_space" => PoolError::NoSpace(message),
        _ => PoolError::Inconsistent(message),
    }
}

/// A request key addressed to this node: hand it to the request thread (once per id).
pub(super) fn offer(inner: &Inner, key: &str, value: &[u8]) {
    let Some(rest) = key.strip_prefix(REQUESTS) else {
        return;
    };
    let Some((node, _)) = rest.split_once('/') else {
        return;
    };
    if node != inner.opts.node {
        return;
    }
    let req: CreateRequest = match serde_json::from_slice(value) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("cluster: ignoring request {key}: {e}");
            return;
        }
    };
    if !inner.seen_requests.lock().insert(req.id.clone()) {
        return;
    }
    if let Some(tx) = inner.requests_tx.lock().as_ref() {
        let _ = tx.send(req);
    }
}

fn unreachable(inner: &Inner, op: &str, e: etcd_client::Error) -> ClusterError {
    ClusterError::Unreachable {
        endpoints: inner.endpoints(),
        op: op.to_string(),
        detail: e.to_string(),
    }
}

impl Cluster {
    /// How this node makes a volume asked for by another node (set by the daemon).
    pub fn set_executor(&self, f: Executor) {
        *self.executor.lock() = Some(Arc::new(f));
    }

    /// The node a new volume goes to (see `placement`), from the nodes up now.
    pub fn place(&self, size: u64, tier: Option<&str>) -> Result<String, ClusterError> {
        let cache = self.inner.cache.read();
        let nodes: Vec<_> = cache.nodes.values().map(|v| &v.rec).collect();
        placement::choose(&nodes, &self.inner.opts.node, size, tier).map_err(|m| {
            ClusterError::Pool(PoolError::NoSpace(format!("cannot place the volume: {m}")))
        })
    }

    /// Run a request addressed to this node and put its result (request thread).
    pub(super) fn serve_request(&self, req: CreateRequest) {
        let exec = self.executor.lock().clone();
        let made = match exec {
            Some(_) if req.part_of.is_some() => self
                .make_part(
                    &req.from,
                    req.part_of.as_deref().unwrap_or(""),
                    &req.name,
                    req.size,
                    req.tier.as_deref(),
                )
                .map_err(ClusterError::Pool),
            Some(_) if req.incoming => self
                .make_incoming(&req.from, &req.name, req.size, req.tier.as_deref())
                .map_err(ClusterError::Pool),
            Some(f) => {
                let tier = req.tier.clone();
                self.create_volume(&req.name, req.size, tier.as_deref().unwrap_or(""), || {
                    let (id, size, tier) = f(&req.name, req.size, req.tier.as_deref())?;
                    Ok(((id, size, tier.clone()), id, size, tier))
                })
            }
            None => Err(ClusterError::Pool(PoolError::Busy(format!(
                "node '{}' is stopping",
                self.inner.opts.node
            )))),
        };
        let result = match made {
            Ok((id, size, tier)) => CreateResult {
                local_id: Some(id),
                size,
                tier,
                error: None,
            },
            Err(e) => {
                let e = e.into_pool_error();
                log::warn!(
                    "cluster: create of '{}' asked by node '{}': {e}",
                    req.name,
                    req.from
                );
                CreateResult {
                    local_id: None,
                    size: 0,
                    tier: String::new(),
                    error: Some((error_code(&e).to_string(), e.to_string())),
                }
            }
        };
        let inner = self.inner.clone();
        let op = format!("answer node '{}' about volume '{}'", req.from, req.name);
        let r = self.block_on(&op, async {
            let mut c = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            c.put(
                result_key(&req.id),
                serde_json::to_vec(&result).expect("serialize"),
                None,
            )
            .await
            .map_err(|e| unreachable(&inner, &op, e))?;
            c.delete(request_key(&inner.opts.node, &req.id), None)
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("cluster: {e}");
        }
    }

    /// Ask `node` to make the copy of volume `name` (moving there); its local id.
    pub(super) fn create_remote_incoming(
        &self,
        node: &str,
        name: &str,
        size: u64,
        tier: &str,
    ) -> Result<u64, ClusterError> {
        let r = self.ask_create(node, name, size, Some(tier), true, None)?;
        r.local_id.ok_or_else(|| {
            ClusterError::Pool(PoolError::Inconsistent(format!(
                "node '{node}' answered the copy of '{name}' without a local id"
            )))
        })
    }

    /// Ask `node` to create volume `name`; waits for its answer.
    pub fn create_remote(
        &self,
        node: &str,
        name: &str,
        size: u64,
        tier: Option<&str>,
    ) -> Result<CreateResult, ClusterError> {
        self.ask_create(node, name, size, tier, false, None)
    }

    pub(super) fn ask_create(
        &self,
        node: &str,
        name: &str,
        size: u64,
        tier: Option<&str>,
        incoming: bool,
        part_of: Option<&str>,
    ) -> Result<CreateResult, ClusterError> {
        if !self.inner.cache.read().node_up(node) {
            return Err(ClusterError::Pool(PoolError::Invalid(format!(
                "cannot create volume '{name}' on node '{node}': the node is not up"
            ))));
        }
        let inner = self.inner.clone();
        let op = format!("ask node '{node}' to create volume '{name}'");
        let id = format!(
            "{}-{}-{}",
            inner.opts.node,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let req = CreateRequest {
            id: id.clone(),
            from: inner.opts.node.clone(),
            name: name.to_string(),
            size,
            tier: tier.map(str::to_string),
            incoming,
            part_of: part_of.map(str::to_string),
        };
        let lease = inner.state.lock().lease;
        self.block_on(&op, async {
            let mut c = inner
                .client()
                .await
                .map_err(|e| unreachable(&inner, &op, e))?;
            let opts = lease.map(|l| PutOptions::new().with_lease(l));
            c.put(
                request_key(node, &id),
                serde_json::to_vec(&req).expect("serialize"),
                opts,
            )
            .await
            .map_err(|e| unreachable(&inner, &op, e))
            .map(|_| ())
        })?;
        let end = Instant::now() + WAIT;
        loop {
            let got = self.block_on(&op, async {
                let mut c = inner
                    .client()
                    .await
                    .map_err(|e| unreachable(&inner, &op, e))?;
                let r = c
                    .get(result_key(&id), None)
                    .await
                    .map_err(|e| unreachable(&inner, &op, e))?;
                let Some(kv) = r.kvs().first() else {
                    return Ok(None);
                };
                let res: Option<CreateResult> = serde_json::from_slice(kv.value()).ok();
                c.delete(result_key(&id), None)
                    .await
                    .map_err(|e| unreachable(&inner, &op, e))?;
                Ok(res)
            })?;
            if let Some(res) = got {
                if let Some((code, msg)) = res.error {
                    return Err(ClusterError::Pool(pool_error(&code, msg)));
                }
                return Ok(res);
            }
            if Instant::now() > end || !self.inner.cache.read().node_up(node) {
                let _ = self.block_on(&op, async {
                    let mut c = inner
                        .client()
                        .await
                        .map_err(|e| unreachable(&inner, &op, e))?;
                    c.delete(request_key(node, &id), None)
                        .await
                        .map_err(|e| unreachable(&inner, &op, e))
                        .map(|_| ())
                });
                return Err(ClusterError::Pool(PoolError::Busy(format!(
                    "node '{node}' did not answer the create of volume '{name}' (it may have \
                     made it: see `fusevol cluster volumes`)"
                ))));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for e in [
            PoolError::Invalid("a".into()),
            PoolError::NotFound("b".into()),
            PoolError::Exists("c".into()),
            PoolError::Busy("d".into()),
            PoolError::NoSpace("e".into()),
        ] {
            let back = pool_error(error_code(&e), e.to_string());
            assert_eq!(error_code(&back), error_code(&e));
            assert_eq!(back.to_string(), e.to_string());
        }
        assert_eq!(request_key("b", "x1"), "/fusevol/requests/b/x1");
    }
}
