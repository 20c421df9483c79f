//! `fusevol` — the command-line interface to a fusevol pool.
//!
//! `init` and `check` work on the pool files directly (no daemon); every other command sends
//! one request to the `fusevold` serving the pool, through `<POOL>/control.sock`.
//!
//! Output: text for people (aligned tables, human sizes; warnings on stderr), or with `--json`
//! the answer's `data` on stdout for scripts. Exit codes are decided in one place,
//! [`exit_code`], and documented in `--help`.

mod backup;
mod change;
mod cli;
mod cluster;
mod copy;
mod events;
mod exit;
mod export;
mod export_io;
mod group;
mod output;
mod pair;
mod pitr;
mod pool;
mod schedule;
mod snapshot;
mod stats;
mod volume;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::de::DeserializeOwned;
use serde_json::Value;

use fusevol::control::{Client, PoolInfo, Request};

use cli::{Cli, Command, PoolCmd};
use exit::{exit_code, report, Failure};
use output::{print_json, print_warnings};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse_from(cci_argv0(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    // `cci NAME ... --json` puts --json after the alias; it counts too.
    let json_mode = cli.json || std::env::args_os().any(|a| a == "--json");
    let outcome = run(cli);
    if let Err(failure) = &outcome {
        report(failure, json_mode);
    }
    exit_code(&outcome)
}

/// Help and version are not failures; anything else clap rejects is a usage error.
fn clap_failure(e: clap::Error) -> ExitCode {
    if e.exit_code() == 0 {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let json_mode = std::env::args_os().any(|a| a == "--json");
    if !json_mode {
        let _ = e.print(); // clap's own message, with usage and hints, on stderr
    }
    let message = e.render().to_string();
    let message = message
        .trim()
        .trim_start_matches("error: ")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let outcome = Err(Failure::Usage(message));
    if json_mode {
        if let Err(f) = &outcome {
            report(f, true);
        }
    }
    exit_code(&outcome)
}

/// What every command needs: where the pool is and how to print.
#[derive(Clone)]
struct Ctx {
    pool: Option<PathBuf>,
    json: bool,
    /// Answer timeout (`Duration::ZERO`: none).
    timeout: Duration,
    /// --timeout as given, if it was.
    timeout_given: Option<u64>,
    /// --owner / FUSEVOL_OWNER: named to the daemon on every connection.
    owner: Option<String>,
}

/// The answer timeout when --timeout is not given.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

impl Ctx {
    /// The pool from an explicit argument, else -p/--pool or FUSEVOL_POOL.
    fn pool<'a>(&'a self, explicit: Option<&'a Path>) -> Result<&'a Path, Failure> {
        explicit.or(self.pool.as_deref()).ok_or_else(|| {
            Failure::Usage("no pool given: use -p/--pool <POOL> or set FUSEVOL_POOL".into())
        })
    }

    fn client(&self) -> Result<Client, Failure> {
        self.client_at(self.pool(None)?)
    }

    /// A connection to the daemon of `pool` that has named the owner (if one is given).
    fn client_at(&self, pool: &Path) -> Result<Client, Failure> {
        let mut client = Client::connect(pool)?;
        client.set_timeout(self.timeout);
        if let Some(owner) = &self.owner {
            client.call_ok::<Value>(&Request::Session {
                owner: owner.clone(),
            })?;
        }
        Ok(client)
    }

    /// Send `req`; print the data as JSON in `--json` mode, else decode it as `T` and hand it
    /// to `show`. Warnings go to stderr either way.
    fn request<T: DeserializeOwned>(
        &self,
        req: Request,
        show: impl FnOnce(T),
    ) -> Result<(), Failure> {
        let mut client = self.client()?;
        if self.json {
            let (data, warnings) = client.call_ok::<Value>(&req)?;
            print_warnings(&warnings);
            print_json(&data);
        } else {
            let (data, warnings) = client.call_ok::<T>(&req)?;
            print_warnings(&warnings);
            show(data);
        }
        Ok(())
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        pool: cli.pool,
        json: cli.json,
        timeout: Duration::from_secs(cli.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
        timeout_given: cli.timeout,
        owner: cli.owner,
    };
    match cli.command {
        Command::Init(args) => pool::init(&ctx, args),
        Command::Check(args) => pool::check(&ctx, args),
        Command::Array(cmd) => pool::array(&ctx, cmd),
        Command::Pool(PoolCmd::Info) => ctx.request(Request::PoolInfo, pool::show_pool),
        Command::Pool(PoolCmd::SalvageConfirm) => {
            ctx.request(Request::SalvageConfirm, |r: serde_json::Value| {
                println!(
                    "salvage confirmed: log records from offset {} were dropped; fusevold stops, start it again",
                    r["damaged_at"]
                )
            })
        }
        Command::Volume(cmd) => volume::volume(&ctx, cmd),
        Command::Snapshot(cmd) => snapshot::snapshot(&ctx, cmd),
        Command::Pair(cmd) => pair::pair(&ctx, cmd),
        Command::Group(cmd) => group::group(&ctx, cmd),
        Command::Stats {
            volume,
            arrays,
            watch,
        } => stats::stats(&ctx, volume, arrays, watch),
        Command::Events { follow, since } => events::events(&ctx, since, follow),
        Command::ExportNbd(cmd) => export::export_nbd(&ctx, cmd),
        Command::Catalog(args) => backup::catalog(&ctx, args),
        Command::Schedule(cmd) => schedule::schedule(&ctx, cmd),
        Command::Cluster(cmd) => cluster::cluster(&ctx, cmd),
        Command::Lock { target, ttl } => change::lock(&ctx, &target, ttl),
        Command::Unlock { target, force } => change::unlock(&ctx, &target, force),
        Command::Locks => change::locks(&ctx),
        Command::Plan { file } => change::plan(&ctx, &file, false),
        Command::Apply { file } => change::plan(&ctx, &file, true),
        Command::Cci(cmd) => cci(ctx, cmd),
        Command::Sync => ctx.request(Request::Sync, |()| println!("synced")),
        Command::Ping => ctx.request(Request::Ping, |info: PoolInfo| {
            println!(
                "fusevold is serving pool {} at {}",
                info.path, info.mountpoint
            )
        }),
    }
}

/// Called as `paircreate`, `pairsplit` ... (a symlink to fusevol): the pair verb it names.
fn cci_argv0(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    if let Some((_, verb)) = cli::CCI_ALIASES.iter().find(|(alias, _)| *alias == name) {
        args.splice(0..1, ["fusevol".into(), "pair".into(), (*verb).into()]);
    }
    args
}

/// `fusevol cci NAME ARGS...`: run `fusevol pair VERB ARGS...` with the global options given
/// before `cci` (those after it win).
fn cci(outer: Ctx, cmd: cli::CciCmd) -> Result<(), Failure> {
    let (verb, args) = cmd.verb_and_args();
    let argv: Vec<String> = ["fusevol".to_string(), "pair".into(), verb.into()]
        .into_iter()
        .chain(args)
        .collect();
    let inner = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if e.exit_code() == 0 => {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => {
            if !outer.json {
                let _ = e.print();
            }
            let msg = e.render().to_string();
            let first = msg.trim().trim_start_matches("error: ").lines().next();
            return Err(Failure::Usage(first.unwrap_or("").to_string()));
        }
    };
    let ctx = Ctx {
        pool: inner.pool.or(outer.pool),
        json: inner.json || outer.json,
        timeout: if inner.timeout.is_some() {
            Duration::from_secs(inner.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))
        } else {
            outer.timeout
        },
        timeout_given: inner.timeout.or(outer.timeout_given),
        owner: inner.owner.or(outer.owner),
    };
    match inner.command {
        Command::Pair(cmd) => pair::pair(&ctx, cmd),
        _ => unreachable!("the argv names a pair verb"),
    }
}
