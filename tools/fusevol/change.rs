//! `fusevol lock|unlock|locks` and `fusevol plan|apply FILE`.
//!
//! `apply` drives every pool the plan names from here: it connects to each daemon (one
//! connection per pool, kept for the whole run: the daemon's locks for the change are bound
//! to it), asks each to validate its part, refuses to go on unless every pool did, then has
//! each execute in turn (primaries before the secondaries that attach to them). When a pool
//! fails, the pools already changed are asked to undo their change, newest first.

use std::path::{Path, PathBuf};

use serde_json::Value;

use fusevol::control::client::error_code_name;
use fusevol::control::plan::{parse_plan, PlanReport};
use fusevol::control::{Client, ErrorBody, ErrorCode, LockInfo, LockObject, Request};

use crate::exit::Failure;
use crate::output::{print_json, table, Align};
use crate::Ctx;

/// `VOL`, `volume VOL`, `pair PVOL` or `group NAME`.
fn target(words: &[String]) -> Result<(LockObject, String), Failure> {
    match words {
        [name] => Ok((LockObject::Volume, name.clone())),
        [kind, name] => match kind.as_str() {
            "volume" => Ok((LockObject::Volume, name.clone())),
            "pair" => Ok((LockObject::Pair, name.clone())),
            "group" => Ok((LockObject::Group, name.clone())),
            other => Err(Failure::Usage(format!(
                "'{other}' is not a kind of object to lock: use VOL, volume VOL, pair PVOL or group NAME"
            ))),
        },
        _ => Err(Failure::Usage(
            "name one object: VOL, volume VOL, pair PVOL or group NAME".into(),
        )),
    }
}

/// `alice since 2026-12-03T12:00:00Z (ttl 60 s, 42 s left)`.
pub(crate) fn lock_text(l: &LockInfo) -> String {
    let mut s = format!("by {} since {}", l.owner, l.since);
    match (l.ttl, l.expires_in) {
        (Some(ttl), Some(left)) => s.push_str(&format!(" (ttl {ttl} s, {left} s left)")),
        _ if l.session => s.push_str(" (while its command runs)"),
        _ => s.push_str(" (until unlocked)"),
    }
    s
}

pub(crate) fn lock(ctx: &Ctx, words: &[String], ttl: Option<u64>) -> Result<(), Failure> {
    let (object, name) = target(words)?;
    let owner = ctx.owner.clone().ok_or_else(|| {
        Failure::Usage("a lock needs an owner: --owner NAME (or FUSEVOL_OWNER)".into())
    })?;
    ctx.request(
        Request::Lock {
            object,
            name,
            owner,
            ttl,
            session: false,
        },
        |l: LockInfo| {
            println!(
                "locked {} '{}' {}",
                l.object.as_str(),
                l.name,
                lock_text(&l)
            )
        },
    )
}

pub(crate) fn unlock(ctx: &Ctx, words: &[String], force: bool) -> Result<(), Failure> {
    let (object, name) = target(words)?;
    if ctx.owner.is_none() && !force {
        return Err(Failure::Usage(
            "unlock needs the owner of the lock (--owner NAME) or --force".into(),
        ));
    }
    ctx.request(
        Request::Unlock {
            object,
            name,
            owner: ctx.owner.clone(),
            force,
        },
        |l: LockInfo| {
            println!(
                "unlocked {} '{}' (was locked by {} since {})",
                l.object.as_str(),
                l.name,
                l.owner,
                l.since
            )
        },
    )
}

pub(crate) fn locks(ctx: &Ctx) -> Result<(), Failure> {
    ctx.request(Request::LockList, |ls: Vec<LockInfo>| {
        if ls.is_empty() {
            println!("no locks");
            return;
        }
        let rows = ls
            .iter()
            .map(|l| {
                vec![
                    l.object.as_str().to_string(),
                    l.name.clone(),
                    l.owner.clone(),
                    l.since.clone(),
                    match (l.ttl, l.expires_in) {
                        (Some(t), Some(left)) => format!("{t} s ({left} s left)"),
                        _ if l.session => "while its command runs".into(),
                        _ => "-".into(),
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    ("OBJECT", Align::Left),
                    ("NAME", Align::Left),
                    ("OWNER", Align::Left),
                    ("SINCE", Align::Left),
                    ("TTL", Align::Left),
                ],
                rows
            )
        );
    })
}

fn show_report(r: &PlanReport) {
    println!("pool {}:", r.pool);
    let rows = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.action.clone(),
                s.object.clone(),
                s.name.clone(),
                s.detail.clone(),
            ]
        })
        .collect();
    let t = table(
        &[
            ("ACTION", Align::Left),
            ("OBJECT", Align::Left),
            ("NAME", Align::Left),
            ("DETAIL", Align::Left),
        ],
        rows,
    );
    for line in t.lines() {
        println!("  {line}");
    }
}

/// One pool's failure, with the pool named.
fn in_pool(pool: &Path, f: Failure) -> Failure {
    match f {
        Failure::Daemon(b) => Failure::Daemon(ErrorBody {
            code: b.code,
            message: format!("pool {}: {}", pool.display(), b.message),
        }),
        other => other,
    }
}

fn message(f: &Failure) -> String {
    match f {
        Failure::Daemon(b) => format!("{} ({})", b.message, error_code_name(b.code)),
        Failure::Unreachable(e) => e.to_string(),
        Failure::Usage(m) | Failure::Local(m) => m.clone(),
        _ => "failed".into(),
    }
}

/// `fusevol plan FILE` (`execute` false) and `fusevol apply FILE`.
pub(crate) fn plan(ctx: &Ctx, file: &Path, execute: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("cannot read plan file {}: {e}", file.display())))?;
    let parsed = parse_plan(file, &text).map_err(Failure::Usage)?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let plans = parsed
        .split(ctx.pool.as_deref(), &cwd)
        .map_err(|e| Failure::Usage(format!("plan file {}: {e}", file.display())))?;

    // Phase 1: every pool validates its part.
    let mut clients: Vec<(PathBuf, Client)> = Vec::new();
    let mut reports: Vec<PlanReport> = Vec::new();
    let mut failures: Vec<(PathBuf, Failure)> = Vec::new();
    for (pool, part) in &plans {
        let result = ctx.client_at(pool).and_then(|mut c| {
            let (r, _) = c.call_ok::<PlanReport>(&Request::Plan {
                plan: part.clone(),
                execute: false,
            })?;
            Ok((c, r))
        });
        match result {
            Ok((c, r)) => {
                clients.push((pool.clone(), c));
                reports.push(r);
            }
            Err(f) => failures.push((pool.clone(), in_pool(pool, f))),
        }
    }
    if !failures.is_empty() {
        let all = failures
            .iter()
            .map(|(_, f)| message(f))
            .collect::<Vec<_>>()
            .join("; ");
        let valid = plans.len() - failures.len();
        let lead = if execute {
            format!(
                "apply refused: {} of {} pool(s) did not validate the plan, nothing was changed: ",
                failures.len(),
                plans.len()
            )
        } else {
            format!(
                "{} of {} pool(s) do not validate the plan ({valid} do): ",
                failures.len(),
                plans.len()
            )
        };
        let (_, first) = failures.remove(0);
        return Err(match first {
            Failure::Daemon(b) => Failure::Daemon(ErrorBody {
                code: b.code,
                message: lead + &all,
            }),
            Failure::Unreachable(e) => Failure::Unreachable(e),
            other => other,
        });
    }
    if !execute {
        if ctx.json {
            print_json(&serde_json::to_value(&reports).unwrap_or(Value::Null));
        } else {
            for r in &reports {
                show_report(r);
            }
            let changes: usize = reports.iter().map(PlanReport::changes).sum();
            println!(
                "{changes} change(s) in {} pool(s); nothing was changed (fusevol apply executes them)",
                reports.len()
            );
        }
        return Ok(());
    }

    // Phase 2: execute pool by pool; on a failure undo the pools already changed.
    let mut done: Vec<(usize, PlanReport)> = Vec::new();
    for (i, (pool, part)) in plans.iter().enumerate() {
        let client = &mut clients[i].1;
        let r = client.call_ok::<PlanReport>(&Request::Plan {
            plan: part.clone(),
            execute: true,
        });
        match r {
            Ok((r, _)) => done.push((i, r)),
            Err(e) => {
                let failed = in_pool(pool, e.into());
                let mut undo_notes = Vec::new();
                for (j, r) in done
                    .iter()
                    .rev()
                    .filter(|(_, r)| !r.change.is_empty() && r.changes() > 0)
                {
                    let c = &mut clients[*j].1;
                    match c.call_ok::<PlanReport>(&Request::PlanUndo {
                        change: r.change.clone(),
                    }) {
                        Ok(_) => undo_notes.push(format!("undone in pool {}", r.pool)),
                        Err(e) => undo_notes.push(format!("NOT undone in pool {}: {e}", r.pool)),
                    }
                }
                let msg = format!(
                    "{}{}",
                    message(&failed),
                    if undo_notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", undo_notes.join("; "))
                    }
                );
                return Err(Failure::Daemon(ErrorBody {
                    code: match &failed {
                        Failure::Daemon(b) => b.code,
                        _ => ErrorCode::Io,
                    },
                    message: msg,
                }));
            }
        }
    }
    let done: Vec<PlanReport> = done.into_iter().map(|(_, r)| r).collect();
    if ctx.json {
        print_json(&serde_json::to_value(&done).unwrap_or(Value::Null));
    } else {
        for r in &done {
            show_report(r);
        }
        let changes: usize = done.iter().map(PlanReport::changes).sum();
        if changes == 0 {
            println!("nothing to do: every pool is as planned");
        } else {
            let names: Vec<String> = done
                .iter()
                .filter(|r| r.changes() > 0)
                .map(|r| format!("{} in {}", r.change, r.pool))
                .collect();
            println!("applied {changes} change(s): {}", names.join(", "));
        }
    }
    Ok(())
}
