//! The metadata state as recovery builds it: arrays, volumes and snapshots with their extent
//! tables (sharing chunks exactly as the running daemon does).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::bitmap::Bitmap;
use crate::extent_map::partial::{BlockBits, PartialExt, BLOCK};
use crate::extent_map::{Chunk, ExtentTable};
use crate::format::{
    ArrayRec, Checkpoint, ChunkRec, FormatError, GroupRec, PairRec, PartialRec, Phys, SnapshotRec,
    TableRec, VolumeRec,
};

#[derive(Clone)]
pub struct VolState {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub tier: String,
    pub created: u64,
    pub origin: u64,
    pub table: ExtentTable,
}

#[derive(Clone)]
pub struct SnapState {
    pub id: u64,
    pub volume: u64,
    pub name: String,
    pub created: u64,
    pub size: u64,
    pub table: ExtentTable,
}

/// A pair as recovery knows it. `state` uses the codes of `mirror::PairState`.
#[derive(Clone, Default)]
pub struct PairSt {
    pub id: u64,
    pub pvol: u64,
    pub svol: u64,
    pub group: String,
    pub state: u8,
    pub rate: u64,
    pub error: String,
    pub split_snap: u64,
    /// Regions the running (or suspended) copy still has to copy.
    pub todo: Bitmap,
    /// Regions changed on the P-VOL / S-VOL since the split.
    pub p_dirty: Bitmap,
    pub s_dirty: Bitmap,
}

#[derive(Clone, Default)]
pub struct State {
    pub pool_id: u64,
    pub epoch: u64,
    pub extent_size: u64,
    pub next_id: u64,
    pub arrays: Vec<ArrayRec>,
    pub volumes: Vec<VolState>,
    pub snapshots: Vec<SnapState>,
    pub pairs: Vec<PairSt>,
    /// Partial extents by their physical extent. Replay keeps an entry until a record ends it
    /// (`PartialDone`, the last `PartialValid`, or the extent mapped afresh by `MapSet`), even
    /// after every table dropped the extent: such a dead entry is ignored when the pool is
    /// loaded (`pool::open::load` keeps only entries whose extent a table still maps).
    pub partials: BTreeMap<Phys, PartialExt>,
    /// Journal groups, as their last `GroupPut` left them.
    pub groups: Vec<GroupRec>,
    /// (volume, from): volumes that share extents through copies (`MapShare`), sorted,
    /// never removed (a deleted volume may have passed extents on).
    pub links: Vec<(u64, u64)>,
    /// Volume information by volume or snapshot id (encoded `format::volinfo::InfoRecord`);
    /// an id's entry goes with its volume or snapshot.
    pub infos: BTreeMap<u64, Vec<u8>>,
    /// Backup schedules by id (encoded `format::schedule::ScheduleRec`).
    pub schedules: BTreeMap<u64, Vec<u8>>,
}

/// Writes tables into a checkpoint, each distinct chunk object once.
#[derive(Default)]
pub struct ChunkWriter {
    ids: HashMap<*const Chunk, u64>,
    pub chunks: Vec<ChunkRec>,
}

impl ChunkWriter {
    pub fn table(&mut self, t: &ExtentTable) -> TableRec {
        t.chunks()
            .map(|(index, ch)| {
                let key = Arc::as_ptr(ch);
                let id = *self.ids.entry(key).or_insert_with(|| {
                    self.chunks.push(ChunkRec { slots: ch.clone() });
                    self.chunks.len() as u64 - 1
                });
                (index as u64, id)
            })
            .collect()
    }
}

fn load_table(rec: &TableRec, chunks: &[Arc<Chunk>]) -> ExtentTable {
    let mut t = ExtentTable::new();
    for &(index, id) in rec {
        t.put_chunk(index as usize, chunks[id as usize].clone());
    }
    t
}

/// A partial extent from its record, checked against the pool's extent size.
pub fn partial_from_rec(extent_size: u64, r: &PartialRec) -> Result<(Phys, PartialExt), String> {
    let valid = BlockBits::from_words((extent_size / BLOCK) as usize, r.valid.clone())?;
    Ok((
        Phys::unpack(r.ext),
        PartialExt {
            src: Phys::unpack(r.src),
            valid,
        },
    ))
}

impl State {
    pub fn from_checkpoint(c: Checkpoint) -> Result<State, FormatError> {
        let mut partials = BTreeMap::new();
        for r in &c.partials {
            let (n, e) =
                partial_from_rec(c.extent_size, r).map_err(|detail| FormatError::Invalid {
                    what: "checkpoint",
                    detail,
                })?;
            partials.insert(n, e);
        }
        // The decoded chunks become the tables' chunks as they are (no copy).
        let chunks: Vec<Arc<Chunk>> = c.chunks.iter().map(|cr| cr.slots.clone()).collect();
        Ok(State {
            pool_id: c.pool_id,
            epoch: c.epoch,
            extent_size: c.extent_size,
            next_id: c.next_id,
            arrays: c.arrays,
            volumes: c
                .volumes
                .iter()
                .map(|v| VolState {
                    id: v.id,
                    name: v.name.clone(),
                    size: v.size,
                    tier: v.tier.clone(),
                    created: v.created,
                    origin: v.origin,
                    table: load_table(&v.table, &chunks),
                })
                .collect(),
            snapshots: c
                .snapshots
                .iter()
                .map(|s| SnapState {
                    id: s.id,
                    volume: s.volume,
                    name: s.name.clone(),
                    created: s.created,
                    size: s.size,
                    table: load_table(&s.table, &chunks),
                })
                .collect(),
            pairs: c
                .pairs
                .iter()
                .map(|p| PairSt {
                    id: p.id,
                    pvol: p.pvol,
                    svol: p.svol,
                    group: p.group.clone(),
                    state: p.state,
                    rate: p.rate,
                    error: p.error.clone(),
                    split_snap: p.split_snap,
                    todo: Bitmap::from_runs(&p.todo),
                    p_dirty: Bitmap::from_runs(&p.p_dirty),
                    s_dirty: Bitmap::from_runs(&p.s_dirty),
                })
                .collect(),
            partials,
            groups: c.groups.clone(),
            links: c.links.clone(),
            infos: c.infos.iter().cloned().collect(),
            schedules: c.schedules.iter().cloned().collect(),
        })
    }

    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut w = ChunkWriter::default();
        let volumes = self
            .volumes
            .iter()
            .map(|v| VolumeRec {
                id: v.id,
                name: v.name.clone(),
                size: v.size,
                tier: v.tier.clone(),
                created: v.created,
                origin: v.origin,
                table: w.table(&v.table),
            })
            .collect();
        let snapshots = self
            .snapshots
            .iter()
            .map(|s| SnapshotRec {
                id: s.id,
                volume: s.volume,
                name: s.name.clone(),
                created: s.created,
                size: s.size,
                table: w.table(&s.table),
            })
            .collect();
        Checkpoint {
            pool_id: self.pool_id,
            epoch: self.epoch,
            extent_size: self.extent_size,
            next_id: self.next_id,
            arrays: self.arrays.clone(),
            chunks: w.chunks,
            volumes,
            snapshots,
            pairs: self
                .pairs
                .iter()
                .map(|p| PairRec {
                    id: p.id,
                    pvol: p.pvol,
                    svol: p.svol,
                    group: p.group.clone(),
                    state: p.state,
                    rate: p.rate,
                    error: p.error.clone(),
                    split_snap: p.split_snap,
                    todo: p.todo.runs(),
                    p_dirty: p.p_dirty.runs(),
                    s_dirty: p.s_dirty.runs(),
                })
                .collect(),
            partials: self
                .partials
                .iter()
                .map(|(n, e)| PartialRec {
                    ext: n.pack(),
                    src: e.src.pack(),
                    valid: e.valid.words().to_vec(),
                })
                .collect(),
            groups: self.groups.clone(),
            links: self.links.clone(),
            infos: self.infos.iter().map(|(id, b)| (*id, b.clone())).collect(),
            schedules: self
                .schedules
                .iter()
                .map(|(id, b)| (*id, b.clone()))
                .collect(),
        }
    }

    /// Record that `volume` shares extents of `from` (idempotent, kept sorted).
    pub fn add_link(links: &mut Vec<(u64, u64)>, volume: u64, from: u64) {
        if volume == from {
            return;
        }
        if let Err(i) = links.binary_search(&(volume, from)) {
            links.insert(i, (volume, from));
        }
    }

    /// Every table of the pool, volumes first.
    pub fn tables(&self) -> impl Iterator<Item = &ExtentTable> {
        self.volumes
            .iter()
            .map(|v| &v.table)
            .chain(self.snapshots.iter().map(|s| &s.table))
    }
}
