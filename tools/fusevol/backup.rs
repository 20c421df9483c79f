//! The backup commands (issue 14): `volume info get|set|unset`.

use clap::{Args, Subcommand};

use fusevol::control::{InfoView, Request, VolumeInfo};

use crate::exit::Failure;
use crate::Ctx;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct InfoArgs {
    /// Volume name (shows the volume in detail)
    #[arg(required = true)]
    pub(crate) name: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Option<InfoCmd>,
}

/// The volume information of a volume or snapshot: typed fields `label`, `host`,
/// `mountpoint`, `app`, `time` (seconds since the Unix epoch, or `now`) and free-form
/// `user.<name>` keys; copies made by the array add read-only `origin.*` keys. The same
/// fields are the extended attributes `user.fusevol.<key>` of the files in the mount.
#[derive(Subcommand)]
pub(crate) enum InfoCmd {
    /// Print the volume information of VOL or VOL@SNAP (one KEY, or all as KEY=VALUE lines)
    Get {
        /// VOL or VOL@SNAP
        name: String,
        /// Only this key
        key: Option<String>,
    },
    /// Set fields: KEY=VALUE... (label, host, mountpoint, app, time, user.<name>)
    Set {
        /// VOL or VOL@SNAP
        name: String,
        /// KEY=VALUE pairs
        #[arg(required = true, value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
    /// Remove fields
    Unset {
        /// VOL or VOL@SNAP
        name: String,
        /// Keys to remove
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

pub(crate) fn info(
    ctx: &Ctx,
    args: InfoArgs,
    show_volume: impl FnOnce(VolumeInfo),
) -> Result<(), Failure> {
    match (args.cmd, args.name) {
        (Some(InfoCmd::Get { name, key: None }), _) => {
            ctx.request(Request::VolumeInfoGet { name }, show_info)
        }
        (
            Some(InfoCmd::Get {
                name,
                key: Some(key),
            }),
            _,
        ) => {
            let shown = name.clone();
            let mut missing = None;
            ctx.request(Request::VolumeInfoGet { name }, |v: InfoView| {
                match v.fields.get(&key) {
                    Some(val) => println!("{val}"),
                    None => missing = Some(format!("'{shown}' has no '{key}'")),
                }
            })?;
            match missing {
                Some(m) => Err(Failure::Local(m)),
                None => Ok(()),
            }
        }
        (Some(InfoCmd::Set { name, fields }), _) => {
            let mut pairs = Vec::new();
            for f in fields {
                let Some((k, v)) = f.split_once('=') else {
                    return Err(Failure::Usage(format!(
                        "'{f}' is not KEY=VALUE (keys: label, host, mountpoint, app, time, user.<name>)"
                    )));
                };
                pairs.push((k.to_string(), v.to_string()));
            }
            ctx.request(
                Request::VolumeInfoSet {
                    name,
                    fields: pairs,
                },
                show_info,
            )
        }
        (Some(InfoCmd::Unset { name, keys }), _) => {
            ctx.request(Request::VolumeInfoUnset { name, keys }, show_info)
        }
        (None, Some(name)) => ctx.request(Request::VolumeInfo { name }, show_volume),
        (None, None) => Err(Failure::Usage(
            "volume info needs a volume name or get|set|unset".into(),
        )),
    }
}

/// KEY=VALUE lines, then a note when the record is missing or invalid.
pub(crate) fn show_info(v: InfoView) {
    for (k, val) in &v.fields {
        println!("{k}={val}");
    }
    match v.status.as_str() {
        "missing" => println!("# no volume information"),
        "invalid" => println!("# volume information is invalid: {}", v.error),
        _ => {}
    }
}
