//! Creating a new pool on disk.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::array::{create_array_file, default_data_offset};
use std::sync::Arc;

use super::{Array, Pool, PoolError, ARRAYS_DIR};
use crate::format::MetaRecord;
use crate::format::{ArrayHeader, ArrayRec, Checkpoint, VolumeRec};
use crate::meta::{write_checkpoint, MetaLog};
use crate::{names, units};

/// Default allocation unit: small enough that a 4 KiB write into a fresh extent stays cheap,
/// large enough that a fully mapped 1 TiB pool needs only ~48 MiB of maps and counts.
pub const DEFAULT_EXTENT_SIZE: u64 = 256 << 10;
pub const MIN_EXTENT_SIZE: u64 = 64 << 10;
pub const MAX_EXTENT_SIZE: u64 = 64 << 20;

/// `NAME:SIZE[:TIER]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    pub name: String,
    pub size: u64,
    pub tier: String,
}

impl ArraySpec {
    pub fn parse(s: &str) -> Result<ArraySpec, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(format!("array spec '{s}' is not NAME:SIZE[:TIER]"));
        }
        let spec = ArraySpec {
            name: parts[0].to_string(),
            size: units::parse_size(parts[1]).map_err(|e| format!("array spec '{s}': {e}"))?,
            tier: parts.get(2).unwrap_or(&"fast").to_string(),
        };
        names::validate("array", &spec.name)?;
        names::validate("tier", &spec.tier)?;
        Ok(spec)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub arrays: Vec<ArraySpec>,
    pub extent_size: u64,
    /// Volumes (name, size in bytes, on the first array's tier) present from the start.
    pub volumes: Vec<(String, u64)>,
}

/// The embedded default of `fusevold` on a fresh pool directory: the default arrays and one
/// thin 8 GiB volume, `vol0`, ready to use.
pub fn default_pool_with_volume() -> PoolSpec {
    PoolSpec {
        volumes: vec![("vol0".into(), 8 << 30)],
        ..PoolSpec::default()
    }
}

impl Default for PoolSpec {
    /// Three sparse arrays of 4 GiB, tier `fast`.
    fn default() -> Self {
        PoolSpec {
            arrays: (0..3)
                .map(|i| ArraySpec {
                    name: format!("a{i}"),
                    size: 4 << 30,
                    tier: "fast".into(),
                })
                .collect(),
            extent_size: DEFAULT_EXTENT_SIZE,
            volumes: Vec::new(),
        }
    }
}

pub fn check_extent_size(es: u64) -> Result<(), PoolError> {
    if !es.is_power_of_two() || !(MIN_EXTENT_SIZE..=MAX_EXTENT_SIZE).contains(&es) {
        return Err(PoolError::Invalid(format!(
            "extent size {es} must be a power of two between {} and {}",
            units::format_size(MIN_EXTENT_SIZE),
            units::format_size(MAX_EXTENT_SIZE)
        )));
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Build and write one array file; returns its metadata record.
pub(crate) fn new_array(
    dir: &Path,
    pool_id: u64,
    id: u32,
    extent_size: u64,
    spec: &ArraySpec,
) -> Result<ArrayRec, PoolError> {
    names::validate("array", &spec.name).map_err(PoolError::Invalid)?;
    names::validate("tier", &spec.tier).map_err(PoolError::Invalid)?;
    let capacity = spec.size / extent_size * extent_size;
    if capacity == 0 {
        return Err(PoolError::Invalid(format!(
            "array '{}' of {} is smaller than one extent ({})",
            spec.name,
            units::format_size(spec.size),
            units::format_size(extent_size)
        )));
    }
    let file = format!("{ARRAYS_DIR}/{}.img", spec.name);
    let header = ArrayHeader {
        array_id: id,
        pool_id,
        capacity,
        extent_size,
        data_offset: default_data_offset(),
        created: now_secs(),
        name: spec.name.clone(),
        tier: spec.tier.clone(),
    };
    create_array_file(&dir.join(&file), &header)?;
    Ok(ArrayRec {
        id,
        name: spec.name.clone(),
        tier: spec.tier.clone(),
        capacity,
        file,
    })
}

/// Create a pool directory with the given arrays. Refuses an existing non-empty directory.
pub fn create_pool(dir: &Path, spec: &PoolSpec) -> Result<(), PoolError> {
    check_extent_size(spec.extent_size)?;
    if spec.arrays.is_empty() {
        return Err(PoolError::Invalid("a pool needs at least one array".into()));
    }
    for (i, a) in spec.arrays.iter().enumerate() {
        if spec.arrays[..i].iter().any(|b| b.name == a.name) {
            return Err(PoolError::Exists(format!(
                "array name '{}' is given twice",
                a.name
            )));
        }
    }
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .map_err(|e| PoolError::io("read directory", dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(PoolError::Exists(format!(
                "{} already exists and is not empty; not creating a pool there",
                dir.display()
            )));
        }
    }
    fs::create_dir_all(dir.join(ARRAYS_DIR))
        .map_err(|e| PoolError::io("create directory", dir.join(ARRAYS_DIR), e))?;
    let pool_id = crate::sys::random_u64().map_err(|e| PoolError::io("read", "/dev/urandom", e))?;
    let mut arrays = Vec::new();
    for (i, a) in spec.arrays.iter().enumerate() {
        arrays.push(new_array(dir, pool_id, i as u32 + 1, spec.extent_size, a)?);
    }
    crate::meta::sync_dir(&dir.join(ARRAYS_DIR))?;
    let mut volumes = Vec::new();
    for (i, (name, size)) in spec.volumes.iter().enumerate() {
        names::validate("volume", name).map_err(PoolError::Invalid)?;
        volumes.push(VolumeRec {
            id: i as u64 + 1,
            name: name.clone(),
            size: *size,
            tier: spec.arrays[0].tier.clone(),
            created: now_secs(),
            origin: 0,
            table: Vec::new(),
        });
    }
    let ckpt = Checkpoint {
        pool_id,
        epoch: 1,
        extent_size: spec.extent_size,
        next_id: volumes.len() as u64 + 1,
        arrays,
        chunks: Vec::new(),
        volumes,
        snapshots: Vec::new(),
        pairs: Vec::new(),
        partials: Vec::new(),
        groups: Vec::new(),
        links: Vec::new(),
        infos: Vec::new(),
        schedules: Vec::new(),
    };
    write_checkpoint(dir, &ckpt)?;
    MetaLog::create(dir, pool_id, 1)?;
    Ok(())
}

impl Pool {
    /// Add an array file to the live pool.
    pub fn add_array(&self, name: &str, size: u64, tier: &str) -> Result<Arc<Array>, PoolError> {
        let mut log = self.meta.lock();
        if self.arrays().iter().any(|a| a.name == name) {
            return Err(PoolError::Exists(format!("array '{name}' already exists")));
        }
        let id = self.arrays.read().len().max(1) as u32;
        let spec = ArraySpec {
            name: name.to_string(),
            size,
            tier: tier.to_string(),
        };
        // The file and its header are durable before the record that adds it.
        let rec = new_array(&self.dir, self.pool_id, id, self.extent_size, &spec)?;
        crate::meta::sync_dir(&self.dir.join(crate::pool::ARRAYS_DIR))?;
        log.append(&MetaRecord::ArrayAdd(rec.clone()))?;
        let path = self.dir.join(&rec.file);
        let (file, h) = crate::pool::array::read_header(&path)?;
        let refs = self
            .alloc
            .lock()
            .add_array(id, tier, h.capacity / h.extent_size);
        let array = Arc::new(Array::new(file, path, &h, refs));
        {
            let mut arrays = self.arrays.write();
            if arrays.len() <= id as usize {
                arrays.resize(id as usize + 1, None);
            }
            arrays[id as usize] = Some(array.clone());
        }
        drop(log);
        log::info!(
            "added array '{name}' ({} on tier {tier})",
            units::format_size(size)
        );
        Ok(array)
    }
}
