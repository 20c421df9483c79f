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
            print_nodes(&rows)
        }),
        ClusterCmd::Set { busy_above, busy } => {
            if busy_above.is_none() && busy.is_none() {
                return Err(Failure::Usage(
                    "cluster set: give --busy-above N and/or --busy on|off|auto".into(),
                ));
            }
            let req = Request::ClusterSet {
                busy_above: busy_above.map(fusevol::cluster::load::Threshold),
                busy,
            };
            ctx.request(req, |n: ClusterNodeInfo| print_nodes(&[n]))
        }
        ClusterCmd::Volumes => ctx.request(
            Request::ClusterVolumes,
            |rows_in: Vec<ClusterVolumeInfo>| {
                if rows_in.is_empty() {
                    println!("no volumes in the cluster catalog");
                    return;
                }
                let rows = rows_in
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
                print_replicas(&rows_in);
            },
        ),
    }
}

fn print_nodes(rows: &[ClusterNodeInfo]) {
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
                format!("{:.1}", n.io_load),
                if n.state != "up" {
                    "-".into()
                } else if n.busy {
                    format!("yes (> {:.1})", n.busy_above)
                } else {
                    format!("no (<= {:.1})", n.busy_above)
                },
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
        ("IO-LOAD", R),
        ("BUSY", L),
        ("VOLUMES", R),
    ];
    print!("{}", table(&header, rows));
}

/// Group snapshots held at several sites, and which site served this node's reads.
fn print_replicas(rows: &[ClusterVolumeInfo]) {
    let lines: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|v| {
            v.replicas.iter().map(move |r| {
                vec![
                    format!("{}@{}", v.name, r.snapshot),
                    r.group.clone(),
                    r.sites
                        .iter()
                        .map(|s| {
                            let state = if !s.up {
                                " down"
                            } else if s.busy {
                                " busy"
                            } else {
                                ""
                            };
                            format!("{}:{}{state}", s.node, s.export)
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    match (&r.served_by, &r.reason) {
                        (Some(n), Some(why)) => format!("{n} ({why})"),
                        _ => "- (not read here yet)".into(),
                    },
                    r.reads
                        .iter()
                        .map(|(n, c)| format!("{n}={c}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    println!();
    println!(
        "Group snapshots held at several sites (reads go to another site while the owner is busy):"
    );
    let header = [
        ("SNAPSHOT", L),
        ("GROUP", L),
        ("SITES", L),
        ("LAST SERVED BY", L),
        ("READS HERE", L),
    ];
    print!("{}", table(&header, lines));
}
