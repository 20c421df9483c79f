//! Journaled writes acknowledged before their data write (storage::destage), with the data
//! write held back by the failpoint `storage::destage::before_data`: a read after the
//! acknowledgement sees the new data; a crash before the data write loses nothing (redo from
//! the journal).
#![cfg(feature = "failpoints")]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M"];

/// A pool whose volume `v` (8 MiB, every extent written) is in journal group `g`.
fn grouped_pool(failpoint_ms: u64) -> (TestPool, std::path::PathBuf) {
    let mut p = TestPool::init(ARRAYS, "64K");
    p.start_env(&[(
        "FAILPOINTS",
        &format!("storage::destage::before_data=sleep({failpoint_ms})"),
    )]);
    p.create_volume("v", "8M");
    // Written before the group exists: not journaled, so the failpoint is not reached, and
    // afterwards every extent is owned (the writes below are overwrites in place).
    let mut c = Command::new(tool("fio"));
    c.args([
        "--name=fill",
        "--rw=write",
        "--bs=1M",
        "--direct=1",
        "--size=8M",
    ])
    .arg(format!("--filename={}", p.vol("v").display()));
    let out = run(&mut c, Duration::from_secs(60));
    assert!(out.status.success(), "fill: {}", describe(&out));
    let remote = p.root().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    p.create_group("g", &["v"], &remote);
    (p, remote)
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..65536u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn a_read_after_an_acknowledged_write_waits_for_its_data() {
    let (p, _remote) = grouped_pool(1500);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.vol("v"))
        .unwrap();
    let data = pattern(7);
    let t0 = Instant::now();
    f.write_all_at(&data, 3 << 20).unwrap();
    let acked = t0.elapsed();
    // Acknowledged from the journal, before the (held back) data write.
    assert!(
        acked < Duration::from_millis(1200),
        "the journaled overwrite took {acked:?}: it was not acknowledged before its data write"
    );
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 3 << 20).unwrap();
    assert!(
        back == data,
        "a read after the acknowledged write did not see it"
    );
    // A read that only overlaps the range waits as well.
    let mut part = vec![0u8; 8192];
    f.read_exact_at(&mut part, (3 << 20) + 60000).unwrap();
    assert_eq!(&part[..5536], &data[60000..]);
    // fsync after it covers it.
    f.sync_all().unwrap();
}

#[test]
fn a_crash_before_the_data_write_is_redone_from_the_journal() {
    let (mut p, _remote) = grouped_pool(600_000);
    let f = OpenOptions::new().write(true).open(p.vol("v")).unwrap();
    let data = pattern(9);
    f.write_all_at(&data, 5 << 20).unwrap();
    drop(f);
    p.kill9();
    p.clear_dead_mount();
    p.start();
    let mut back = vec![0u8; data.len()];
    let f = OpenOptions::new().read(true).open(p.vol("v")).unwrap();
    f.read_exact_at(&mut back, 5 << 20).unwrap();
    assert!(
        back == data,
        "an acknowledged journaled write was lost by a crash before its data write"
    );
}
