//! The `cluster` commands: a node's view of the cluster (the same catalog on every node).

use fusevol::control::{ClusterNodeInfo, ClusterStatusInfo, ClusterVolumeInfo, Request};
use fusevol::units::format_size;

use crate::cli::ClusterCmd;
use crate::exit::Failure;
use crate::output::{key_values, table, L, R};
use crate::Ctx;

pub(crate) fn cluster(ctx: &Ctx, cmd: ClusterCmd) -> Result<(), Failure> {
    match cmd {
        ClusterCmd::Status => ctx.request(Request::ClusterStatus, |s: ClusterStatusInfo| {
            print!(
                "{}",
                key_values(&[
                    ("node", s.node.clone()),
                    ("nbd address", s.address.clone()),
                    ("etcd", s.endpoints.join(",")),
                    (
                        "connected",
                        if s.connected {
                            "yes"
                        } else {
                            "no (serving from the last view)"
                        }
                        .into()
                    ),
                    (
                        "lease",
                        match &s.lease {
                            Some(l) => format!("{l} (TTL {} s)", s.ttl),
                            None => "none (not registered)".into(),
                        }
                    ),
                    ("revision", s.revision.to_string()),
                    ("nodes", format!("{} up of {}", s.nodes_up, s.nodes_known)),
                    (
                        "volumes",
                        format!("{} ({} unavailable)", s.volumes, s.volumes_unavailable)
                    ),
                    (
                        "last error",
                        s.last_error.clone().unwrap_or_else(|| "-".into())
                    ),
                ])
            )
        }),
        ClusterCmd::Nodes => ctx.request(Request::ClusterNodes, |rows: Vec<ClusterNodeInfo>| {
            let rows = rows
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.state.clone(),
                        n.address.clone(),
                        n.tiers
                            .iter()
                            .map(|t| t.tier.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                        format_size(n.capacity),
                        format_size(n.free),
                        format!("{:.2}", n.load),
                        n.volumes.to_string(),
                    ]
                })
                .collect();
            let header = [
                ("NODE", L),
                ("STATE", L),
                ("ADDRESS", L),
                ("TIERS", L),
                ("CAPACITY", R),
                ("FREE", R),
                ("LOAD", R),
                ("VOLUMES", R),
            ];
            print!("{}", table(&header, rows));
        }),
        ClusterCmd::Volumes => {
            ctx.request(Request::ClusterVolumes, |rows: Vec<ClusterVolumeInfo>| {
                if rows.is_empty() {
                    println!("no volumes in the cluster catalog");
                    return;
                }
                let rows = rows
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.owner.clone(),
                            v.local_id.to_string(),
                            format_size(v.size),
                            v.tier.clone(),
                            v.state.clone(),
                            if v.available {
                                "yes"
                            } else {
                                "NO (owner down)"
                            }
                            .into(),
                            v.served.clone(),
                            v.moving.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                let header = [
                    ("NAME", L),
                    ("OWNER", L),
                    ("LOCAL-ID", R),
                    ("SIZE", R),
                    ("TIER", L),
                    ("STATE", L),
                    ("AVAILABLE", L),
                    ("SERVED HERE", L),
                    ("MOVE", L),
                ];
                print!("{}", table(&header, rows));
            })
        }
    }
}
