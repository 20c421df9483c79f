//! The FUSE adapter's I/O stage: requests that wait for the disk do not hold the FUSE
//! workers, and everything the stage serves keeps the data path's rules (fio verify with
//! many requests in flight on one FUSE worker, over holes, copy-on-write after a snapshot,
//! and a pair's dual write).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M", "a2:256M"];

fn fio_ok(p: &TestPool, args: &[&str]) {
    let mut c = Command::new(tool("fio"));
    c.args(args).current_dir(p.root());
    let out = run(&mut c, Duration::from_secs(300));
    assert!(
        out.status.success() && !text(&out.stderr).to_lowercase().contains("verify"),
        "fio {args:?}: {}",
        describe(&out)
    );
}

/// One FUSE worker, 16 I/O threads: libaio QD32 over holes, then over extents a snapshot
/// shares (copy-on-write of many extents at once), verified; the snapshot still reads as it
/// was taken; a pair's S-VOL ends equal to its P-VOL.
#[test]
fn many_requests_in_flight_on_one_worker_keep_the_data_rules() {
    let mut p = TestPool::init(ARRAYS, "64K");
    p.daemon_args = ["--threads", "1", "--io-threads", "16"]
        .map(String::from)
        .to_vec();
    p.start();
    p.create_volume("v", "64M");
    p.create_volume("s", "64M");
    let vol = p.vol("v");
    let file = format!("--filename={}", vol.display());
    let job = |seed: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--name=qd32",
            &file,
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=32",
            "--rw=randwrite",
            "--bsrange=4k-128k",
            "--size=48M",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
        ]
        .map(String::from)
        .to_vec();
        a.push(format!("--randseed={seed}"));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // Over holes: every first write allocates.
    let a = job("11", &[]);
    fio_ok(&p, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let before = std::fs::read(&vol).unwrap();
    p.cli_ok(&["snapshot", "create", "v", "t0"]);
    // Over shared extents: copy-on-write while 32 requests are in flight.
    p.cli_ok(&["pair", "create", "v", "s"]);
    p.cli_ok(&["pair", "wait", "v", "--state", "PAIR", "--timeout", "120"]);
    let b = job("22", &["--bsrange=4k-16k"]);
    fio_ok(&p, &b.iter().map(String::as_str).collect::<Vec<_>>());
    let snap = p.mnt().join(".snapshots/v/t0");
    assert!(
        std::fs::read(&snap).unwrap() == before,
        "the snapshot changed under copy-on-write writes"
    );
    p.cli_ok(&["pair", "split", "v"]);
    p.cli_ok(&["pair", "wait", "v", "--state", "PSUS", "--timeout", "120"]);
    assert!(
        std::fs::read(&vol).unwrap() == std::fs::read(p.vol("s")).unwrap(),
        "the S-VOL differs from the P-VOL after dual writes from the I/O stage"
    );
}

/// A read that waits (a failpoint sleeps 400 ms in it) does not hold up the others: eight
/// concurrent reads on one FUSE worker finish in about two waits, not eight.
#[cfg(feature = "failpoints")]
#[test]
fn a_waiting_read_does_not_hold_the_worker() {
    use std::os::unix::fs::FileExt;
    use std::time::Instant;
    let mut p = TestPool::init(ARRAYS, "64K");
    p.daemon_args = ["--threads", "1", "--io-threads", "16"]
        .map(String::from)
        .to_vec();
    p.start_env(&[("FAILPOINTS", "fuse::serve_read::start=sleep(400)")]);
    p.create_volume("v", "16M");
    let vol = p.vol("v");
    let t0 = Instant::now();
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            let vol = vol.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&vol).unwrap();
                let mut b = vec![1u8; 4096];
                f.read_exact_at(&mut b, i << 20).unwrap();
                assert!(b.iter().all(|&x| x == 0), "a hole read as non-zero");
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let took = t0.elapsed();
    // One at a time would take 8 × 400 ms; with one FUSE worker every read goes to the
    // stage, and they wait together.
    assert!(
        took < Duration::from_millis(2400),
        "8 concurrent reads took {took:?}: they were served one at a time"
    );
}
