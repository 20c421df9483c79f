//! Opening a pool: recovery, array headers, reference counts, scrubbing free extents.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::alloc::RefTable;
use super::array::{read_header, Array};
use super::{Allocator, Pool, PoolError};
use crate::extent_map::partial::{PartialExt, Partials};
use crate::extent_map::{Chunk, RefCounts};
use crate::format::{ArrayHeader, Phys};
use crate::meta::{recover_with, MetaLog, Recovered, RecoveryMode, State};

/// The pool's state after recovery, checked against the array files.
pub(crate) struct Loaded {
    pub recovered: Recovered,
    pub arrays: Vec<LoadedArray>,
    pub alloc: Allocator,
    /// The live partial extents (their sources hold a reference each in `alloc`).
    pub partials: Arc<Partials>,
    /// Problems found; `Pool::open` refuses to serve when there are any.
    pub problems: Vec<String>,
}

/// One array after loading: its file and header, or why it is missing.
pub(crate) struct LoadedArray {
    pub rec: crate::format::ArrayRec,
    pub path: PathBuf,
    pub refs: Arc<RefTable>,
    /// The open file and its verified header; Err: why the array is missing.
    pub file: Result<(File, ArrayHeader), String>,
}

/// Recover the metadata, read every array header, and rebuild reference counts from the
/// tables: one reference per distinct chunk object holding an extent. Shared by the daemon
/// and the offline checker. Nothing on disk is changed.
pub(crate) fn load(dir: &Path, mode: RecoveryMode) -> Result<Loaded, PoolError> {
    let recovered = recover_with(dir, mode)?;
    let st: &State = &recovered.state;
    let mut problems = Vec::new();
    let mut arrays = Vec::new();
    let mut alloc = Allocator::default();
    for rec in &st.arrays {
        let path = dir.join(&rec.file);
        let (file, h) = match read_header(&path) {
            Ok(x) => x,
            // A file that is gone or cannot be read: the pool is served without it (its
            // extents fail with EIO). A header that reads but does not verify is damage
            // and stops the opening, naming the file and offset.
            Err(PoolError::Io { op, source, .. }) => {
                let why = format!("{op} {}: {source}", path.display());
                let refs = alloc.add_array(rec.id, &rec.tier, rec.capacity / st.extent_size);
                alloc.set_offline(rec.id);
                arrays.push(LoadedArray {
                    rec: rec.clone(),
                    path,
                    refs,
                    file: Err(why),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let mismatch = |what: &str, want: String, got: String| {
            PoolError::Inconsistent(format!(
                "array file {} header at offset 0: {what} is {got}, the metadata says {want}",
                path.display()
            ))
        };
        if h.pool_id != st.pool_id {
            return Err(mismatch(
                "pool id",
                format!("{:016x}", st.pool_id),
                format!("{:016x}", h.pool_id),
            ));
        }
        if h.array_id != rec.id {
            return Err(mismatch(
                "array id",
                rec.id.to_string(),
                h.array_id.to_string(),
            ));
        }
        if h.capacity != rec.capacity || h.extent_size != st.extent_size {
            return Err(mismatch(
                "capacity/extent size",
                format!("{}/{}", rec.capacity, st.extent_size),
                format!("{}/{}", h.capacity, h.extent_size),
            ));
        }
        let refs = alloc.add_array(rec.id, &rec.tier, h.capacity / h.extent_size);
        arrays.push(LoadedArray {
            rec: rec.clone(),
            path,
            refs,
            file: Ok((file, h)),
        });
    }
    let mut seen: HashSet<*const Chunk> = HashSet::new();
    let names = table_names(st);
    for (table, name) in st.tables().zip(&names) {
        for (ci, ch) in table.chunks() {
            if !seen.insert(Arc::as_ptr(ch)) {
                continue;
            }
            for (slot, &raw) in ch.iter().enumerate() {
                if raw == 0 {
                    continue;
                }
                let p = Phys::unpack(raw - 1);
                if alloc.contains(p) {
                    alloc.incref(p);
                } else {
                    problems.push(format!(
                        "{name} logical extent {} points to array {} extent {}, which does not exist",
                        ci * crate::extent_map::CHUNK + slot,
                        p.array,
                        p.index
                    ));
                }
            }
        }
    }
    // Partial extents: an entry is live while a table maps its extent (replay keeps entries
    // of extents that were dropped since; they are ignored here). A live entry holds one
    // reference on its source, which must exist and must not be partial itself.
    let live: BTreeMap<Phys, PartialExt> = st
        .partials
        .iter()
        .filter(|(n, _)| alloc.contains(**n) && alloc.refcount(**n) > 0)
        .map(|(n, e)| (*n, e.clone()))
        .collect();
    for (n, e) in &live {
        if !alloc.contains(e.src) {
            problems.push(format!(
                "partial extent (array {} extent {}) reads from array {} extent {}, which does not exist",
                n.array, n.index, e.src.array, e.src.index
            ));
        } else if live.contains_key(&e.src) {
            problems.push(format!(
                "partial extent (array {} extent {}) reads from array {} extent {}, which is partial itself",
                n.array, n.index, e.src.array, e.src.index
            ));
        } else {
            alloc.incref(e.src);
        }
    }
    let partials = Arc::new(Partials::from_entries(st.extent_size, live));
    alloc.set_partials(partials.clone());
    for v in &st.volumes {
        let limit = v.size.div_ceil(st.extent_size);
        if let Some((l, _)) = v.table.iter_mapped().find(|&(l, _)| l >= limit) {
            problems.push(format!(
                "volume '{}' maps logical extent {l} beyond its size {}",
                v.name, v.size
            ));
        }
    }
    let lost = missing_array_warnings(st, &arrays);
    let mut recovered = recovered;
    recovered.warnings.extend(lost);
    Ok(Loaded {
        recovered,
        arrays,
        alloc,
        partials,
        problems,
    })
}

/// For each missing array: a warning naming it, and one per volume or snapshot naming the
/// byte ranges that live there (their reads and writes fail with EIO; nothing reads as
/// zeros in their place).
fn missing_array_warnings(st: &State, arrays: &[LoadedArray]) -> Vec<String> {
    let mut out = Vec::new();
    let names = table_names(st);
    let es = st.extent_size;
    for a in arrays {
        let Err(why) = &a.file else { continue };
        out.push(format!(
            "array '{}' ({}) is MISSING: {why}; the pool is served without it (nothing is allocated there, its extents fail with EIO)",
            a.rec.name, a.rec.file
        ));
        for (table, name) in st.tables().zip(&names) {
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for (l, p) in table.iter_mapped() {
                if p.array != a.rec.id {
                    continue;
                }
                match runs.last_mut() {
                    Some((_, end)) if *end == l => *end = l + 1,
                    _ => runs.push((l, l + 1)),
                }
            }
            if runs.is_empty() {
                continue;
            }
            let ranges: Vec<String> = runs
                .iter()
                .map(|(s, e)| format!("bytes {}-{}", s * es, e * es - 1))
                .collect();
            out.push(format!(
                "{name}: {} on missing array '{}': reads and writes there fail with EIO",
                ranges.join(", "),
                a.rec.name
            ));
        }
    }
    out
}

/// A name for every table of `State::tables`, in the same order (for messages).
pub(crate) fn table_names(st: &State) -> Vec<String> {
    let vol_name = |id: u64| {
        st.volumes
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    };
    st.volumes
        .iter()
        .map(|v| format!("volume '{}'", v.name))
        .chain(
            st.snapshots
                .iter()
                .map(|s| format!("snapshot '{}' of volume '{}'", s.name, vol_name(s.volume))),
        )
        .collect()
}

/// Extents shared between unrelated volumes: each volume with its snapshots, its clones and
/// the volumes it shares extents with through copies (transitively) is one family; an extent found in two families is owned twice.
pub(crate) fn cross_family_sharing(st: &State) -> Vec<String> {
    // Union-find over volume ids.
    let mut parent: HashMap<u64, u64> = st.volumes.iter().map(|v| (v.id, v.id)).collect();
    fn find(parent: &mut HashMap<u64, u64>, x: u64) -> u64 {
        let p = *parent.get(&x).unwrap_or(&x);
        if p == x {
            return x;
        }
        let r = find(parent, p);
        parent.insert(x, r);
        r
    }
    for v in &st.volumes {
        if v.origin != 0 && parent.contains_key(&v.origin) {
            let (a, b) = (find(&mut parent, v.id), find(&mut parent, v.origin));
            parent.insert(a, b);
        }
    }
    // Copies that shared extents (`MapShare`) join their volumes' families; a deleted
    // volume stays a node, so extents it passed on keep linking the others.
    for &(v, from) in &st.links {
        let (a, b) = (find(&mut parent, v), find(&mut parent, from));
        if a != b {
            parent.insert(a, b);
        }
    }
    let mut owner: HashMap<Phys, (u64, String)> = HashMap::new();
    let mut problems = Vec::new();
    let names = table_names(st);
    let families: Vec<u64> = st
        .volumes
        .iter()
        .map(|v| v.id)
        .chain(st.snapshots.iter().map(|s| s.volume))
        .collect();
    let mut done: HashSet<(*const Chunk, u64)> = HashSet::new();
    for ((table, name), vid) in st.tables().zip(&names).zip(families) {
        let fam = find(&mut parent, vid);
        for (_, ch) in table.chunks() {
            if !done.insert((Arc::as_ptr(ch), fam)) {
                continue;
            }
            for &raw in ch.iter().filter(|&&r| r != 0) {
                let p = Phys::unpack(raw - 1);
                match owner.get(&p) {
                    Some((f, other)) if *f != fam => problems.push(format!(
                        "array {} extent {} is mapped by unrelated {} and {}",
                        p.array, p.index, other, name
                    )),
                    Some(_) => {}
                    None => {
                        owner.insert(p, (fam, name.clone()));
                    }
                }
            }
        }
    }
    // A partial extent's source belongs to the family of the tables that map the extent.
    for (n, e) in &st.partials {
        if let (Some((fn_, name_n)), Some((fs, name_s))) = (owner.get(n), owner.get(&e.src)) {
            if fn_ != fs {
                problems.push(format!(
                    "array {} extent {} (partial, mapped by {}) reads from array {} extent {}, mapped by unrelated {}",
                    n.array, n.index, name_n, e.src.array, e.src.index, name_s
                ));
            }
        }
    }
    problems
}

impl Pool {
    /// Open the core of a pool for serving: recover, verify, scrub free extents, open the
    /// log. Returns the core and the recovered state, whose volumes, snapshots, pairs and
    /// groups the services above the core load (`storage::Storage::open`).
    pub fn open(dir: &Path) -> Result<(Arc<Pool>, State), PoolError> {
        Self::open_with(dir, RecoveryMode::Strict)
    }

    /// `open` with a recovery mode. A salvage that lost log records opens the pool
    /// read-only: no scrub (the extents of the lost records keep their bytes), the log is
    /// neither cut nor appended to, and no checkpoint is written until `commit_salvage`.
    pub fn open_with(dir: &Path, mode: RecoveryMode) -> Result<(Arc<Pool>, State), PoolError> {
        let Loaded {
            recovered,
            arrays,
            mut alloc,
            partials,
            problems,
        } = load(dir, mode)?;
        for w in &recovered.warnings {
            log::warn!("{w}");
        }
        if !problems.is_empty() {
            return Err(PoolError::Inconsistent(format!(
                "pool {} metadata is inconsistent:\n  {}",
                dir.display(),
                problems.join("\n  ")
            )));
        }
        let salvage = recovered.salvage.clone();
        let salvaged_state = salvage.as_ref().map(|_| recovered.state.clone());
        let st = recovered.state;
        let arrays: Vec<Arc<Array>> = arrays
            .into_iter()
            .map(|a| {
                Arc::new(match a.file {
                    Ok((f, h)) => Array::new(f, a.path, &h, a.refs),
                    Err(why) => Array::missing(&a.rec, st.extent_size, a.path, a.refs, why),
                })
            })
            .collect();
        // Scrub: a free extent may still hold bytes (an allocation that crashed before its
        // record, or a free whose punch did not happen). Punch them before anything reuses it.
        let mut scrubbed = 0;
        for a in arrays
            .iter()
            .filter(|a| salvage.is_none() && a.missing.is_none())
        {
            let with_data = a
                .extents_with_data()
                .map_err(|e| PoolError::io("scan array file", &a.path, e))?;
            for idx in with_data {
                if a.refs.get(idx) == 0 {
                    a.punch(idx, 0, a.extent_size)
                        .map_err(|e| PoolError::io("punch free extent in", &a.path, e))?;
                    scrubbed += 1;
                }
            }
            a.sync()
                .map_err(|e| PoolError::io("fdatasync array file", &a.path, e))?;
        }
        if scrubbed > 0 {
            log::info!("scrubbed {scrubbed} free extents that still held data");
        }
        alloc.rebuild_free_lists();
        let log_path = dir.join(crate::meta::LOG_FILE);
        let log = if let Some(r) = &salvage {
            log::error!("{r}");
            log::error!(
                "pool {} opened READ-ONLY by the salvage; confirm with `fusevol pool salvage-confirm`",
                dir.display()
            );
            MetaLog::open_read_only(
                dir,
                st.pool_id,
                st.epoch,
                recovered.log_valid_len,
                "the pool is read-only until the salvage is confirmed (`fusevol pool salvage-confirm`)".into(),
            )?
        } else if recovered.log_usable {
            let on_disk = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
            if recovered.log_valid_len < on_disk {
                log::warn!(
                    "{}: cutting the torn tail at offset {} ({} bytes)",
                    log_path.display(),
                    recovered.log_valid_len,
                    on_disk - recovered.log_valid_len
                );
            }
            MetaLog::open_at(
                dir,
                st.pool_id,
                st.epoch,
                recovered.log_valid_len,
                recovered.log_header,
            )?
        } else {
            MetaLog::create(dir, st.pool_id, st.epoch)?
        };
        let mut slots: Vec<Option<Arc<Array>>> = Vec::new();
        for a in arrays {
            let i = a.id as usize;
            if slots.len() <= i {
                slots.resize(i + 1, None);
            }
            slots[i] = Some(a);
        }
        log::info!(
            "pool {} (id {:016x}) open from {} (epoch {}): {} arrays, {} volumes, {} snapshots, {} partial extents, {} log records replayed",
            dir.display(),
            st.pool_id,
            recovered.checkpoint_file,
            st.epoch,
            st.arrays.len(),
            st.volumes.len(),
            st.snapshots.len(),
            partials.len(),
            recovered.replayed
        );
        let pool = Arc::new(Pool {
            dir: dir.to_path_buf(),
            pool_id: st.pool_id,
            extent_size: st.extent_size,
            io_gate: RwLock::new(()),
            meta: Mutex::new(log),
            stopping: std::sync::atomic::AtomicBool::new(false),
            alloc: Mutex::new(alloc),
            partials,
            filler: Mutex::new(None),
            arrays: RwLock::new(slots),
            next_id: Mutex::new(st.next_id),
            sync_lock: Mutex::new(()),
            listener: RwLock::new(None),
            sources: RwLock::new(Vec::new()),
            sync_hooks: RwLock::new(Vec::new()),
            replayed_at_open: recovered.replayed,
            rewrite_at_open: recovered.needs_rewrite,
            salvage_pending: std::sync::atomic::AtomicBool::new(salvage.is_some()),
            salvaged: Mutex::new(salvage.zip(salvaged_state)),
            events: Arc::new(crate::events::EventLog::open(dir)),
            nospace_reported: std::sync::atomic::AtomicBool::new(false),
            array_error_events: Mutex::default(),
        });
        Ok((pool, st))
    }
}
