//! Two-phase changes: validate a [`PoolPlan`] against the live pool, then execute it with
//! undo on the first failure (`fusevol plan` / `fusevol apply`).
//!
//! **Validation** ([`validate`]) checks every entry against the pool as it is now and against
//! the other entries: names, sizes (a volume only grows), tiers, the free space a pair's
//! initial copy needs on its S-VOL's tier, a P-VOL or S-VOL already paired or grouped, a group
//! with other volumes or another remote, the remote directory, a secondary's volumes that
//! already exist here, and locks held by others on anything an entry touches. It gathers
//! *every* problem (not just the first) and changes nothing; otherwise it yields the steps in
//! execution order: creations and growths, groups, pairs, attaches, then removals (pairs,
//! groups, volumes last).
//!
//! **Execution** ([`execute`]) runs the steps one by one, publishing an event per step
//! (object `change`, change `step`) and one for the whole change (`applied`, or `rolled-back`
//! with the failed step). On the first failure the steps already done are undone newest first:
//! a created volume, pair or group is deleted (a secondary's volumes with its attach), a grown
//! volume shrunk back. A removal cannot be undone (its data is gone), so removals run last and
//! validation refuses one that could fail on a known condition (snapshots, open file, paired,
//! grouped); the report says so if a removal fails anyway. The caller holds the locks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::status;
use crate::control::plan::{AttachSpec, GroupSpec, PairSpec, PlanStep, PoolPlan, VolumeSpec};
use crate::control::protocol::LockObject;
use crate::names;
use crate::pool::PoolError;
use crate::storage::Storage;

/// One executable step.
#[derive(Debug, Clone)]
pub enum Op {
    CreateVolume(VolumeSpec),
    GrowVolume { name: String, from: u64, to: u64 },
    CreateGroup(GroupSpec),
    CreatePair { spec: PairSpec, create_svol: bool },
    Attach(AttachSpec),
    DeletePair(String),
    DeleteGroup(String),
    DeleteVolume(String),
}

/// How to take back a step that was done.
#[derive(Debug, Clone)]
pub enum Undo {
    DeleteVolume(String),
    Shrink {
        name: String,
        to: u64,
    },
    DeleteGroup {
        name: String,
        /// The remote group directory to remove (it did not exist before).
        remote_dir: Option<PathBuf>,
    },
    DeletePair {
        pvol: String,
        /// The S-VOL the pair created.
        svol: Option<String>,
    },
    /// Delete the secondary group and the volumes it created here.
    Detach {
        name: String,
        had: BTreeSet<String>,
    },
    /// Nothing can bring it back.
    Irreversible(String),
}

/// Says whether the requester may change these objects (`Err` names the lock's holder).
pub type LockCheck<'a> = &'a dyn Fn(&[(LockObject, String)]) -> Result<(), String>;

/// A validated plan: what is to be done (keep steps included) and the objects it touches.
pub struct Validated {
    pub steps: Vec<(PlanStep, Option<Op>)>,
    pub touched: Vec<(LockObject, String)>,
}

fn step(action: &str, object: &str, name: &str, detail: String) -> PlanStep {
    PlanStep {
        action: action.into(),
        object: object.into(),
        name: name.into(),
        detail,
    }
}

fn size_text(b: u64) -> String {
    crate::units::format_size(b)
}

/// The arrays' free bytes by tier.
fn free_by_tier(st: &Storage) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for a in status::array_infos(st) {
        *m.entry(a.tier).or_insert(0) += a.free;
    }
    m
}

/// Check `plan` against the pool; every problem is reported. `lock_ok(object, name)` says
/// whether a lock allows the requester to change that object (`Err` names the holder).
pub fn validate(
    st: &Storage,
    plan: &PoolPlan,
    lock_ok: LockCheck<'_>,
) -> Result<Validated, Vec<String>> {
    let mut problems: Vec<String> = Vec::new();
    let mut steps: Vec<(PlanStep, Option<Op>)> = Vec::new();
    let mut removals: Vec<(PlanStep, Option<Op>)> = Vec::new();
    let mut touched: Vec<(LockObject, String)> = Vec::new();
    let free = free_by_tier(st);
    let tiers: BTreeSet<String> = free.keys().cloned().collect();
    let mut copy_need: BTreeMap<String, u64> = BTreeMap::new();

    // Names the plan itself creates / removes.
    let mut planned_vols: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for v in &plan.volumes {
        if !seen.insert(v.name.clone()) {
            problems.push(format!("volume '{}' is listed twice", v.name));
        }
        if !v.absent && st.volumes.volume(&v.name).is_none() {
            planned_vols.insert(v.name.clone(), v.size);
        }
    }
    let removed_pairs: BTreeSet<&str> = plan
        .pairs
        .iter()
        .filter(|p| p.absent)
        .map(|p| p.pvol.as_str())
        .collect();
    let removed_groups: BTreeSet<&str> = plan
        .groups
        .iter()
        .filter(|g| g.absent)
        .map(|g| g.name.as_str())
        .chain(
            plan.attaches
                .iter()
                .filter(|a| a.absent)
                .map(|a| a.name.as_str()),
        )
        .collect();
    let groups = status::group_info(st, None).unwrap_or_default();
    let group_of_vol = |name: &str| -> Option<String> {
        groups
            .iter()
            .find(|g| g.volumes.iter().any(|v| v == name))
            .map(|g| g.name.clone())
    };
    let pair_of = |name: &str| {
        st.volumes
            .volume(name)
            .and_then(|v| st.mirror.pair_of_volume(v.id))
    };
    let planned_grouped: BTreeMap<String, String> = plan
        .groups
        .iter()
        .filter(|g| !g.absent)
        .flat_map(|g| g.volumes.iter().map(|v| (v.clone(), g.name.clone())))
        .collect();

    // Volumes.
    for v in &plan.volumes {
        if let Err(e) = names::validate("volume", &v.name) {
            problems.push(e);
            continue;
        }
        touched.push((LockObject::Volume, v.name.clone()));
        let existing = st.volumes.volume(&v.name);
        match (existing, v.absent) {
            (Some(vol), false) => {
                if let Some(t) = &v.tier {
                    if *t != vol.tier {
                        problems.push(format!(
                            "volume '{}' is on tier '{}', the plan asks for tier '{t}' (apply does not move volumes)",
                            v.name, vol.tier
                        ));
                    }
                }
                let size = vol.size();
                if v.size == size {
                    steps.push((step("keep", "volume", &v.name, size_text(size)), None));
                } else if v.size > size {
                    steps.push((
                        step(
                            "change",
                            "volume",
                            &v.name,
                            format!("grow {} -> {}", size_text(size), size_text(v.size)),
                        ),
                        Some(Op::GrowVolume {
                            name: v.name.clone(),
                            from: size,
                            to: v.size,
                        }),
                    ));
                } else {
                    problems.push(format!(
                        "volume '{}' is {}, the plan asks for {}: apply does not shrink volumes (use volume resize --allow-shrink)",
                        v.name,
                        size_text(size),
                        size_text(v.size)
                    ));
                }
            }
            (None, false) => {
                if v.size == 0 {
                    problems.push(format!("volume '{}': size 0", v.name));
                }
                if let Some(t) = &v.tier {
                    if !tiers.contains(t) {
                        problems.push(format!(
                            "volume '{}': no array of tier '{t}' in this pool (tiers: {})",
                            v.name,
                            tiers.iter().cloned().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                steps.push((
                    step(
                        "create",
                        "volume",
                        &v.name,
                        format!(
                            "{}{}",
                            size_text(v.size),
                            v.tier
                                .as_deref()
                                .map(|t| format!(" on tier {t}"))
                                .unwrap_or_default()
                        ),
                    ),
                    Some(Op::CreateVolume(v.clone())),
                ));
            }
            (Some(vol), true) => {
                if let Some((p, _)) = st.mirror.pair_of_volume(vol.id) {
                    if !removed_pairs.contains(p.pvol.name.as_str()) {
                        problems.push(format!(
                            "volume '{}' is in pair '{}' (remove the pair in the plan too)",
                            v.name, p.pvol.name
                        ));
                    }
                }
                if let Some(g) = group_of_vol(&v.name) {
                    if !removed_groups.contains(g.as_str()) {
                        problems.push(format!(
                            "volume '{}' is in journal group '{g}' (remove the group in the plan too)",
                            v.name
                        ));
                    }
                }
                let snaps = st.snapshots.snapshots_of(vol.id).len();
                if snaps > 0 {
                    problems.push(format!(
                        "volume '{}' has {snaps} snapshot(s); apply does not delete snapshots",
                        v.name
                    ));
                }
                if vol.open_handles() > 0 {
                    problems.push(format!(
                        "volume '{}' is open ({} handle(s)); close it before removing it",
                        v.name,
                        vol.open_handles()
                    ));
                }
                removals.push((
                    step("remove", "volume", &v.name, size_text(vol.size())),
                    Some(Op::DeleteVolume(v.name.clone())),
                ));
            }
            (None, true) => steps.push((step("keep", "volume", &v.name, "absent".into()), None)),
        }
    }

    // Journal groups this pool is the primary of.
    let mut group_steps = Vec::new();
    for g in &plan.groups {
        if let Err(e) = names::validate("group", &g.name) {
            problems.push(e);
            continue;
        }
        touched.push((LockObject::Group, g.name.clone()));
        let existing = groups.iter().find(|x| x.name == g.name);
        if g.absent {
            match existing {
                Some(x) if x.role == "primary" => {
                    touched.extend(x.volumes.iter().map(|v| (LockObject::Volume, v.clone())));
                    removals.insert(
                        0,
                        (
                            step(
                                "remove",
                                "group",
                                &g.name,
                                format!("volumes {}", x.volumes.join(",")),
                            ),
                            Some(Op::DeleteGroup(g.name.clone())),
                        ),
                    );
                }
                Some(x) => problems.push(format!(
                    "group '{}' is the {} here, the plan removes a primary",
                    g.name, x.role
                )),
                None => group_steps.push((step("keep", "group", &g.name, "absent".into()), None)),
            }
            continue;
        }
        touched.extend(g.volumes.iter().map(|v| (LockObject::Volume, v.clone())));
        if !Path::new(&g.remote).is_absolute() {
            problems.push(format!(
                "group '{}': remote directory '{}' is not an absolute path",
                g.name, g.remote
            ));
        }
        match existing {
            Some(x) => {
                let want: BTreeSet<&String> = g.volumes.iter().collect();
                let have: BTreeSet<&String> = x.volumes.iter().collect();
                if x.role != "primary" {
                    problems.push(format!(
                        "group '{}' exists here as the {}; the plan makes this pool its primary",
                        g.name, x.role
                    ));
                } else if want != have || Path::new(&x.remote) != Path::new(&g.remote) {
                    problems.push(format!(
                        "group '{}' exists with volumes {} and remote {}; the plan asks for {} and {} (change it by hand, or remove it first)",
                        g.name,
                        x.volumes.join(","),
                        x.remote,
                        g.volumes.join(","),
                        g.remote
                    ));
                } else {
                    group_steps.push((step("keep", "group", &g.name, g.remote.clone()), None));
                }
            }
            None => {
                if !Path::new(&g.remote).is_dir() {
                    problems.push(format!(
                        "group '{}': remote directory {} is not there",
                        g.name, g.remote
                    ));
                }
                for v in &g.volumes {
                    if st.volumes.volume(v).is_none() && !planned_vols.contains_key(v) {
                        problems.push(format!(
                            "group '{}': volume '{v}' does not exist and is not in the plan",
                            g.name
                        ));
                    }
                    if let Some(other) = group_of_vol(v) {
                        problems.push(format!(
                            "group '{}': volume '{v}' is in journal group '{other}' already",
                            g.name
                        ));
                    }
                    if let Some((p, _)) = pair_of(v) {
                        problems.push(format!(
                            "group '{}': volume '{v}' is in pair '{}' (a paired volume cannot be journaled)",
                            g.name, p.pvol.name
                        ));
                    }
                }
                group_steps.push((
                    step(
                        "create",
                        "group",
                        &g.name,
                        format!("volumes {} remote {}", g.volumes.join(","), g.remote),
                    ),
                    Some(Op::CreateGroup(g.clone())),
                ));
            }
        }
    }
    steps.extend(group_steps);

    // Pairs.
    let mut seen = BTreeSet::new();
    for p in &plan.pairs {
        if !seen.insert(p.pvol.clone()) {
            problems.push(format!("pair '{}' is listed twice", p.pvol));
        }
        let mut bad = false;
        for (what, n) in [("P-VOL", &p.pvol), ("S-VOL", &p.svol)] {
            if let Err(e) = names::validate("volume", n) {
                problems.push(format!("pair '{}': {what}: {e}", p.pvol));
                bad = true;
            }
        }
        if bad {
            continue;
        }
        touched.push((LockObject::Pair, p.pvol.clone()));
        touched.push((LockObject::Volume, p.pvol.clone()));
        touched.push((LockObject::Volume, p.svol.clone()));
        let current = pair_of(&p.pvol);
        if p.absent {
            match current {
                Some((pair, crate::mirror::Role::Primary)) => removals.insert(
                    0,
                    (
                        step(
                            "remove",
                            "pair",
                            &p.pvol,
                            format!("S-VOL {}", pair.svol.name),
                        ),
                        Some(Op::DeletePair(p.pvol.clone())),
                    ),
                ),
                Some((pair, _)) => problems.push(format!(
                    "'{}' is the S-VOL of pair '{}', not a P-VOL",
                    p.pvol, pair.pvol.name
                )),
                None => steps.push((step("keep", "pair", &p.pvol, "absent".into()), None)),
            }
            continue;
        }
        if p.pvol == p.svol {
            problems.push(format!("pair '{}': P-VOL and S-VOL are the same", p.pvol));
            continue;
        }
        if let Some((pair, role)) = current {
            if role == crate::mirror::Role::Primary && pair.svol.name == p.svol {
                steps.push((
                    step("keep", "pair", &p.pvol, format!("S-VOL {}", p.svol)),
                    None,
                ));
            } else {
                problems.push(format!(
                    "volume '{}' is in pair '{}' -> '{}' already",
                    p.pvol, pair.pvol.name, pair.svol.name
                ));
            }
            continue;
        }
        let pvol_size = match (st.volumes.volume(&p.pvol), planned_vols.get(&p.pvol)) {
            (Some(v), _) => Some((
                v.size(),
                status::volume_info(st, &v).allocated,
                v.tier.clone(),
            )),
            (None, Some(&s)) => Some((s, 0, String::new())),
            (None, None) => {
                problems.push(format!(
                    "pair '{}': P-VOL '{}' does not exist and is not in the plan",
                    p.pvol, p.pvol
                ));
                None
            }
        };
        for n in [&p.pvol, &p.svol] {
            if let Some(g) = group_of_vol(n).or_else(|| planned_grouped.get(n.as_str()).cloned()) {
                problems.push(format!(
                    "pair '{}': volume '{n}' is in journal group '{g}' (a journaled volume cannot be paired)",
                    p.pvol
                ));
            }
        }
        let mut create_svol = false;
        let svol_tier = match (st.volumes.volume(&p.svol), planned_vols.get(&p.svol)) {
            (Some(sv), _) => {
                if let Some((pair, _)) = st.mirror.pair_of_volume(sv.id) {
                    problems.push(format!(
                        "pair '{}': S-VOL '{}' is in pair '{}' already",
                        p.pvol, p.svol, pair.pvol.name
                    ));
                }
                if let Some((size, _, _)) = &pvol_size {
                    if sv.size() < *size {
                        problems.push(format!(
                            "pair '{}': S-VOL '{}' ({}) is smaller than the P-VOL ({})",
                            p.pvol,
                            p.svol,
                            size_text(sv.size()),
                            size_text(*size)
                        ));
                    }
                }
                Some(sv.tier.clone())
            }
            (None, Some(&s)) => {
                if let Some((size, _, _)) = &pvol_size {
                    if s < *size {
                        problems.push(format!(
                            "pair '{}': S-VOL '{}' ({}) is smaller than the P-VOL ({})",
                            p.pvol,
                            p.svol,
                            size_text(s),
                            size_text(*size)
                        ));
                    }
                }
                plan.volumes
                    .iter()
                    .find(|v| v.name == p.svol)
                    .and_then(|v| v.tier.clone())
            }
            (None, None) => {
                create_svol = true;
                p.svol_tier.clone()
            }
        };
        let tier = svol_tier.or_else(|| {
            pvol_size
                .as_ref()
                .map(|x| x.2.clone())
                .filter(|t| !t.is_empty())
        });
        if let Some(t) = &tier {
            if !tiers.contains(t) {
                problems.push(format!(
                    "pair '{}': no array of tier '{t}' for the S-VOL in this pool",
                    p.pvol
                ));
            } else if let Some((_, allocated, _)) = &pvol_size {
                *copy_need.entry(t.clone()).or_insert(0) += allocated;
            }
        }
        steps.push((
            step(
                "create",
                "pair",
                &p.pvol,
                format!(
                    "S-VOL {}{}{}",
                    p.svol,
                    if create_svol { " (created)" } else { "" },
                    p.group
                        .as_deref()
                        .map(|g| format!(" in consistency group {g}"))
                        .unwrap_or_default()
                ),
            ),
            Some(Op::CreatePair {
                spec: p.clone(),
                create_svol,
            }),
        ));
    }
    for (tier, need) in &copy_need {
        let have = free.get(tier).copied().unwrap_or(0);
        if *need > have {
            problems.push(format!(
                "the pairs' initial copies need {} on tier '{tier}', which has {} free",
                size_text(*need),
                size_text(have)
            ));
        }
    }

    // Groups this pool is (to be) the secondary of.
    for a in &plan.attaches {
        if let Err(e) = names::validate("group", &a.name) {
            problems.push(e);
            continue;
        }
        touched.push((LockObject::Group, a.name.clone()));
        let existing = groups.iter().find(|x| x.name == a.name);
        if a.absent {
            match existing {
                Some(x) if x.role == "secondary" => removals.insert(
                    0,
                    (
                        step(
                            "remove",
                            "attach",
                            &a.name,
                            format!("volumes {} stay", x.volumes.join(",")),
                        ),
                        Some(Op::DeleteGroup(a.name.clone())),
                    ),
                ),
                Some(x) => problems.push(format!(
                    "group '{}' is the {} here, the plan removes a secondary",
                    a.name, x.role
                )),
                None => steps.push((step("keep", "attach", &a.name, "absent".into()), None)),
            }
            continue;
        }
        match existing {
            Some(x) if x.role == "secondary" && Path::new(&x.remote) == Path::new(&a.remote) => {
                steps.push((step("keep", "attach", &a.name, a.remote.clone()), None));
                continue;
            }
            Some(x) => {
                problems.push(format!(
                    "group '{}' exists here as the {} with remote {}",
                    a.name, x.role, x.remote
                ));
                continue;
            }
            None => {}
        }
        let remote = Path::new(&a.remote);
        if !remote.is_absolute() || !remote.is_dir() {
            problems.push(format!(
                "group '{}': remote directory {} is not there",
                a.name, a.remote
            ));
        }
        let mut vols = a.volumes.clone();
        if !a.primary_in_plan {
            match crate::replication::remote::read_manifest(&crate::replication::remote::group_dir(
                remote, &a.name,
            )) {
                Ok(m) => vols.extend(m.volumes.into_iter().map(|(_, n)| n)),
                Err(e) => problems.push(format!(
                    "group '{}': no primary has published it in {}: {e}",
                    a.name, a.remote
                )),
            }
        }
        // The names the volumes get here (`--rename`/`--map`, replication/rename.rs).
        let rename = match crate::replication::rename::rename_rec(&a.name, &a.names) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                Default::default()
            }
        };
        for v in vols.iter().collect::<BTreeSet<_>>() {
            let local = rename.local_name(v);
            touched.push((LockObject::Volume, local.clone()));
            if st.volumes.volume(&local).is_some() || planned_vols.contains_key(&local) {
                let theirs = if &local == v {
                    String::new()
                } else {
                    format!(" (its volume '{v}')")
                };
                problems.push(format!(
                    "group '{}': volume '{local}'{theirs} already exists in this pool; the secondary would collide with it",
                    a.name
                ));
            }
        }
        steps.push((
            step(
                "create",
                "attach",
                &a.name,
                format!("secondary of {}", a.remote),
            ),
            Some(Op::Attach(a.clone())),
        ));
    }

    // Removals last: pairs and groups first, then volumes.
    removals.sort_by_key(|(s, _)| s.object == "volume");
    steps.extend(removals);

    touched.sort();
    touched.dedup();
    if let Err(e) = lock_ok(&touched) {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(Validated { steps, touched })
    } else {
        Err(problems)
    }
}

/// Run one step; its undo on success.
fn run(st: &Storage, op: &Op) -> Result<Undo, PoolError> {
    match op {
        Op::CreateVolume(v) => {
            st.volumes
                .create_volume(&v.name, v.size, v.tier.as_deref())?;
            Ok(Undo::DeleteVolume(v.name.clone()))
        }
        Op::GrowVolume { name, from, to } => {
            st.resize_volume(name, *to, false)?;
            Ok(Undo::Shrink {
                name: name.clone(),
                to: *from,
            })
        }
        Op::CreateGroup(g) => {
            let remote = PathBuf::from(&g.remote);
            let dir = crate::replication::remote::group_dir(&remote, &g.name);
            let existed = dir.exists();
            st.replication
                .group_create(&g.name, &g.volumes, &remote, &Default::default())?;
            Ok(Undo::DeleteGroup {
                name: g.name.clone(),
                remote_dir: (!existed).then_some(dir),
            })
        }
        Op::CreatePair { spec, create_svol } => {
            st.create_pair(
                &spec.pvol,
                &spec.svol,
                *create_svol,
                spec.svol_tier.as_deref(),
                spec.group.as_deref(),
                spec.rate,
            )?;
            Ok(Undo::DeletePair {
                pvol: spec.pvol.clone(),
                svol: create_svol.then(|| spec.svol.clone()),
            })
        }
        Op::Attach(a) => {
            let had = st
                .volumes
                .volume_list()
                .iter()
                .map(|v| v.name.clone())
                .collect();
            st.replication.group_attach_named(
                &a.name,
                Path::new(&a.remote),
                &Default::default(),
                &a.names,
            )?;
            Ok(Undo::Detach {
                name: a.name.clone(),
                had,
            })
        }
        Op::DeletePair(pvol) => {
            st.mirror.delete_pair(pvol)?;
            Ok(Undo::Irreversible(format!("pair '{pvol}' was deleted")))
        }
        Op::DeleteGroup(name) => {
            st.replication.group_delete(name)?;
            Ok(Undo::Irreversible(format!("group '{name}' was deleted")))
        }
        Op::DeleteVolume(name) => {
            st.delete_volume(name, false)?;
            Ok(Undo::Irreversible(format!("volume '{name}' was deleted")))
        }
    }
}

/// One step, behind the failpoint `daemon::plan::step` (test builds).
fn run_step(st: &Storage, s: &PlanStep, op: &Op) -> Result<Undo, PoolError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("daemon::plan::step", |_| Err(PoolError::Io {
        op: "failpoint daemon::plan::step in",
        path: PathBuf::from(&s.name),
        source: std::io::Error::other("injected"),
    }));
    let _ = s;
    run(st, op)
}

/// Take one step back; an error names what could not be undone.
pub fn undo(st: &Storage, u: &Undo) -> Result<(), String> {
    let r = match u {
        Undo::DeleteVolume(name) => st.delete_volume(name, true),
        Undo::Shrink { name, to } => st.resize_volume(name, *to, true).map(|_| ()),
        Undo::DeleteGroup { name, remote_dir } => {
            let r = st.replication.group_delete(name);
            if r.is_ok() {
                if let Some(d) = remote_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
            r
        }
        Undo::DeletePair { pvol, svol } => st.mirror.delete_pair(pvol).and_then(|()| match svol {
            Some(s) => st.delete_volume(s, true),
            None => Ok(()),
        }),
        Undo::Detach { name, had } => st.replication.group_delete(name).and_then(|()| {
            for v in st.volumes.volume_list() {
                if !had.contains(&v.name) {
                    st.delete_volume(&v.name, true)?;
                }
            }
            Ok(())
        }),
        Undo::Irreversible(what) => return Err(format!("{what} and cannot be brought back")),
    };
    r.map_err(|e| e.to_string())
}

/// Execute the validated steps; on the first failure undo the done ones (newest first).
/// Returns the undo list of the whole change (for a later `PlanUndo`), or the error naming the
/// failed step and what the undo did.
pub fn execute(st: &Storage, change: &str, v: &Validated) -> Result<Vec<Undo>, PoolError> {
    let ev = &st.pool.events;
    let todo: Vec<(&PlanStep, &Op)> = v
        .steps
        .iter()
        .filter_map(|(s, op)| op.as_ref().map(|op| (s, op)))
        .collect();
    let total = todo.len();
    let mut done: Vec<Undo> = Vec::new();
    for (i, (s, op)) in todo.iter().enumerate() {
        let n = i + 1;
        let result = run_step(st, s, op);
        match result {
            Ok(u) => {
                ev.publish(
                    "change",
                    change,
                    "step",
                    json!({"step": n, "of": total, "action": s.action, "object": s.object, "name": s.name, "detail": s.detail}),
                );
                done.push(u);
            }
            Err(e) => {
                let undo_notes = undo_all(st, &mut done);
                ev.publish(
                    "change",
                    change,
                    "rolled-back",
                    json!({"failed_step": n, "of": total, "object": s.object, "name": s.name, "error": e.to_string(), "undo": undo_notes}),
                );
                let msg = format!(
                    "change {change}: step {n} of {total} ({} {} '{}') failed: {e}; {}",
                    s.action,
                    s.object,
                    s.name,
                    if undo_notes.is_empty() {
                        format!("the {} step(s) before it were undone", n - 1)
                    } else {
                        format!("undoing the steps before it: {}", undo_notes.join("; "))
                    }
                );
                return Err(match e {
                    PoolError::NoSpace(_) => PoolError::NoSpace(msg),
                    PoolError::Busy(_) => PoolError::Busy(msg),
                    PoolError::NotFound(_) | PoolError::Exists(_) | PoolError::Invalid(_) => {
                        PoolError::Invalid(msg)
                    }
                    _ => PoolError::Inconsistent(msg),
                });
            }
        }
    }
    if total > 0 {
        ev.publish("change", change, "applied", json!({"steps": total}));
    }
    Ok(done)
}

/// Undo `done` newest first; the problems met (empty: all undone).
pub fn undo_all(st: &Storage, done: &mut Vec<Undo>) -> Vec<String> {
    let mut notes = Vec::new();
    while let Some(u) = done.pop() {
        if let Err(e) = undo(st, &u) {
            log::error!("undo of a plan step failed: {e}");
            notes.push(e);
        }
    }
    notes
}
