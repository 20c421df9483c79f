//! The `export-nbd` commands.

use fusevol::control::{NbdExportInfo, Request};
use fusevol::units::format_size;

use crate::cli::ExportNbdCmd;
use crate::exit::Failure;
use crate::output::{table, L, R};
use crate::Ctx;

pub(crate) fn export_nbd(ctx: &Ctx, cmd: ExportNbdCmd) -> Result<(), Failure> {
    match cmd {
        ExportNbdCmd::Add { name, read_only } => ctx.request(
            Request::ExportNbdAdd { name, read_only },
            |e: NbdExportInfo| {
                println!(
                    "exporting {} over NBD: {}{}",
                    e.name,
                    format_size(e.size),
                    if e.read_only { ", read-only" } else { "" }
                )
            },
        ),
        ExportNbdCmd::Remove { name } => {
            let shown = name.clone();
            ctx.request(Request::ExportNbdRemove { name }, move |()| {
                println!("no longer exporting {shown} over NBD to new clients")
            })
        }
        ExportNbdCmd::List => ctx.request(Request::ExportNbdList, |rows: Vec<NbdExportInfo>| {
            if rows.is_empty() {
                println!("no NBD exports");
                return;
            }
            let rows = rows
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        format_size(e.size),
                        if e.read_only { "yes" } else { "no" }.to_string(),
                        e.connections.to_string(),
                    ]
                })
                .collect();
            let header = [
                ("NAME", L),
                ("SIZE", R),
                ("READ-ONLY", L),
                ("CONNECTIONS", R),
            ];
            print!("{}", table(&header, rows));
        }),
    }
}
