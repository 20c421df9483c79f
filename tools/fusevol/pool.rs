//! Pool-wide commands: `init` and `check` (offline), `array`, and `pool info`.

use serde_json::{json, Value};

use fusevol::control::{ArrayInfo, Client, PoolInfo, Request};
use fusevol::units::format_size;

use crate::cli::{ArrayCmd, CheckArgs, InitArgs};
use crate::exit::Failure;
use crate::output::{key_values, percent, print_json, table, L, R};
use crate::Ctx;

pub(crate) fn init(ctx: &Ctx, args: InitArgs) -> Result<(), Failure> {
    use fusevol::pool::{create_pool, ArraySpec, PoolSpec};
    let pool = ctx.pool(args.pool_dir.as_deref())?;
    let mut spec = PoolSpec::default();
    if !args.arrays.is_empty() {
        spec.arrays = args
            .arrays
            .iter()
            .map(|text| {
                ArraySpec::parse(text)
                    .map_err(|e| Failure::Usage(format!("invalid --array '{text}': {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(extent_size) = args.extent_size {
        spec.extent_size = extent_size;
    }
    create_pool(pool, &spec)
        .map_err(|e| Failure::Local(format!("cannot create pool {}: {e}", pool.display())))?;
    let arrays: Vec<(String, u64, String)> = spec
        .arrays
        .iter()
        .map(|a| (a.name.to_string(), a.size, a.tier.to_string()))
        .collect();
    if ctx.json {
        let arrays: Vec<Value> = arrays
            .iter()
            .map(|(name, size, tier)| json!({ "name": name, "size": size, "tier": tier }))
            .collect();
        print_json(&json!({
            "pool": pool.display().to_string(),
            "extent_size": spec.extent_size,
            "arrays": arrays,
        }));
    } else {
        let total: u64 = arrays.iter().map(|(_, size, _)| size).sum();
        println!(
            "created pool {} (extent size {}, {} arrays, {} in all)",
            pool.display(),
            format_size(spec.extent_size),
            arrays.len(),
            format_size(total)
        );
        let rows = arrays
            .into_iter()
            .map(|(name, size, tier)| vec![name, format_size(size), tier])
            .collect();
        print!("{}", table(&[("ARRAY", L), ("SIZE", R), ("TIER", L)], rows));
        println!("serve it with: fusevold {} <MOUNTPOINT>", pool.display());
    }
    Ok(())
}

pub(crate) fn check(ctx: &Ctx, args: CheckArgs) -> Result<(), Failure> {
    let pool = ctx.pool(args.pool_dir.as_deref())?;
    if Client::connect(pool).is_ok() {
        eprintln!(
            "warning: a fusevold is serving {}; the check may see changes in flight",
            pool.display()
        );
    }
    let report = if args.repair {
        fusevol::pool::repair_pool(pool)
    } else {
        fusevol::pool::check_pool(pool)
    }
    .map_err(|e| Failure::Local(format!("cannot check pool {}: {e}", pool.display())))?;
    if args.repair {
        if let Some(s) = &report.salvage {
            if !ctx.json {
                println!("{s}");
            }
        }
    }
    if ctx.json {
        let value = serde_json::to_value(&report)
            .map_err(|e| Failure::Local(format!("cannot encode the check report: {e}")))?;
        print_json(&value);
    } else {
        println!("{report}");
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::Unclean {
            problems: report.problems.len(),
        })
    }
}

pub(crate) fn array(ctx: &Ctx, cmd: ArrayCmd) -> Result<(), Failure> {
    match cmd {
        ArrayCmd::Add { name, size, tier } => {
            ctx.request(Request::ArrayAdd { name, size, tier }, |a: ArrayInfo| {
                println!(
                    "added array {} (id {}): {}, tier {}, file {}",
                    a.name,
                    a.id,
                    format_size(a.capacity),
                    a.tier,
                    a.path
                )
            })
        }
        ArrayCmd::List => ctx.request(Request::ArrayList, |arrays: Vec<ArrayInfo>| {
            print!("{}", array_table(&arrays))
        }),
    }
}

pub(crate) fn show_pool(p: PoolInfo) {
    let overcommit = if p.provisioned > p.capacity {
        "  (overcommitted)"
    } else {
        ""
    };
    let fields = [
        ("pool", p.pool_id.clone()),
        ("path", p.path.clone()),
        ("mountpoint", p.mountpoint.clone()),
        ("extent size", format_size(p.extent_size)),
        ("capacity", format_size(p.capacity)),
        (
            "used",
            format!("{} ({})", format_size(p.used), percent(p.used, p.capacity)),
        ),
        ("free", format_size(p.free)),
        (
            "provisioned",
            format!(
                "{} ({} of capacity){overcommit}",
                format_size(p.provisioned),
                percent(p.provisioned, p.capacity)
            ),
        ),
        ("volumes", p.volumes.to_string()),
        ("arrays", p.arrays.len().to_string()),
    ];
    print!("{}", key_values(&fields));
    if let Some(why) = &p.read_only {
        println!("READ-ONLY: {why}");
    }
    if !p.arrays.is_empty() {
        println!();
        print!("{}", array_table(&p.arrays));
    }
}

fn array_table(arrays: &[ArrayInfo]) -> String {
    if arrays.is_empty() {
        return "no arrays\n".into();
    }
    let rows = arrays
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.tier.clone(),
                format_size(a.capacity),
                format_size(a.used),
                percent(a.used, a.capacity),
                format_size(a.free),
                format_size(a.on_disk),
                if a.missing.is_some() {
                    "MISSING"
                } else {
                    "online"
                }
                .to_string(),
                a.path.clone(),
            ]
        })
        .collect();
    let header = [
        ("ID", R),
        ("NAME", L),
        ("TIER", L),
        ("CAPACITY", R),
        ("USED", R),
        ("USE%", R),
        ("FREE", R),
        ("ON-DISK", R),
        ("STATE", L),
        ("PATH", L),
    ];
    let mut out = table(&header, rows);
    for a in arrays {
        if let Some(why) = &a.missing {
            out.push_str(&format!(
                "array {} is MISSING ({why}): its extents fail with EIO\n",
                a.name
            ));
        }
    }
    out
}
