//! Model-based test: random operations on a pool (library level, no FUSE) checked against
//! plain `Vec<u8>` images of every volume and snapshot. "Reopen" drops the pool without a
//! checkpoint and recovers it from the log, as after a kill -9 of the daemon.

mod common;
use common::images::storage_at;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fusevol::daemon::status;
use fusevol::storage::Storage;
use fusevol::volume::IoError;
use proptest::prelude::*;

const ES: u64 = 64 << 10;
const NAMES: [&str; 4] = ["va", "vb", "vc", "vd"];
const SNAPS: [&str; 3] = ["s1", "s2", "s3"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        v: usize,
        size_kib: u64,
    },
    Delete {
        v: usize,
        recursive: bool,
    },
    Write {
        v: usize,
        off: u64,
        len: u64,
        seed: u8,
    },
    Discard {
        v: usize,
        off: u64,
        len: u64,
    },
    Resize {
        v: usize,
        size_kib: u64,
    },
    Snap {
        v: usize,
        s: usize,
    },
    SnapDelete {
        v: usize,
        s: usize,
    },
    Rollback {
        v: usize,
        s: usize,
    },
    Clone {
        v: usize,
        s: usize,
        to: usize,
    },
    /// One synchronous step of the partial-extent filler (up to `n` extents).
    Fill {
        n: usize,
    },
    Sync,
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..4usize, 1..24u64).prop_map(|(v, s)| Op::Create { v, size_kib: s * 64 }),
        1 => (0..4usize, any::<bool>()).prop_map(|(v, recursive)| Op::Delete { v, recursive }),
        10 => (0..4usize, 0..1600u64, 1..300u64, any::<u8>())
            .prop_map(|(v, o, l, seed)| Op::Write { v, off: o * 1000, len: l * 700, seed }),
        // Small writes into the first extents, block-aligned or not: sub-extent
        // copy-on-write, partial extents written again, snapshotted and written again.
        6 => (0..4usize, 0..32u64, 1..4u64, any::<u8>())
            .prop_map(|(v, o, l, seed)| Op::Write { v, off: o * 4096, len: l * 4096, seed }),
        3 => (0..4usize, 0..512u64, 1..20u64, any::<u8>())
            .prop_map(|(v, o, l, seed)| Op::Write { v, off: o * 509, len: l * 300, seed }),
        2 => (0..4usize, 0..1600u64, 1..400u64).prop_map(|(v, o, l)| Op::Discard { v, off: o * 1000, len: l * 1024 }),
        1 => (0..4usize, 1..24u64).prop_map(|(v, s)| Op::Resize { v, size_kib: s * 64 }),
        5 => (0..4usize, 0..3usize).prop_map(|(v, s)| Op::Snap { v, s }),
        2 => (0..4usize, 0..3usize).prop_map(|(v, s)| Op::SnapDelete { v, s }),
        1 => (0..4usize, 0..3usize).prop_map(|(v, s)| Op::Rollback { v, s }),
        1 => (0..4usize, 0..3usize, 0..4usize).prop_map(|(v, s, to)| Op::Clone { v, s, to }),
        2 => (0..4usize).prop_map(|n| Op::Fill { n }),
        1 => Just(Op::Sync),
        1 => Just(Op::Checkpoint),
        2 => Just(Op::Reopen),
    ]
}

fn pattern(len: usize, seed: u8, off: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add(((off as usize + i) / 251) as u8) | 1)
        .collect()
}

#[derive(Default)]
struct Model {
    vols: BTreeMap<String, Vec<u8>>,
    /// (volume, snapshot) → image
    snaps: BTreeMap<(String, String), Vec<u8>>,
}

fn verify(pool: &Storage, m: &Model) {
    let mut names: Vec<String> = pool
        .volumes
        .volume_list()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        m.vols.keys().cloned().collect::<Vec<_>>(),
        "volume set"
    );
    for (name, data) in &m.vols {
        let v = pool.volumes.volume(name).unwrap();
        assert_eq!(v.size(), data.len() as u64, "size of {name}");
        let mut buf = vec![0u8; data.len()];
        assert_eq!(pool.read(&v, 0, &mut buf).unwrap(), data.len());
        if buf != *data {
            let at = buf.iter().zip(data).position(|(a, b)| a != b).unwrap();
            panic!("volume {name} differs from the model at byte {at}");
        }
    }
    let listed = status::snapshot_infos(pool, None, "/m").unwrap();
    assert_eq!(listed.len(), m.snaps.len(), "snapshot count");
    for ((vname, sname), data) in &m.snaps {
        let s = pool.snapshots.snapshot(vname, sname).unwrap();
        assert_eq!(s.size, data.len() as u64);
        let mut buf = vec![0u8; data.len()];
        pool.snapshots.read_snapshot(&s, 0, &mut buf).unwrap();
        if buf != *data {
            let at = buf.iter().zip(data).position(|(a, b)| a != b).unwrap();
            panic!("snapshot {vname}/{sname} differs from the model at byte {at}");
        }
    }
}

fn run(dir: &Path, ops: Vec<Op>) {
    let mut pool: Arc<Storage> = storage_at(dir, ES, 2 << 20, 3);
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Create { v, size_kib } => {
                let r = pool.volumes.create_volume(NAMES[v], size_kib << 10, None);
                if m.vols.contains_key(NAMES[v]) {
                    assert!(r.is_err(), "duplicate create must fail");
                } else {
                    r.unwrap();
                    m.vols
                        .insert(NAMES[v].into(), vec![0; (size_kib << 10) as usize]);
                }
            }
            Op::Delete { v, recursive } => {
                let has_snaps = m.snaps.keys().any(|(vn, _)| vn == NAMES[v]);
                let r = pool.delete_volume(NAMES[v], recursive);
                if !m.vols.contains_key(NAMES[v]) || (has_snaps && !recursive) {
                    assert!(r.is_err());
                } else {
                    r.unwrap();
                    m.vols.remove(NAMES[v]);
                    m.snaps.retain(|(vn, _), _| vn != NAMES[v]);
                }
            }
            Op::Write { v, off, len, seed } => {
                let Some(data) = m.vols.get_mut(NAMES[v]) else {
                    continue;
                };
                let vol = pool.volumes.volume(NAMES[v]).unwrap();
                let buf = pattern(len as usize, seed, off);
                match pool.write(&vol, off, &buf) {
                    Ok(n) => {
                        assert!(off < data.len() as u64);
                        assert_eq!(n as u64, len.min(data.len() as u64 - off));
                        data[off as usize..off as usize + n].copy_from_slice(&buf[..n]);
                    }
                    Err(IoError::BeyondEnd { .. }) => assert!(off >= data.len() as u64),
                    // All-or-nothing: a write that cannot get extents writes nothing.
                    Err(IoError::NoSpace { .. }) => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
            Op::Discard { v, off, len } => {
                let Some(data) = m.vols.get_mut(NAMES[v]) else {
                    continue;
                };
                let vol = pool.volumes.volume(NAMES[v]).unwrap();
                match pool.discard(&vol, off, len) {
                    Ok(()) => {
                        let end = (off + len).min(data.len() as u64);
                        if off < end {
                            data[off as usize..end as usize].fill(0);
                        }
                    }
                    // Zeroing part of a shared extent needs a new one: the pool may be full.
                    Err(IoError::NoSpace { .. }) => {}
                    Err(e) => panic!("discard: {e}"),
                }
            }
            Op::Resize { v, size_kib } => {
                let Some(data) = m.vols.get_mut(NAMES[v]) else {
                    continue;
                };
                match pool.resize_volume(NAMES[v], size_kib << 10, true) {
                    Ok(_) => data.resize((size_kib << 10) as usize, 0),
                    Err(e) => assert!(e.to_string().contains("pool full"), "resize: {e}"),
                }
            }
            Op::Snap { v, s } => {
                let r = pool.snapshots.create_snapshot(NAMES[v], SNAPS[s]);
                let key = (NAMES[v].to_string(), SNAPS[s].to_string());
                match m.vols.get(NAMES[v]) {
                    Some(img) if !m.snaps.contains_key(&key) => {
                        r.unwrap();
                        m.snaps.insert(key, img.clone());
                    }
                    _ => assert!(r.is_err()),
                }
            }
            Op::SnapDelete { v, s } => {
                let key = (NAMES[v].to_string(), SNAPS[s].to_string());
                let r = pool.snapshots.delete_snapshot(NAMES[v], SNAPS[s]);
                assert_eq!(r.is_ok(), m.snaps.remove(&key).is_some());
            }
            Op::Rollback { v, s } => {
                let key = (NAMES[v].to_string(), SNAPS[s].to_string());
                let r = pool.rollback_snapshot(NAMES[v], SNAPS[s]);
                match m.snaps.get(&key) {
                    Some(img) => {
                        r.unwrap();
                        m.vols.insert(NAMES[v].into(), img.clone());
                    }
                    None => assert!(r.is_err()),
                }
            }
            Op::Clone { v, s, to } => {
                let key = (NAMES[v].to_string(), SNAPS[s].to_string());
                let r = pool.snapshots.clone_snapshot(NAMES[v], SNAPS[s], NAMES[to]);
                match m.snaps.get(&key) {
                    Some(img) if !m.vols.contains_key(NAMES[to]) => {
                        r.unwrap();
                        m.vols.insert(NAMES[to].into(), img.clone());
                    }
                    _ => assert!(r.is_err()),
                }
            }
            Op::Fill { n } => {
                let before = pool.pool.partial_extents();
                let done = pool.pool.fill_step(n).unwrap();
                assert!(done <= n.min(before));
                assert_eq!(pool.pool.partial_extents(), before - done);
            }
            Op::Sync => pool.sync().unwrap(),
            Op::Checkpoint => pool.checkpoint().unwrap(),
            Op::Reopen => {
                drop(pool);
                pool = Storage::open(dir).unwrap();
            }
        }
        verify(&pool, &m);
    }
    let partial = pool.pool.partial_extents() as u64;
    drop(pool);
    let report = fusevol::pool::check_pool(dir).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.partial_extents, partial, "{report}");
    let pool = Storage::open(dir).unwrap();
    verify(&pool, &m);
    // The filler completes every partial extent; nothing changes for the reader.
    while pool.pool.fill_step(3).unwrap() > 0 {}
    assert_eq!(pool.pool.partial_extents(), 0);
    verify(&pool, &m);
    // Space accounting: after deleting every snapshot and volume and a sync, nothing is used.
    for (v, s) in m.snaps.keys() {
        pool.snapshots.delete_snapshot(v, s).unwrap();
    }
    for v in m.vols.keys() {
        pool.delete_volume(v, false).unwrap();
    }
    pool.sync().unwrap();
    let used: u64 = status::array_infos(&pool).iter().map(|a| a.used).sum();
    assert_eq!(used, 0, "every extent is free again");
    drop(pool);
    let r = fusevol::pool::check_pool(dir).unwrap();
    assert_eq!(
        r.free_extents_with_data, 0,
        "freed extents were punched: {r}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, .. ProptestConfig::default() })]
    #[test]
    fn pool_matches_model(ops in proptest::collection::vec(op(), 1..70)) {
        let d = tempfile::tempdir().unwrap();
        run(&d.path().join("pool"), ops);
    }
}

/// Sub-extent copy-on-write, step by step: a 4 KiB write after a snapshot leaves a partial
/// extent that reads through to the snapshot's, survives a reopen (no checkpoint) and a
/// checkpoint, and the filler completes it without changing any image.
#[test]
fn partial_extent_life_cycle() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pool");
    let pool = storage_at(&dir, ES, 4 << 20, 1);
    let (v, _) = pool.volumes.create_volume("v", 4 * ES, None).unwrap();
    let base = pattern((4 * ES) as usize, 3, 0);
    pool.write(&v, 0, &base).unwrap();
    pool.snapshots.create_snapshot("v", "s").unwrap();
    let mut img = base.clone();
    let new = pattern(8192, 77, 0);
    pool.write(&v, ES + 8192, &new[..4096]).unwrap();
    img[(ES + 8192) as usize..(ES + 12288) as usize].copy_from_slice(&new[..4096]);
    // Unaligned, inside another block of the same extent: completed from the snapshot's block.
    pool.write(&v, ES + 5000, &new[..100]).unwrap();
    img[(ES + 5000) as usize..(ES + 5100) as usize].copy_from_slice(&new[..100]);
    assert_eq!(pool.pool.partial_extents(), 1);
    let check = |pool: &Storage, img: &[u8]| {
        let v = pool.volumes.volume("v").unwrap();
        let mut b = vec![0u8; img.len()];
        pool.read(&v, 0, &mut b).unwrap();
        assert!(b == img, "volume image");
        let s = pool.snapshots.snapshot("v", "s").unwrap();
        pool.snapshots.read_snapshot(&s, 0, &mut b).unwrap();
        assert!(b == base, "snapshot image");
    };
    check(&pool, &img);
    drop(pool);
    let pool = Storage::open(&dir).unwrap();
    assert_eq!(
        pool.pool.partial_extents(),
        1,
        "partial state is in the log"
    );
    check(&pool, &img);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(r.is_clean() && r.partial_extents == 1, "{r}");
    // A snapshot of the volume while the extent is partial, then a write to it (a CoW of a
    // partial extent: the new one carries the valid blocks over and reads from the source).
    pool.snapshots.create_snapshot("v", "t").unwrap();
    let timg = img.clone();
    pool.write(&v_of(&pool), ES + 40000, &new[..5000]).unwrap();
    img[(ES + 40000) as usize..(ES + 45000) as usize].copy_from_slice(&new[..5000]);
    assert_eq!(pool.pool.partial_extents(), 2);
    check(&pool, &img);
    pool.checkpoint().unwrap();
    drop(pool);
    let pool = Storage::open(&dir).unwrap();
    assert_eq!(
        pool.pool.partial_extents(),
        2,
        "partial state is in the checkpoint"
    );
    check(&pool, &img);
    let t = pool.snapshots.snapshot("v", "t").unwrap();
    let mut b = vec![0u8; img.len()];
    pool.snapshots.read_snapshot(&t, 0, &mut b).unwrap();
    assert!(b == timg);
    assert_eq!(pool.pool.fill_step(10).unwrap(), 2);
    assert_eq!(pool.pool.partial_extents(), 0);
    check(&pool, &img);
    pool.snapshots.delete_snapshot("v", "s").unwrap();
    pool.snapshots.delete_snapshot("v", "t").unwrap();
    pool.sync().unwrap();
    let used: u64 = status::array_infos(&pool).iter().map(|a| a.used).sum();
    assert_eq!(used, 4 * ES, "the sources went back to the free list");
    drop(pool);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(r.is_clean() && r.free_extents_with_data == 0, "{r}");
}

fn v_of(pool: &Storage) -> Arc<fusevol::volume::Volume> {
    pool.volumes.volume("v").unwrap()
}

/// `check` (and open) verify the back-references of partial extents: a source that does not
/// exist, and a source mapped by an unrelated volume, are reported.
#[test]
fn check_reports_bad_partial_back_references() {
    use fusevol::format::{MetaRecord, PartialRec, Phys};
    for case in ["missing", "unrelated"] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pool");
        let pool = storage_at(&dir, ES, 4 << 20, 1);
        for name in ["a", "b"] {
            let (v, _) = pool.volumes.create_volume(name, 2 * ES, None).unwrap();
            pool.write(&v, 0, &vec![1u8; (2 * ES) as usize]).unwrap();
        }
        pool.sync().unwrap();
        drop(pool);
        let r = fusevol::meta::recover(&dir).unwrap();
        let st = &r.state;
        let a = st.volumes.iter().find(|v| v.name == "a").unwrap();
        let b = st.volumes.iter().find(|v| v.name == "b").unwrap();
        let src = match case {
            "missing" => Phys {
                array: st.arrays[0].id,
                index: 1 << 20,
            },
            _ => b.table.get(0).unwrap(),
        };
        let n = Phys {
            array: st.arrays[0].id,
            index: 50,
        };
        let mut log =
            fusevol::meta::MetaLog::open(&dir, st.pool_id, st.epoch, r.log_valid_len).unwrap();
        log.append(&MetaRecord::MapSetPartial {
            volume: a.id,
            entries: vec![(1, n.pack())],
            partials: vec![PartialRec {
                ext: n.pack(),
                src: src.pack(),
                valid: vec![1],
            }],
        })
        .unwrap();
        drop(log);
        let rep = fusevol::pool::check_pool(&dir).unwrap();
        let want = if case == "missing" {
            "does not exist"
        } else {
            "unrelated"
        };
        assert!(
            !rep.is_clean() && rep.problems.iter().any(|p| p.contains(want)),
            "{case}: {rep}"
        );
    }
}

/// Writers, the filler and snapshots at once: three threads write (block-aligned or not) to
/// their own 4 KiB blocks of one volume, a fourth runs filler steps, a fifth takes snapshots.
/// The volume ends with every thread's last bytes (the filler never copied a source block
/// over a newer one), and every block of every snapshot is one of the contents that block had.
#[test]
fn writers_filler_and_snapshots_race() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const BLK: usize = 4096;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pool");
    let pool = storage_at(&dir, ES, 16 << 20, 2);
    let size = 32 * ES as usize;
    let nblk = size / BLK;
    let (v, _) = pool.volumes.create_volume("v", size as u64, None).unwrap();
    let init = pattern(size, 1, 0);
    pool.write(&v, 0, &init).unwrap();
    // Every content each block had, in order.
    let history: Vec<Mutex<Vec<Vec<u8>>>> = (0..nblk)
        .map(|b| Mutex::new(vec![init[b * BLK..(b + 1) * BLK].to_vec()]))
        .collect();
    let stop = AtomicBool::new(false);
    let snaps: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..3usize)
            .map(|t| {
                let (pool, v, history) = (&pool, &v, &history);
                s.spawn(move || {
                    let mut x = 0x1234_5678u64 + t as u64;
                    let mut rnd = |n: u64| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % n
                    };
                    for i in 0..600u64 {
                        let b = (rnd((nblk / 3) as u64) as usize) * 3 + t;
                        let (off, len) = if rnd(3) == 0 {
                            let o = rnd(BLK as u64 - 1);
                            (o, 1 + rnd(BLK as u64 - o))
                        } else {
                            (0, BLK as u64)
                        };
                        let data = pattern(len as usize, (i as u8) ^ (t as u8 * 85), off);
                        let at = (b * BLK) as u64 + off;
                        // Only this thread writes block b: its history is exact.
                        let mut h = history[b].lock().unwrap();
                        pool.write(v, at, &data).unwrap();
                        let mut next = h.last().unwrap().clone();
                        next[off as usize..(off + len) as usize].copy_from_slice(&data);
                        h.push(next);
                    }
                })
            })
            .collect();
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                pool.pool.fill_step(2).unwrap();
            }
        });
        s.spawn(|| {
            for k in 0..12 {
                std::thread::sleep(std::time::Duration::from_millis(3));
                let name = format!("s{k}");
                pool.snapshots.create_snapshot("v", &name).unwrap();
                snaps.lock().unwrap().push(name);
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let check = |pool: &Storage| {
        let v = pool.volumes.volume("v").unwrap();
        let mut img = vec![0u8; size];
        pool.read(&v, 0, &mut img).unwrap();
        for b in 0..nblk {
            let h = history[b].lock().unwrap();
            assert!(
                img[b * BLK..(b + 1) * BLK] == h.last().unwrap()[..],
                "volume block {b} is not its last write"
            );
        }
        for name in snaps.lock().unwrap().iter() {
            let s = pool.snapshots.snapshot("v", name).unwrap();
            pool.snapshots.read_snapshot(&s, 0, &mut img).unwrap();
            for b in 0..nblk {
                let h = history[b].lock().unwrap();
                assert!(
                    h.iter().any(|c| img[b * BLK..(b + 1) * BLK] == c[..]),
                    "snapshot {name} block {b} never had this content"
                );
            }
        }
    };
    check(&pool);
    drop(pool);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(r.is_clean(), "{r}");
    let pool = Storage::open(&dir).unwrap();
    check(&pool);
    while pool.pool.fill_step(8).unwrap() > 0 {}
    check(&pool);
}
