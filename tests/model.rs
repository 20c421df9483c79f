//! Model-based test: random operations on a pool (library level, no FUSE) checked against a
//! plain `Vec<u8>` per volume. "Reopen" drops the pool without a checkpoint and recovers it
//! from the log, as after a kill -9 of the daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fusevol::pool::{create_pool, ArraySpec, Pool, PoolSpec};
use fusevol::volume::IoError;
use proptest::prelude::*;

const ES: u64 = 64 << 10;
const NAMES: [&str; 3] = ["va", "vb", "vc"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        v: usize,
        size_kib: u64,
    },
    Delete {
        v: usize,
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
    Sync,
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3usize, 1..24u64).prop_map(|(v, s)| Op::Create { v, size_kib: s * 64 }),
        1 => (0..3usize).prop_map(|v| Op::Delete { v }),
        8 => (0..3usize, 0..1600u64, 1..300u64, any::<u8>())
            .prop_map(|(v, o, l, seed)| Op::Write { v, off: o * 1000, len: l * 700, seed }),
        2 => (0..3usize, 0..1600u64, 1..400u64).prop_map(|(v, o, l)| Op::Discard { v, off: o * 1000, len: l * 1024 }),
        1 => (0..3usize, 1..24u64).prop_map(|(v, s)| Op::Resize { v, size_kib: s * 64 }),
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

fn verify(pool: &Pool, model: &BTreeMap<String, Vec<u8>>) {
    let mut names: Vec<String> = pool.volume_list().iter().map(|v| v.name.clone()).collect();
    names.sort();
    let expect: Vec<String> = model.keys().cloned().collect();
    assert_eq!(names, expect, "volume set");
    for (name, data) in model {
        let v = pool.volume(name).unwrap();
        assert_eq!(v.size(), data.len() as u64, "size of {name}");
        let mut buf = vec![0u8; data.len()];
        let n = pool.read(&v, 0, &mut buf).unwrap();
        assert_eq!(n, data.len());
        if buf != *data {
            let at = buf.iter().zip(data).position(|(a, b)| a != b).unwrap();
            panic!("volume {name} differs from the model at byte {at}");
        }
    }
}

fn run(dir: &Path, ops: Vec<Op>) {
    let spec = PoolSpec {
        arrays: (0..3)
            .map(|i| ArraySpec {
                name: format!("a{i}"),
                size: 2 << 20,
                tier: "fast".into(),
            })
            .collect(),
        extent_size: ES,
        volumes: vec![],
    };
    create_pool(dir, &spec).unwrap();
    let mut pool: Arc<Pool> = Pool::open(dir).unwrap();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create { v, size_kib } => {
                let r = pool.create_volume(NAMES[v], size_kib << 10, None);
                if model.contains_key(NAMES[v]) {
                    assert!(r.is_err(), "duplicate create must fail");
                } else {
                    r.unwrap();
                    model.insert(NAMES[v].into(), vec![0; (size_kib << 10) as usize]);
                }
            }
            Op::Delete { v } => {
                let r = pool.delete_volume(NAMES[v]);
                assert_eq!(r.is_ok(), model.remove(NAMES[v]).is_some());
            }
            Op::Write { v, off, len, seed } => {
                let Some(data) = model.get_mut(NAMES[v]) else {
                    continue;
                };
                let vol = pool.volume(NAMES[v]).unwrap();
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
                let Some(data) = model.get_mut(NAMES[v]) else {
                    continue;
                };
                let vol = pool.volume(NAMES[v]).unwrap();
                pool.discard(&vol, off, len).unwrap();
                let end = (off + len).min(data.len() as u64);
                if off < end {
                    data[off as usize..end as usize].fill(0);
                }
            }
            Op::Resize { v, size_kib } => {
                let Some(data) = model.get_mut(NAMES[v]) else {
                    continue;
                };
                pool.resize_volume(NAMES[v], size_kib << 10).unwrap();
                data.resize((size_kib << 10) as usize, 0);
            }
            Op::Sync => pool.sync().unwrap(),
            Op::Checkpoint => pool.checkpoint().unwrap(),
            Op::Reopen => {
                drop(pool);
                pool = Pool::open(dir).unwrap();
            }
        }
        verify(&pool, &model);
    }
    drop(pool);
    let report = fusevol::meta::check_pool(dir).unwrap();
    assert!(report.is_clean(), "{report}");
    let pool = Pool::open(dir).unwrap();
    verify(&pool, &model);
    // Space accounting: every used extent is mapped by exactly one volume or waits to be freed.
    pool.sync().unwrap();
    let used: u64 = pool.array_infos().iter().map(|a| a.used).sum();
    let mapped: u64 = pool
        .volume_list()
        .iter()
        .map(|v| v.mapped_extents() * ES)
        .sum();
    assert_eq!(
        used, mapped,
        "used space equals mapped extents after a sync"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn pool_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let d = tempfile::tempdir().unwrap();
        run(&d.path().join("pool"), ops);
    }
}
