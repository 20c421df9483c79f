//! The backup commands (issue 14): `volume info get|set|unset`.

use clap::{Args, Subcommand};

use fusevol::backup::hooks::{around, HookEnv, HookError};
use fusevol::control::{CatalogEntry, InfoView, RebuildReport, Request, VolumeInfo};
use fusevol::units::format_size;

use crate::output::{format_time, table, L, R};

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

/// `fusevol catalog [VOL]`, `catalog rebuild`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct CatalogArgs {
    /// Only the copies of this volume [default: all]
    #[arg(value_name = "VOL")]
    pub(crate) volume: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Option<CatalogCmd>,
}

#[derive(Subcommand)]
pub(crate) enum CatalogCmd {
    /// Rebuild the catalog index (<POOL>/catalog.json) from the volumes' own records
    Rebuild,
    /// Restore a backup onto its source volume, found from the backup's own record: a
    /// snapshot by rollback, a split S-VOL by `pair resync --restore`, an export stream FILE
    /// by import (into --to, or the stream's volume name). Refused while the target is open
    Restore {
        /// VOL@SNAP, an S-VOL's name, or an export stream file
        #[arg(value_name = "BACKUP")]
        backup: String,
        /// The volume to restore into [default: the backup's source]
        #[arg(long, value_name = "VOL")]
        to: Option<String>,
    },
}

pub(crate) fn catalog(ctx: &Ctx, args: CatalogArgs) -> Result<(), Failure> {
    match args.cmd {
        Some(CatalogCmd::Rebuild) => ctx.request(Request::CatalogRebuild, |r: RebuildReport| {
            print_catalog(&r.entries);
            if r.index_was_missing {
                println!("# index was missing; written afresh");
            }
            for n in &r.removed {
                println!("# index had a stale entry: {n}");
            }
            for n in &r.added {
                println!("# index lacked: {n}");
            }
        }),
        Some(CatalogCmd::Restore { backup, to }) => restore(ctx, backup, to),
        None => ctx.request(
            Request::Catalog {
                volume: args.volume,
            },
            |l: Vec<CatalogEntry>| print_catalog(&l),
        ),
    }
}

fn print_catalog(l: &[CatalogEntry]) {
    if l.is_empty() {
        println!("no backups");
        return;
    }
    let rows = l
        .iter()
        .map(|e| {
            let info = match e.info.as_str() {
                "valid" => String::new(),
                "missing" => "MISSING".into(),
                _ => format!("INVALID: {}", e.error),
            };
            vec![
                format_time(e.time),
                e.name.clone(),
                e.kind.clone(),
                e.source.clone(),
                e.label.clone(),
                e.host.clone(),
                format_size(e.size),
                format_size(e.held),
                info,
            ]
        })
        .collect();
    let header = [
        ("TIME", L),
        ("BACKUP", L),
        ("KIND", L),
        ("SOURCE", L),
        ("LABEL", L),
        ("HOST", L),
        ("SIZE", R),
        ("HELD", R),
        ("INFO", L),
    ];
    print!("{}", table(&header, rows));
}

/// `--pre CMD`, `--post CMD`, `--hook-timeout SECS` of the commands that make a copy.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct HookArgs {
    /// Run CMD (sh -c) before the copy instant (e.g. `fsfreeze -f /mnt/data`); if it fails,
    /// no copy is made. Env: FUSEVOL_OP, FUSEVOL_VOLUMES, FUSEVOL_SNAPSHOT, FUSEVOL_GROUP
    #[arg(long, value_name = "CMD")]
    pub(crate) pre: Option<String>,
    /// Run CMD after the copy, always (also when the pre hook or the copy failed;
    /// FUSEVOL_RESULT is ok or failed), e.g. `fsfreeze -u /mnt/data`
    #[arg(long, value_name = "CMD")]
    pub(crate) post: Option<String>,
    /// Kill a hook that runs longer than SECS
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) hook_timeout: u64,
}

/// Run `copy` between the hooks; a failure of either hook becomes a local error naming it.
pub(crate) fn with_hooks(
    hooks: &HookArgs,
    env: HookEnv,
    copy: impl FnOnce() -> Result<(), Failure>,
) -> Result<(), Failure> {
    if hooks.pre.is_none() && hooks.post.is_none() {
        return copy();
    }
    match around(
        hooks.pre.as_deref(),
        hooks.post.as_deref(),
        &env,
        std::time::Duration::from_secs(hooks.hook_timeout),
        copy,
    ) {
        Ok(()) => Ok(()),
        Err(HookError::Copy(f)) => Err(f),
        Err(e) => Err(Failure::Local(e.to_string())),
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Daemon(body) => write!(f, "{}", body.message),
            Failure::Unclean { problems } => write!(f, "pool check found {problems} problem(s)"),
            Failure::Unreachable(e) => write!(f, "{e}"),
            Failure::Usage(m)
            | Failure::Local(m)
            | Failure::WaitTimeout(m)
            | Failure::PairSuspended(m)
            | Failure::PairChanged(m)
            | Failure::GroupError(m) => write!(f, "{m}"),
        }
    }
}

fn refuse_open(client: &mut fusevol::control::Client, vol: &str) -> Result<(), Failure> {
    let (v, _): (VolumeInfo, _) = client.call_ok(&Request::VolumeInfo {
        name: vol.to_string(),
    })?;
    if v.open_handles > 0 {
        return Err(Failure::Local(format!(
            "volume '{vol}' is open ({} handles); close it (umount, losetup -d) before a restore",
            v.open_handles
        )));
    }
    Ok(())
}

fn restore(ctx: &Ctx, backup: String, to: Option<String>) -> Result<(), Failure> {
    let mut client = ctx.client()?;
    let (catalog, _): (Vec<CatalogEntry>, _) =
        client.call_ok(&Request::Catalog { volume: None })?;
    let Some(entry) = catalog.iter().find(|e| e.name == backup) else {
        if std::path::Path::new(&backup).is_file() {
            // An export stream: import it (a full stream into a new volume, an incremental
            // onto the volume whose latest snapshot is its base).
            let target = match to {
                Some(t) => t,
                None => stream_volume(&backup)?,
            };
            return crate::copy::import(ctx, backup, target);
        }
        return Err(Failure::Local(format!(
            "'{backup}' is neither a backup in the catalog nor an export stream file"
        )));
    };
    if entry.source.is_empty() {
        return Err(Failure::Local(format!(
            "backup '{backup}' does not say which volume it is a copy of (its volume information is {})",
            entry.info
        )));
    }
    let target = to.unwrap_or_else(|| entry.source.clone());
    if let Some((vol, snap)) = backup.split_once('@') {
        if target != vol {
            return Err(Failure::Local(format!(
                "snapshot '{backup}' restores onto its own volume '{vol}', not '{target}' (use snapshot clone for a new volume)"
            )));
        }
        refuse_open(&mut client, vol)?;
        let req = Request::SnapshotRollback {
            volume: vol.to_string(),
            name: snap.to_string(),
        };
        return ctx.request(req, |v: VolumeInfo| {
            println!(
                "restored volume {} from snapshot {backup} (rollback)",
                v.name
            )
        });
    }
    let (pairs, _): (Vec<fusevol::control::PairInfo>, _) =
        client.call_ok(&Request::PairStatus { pvol: None })?;
    match pairs.iter().find(|p| p.svol == backup) {
        Some(p) => {
            if p.pvol != target {
                return Err(Failure::Local(format!(
                    "S-VOL '{backup}' restores onto its P-VOL '{}', not '{target}'",
                    p.pvol
                )));
            }
            refuse_open(&mut client, &target)?;
            let req = Request::PairResync {
                pvol: target.clone(),
                restore: true,
                rate: None,
            };
            ctx.request(req, |p: fusevol::control::PairInfo| {
                println!(
                    "restoring volume {} from S-VOL {backup}: {} (pair wait {} --state PAIR to wait)",
                    p.pvol, p.state, p.pvol
                )
            })
        }
        None => Err(Failure::Local(format!(
            "backup '{backup}' ({}) is a volume of its own now (no pair, kind {}); copy it back with export/import or dd",
            entry.source, entry.kind
        ))),
    }
}

/// The source volume named in a stream file's header.
fn stream_volume(file: &str) -> Result<String, Failure> {
    use std::io::Read;
    let mut buf = vec![0u8; 8192];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut buf))
        .map_err(|e| Failure::Local(format!("cannot read {file}: {e}")))?;
    match fusevol::format::stream::StreamHeader::parse(&buf[..n]) {
        Ok(fusevol::format::stream::Parsed::Done(h, _)) => Ok(h.volume),
        Ok(_) => Err(Failure::Local(format!("{file}: stream header cut short"))),
        Err(e) => Err(Failure::Local(format!("{file}: not an export stream: {e}"))),
    }
}
