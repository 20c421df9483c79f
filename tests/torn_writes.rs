//! Torn and lost writes (issue 19 item 4): a machine crash below the daemon, simulated the
//! dm-log-writes / CrashMonkey way. Every write, punch, truncation, rename and sync of the
//! pool's files (metadata log, both checkpoint slots, the arrays' data and checkpoint copies,
//! and the journal segments) goes through `fusevol::fsio`, which records them in
//! `--features failpoints` builds. A random workload (writes to three volumes, one of them
//! paired, one journaled, snapshots, volume
//! create/delete, filler steps, checkpoints, fsyncs) runs on a `Storage` in-process; then
//! for each of hundreds of random crash points a copy of the pool as it was before the
//! workload gets the recorded operations up to that point, the last write torn at a 512-byte
//! boundary (or lost whole), and is checked: `check` is clean, the pool opens, every write
//! acknowledged by an fsync is there (each 512-byte sector holds its acknowledged content or
//! that of a later write), acknowledged snapshots hold exactly their point-in-time image,
//! the pair comes back to PAIR with its S-VOL equal to its P-VOL sector by sector (the
//! dual writes' write intents), and `check` is clean again after the open.
//!
//! `FUSEVOL_TORN_POINTS` (default 300) sets the number of crash points (a new workload per
//! 300); `FUSEVOL_TEST_SEED` repeats a run.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::images::storage_at;
use common::Rng;
use fusevol::control::GroupOptions;
use fusevol::format::PairState;
use fusevol::fsio::record::{self, Op};
use fusevol::storage::Storage;

const ES: u64 = 64 << 10;
const SECTOR: usize = 512;
const VOL_SIZE: u64 = 1 << 20;
const POINTS_PER_WORKLOAD: usize = 300;

/// A volume's content: the id of the host write each sector last got (0: never written).
type Sectors = Vec<u64>;

/// One host write of the workload.
struct HostWrite {
    vol: String,
    first: usize,
    count: usize,
    id: u64,
    /// Index in the record of its first operation.
    at: usize,
}

struct Snap {
    vol: String,
    name: String,
    image: Sectors,
    created_at: usize,
    deleted_at: Option<usize>,
}

/// What the workload did, indexed by positions in the record.
struct Workload {
    ops: Vec<Op>,
    /// (record index of the mark, volumes as acknowledged by the fsync before it).
    acks: Vec<(usize, BTreeMap<String, Sectors>)>,
    base: BTreeMap<String, Sectors>,
    writes: Vec<HostWrite>,
    snaps: Vec<Snap>,
    /// Volumes deleted, with the record index of the delete.
    deleted: Vec<(String, usize)>,
}

fn pattern(id: u64, sectors: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(sectors * SECTOR);
    for _ in 0..sectors * SECTOR / 8 {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b
}

/// The write id each sector of `buf` holds; None for a sector that is no write's content.
fn sector_ids(buf: &[u8]) -> Vec<Option<u64>> {
    buf.chunks(SECTOR)
        .map(|s| {
            let v = u64::from_le_bytes(s[..8].try_into().unwrap());
            s.chunks(8)
                .all(|w| u64::from_le_bytes(w.try_into().unwrap()) == v)
                .then_some(v)
        })
        .collect()
}

fn read_all(st: &Storage, name: &str) -> Vec<u8> {
    let v = st.volumes.volume(name).unwrap();
    let mut b = vec![0u8; v.size() as usize];
    st.read(&v, 0, &mut b).unwrap();
    b
}

fn wait_state(st: &Storage, pvol: &str, want: PairState, what: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let s = st.mirror.pair_of(pvol).unwrap().state();
        if s == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what}: pair {pvol} stuck in {}",
            s.name()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Copy a pool directory, holes kept as holes (arrays are sparse).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type().unwrap();
        if t.is_dir() {
            copy_tree(&src, &dst);
        } else if t.is_file() {
            let f = fs::File::open(&src).unwrap();
            let len = f.metadata().unwrap().len();
            let out = fs::File::create(&dst).unwrap();
            out.set_len(len).unwrap();
            for (a, b) in fusevol::sys::data_regions(&f, 0, len).unwrap() {
                let mut buf = vec![0u8; (b - a) as usize];
                f.read_exact_at(&mut buf, a).unwrap();
                out.write_all_at(&buf, a).unwrap();
            }
        }
    }
}

/// Apply one recorded operation to the copy in `dir`; a write is cut to `keep` bytes.
fn apply(dir: &Path, op: &Op, keep: Option<usize>) {
    let open = |p: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(p))
            .unwrap_or_else(|e| panic!("replay: open {}: {e}", p.display()))
    };
    match op {
        Op::Write { path, offset, data } => {
            let n = keep.unwrap_or(data.len());
            if n > 0 {
                open(path).write_all_at(&data[..n], *offset).unwrap();
            }
        }
        Op::Punch { path, offset, len } => {
            let f = open(path);
            let size = f.metadata().unwrap().len();
            let end = (offset + len).min(size);
            if end > *offset {
                f.write_all_at(&vec![0u8; (end - offset) as usize], *offset)
                    .unwrap();
            }
        }
        Op::SetLen { path, len } => open(path).set_len(*len).unwrap(),
        Op::Create { path } => {
            fs::File::create(dir.join(path)).unwrap();
        }
        Op::Rename { from, to } => fs::rename(dir.join(from), dir.join(to)).unwrap(),
        Op::Remove { path } => {
            let _ = fs::remove_file(dir.join(path));
        }
        Op::Sync { .. } | Op::Mark(_) => {}
    }
}

/// Run the random workload on the pool in `dir` (copied to `base` first) and record it.
fn run_workload(dir: &Path, base: &Path, rng: &mut Rng) -> Workload {
    let st = storage_at(dir, ES, 8 << 20, 3);
    let mut model: BTreeMap<String, Sectors> = BTreeMap::new();
    let sectors = (VOL_SIZE as usize) / SECTOR;
    let mut next_id = 1u64;
    let mut host_write = |st: &Storage,
                          model: &mut BTreeMap<String, Sectors>,
                          vol: &str,
                          first: usize,
                          count: usize,
                          at: usize,
                          writes: &mut Vec<HostWrite>| {
        let id = next_id;
        next_id += 1;
        let v = st.volumes.volume(vol).unwrap();
        st.write(&v, (first * SECTOR) as u64, &pattern(id, count))
            .unwrap();
        model.get_mut(vol).unwrap()[first..first + count].fill(id);
        writes.push(HostWrite {
            vol: vol.into(),
            first,
            count,
            id,
            at,
        });
    };
    let mut writes = Vec::new();
    for name in ["a", "b", "p"] {
        st.volumes.create_volume(name, VOL_SIZE, None).unwrap();
        model.insert(name.into(), vec![0; sectors]);
        host_write(&st, &mut model, name, 0, 256, 0, &mut writes);
    }
    st.create_pair("p", "s", true, None, None, None).unwrap();
    wait_state(&st, "p", PairState::Pair, "setup");
    // Volume b is journaled (a primary journal group): its writes append journal records
    // (write-ahead) that a crash image's opening redoes after the group's redo floor.
    let remote = dir.parent().unwrap().join("remote");
    fs::create_dir_all(&remote).unwrap();
    st.replication
        .group_create("g", &["b".to_string()], &remote, &GroupOptions::default())
        .unwrap();
    st.checkpoint().unwrap();
    st.sync().unwrap();
    // Nothing runs in the background now (no filler thread; the pair is in PAIR): the
    // files on disk are the pool's state.
    copy_tree(dir, base);
    let base_model = model.clone();
    writes.clear();

    record::start(dir);
    let mut acks = Vec::new();
    let mut snaps: Vec<Snap> = Vec::new();
    let mut deleted = Vec::new();
    let mut extra = 0u32;
    let steps = 160;
    for step in 0..steps {
        let at = record::len();
        let r = rng.range(0, 100);
        if r < 62 {
            let vols: Vec<String> = model.keys().cloned().collect();
            let vol = &vols[rng.range(0, vols.len() as u64) as usize];
            let size = model[vol].len();
            let blocks = rng.range(1, 9) as usize * 8; // 4..32 KiB
            let first = rng.range(0, (size - blocks) as u64 / 8) as usize * 8;
            host_write(&st, &mut model, vol, first, blocks, at, &mut writes);
        } else if r < 76 {
            st.sync().unwrap();
            let m = record::mark(step);
            acks.push((m, model.clone()));
        } else if r < 83 {
            let live: Vec<usize> = (0..snaps.len())
                .filter(|&i| snaps[i].deleted_at.is_none())
                .collect();
            if live.len() >= 4 {
                let s = &mut snaps[live[rng.range(0, live.len() as u64) as usize]];
                st.snapshots.delete_snapshot(&s.vol, &s.name).unwrap();
                s.deleted_at = Some(at);
            } else {
                let vol = ["a", "b"][rng.range(0, 2) as usize];
                let name = format!("t{step}");
                st.snapshots.create_snapshot(vol, &name).unwrap();
                snaps.push(Snap {
                    vol: vol.into(),
                    name,
                    image: model[vol].clone(),
                    created_at: at,
                    deleted_at: None,
                });
            }
        } else if r < 87 {
            st.checkpoint().unwrap();
        } else if r < 93 {
            st.pool.fill_step(4).unwrap();
        } else {
            let cs: Vec<String> = model
                .keys()
                .filter(|k| k.starts_with('c'))
                .cloned()
                .collect();
            if cs.len() >= 2 {
                let name = &cs[rng.range(0, cs.len() as u64) as usize];
                st.delete_volume(name, true).unwrap();
                model.remove(name);
                deleted.push((name.clone(), at));
            } else {
                extra += 1;
                let name = format!("c{extra}");
                st.volumes.create_volume(&name, 256 << 10, None).unwrap();
                model.insert(name.clone(), vec![0; (256 << 10) / SECTOR]);
                host_write(&st, &mut model, &name, 0, 128, at, &mut writes);
            }
        }
    }
    let ops = record::stop();
    drop(st);
    Workload {
        ops,
        acks,
        base: base_model,
        writes,
        snaps,
        deleted,
    }
}

/// Where op `j` may be torn: 0 (lost) or at a 512-byte boundary of the file inside it.
fn tear_points(op: &Op) -> Vec<usize> {
    match op {
        Op::Write { offset, data, .. } => {
            let mut v = vec![0];
            let mut b = (offset / 512 + 1) * 512;
            while b < offset + data.len() as u64 {
                v.push((b - offset) as usize);
                b += 512;
            }
            v
        }
        _ => vec![],
    }
}

/// Build the crash image for point `j` (ops before it whole, op `j` cut to `keep`), then
/// check it. Returns a description of what the point exercised.
fn check_point(w: &Workload, base: &Path, img: &Path, j: usize, keep: Option<usize>) {
    let what = format!(
        "crash at op {j}/{} ({:?}){}",
        w.ops.len(),
        w.ops.get(j).map(|o| match o {
            Op::Write { path, offset, data } =>
                format!("write {} @{offset}+{}", path.display(), data.len()),
            other => format!("{other:?}"),
        }),
        keep.map(|k| format!(", torn after {k} bytes"))
            .unwrap_or_default()
    );
    let _ = fs::remove_dir_all(img);
    copy_tree(base, img);
    for op in &w.ops[..j] {
        apply(img, op, None);
    }
    if let (Some(op), Some(k)) = (w.ops.get(j), keep) {
        apply(img, op, Some(k));
    }
    let report = fusevol::pool::check_pool(img).unwrap_or_else(|e| panic!("{what}: check: {e}"));
    assert!(report.is_clean(), "{what}: check before open: {report}");

    let st = Storage::open(img).unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
    st.finish_recovery()
        .unwrap_or_else(|e| panic!("{what}: finish recovery: {e}"));
    let (mark, acked) = w
        .acks
        .iter()
        .rev()
        .find(|(m, _)| *m < j)
        .map(|(m, a)| (*m, a))
        .unwrap_or((0, &w.base));
    // Later content each sector may hold: writes issued after the acknowledgement and
    // before the crash.
    let mut later: HashMap<(&str, usize), HashSet<u64>> = HashMap::new();
    for hw in w.writes.iter().filter(|hw| hw.at >= mark && hw.at <= j) {
        for s in hw.first..hw.first + hw.count {
            later.entry((hw.vol.as_str(), s)).or_default().insert(hw.id);
        }
    }
    let present: HashSet<String> = st
        .volumes
        .volume_list()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    for (vol, sectors) in acked {
        let gone = w.deleted.iter().any(|(n, at)| n == vol && *at < j);
        if !present.contains(vol) {
            assert!(gone, "{what}: acknowledged volume {vol} is missing");
            continue;
        }
        let ids = sector_ids(&read_all(&st, vol));
        for (s, got) in ids.iter().enumerate() {
            let ok = match got {
                Some(id) => {
                    *id == sectors[s]
                        || later
                            .get(&(vol.as_str(), s))
                            .is_some_and(|l| l.contains(id))
                }
                None => false,
            };
            if !ok {
                let hist: Vec<String> = w
                    .writes
                    .iter()
                    .filter(|hw| {
                        Some(hw.id) == *got
                            || (hw.vol == *vol && (hw.first..hw.first + hw.count).contains(&s))
                    })
                    .map(|hw| {
                        format!(
                            "write {} to {} sectors {}+{} at op {}",
                            hw.id, hw.vol, hw.first, hw.count, hw.at
                        )
                    })
                    .collect();
                let ops: Vec<String> = w.ops[mark.saturating_sub(5)..(j + 3).min(w.ops.len())]
                    .iter()
                    .enumerate()
                    .map(|(i, o)| match o {
                        Op::Write { path, offset, data } => format!(
                            "{}: write {} @{offset}+{}",
                            i + mark.saturating_sub(5),
                            path.display(),
                            data.len()
                        ),
                        o => format!("{}: {o:?}", i + mark.saturating_sub(5)),
                    })
                    .collect();
                panic!(
                    "{what}: volume {vol} sector {s} holds {got:?}; acknowledged {} (mark at op {mark})\n{}\n{}",
                    sectors[s],
                    hist.join("\n"),
                    ops.join("\n")
                );
            }
        }
    }
    for sn in &w.snaps {
        let acked_snap = sn.created_at < mark;
        let deleted = sn.deleted_at.is_some_and(|d| d < j);
        let exists = st.snapshots.snapshot(&sn.vol, &sn.name).ok();
        match exists {
            None => assert!(
                !acked_snap || deleted,
                "{what}: acknowledged snapshot {}@{} is missing",
                sn.vol,
                sn.name
            ),
            Some(s) => {
                assert!(
                    sn.created_at <= j,
                    "{what}: snapshot {} from the future",
                    sn.name
                );
                let mut b = vec![0u8; s.size as usize];
                st.snapshots.read_snapshot(&s, 0, &mut b).unwrap();
                let ids: Vec<Option<u64>> = sector_ids(&b);
                let want: Vec<Option<u64>> = sn.image.iter().map(|&i| Some(i)).collect();
                assert!(
                    ids == want,
                    "{what}: snapshot {}@{} differs from its image",
                    sn.vol,
                    sn.name
                );
            }
        }
    }
    // The pair: there, back in PAIR (a crash with dual writes in flight or unsynced copies
    // the regions of their write intents again), and its S-VOL equal to its P-VOL, sector by
    // sector (the P-VOL's sectors are checked against what was acknowledged above).
    let pair = st
        .mirror
        .pair_of("p")
        .unwrap_or_else(|e| panic!("{what}: the pair is gone: {e}"));
    if pair.state() != PairState::Pair {
        wait_state(&st, "p", PairState::Pair, &what);
    }
    let p_ids = sector_ids(&read_all(&st, "p"));
    let s_ids = sector_ids(&read_all(&st, "s"));
    for (s, (got, want)) in s_ids.iter().zip(&p_ids).enumerate() {
        assert!(
            got == want,
            "{what}: S-VOL s sector {s} holds {got:?}, its P-VOL p {want:?} (acknowledged: {})",
            acked["p"][s]
        );
    }
    drop(st);
    let report =
        fusevol::pool::check_pool(img).unwrap_or_else(|e| panic!("{what}: check after open: {e}"));
    assert!(report.is_clean(), "{what}: check after open: {report}");
}

#[test]
fn random_crash_points_with_torn_last_writes() {
    let points: usize = std::env::var("FUSEVOL_TORN_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(POINTS_PER_WORKLOAD);
    let mut rng = Rng::from_env("torn_writes");
    let t = Instant::now();
    let mut done = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    while done < points {
        let d = tempfile::tempdir().unwrap();
        let (dir, base, img) = (
            d.path().join("p"),
            d.path().join("base"),
            d.path().join("img"),
        );
        let w = run_workload(&dir, &base, &mut rng);
        assert!(w.ops.len() > 200 && w.acks.len() > 5, "{} ops", w.ops.len());
        let n = (points - done).min(POINTS_PER_WORKLOAD);
        // Always the ends: nothing replayed, everything replayed.
        let mut js: Vec<usize> = vec![0, w.ops.len()];
        while js.len() < n {
            js.push(rng.range(0, w.ops.len() as u64 + 1) as usize);
        }
        for j in js {
            let tears = w.ops.get(j).map(tear_points).unwrap_or_default();
            let keep =
                (!tears.is_empty()).then(|| tears[rng.range(0, tears.len() as u64) as usize]);
            let kind = match w.ops.get(j) {
                Some(Op::Write { path, .. }) => {
                    let p = path.to_string_lossy();
                    let f = if p.starts_with("arrays/") {
                        "array"
                    } else {
                        &p
                    };
                    format!("torn write of {f}")
                }
                Some(Op::Sync { .. }) => "at a sync".to_string(),
                Some(Op::Rename { to, .. }) => format!("before rename to {}", to.display()),
                Some(Op::Punch { .. }) => "at a hole punch".to_string(),
                Some(Op::SetLen { .. }) => "at a truncation".to_string(),
                Some(Op::Create { .. }) => "at a file creation".to_string(),
                Some(Op::Remove { .. }) => "at a removal".to_string(),
                Some(Op::Mark(_)) => "at an fsync acknowledgement".to_string(),
                None => "after the last op".to_string(),
            };
            *kinds.entry(kind).or_default() += 1;
            check_point(&w, &base, &img, j, keep);
            done += 1;
        }
    }
    eprintln!(
        "torn_writes: {done} crash points in {:.1} s: {kinds:?}",
        t.elapsed().as_secs_f64()
    );
}
