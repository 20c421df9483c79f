//! Change sets for `fusevol plan FILE` / `fusevol apply FILE`.
//!
//! The operator writes a [`PlanFile`] (TOML or JSON): the volumes, pairs and journal groups a
//! pool (or several pools) should have. The CLI splits it into one [`PoolPlan`] per pool
//! ([`PlanFile::split`]) and sends each to the daemon serving that pool, which validates it
//! against its live state and answers what it would do (a [`PlanReport`]), or executes it.
//!
//! The file is declarative: an entry that already holds is left alone (so applying a file twice
//! changes nothing the second time); `absent = true` asks for an entry's removal. A journal
//! group with `secondary_pool` is created in its pool and attached in the other one: that is how
//! one plan spans two sites.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::units::parse_size;

/// A size as bytes or with units (`"4G"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeField {
    Bytes(u64),
    Text(String),
}

impl SizeField {
    fn bytes(&self, what: &str) -> Result<u64, String> {
        match self {
            SizeField::Bytes(n) => Ok(*n),
            SizeField::Text(t) => parse_size(t).map_err(|e| format!("{what}: {e}")),
        }
    }
}

/// `[[volume]]`: a volume of `size` (on `tier`), or its removal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEntry {
    pub name: String,
    #[serde(default)]
    pub size: Option<SizeField>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub absent: bool,
    #[serde(default)]
    pub pool: Option<PathBuf>,
}

/// `[[pair]]`: P-VOL → S-VOL (the S-VOL is created on `svol_tier` when it does not exist and
/// is not in the plan), in the consistency group `group`, or the pair's removal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairEntry {
    pub pvol: String,
    pub svol: String,
    #[serde(default)]
    pub svol_tier: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub rate: Option<SizeField>,
    #[serde(default)]
    pub absent: bool,
    #[serde(default)]
    pub pool: Option<PathBuf>,
}

/// `[[group]]`: a journal group of `volumes` replicated through `remote`, created in `pool`
/// and, with `secondary_pool`, attached there; or its removal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: String,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub remote: Option<PathBuf>,
    #[serde(default)]
    pub secondary_pool: Option<PathBuf>,
    /// The secondary keeps the volumes as PREFIX<name> (`group attach --rename`).
    #[serde(default)]
    pub secondary_rename: Option<String>,
    /// The secondary keeps these volumes under these names (`group attach --map`).
    #[serde(default)]
    pub secondary_map: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub absent: bool,
    #[serde(default)]
    pub pool: Option<PathBuf>,
}

/// A change set as the operator writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The pool of entries that name none (else `-p`/`FUSEVOL_POOL`).
    #[serde(default)]
    pub pool: Option<PathBuf>,
    #[serde(default, rename = "volume", alias = "volumes")]
    pub volumes: Vec<VolumeEntry>,
    #[serde(default, rename = "pair", alias = "pairs")]
    pub pairs: Vec<PairEntry>,
    #[serde(default, rename = "group", alias = "groups")]
    pub groups: Vec<GroupEntry>,
}

/// A volume of one pool's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    /// Bytes (0 for a removal).
    pub size: u64,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub absent: bool,
}

/// A pair of one pool's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    pub pvol: String,
    pub svol: String,
    #[serde(default)]
    pub svol_tier: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub rate: Option<u64>,
    #[serde(default)]
    pub absent: bool,
}

/// A journal group this pool is (to be) the primary of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Absolute path of the remote directory.
    #[serde(default)]
    pub remote: String,
    #[serde(default)]
    pub absent: bool,
}

/// A journal group this pool is (to be) the secondary of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    pub name: String,
    /// Absolute path of the remote directory.
    pub remote: String,
    /// The group's volumes as the plan names them (they must not exist here).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// The primary is created by the same plan: nothing is published in `remote` yet.
    #[serde(default)]
    pub primary_in_plan: bool,
    #[serde(default)]
    pub absent: bool,
    /// The names this pool keeps the group's volumes under (absent: the primary's).
    #[serde(
        default,
        skip_serializing_if = "crate::replication::options::VolumeNames::is_empty"
    )]
    pub names: crate::replication::options::VolumeNames,
}

/// The part of a plan that concerns one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolPlan {
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default)]
    pub pairs: Vec<PairSpec>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub attaches: Vec<AttachSpec>,
}

impl PoolPlan {
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
            && self.pairs.is_empty()
            && self.groups.is_empty()
            && self.attaches.is_empty()
    }
}

/// One step of a plan as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// `create`, `change`, `remove` or `keep` (already as asked: nothing to do).
    pub action: String,
    /// `volume`, `pair`, `group` or `attach`.
    pub object: String,
    pub name: String,
    /// What exactly (sizes, tiers, the S-VOL ...).
    pub detail: String,
}

/// What a pool answered to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    /// The pool directory.
    pub pool: String,
    /// The change's name (events and `PlanUndo` use it); empty for a validation.
    #[serde(default)]
    pub change: String,
    /// Every entry's step, in execution order (`keep` ones included).
    pub steps: Vec<PlanStep>,
    /// The steps were executed (`apply`) rather than only validated (`plan`).
    pub executed: bool,
    /// The steps executed were undone again.
    #[serde(default)]
    pub undone: bool,
}

impl PlanReport {
    /// Steps that change something.
    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|s| s.action != "keep").count()
    }
}

/// Parse a plan file: JSON when it starts with `{`, TOML otherwise. Errors name the file.
pub fn parse_plan(path: &Path, text: &str) -> Result<PlanFile, String> {
    let name = path.display();
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("plan file {name} (JSON): {e}"))
    } else {
        toml::from_str(text).map_err(|e| format!("plan file {name} (TOML): {e}"))
    }
}

fn abs(p: &Path, base: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl PlanFile {
    /// One plan per pool, in the order they must execute: pools that create a group's
    /// primary before pools that attach to it. `default_pool` is `-p`; relative paths are
    /// taken from `base` (the current directory).
    pub fn split(
        &self,
        default_pool: Option<&Path>,
        base: &Path,
    ) -> Result<Vec<(PathBuf, PoolPlan)>, String> {
        let default = self.pool.as_deref().or(default_pool).map(|p| abs(p, base));
        let pool_of = |p: &Option<PathBuf>, what: String| -> Result<PathBuf, String> {
            p.as_deref()
                .map(|p| abs(p, base))
                .or_else(|| default.clone())
                .ok_or_else(|| {
                    format!("{what} names no pool, and neither the plan (pool = ...) nor -p/FUSEVOL_POOL does")
                })
        };
        let mut plans: BTreeMap<PathBuf, PoolPlan> = BTreeMap::new();
        let mut secondaries: Vec<PathBuf> = Vec::new();
        for v in &self.volumes {
            let pool = pool_of(&v.pool, format!("volume '{}'", v.name))?;
            let size = match (&v.size, v.absent) {
                (Some(s), _) => s.bytes(&format!("size of volume '{}'", v.name))?,
                (None, true) => 0,
                (None, false) => return Err(format!("volume '{}' needs a size", v.name)),
            };
            plans.entry(pool).or_default().volumes.push(VolumeSpec {
                name: v.name.clone(),
                size,
                tier: v.tier.clone(),
                absent: v.absent,
            });
        }
        for p in &self.pairs {
            let pool = pool_of(&p.pool, format!("pair '{}'", p.pvol))?;
            let rate = match &p.rate {
                Some(r) => Some(r.bytes(&format!("rate of pair '{}'", p.pvol))?),
                None => None,
            };
            plans.entry(pool).or_default().pairs.push(PairSpec {
                pvol: p.pvol.clone(),
                svol: p.svol.clone(),
                svol_tier: p.svol_tier.clone(),
                group: p.group.clone(),
                rate,
                absent: p.absent,
            });
        }
        for g in &self.groups {
            let pool = pool_of(&g.pool, format!("group '{}'", g.name))?;
            let remote = match &g.remote {
                Some(r) => abs(r, base).display().to_string(),
                None if g.absent => String::new(),
                None => return Err(format!("group '{}' needs a remote directory", g.name)),
            };
            if !g.absent && g.volumes.is_empty() {
                return Err(format!("group '{}' needs at least one volume", g.name));
            }
            if let Some(sec) = &g.secondary_pool {
                let sec = abs(sec, base);
                if sec == pool {
                    return Err(format!(
                        "group '{}': the secondary pool is its primary pool {}",
                        g.name,
                        pool.display()
                    ));
                }
                if g.absent && remote.is_empty() {
                    return Err(format!(
                        "group '{}' with a secondary pool needs its remote directory",
                        g.name
                    ));
                }
                plans
                    .entry(sec.clone())
                    .or_default()
                    .attaches
                    .push(AttachSpec {
                        name: g.name.clone(),
                        remote: remote.clone(),
                        volumes: g.volumes.clone(),
                        primary_in_plan: true,
                        absent: g.absent,
                        names: crate::replication::options::VolumeNames {
                            prefix: g.secondary_rename.clone(),
                            map: g.secondary_map.clone(),
                        },
                    });
                secondaries.push(sec);
            }
            plans.entry(pool).or_default().groups.push(GroupSpec {
                name: g.name.clone(),
                volumes: g.volumes.clone(),
                remote,
                absent: g.absent,
            });
        }
        if plans.is_empty() {
            return Err("the plan lists no volume, pair or group".into());
        }
        // Creating: primaries first; removing: secondaries first. A pool that does both
        // comes where its first attach puts it.
        let removing = self.groups.iter().any(|g| g.absent);
        let mut out: Vec<(PathBuf, PoolPlan)> = plans.into_iter().collect();
        out.sort_by_key(|(p, _)| secondaries.contains(p) != removing);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_split_by_pool_primaries_first() {
        let text = r#"
pool = "/srv/a"
[[volume]]
name = "db"
size = "1G"
tier = "fast"
[[volume]]
name = "old"
absent = true
[[pair]]
pvol = "db"
svol = "db-copy"
svol_tier = "backup"
rate = "100M"
[[group]]
name = "rep"
volumes = ["db"]
remote = "/mnt/remote"
secondary_pool = "/srv/b"
"#;
        let f = parse_plan(Path::new("x.toml"), text).unwrap();
        let plans = f.split(None, Path::new("/")).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].0, PathBuf::from("/srv/a"));
        let a = &plans[0].1;
        assert_eq!(a.volumes[0].size, 1 << 30);
        assert!(a.volumes[1].absent);
        assert_eq!(a.pairs[0].rate, Some(100 << 20));
        assert_eq!(a.groups[0].remote, "/mnt/remote");
        let b = &plans[1].1;
        assert_eq!(b.attaches[0].volumes, ["db"]);
        assert!(b.attaches[0].primary_in_plan);

        let json = r#"{"volumes":[{"name":"v","size":4096}]}"#;
        let f = parse_plan(Path::new("x.json"), json).unwrap();
        let plans = f.split(Some(Path::new("p")), Path::new("/w")).unwrap();
        assert_eq!(plans[0].0, PathBuf::from("/w/p"));
        assert_eq!(plans[0].1.volumes[0].size, 4096);
    }

    #[test]
    fn bad_files_are_refused_naming_what() {
        let e = parse_plan(
            Path::new("x.toml"),
            "[[volume]]\nname='v'\nsize='1G'\ncolour=1\n",
        )
        .unwrap_err();
        assert!(e.contains("x.toml") && e.contains("colour"), "{e}");
        let f = parse_plan(Path::new("x.toml"), "[[volume]]\nname='v'\n").unwrap();
        let e = f.split(Some(Path::new("/p")), Path::new("/")).unwrap_err();
        assert!(e.contains("volume 'v' needs a size"), "{e}");
        let f = parse_plan(Path::new("x.toml"), "[[volume]]\nname='v'\nsize=1\n").unwrap();
        let e = f.split(None, Path::new("/")).unwrap_err();
        assert!(e.contains("names no pool"), "{e}");
    }
}
