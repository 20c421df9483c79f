//! Replication between two daemons (two pools, one remote directory), through the CLI and
//! the FUSE mounts.
//!
//! One writer thread writes stamped 4 KiB blocks to two volumes of a journal group at the
//! primary; each block holds the global index of the write that wrote it. The primary is
//! killed with SIGKILL at a random moment. Once the secondary has applied all it has, its
//! two volumes together must equal the primary's volumes after one single write index N
//! (group write-order fidelity): every block holds the last write ≤ N to it. After the
//! primary restarts, the secondary catches up and equals the primary byte for byte.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;

const BS: u64 = 4096;
const VOL_BLOCKS: u64 = 2048; // 8 MiB volumes
const MAGIC: &[u8; 8] = b"FVREPL\0\0";

fn fill(buf: &mut [u8], k: u64, vol: u64, block: u64) {
    buf[..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&k.to_le_bytes());
    buf[16..24].copy_from_slice(&vol.to_le_bytes());
    buf[24..32].copy_from_slice(&block.to_le_bytes());
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ block;
    for c in buf[32..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// The write index a block holds (0: never written); panics on a torn or foreign block.
fn stamp(buf: &[u8], vol: u64, block: u64) -> u64 {
    if buf.iter().all(|&b| b == 0) {
        return 0;
    }
    let k = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let mut want = vec![0u8; BS as usize];
    fill(&mut want, k, vol, block);
    assert!(
        buf == want.as_slice(),
        "volume {vol} block {block}: not a whole block of write {k}"
    );
    k
}

fn read_stamps(path: &Path, vol: u64) -> Vec<u64> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(data.len() as u64, VOL_BLOCKS * BS);
    data.chunks(BS as usize)
        .enumerate()
        .map(|(b, c)| stamp(c, vol, b as u64))
        .collect()
}

fn status(p: &TestPool) -> serde_json::Value {
    let v = p.cli_json(&["group", "status", "g"]);
    v.as_array().expect("status list")[0].clone()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Wait until the secondary has applied all it can see and stays there for a moment.
fn wait_settled(s: &TestPool) -> serde_json::Value {
    let t0 = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let st = status(s);
        let applied = num(&st, "applied");
        if applied != last.0 {
            last = (applied, Instant::now());
        } else if applied == num(&st, "written")
            && st["consistent"] == true
            && last.1.elapsed() > Duration::from_millis(1500)
        {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "secondary never settled: {st}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill9_primary_secondary_is_a_prefix_of_the_group_then_converges() {
    let Daemons { mut p, s, remote } = Daemons::new(2, "256M", "64K");
    p.set_budget(Duration::from_secs(400));
    s.set_budget(Duration::from_secs(400));
    let remote_s = remote.to_str().unwrap().to_string();
    for v in ["va", "vb"] {
        p.create_volume(v, &format!("{}", VOL_BLOCKS * BS));
    }
    // Some data before the group exists: it travels as base records.
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(p.vol("va"))
            .unwrap();
        let mut buf = vec![0u8; BS as usize];
        for block in 0..100 {
            fill(&mut buf, 0, 0, block);
            f.write_all_at(&buf, block * BS).unwrap();
        }
    }
    p.create_group("g", &["va", "vb"], &remote);
    s.cli_ok(&["group", "attach", "g", "--remote", &remote_s]);
    let mut rng = Rng::new(0x5eed_1234);
    // history[k-1] = (vol, block) of write k; None for a write the kill cut off before it
    // was journaled (the one in flight at the kill may or may not exist).
    let mut history: Vec<Option<(u64, u64)>> = Vec::new();
    for cycle in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(history.len() as u64));
        let plan: Vec<(u64, u64)> = (0..200_000)
            .map(|_| (rng.range(0, 2), rng.range(0, VOL_BLOCKS)))
            .collect();
        let base = history.len() as u64;
        let files = [p.vol("va"), p.vol("vb")];
        let (stop2, acked2, plan2) = (stop.clone(), acked.clone(), plan.clone());
        let h = thread::spawn(move || {
            let fs: Vec<std::fs::File> = files
                .iter()
                .map(|f| std::fs::OpenOptions::new().write(true).open(f).unwrap())
                .collect();
            let mut buf = vec![0u8; BS as usize];
            for (i, &(vol, block)) in plan2.iter().enumerate() {
                if stop2.load(Ordering::Acquire) {
                    return;
                }
                let k = base + i as u64 + 1;
                fill(&mut buf, k, vol, block);
                if fs[vol as usize].write_all_at(&buf, block * BS).is_err() {
                    return;
                }
                acked2.store(k, Ordering::Release);
            }
        });
        thread::sleep(Duration::from_millis(400 + rng.range(0, 1500)));
        p.kill9();
        stop.store(true, Ordering::Release);
        h.join().unwrap();
        let acked = acked.load(Ordering::Acquire);
        assert!(acked > base, "cycle {cycle}: the writer wrote nothing");
        // Everything the writer may have issued: acknowledged, and one in flight (its fate is
        // learnt from the primary after the restart).
        let issued = (acked + 1 - base).min(plan.len() as u64) as usize;
        history.extend(plan[..issued].iter().copied().map(Some));
        let in_flight = (issued as u64 > acked - base).then_some(acked + 1);

        let st = wait_settled(&s);
        let stamps = [read_stamps(&s.vol("va"), 0), read_stamps(&s.vol("vb"), 1)];
        let n = stamps.iter().flatten().copied().max().unwrap_or(0);
        assert!(
            n <= history.len() as u64,
            "secondary holds write {n}, never issued"
        );
        // The last write ≤ n of every block.
        let mut expect: HashMap<(u64, u64), u64> = HashMap::new();
        for (i, w) in history[..n as usize].iter().enumerate() {
            if let Some((vol, block)) = *w {
                expect.insert((vol, block), i as u64 + 1);
            }
        }
        for vol in 0..2u64 {
            for block in 0..VOL_BLOCKS {
                let got = stamps[vol as usize][block as usize];
                let want = expect.get(&(vol, block)).copied().unwrap_or(0);
                assert_eq!(
                    got, want,
                    "cycle {cycle}: secondary volume {vol} block {block} holds write {got}, but after write {n} it must hold {want} (status {st})"
                );
            }
        }
        eprintln!(
            "cycle {cycle}: {acked} writes acknowledged, secondary consistent at write {n} (applied seq {})",
            num(&st, "applied")
        );
        // Restart the primary: it redoes its journal tail, ships the rest; S converges.
        p.clear_dead_mount();
        p.start();
        let t0 = Instant::now();
        loop {
            let ps = status(&p);
            let ss = status(&s);
            if num(&ps, "acknowledged") == num(&ps, "written")
                && num(&ss, "applied") == num(&ps, "written")
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no catch-up: {ps}\n{ss}"
            );
            thread::sleep(Duration::from_millis(100));
        }
        for v in ["va", "vb"] {
            let a = std::fs::read(p.vol(v)).unwrap();
            let b = std::fs::read(s.vol(v)).unwrap();
            assert!(a == b, "cycle {cycle}: {v} differs after catch-up");
        }
        // The primary, having redone its journal, holds the in-flight write iff it was
        // journaled; no later write touched any block since the kill.
        if let Some(k) = in_flight {
            let (vol, block) = history[k as usize - 1].unwrap();
            let names = ["va", "vb"];
            let got = read_stamps(&p.vol(names[vol as usize]), vol)[block as usize];
            if got != k {
                assert!(
                    got < k,
                    "cycle {cycle}: block holds write {got}, never issued"
                );
                history[k as usize - 1] = None;
                eprintln!("cycle {cycle}: the write in flight at the kill ({k}) was not journaled");
            }
        }
    }
    // The secondary's volumes are read-only while attached.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(s.vol("va"))
        .and_then(|f| f.write_all_at(b"x", 0));
    assert!(err.is_err(), "a write to the secondary must fail");
    p.stop();
    p.check_clean();
}
