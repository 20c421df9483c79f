//! A secondary that keeps the group's volumes under names of its own (`group attach --rename
//! PREFIX`, `--map GROUPNAME=LOCALNAME,...`), as an array lets an S-VOL have its own number.
//!
//! The group's names — the primary's at `group create` — are the ones on the wire: in
//! `VolumeAdd` records, in the manifest and in a failback request. Each site translates them
//! into its own names with the mapping in its group record (`ext.rename`, durable in the
//! metadata log and the checkpoint) and back: the applier creates `local_name(n)` for a
//! `VolumeAdd` of `n`, a restore from the initial image names its volumes and files after
//! the local names, a primary publishes `group_name(v)` for its volume `v` (after a takeover
//! the renamed site is the primary and the old primary, now its secondary, gets its own
//! names back), and a failback delta asked for by group name is read from the local volume.
//! Without a mapping both are the identity.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::error::ReplicationError;
use super::group::Group;
use super::options::{PitrOptions, VolumeNames};
use super::remote;
use super::Replication;
use crate::format::group::RenameRec;
use crate::format::journal::{Manifest, RecordKind};
use crate::journal::read_sealed;
use crate::names;
use crate::pool::PoolError;

impl Group {
    /// This pool's name of the group's volume `group_name`.
    pub fn local_name(&self, group_name: &str) -> String {
        self.rec.lock().ext.rename.local_name(group_name)
    }

    /// The group's name of this pool's volume `local`.
    pub fn group_name(&self, local: &str) -> String {
        self.rec.lock().ext.rename.group_name(local)
    }
}

/// The durable form of `--rename/--map`, checked: names that are valid volume names, a
/// prefix that makes valid names, no two volumes mapped to one local name.
pub(crate) fn rename_rec(group: &str, n: &VolumeNames) -> Result<RenameRec, PoolError> {
    let bad = |e: String| PoolError::Invalid(format!("group '{group}': {e}"));
    let prefix = n.prefix.clone().unwrap_or_default();
    if !prefix.is_empty() {
        // A prefix is the start of a volume name: the same characters are refused.
        names::validate("volume name prefix", &format!("{prefix}x")).map_err(bad)?;
    }
    let mut locals = BTreeSet::new();
    for (g, l) in &n.map {
        names::validate("volume", g).map_err(bad)?;
        names::validate("volume", l).map_err(bad)?;
        if !locals.insert(l.as_str()) {
            return Err(bad(format!("--map gives two volumes the local name '{l}'")));
        }
    }
    Ok(RenameRec {
        prefix,
        map: n.map.iter().map(|(g, l)| (g.clone(), l.clone())).collect(),
    })
}

/// The group's volume names as its primary published them: the manifest's list, or — the
/// manifest of an older primary carries none — the `VolumeAdd` records of the first
/// published segment. Empty when neither is there yet (nothing published).
pub(crate) fn published_volume_names(
    group: &str,
    dir: &Path,
    m: &Manifest,
) -> Result<Vec<String>, PoolError> {
    if !m.volumes.is_empty() {
        return Ok(m.volumes.iter().map(|(_, n)| n.clone()).collect());
    }
    let list = remote::list_published(dir).map_err(|e| {
        let text = format!("group '{group}': listing {}: {e}", dir.display());
        ReplicationError::remote(group, "listing", dir, e).into_pool_saying(text)
    })?;
    let Some((_, path)) = list.first() else {
        return Ok(Vec::new());
    };
    let seg = read_sealed(path, (m.group, m.epoch))
        .map_err(|e| ReplicationError::journal(group, e).into_pool())?;
    let names = seg
        .records
        .iter()
        .filter(|r| r.head.kind == RecordKind::VolumeAdd)
        .filter_map(|r| r.name().ok())
        .collect();
    seg.recycle();
    Ok(names)
}

impl Replication {
    /// Before attaching: the local name of every volume the group is known to have must be
    /// valid, used by one volume only, and free in this pool; a `--map` entry must name one
    /// of the group's volumes. Every problem is named at once; nothing is attached.
    pub(crate) fn check_attach_names(
        &self,
        group: &str,
        dir: &Path,
        m: &Manifest,
        rename: &RenameRec,
    ) -> Result<(), PoolError> {
        let theirs = published_volume_names(group, dir, m)?;
        if theirs.is_empty() {
            // Nothing published yet: a collision stops the applier later (state error).
            return Ok(());
        }
        let unknown: Vec<&str> = rename
            .map
            .iter()
            .map(|(g, _)| g.as_str())
            .filter(|g| !theirs.iter().any(|t| t == g))
            .collect();
        if !unknown.is_empty() {
            return Err(PoolError::Invalid(format!(
                "group '{group}': --map names {} but the group's volumes are {}; nothing was attached",
                quoted(unknown.iter().copied()),
                quoted(theirs.iter().map(String::as_str))
            )));
        }
        let mut seen = BTreeSet::new();
        let mut taken = Vec::new();
        for g in &theirs {
            let local = rename.local_name(g);
            names::validate("volume", &local).map_err(|e| {
                PoolError::Invalid(format!(
                    "group '{group}': the local name of its volume '{g}' is not valid: {e}"
                ))
            })?;
            if !seen.insert(local.clone()) {
                return Err(PoolError::Invalid(format!(
                    "group '{group}': two of its volumes would both be '{local}' here; give them distinct names with --map"
                )));
            }
            if self.volumes.volume(&local).is_some() {
                taken.push(if &local == g {
                    format!("'{local}'")
                } else {
                    format!("'{local}' (its volume '{g}')")
                });
            }
        }
        if !taken.is_empty() {
            return Err(PoolError::Exists(format!(
                "group '{group}': volume(s) {} already exist in this pool and are not part of the group; nothing was attached (delete or rename the local volume(s), attach with --rename PREFIX or --map NAME=LOCAL, or attach in another pool)",
                taken.join(", ")
            )));
        }
        Ok(())
    }

    /// `group attach` with point-in-time settings and local names for the group's volumes.
    pub fn group_attach_named(
        self: &Arc<Self>,
        name: &str,
        remote_dir: &Path,
        pitr: &PitrOptions,
        names: &VolumeNames,
    ) -> Result<(), PoolError> {
        let mut p = crate::format::group::PitrRec::default();
        super::pitr::set_options(&mut p, pitr)
            .map_err(|e| ReplicationError::in_group(name, e).into_pool())?;
        let rename = rename_rec(name, names)?;
        self.group_attach_with(name, remote_dir, p, rename)
    }
}

fn quoted<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}
