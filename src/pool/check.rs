//! The offline checker: the same recovery the daemon runs, plus a report.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::format::Phys;
use crate::meta::{MetaError, RecoveryMode, SalvageReport};
use crate::pool::PoolError;

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub pool: String,
    pub pool_id: String,
    pub epoch: u64,
    pub arrays: usize,
    pub volumes: usize,
    pub snapshots: usize,
    /// Extents mapped by the volumes.
    pub mapped_extents: u64,
    /// Extents with at least one reference (volumes, snapshots, clones).
    pub used_extents: u64,
    /// Extents referenced by more than one chunk object (shared after copy-on-write).
    pub shared_extents: u64,
    /// Partial extents (sub-extent copy-on-write) waiting for the filler; each holds a
    /// reference on its source, verified to exist, not to be partial itself and to belong
    /// to the same family.
    pub partial_extents: u64,
    pub records_replayed: u64,
    /// Free extents that still hold bytes (the daemon punches them at start).
    pub free_extents_with_data: u64,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
    /// Salvage mode: what the damaged log lost (None when nothing was lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salvage: Option<SalvageReport>,
    /// `--repair`: what was written (None when nothing was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pool {} (id {}), checkpoint epoch {}",
            self.pool, self.pool_id, self.epoch
        )?;
        writeln!(
            f,
            "  {} arrays, {} volumes, {} snapshots, {} log records replayed",
            self.arrays, self.volumes, self.snapshots, self.records_replayed
        )?;
        writeln!(
            f,
            "  extents: {} mapped by volumes, {} in use, {} shared, {} partial",
            self.mapped_extents, self.used_extents, self.shared_extents, self.partial_extents
        )?;
        if self.free_extents_with_data > 0 {
            writeln!(
                f,
                "  {} free extents still hold data (punched when the daemon starts)",
                self.free_extents_with_data
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        for p in &self.problems {
            writeln!(f, "  PROBLEM: {p}")?;
        }
        if let Some(r) = &self.repaired {
            writeln!(f, "  repaired: {r}")?;
        }
        write!(
            f,
            "{}",
            if self.is_clean() {
                "clean"
            } else {
                "NOT clean"
            }
        )
    }
}

/// Check a pool that no daemon is serving. Damage that stops recovery (bad checksum in the
/// middle of the log, bad array header) is returned as the error; inconsistencies found
/// afterwards are listed in the report.
pub fn check_pool(dir: &Path) -> Result<CheckReport, MetaError> {
    check_pool_with(dir, RecoveryMode::Strict)
}

/// `fusevol check --repair`: recover in salvage mode; when a log was damaged (its valid
/// prefix is kept, the rest reported) or a metadata copy is damaged, missing or stale, and
/// the result is consistent, write it as the pool's state (`meta::commit_recovered`: the
/// damaged log is kept aside, checkpoint to both slots, fresh log). An inconsistent result
/// is reported and nothing is written.
pub fn repair_pool(dir: &Path) -> Result<CheckReport, MetaError> {
    let loaded = load_for_check(dir, RecoveryMode::Salvage)?;
    let salvaged = loaded.recovered.salvage.is_some();
    let mut report = report_of(dir, &loaded);
    if !report.is_clean() {
        return Ok(report);
    }
    if salvaged || loaded.recovered.needs_rewrite {
        let st = &loaded.recovered.state;
        let epoch = crate::meta::commit_recovered(dir, st, salvaged)?;
        report.repaired = Some(if salvaged {
            format!(
                "the valid prefix of the log is now checkpoint epoch {epoch} (both slots); the damaged log is kept as {}.damaged-{}",
                crate::meta::LOG_FILE,
                st.epoch
            )
        } else {
            format!("damaged, missing or stale metadata copies rewritten: checkpoint epoch {epoch} in both slots, fresh log")
        });
    }
    Ok(report)
}

fn load_for_check(dir: &Path, mode: RecoveryMode) -> Result<crate::pool::open::Loaded, MetaError> {
    match crate::pool::open::load(dir, mode) {
        Ok(l) => Ok(l),
        Err(PoolError::Meta(m)) => Err(m),
        Err(other) => Err(MetaError::Mismatch {
            path: dir.to_path_buf(),
            detail: other.to_string(),
        }),
    }
}

/// `check_pool` with a recovery mode (salvage reports what a damaged log loses).
pub fn check_pool_with(dir: &Path, mode: RecoveryMode) -> Result<CheckReport, MetaError> {
    let loaded = load_for_check(dir, mode)?;
    Ok(report_of(dir, &loaded))
}

fn report_of(dir: &Path, loaded: &crate::pool::open::Loaded) -> CheckReport {
    let st = &loaded.recovered.state;
    let mut free_with_data = 0;
    let (mut used, mut shared) = (0, 0);
    let mut warnings = loaded.recovered.warnings.clone();
    let mut problems = loaded.problems.clone();
    problems.extend(crate::pool::open::cross_family_sharing(st));
    // Volume information (backups): every record decodes (magic, version, checksum, limits).
    for (id, blob) in &st.infos {
        if let Err(e) = crate::format::volinfo::InfoRecord::decode(blob) {
            let what = st
                .volumes
                .iter()
                .find(|v| v.id == *id)
                .map(|v| format!("volume '{}'", v.name))
                .or_else(|| {
                    st.snapshots
                        .iter()
                        .find(|s| s.id == *id)
                        .map(|s| format!("snapshot '{}' (of volume id {})", s.name, s.volume))
                })
                .unwrap_or_else(|| format!("id {id}"));
            problems.push(format!("volume information of {what} is invalid: {e}"));
        }
    }
    for la in &loaded.arrays {
        let (file, h) = match &la.file {
            Ok(x) => x,
            Err(why) => {
                problems.push(format!(
                    "array '{}' ({}) is missing: {why}",
                    la.rec.name, la.rec.file
                ));
                continue;
            }
        };
        let (path, refs) = (&la.path, &la.refs);
        for i in 0..h.capacity / h.extent_size {
            match refs.get(i) {
                0 => {}
                1 => used += 1,
                _ => {
                    used += 1;
                    shared += 1
                }
            }
        }
        let end = h.data_offset + h.capacity;
        match crate::sys::data_regions(file, h.data_offset, end) {
            Ok(regions) => {
                for (a, b) in regions {
                    let first = (a - h.data_offset) / h.extent_size;
                    let last = (b - h.data_offset).div_ceil(h.extent_size);
                    free_with_data += (first..last)
                        .filter(|&i| {
                            loaded.alloc.refcount(Phys {
                                array: h.array_id,
                                index: i,
                            }) == 0
                        })
                        .count() as u64;
                }
            }
            Err(e) => warnings.push(format!("cannot scan {}: {e}", path.display())),
        }
    }
    CheckReport {
        pool: dir.display().to_string(),
        pool_id: format!("{:016x}", st.pool_id),
        epoch: st.epoch,
        arrays: st.arrays.len(),
        volumes: st.volumes.len(),
        snapshots: st.snapshots.len(),
        mapped_extents: st.volumes.iter().map(|v| v.table.mapped()).sum(),
        used_extents: used,
        shared_extents: shared,
        partial_extents: loaded.partials.len() as u64,
        records_replayed: loaded.recovered.replayed,
        free_extents_with_data: free_with_data,
        warnings,
        problems,
        salvage: loaded.recovered.salvage.clone(),
        repaired: None,
    }
}
