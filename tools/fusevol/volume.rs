//! The `volume` commands.

use fusevol::control::{Request, VolumeInfo};
use fusevol::units::format_size;

use crate::cli::VolumeCmd;
use crate::exit::Failure;
use crate::output::{format_time, key_values, percent, table, L, R};
use crate::Ctx;

pub(crate) fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Result<(), Failure> {
    match cmd {
        VolumeCmd::Create {
            name,
            size,
            tier,
            node,
            spread,
        } => ctx.request(
            Request::VolumeCreate {
                name,
                size,
                tier,
                node,
                spread,
            },
            |v: VolumeInfo| {
                println!(
                    "created volume {}: {}, tier {}{}",
                    v.name,
                    format_size(v.size),
                    v.tier,
                    v.node.map(|n| format!(", on node {n}")).unwrap_or_default()
                )
            },
        ),
        VolumeCmd::List => ctx.request(Request::VolumeList, |vols: Vec<VolumeInfo>| {
            if vols.is_empty() {
                println!("no volumes");
                return;
            }
            let rows = vols
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        format_size(v.size),
                        format_size(v.allocated),
                        percent(v.allocated, v.size),
                        v.tier.clone(),
                        v.open_handles.to_string(),
                        format_time(v.created),
                    ]
                })
                .collect();
            let header = [
                ("NAME", L),
                ("SIZE", R),
                ("ALLOCATED", R),
                ("ALLOC%", R),
                ("TIER", L),
                ("OPEN", R),
                ("CREATED", L),
            ];
            print!("{}", table(&header, rows));
        }),
        VolumeCmd::Export {
            name,
            file,
            from,
            format,
        } => crate::copy::export(ctx, name, file, from, format),
        VolumeCmd::Import { file, name } => crate::copy::import(ctx, file, name),
        VolumeCmd::Info(args) => crate::backup::info(ctx, args, show_volume),
        VolumeCmd::Resize {
            name,
            size,
            allow_shrink,
        } => ctx.request(
            Request::VolumeResize {
                name,
                size,
                allow_shrink,
            },
            |v: VolumeInfo| {
                println!(
                    "volume {} is now {} ({} bytes)",
                    v.name,
                    format_size(v.size),
                    v.size
                )
            },
        ),
        VolumeCmd::Rename { name, new_name } => {
            let shown = format!("renamed volume {name} to {new_name}");
            ctx.request(Request::VolumeRename { name, new_name }, move |()| {
                println!("{shown}")
            })
        }
        VolumeCmd::Move { name, node } => {
            let shown = format!("moved volume {name} to node {node}");
            ctx.request(Request::VolumeMove { name, node }, move |()| {
                println!("{shown}")
            })
        }
        VolumeCmd::Delete { name, recursive } => {
            let shown = name.clone();
            ctx.request(Request::VolumeDelete { name, recursive }, move |()| {
                if recursive {
                    println!("deleted volume {shown} and its snapshots")
                } else {
                    println!("deleted volume {shown}")
                }
            })
        }
    }
}

fn show_volume(v: VolumeInfo) {
    let extents = if v.extents_per_array.is_empty() {
        "none".to_string()
    } else {
        v.extents_per_array
            .iter()
            .map(|(array, n)| format!("{array}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut fields = vec![
        ("name", v.name.clone()),
        ("id", v.id.to_string()),
        (
            "size",
            format!("{} ({} bytes)", format_size(v.size), v.size),
        ),
        ("tier", v.tier.clone()),
        (
            "allocated",
            format!(
                "{} ({} of size)",
                format_size(v.allocated),
                percent(v.allocated, v.size)
            ),
        ),
        ("created", format_time(v.created)),
        ("open handles", v.open_handles.to_string()),
        ("extents", extents),
    ];
    if let Some(l) = &v.lock {
        fields.push(("lock", crate::change::lock_text(l)));
    }
    print!("{}", key_values(&fields));
    match v.info.status.as_str() {
        "missing" => println!("volume information: none"),
        "invalid" => println!("volume information: INVALID ({})", v.info.error),
        _ => {
            println!("volume information:");
            for (k, val) in &v.info.fields {
                println!("  {k}={val}");
            }
        }
    }
}
