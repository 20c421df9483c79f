//! The `snapshot` commands.

use fusevol::control::protocol::SnapshotInfo;
use fusevol::control::{Request, VolumeInfo};
use fusevol::units::format_size;

use crate::cli::SnapshotCmd;
use crate::exit::Failure;
use crate::output::{format_time, table, L, R};
use crate::Ctx;

pub(crate) fn snapshot(ctx: &Ctx, cmd: SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Create {
            volume,
            name,
            hooks,
        } => {
            let env = fusevol::backup::hooks::HookEnv {
                op: "snapshot".into(),
                volumes: vec![volume.clone()],
                snapshot: name.clone(),
                group: String::new(),
                schedule: String::new(),
            };
            crate::backup::with_hooks(&hooks, env, || {
                ctx.request(
                    Request::SnapshotCreate { volume, name },
                    |s: SnapshotInfo| {
                        println!(
                            "created snapshot {} of volume {} at {}: {}",
                            s.name,
                            s.volume,
                            format_time(s.created),
                            s.path
                        )
                    },
                )
            })
        }
        SnapshotCmd::List { volume } => {
            let of = volume.clone();
            ctx.request(
                Request::SnapshotList { volume },
                move |snaps: Vec<SnapshotInfo>| match (&of, snaps.is_empty()) {
                    (Some(vol), true) => println!("no snapshots of volume {vol}"),
                    (None, true) => println!("no snapshots"),
                    // The daemon answers oldest first.
                    _ => print!("{}", snapshot_table(&snaps)),
                },
            )
        }
        SnapshotCmd::Delete { volume, name } => {
            let shown = format!("deleted snapshot {name} of volume {volume}");
            ctx.request(Request::SnapshotDelete { volume, name }, move |()| {
                println!("{shown}")
            })
        }
        SnapshotCmd::Rollback { volume, name } => {
            let snap = name.clone();
            ctx.request(
                Request::SnapshotRollback { volume, name },
                move |v: VolumeInfo| {
                    println!(
                        "rolled back volume {} to snapshot {snap}: {} ({} bytes)",
                        v.name,
                        format_size(v.size),
                        v.size
                    )
                },
            )
        }
        SnapshotCmd::Clone {
            volume,
            name,
            new_volume,
        } => {
            let from = format!("snapshot {name} of volume {volume}");
            ctx.request(
                Request::SnapshotClone {
                    volume,
                    name,
                    new_volume,
                },
                move |v: VolumeInfo| {
                    println!(
                        "created volume {} from {from}: {}, tier {}",
                        v.name,
                        format_size(v.size),
                        v.tier
                    )
                },
            )
        }
    }
}

fn snapshot_table(snaps: &[SnapshotInfo]) -> String {
    let rows = snaps
        .iter()
        .map(|s| {
            vec![
                s.volume.clone(),
                s.name.clone(),
                format_time(s.created),
                format_size(s.size),
                format_size(s.exclusive),
                format_size(s.shared),
            ]
        })
        .collect();
    let header = [
        ("VOLUME", L),
        ("SNAPSHOT", L),
        ("CREATED", L),
        ("SIZE", R),
        ("EXCLUSIVE", R),
        ("SHARED", R),
    ];
    table(&header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_table_lists_in_the_given_order() {
        let snap = |volume: &str, name: &str, created, exclusive| SnapshotInfo {
            id: 0,
            volume: volume.into(),
            name: name.into(),
            created,
            size: 1 << 30,
            exclusive,
            shared: 1 << 20,
            path: format!("/m/.snapshots/{volume}/{name}"),
            info: Default::default(),
        };
        let out = snapshot_table(&[
            snap("vm1", "old", 0, 0),
            snap("vm10", "new", 1_700_000_000, 3 << 20),
        ]);
        let (gib, mib, three_mib, zero) = (
            format_size(1 << 30),
            format_size(1 << 20),
            format_size(3 << 20),
            format_size(0),
        );
        let expected = table(
            &[
                ("VOLUME", L),
                ("SNAPSHOT", L),
                ("CREATED", L),
                ("SIZE", R),
                ("EXCLUSIVE", R),
                ("SHARED", R),
            ],
            vec![
                vec![
                    "vm1".into(),
                    "old".into(),
                    "1970-01-01 00:00:00 UTC".into(),
                    gib.clone(),
                    zero,
                    mib.clone(),
                ],
                vec![
                    "vm10".into(),
                    "new".into(),
                    "2023-11-14 22:13:20 UTC".into(),
                    gib,
                    three_mib,
                    mib,
                ],
            ],
        );
        assert_eq!(out, expected);
        assert!(out.starts_with("VOLUME  SNAPSHOT  CREATED "), "{out}");
    }
}
