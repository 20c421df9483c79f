//! Split mirrors through the mount and the CLI: lifecycle with content checks at every
//! transition, quick split under writes, and kill -9 during copy, resync and restore.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const ARRAYS: &[&str] = &[
    "p0:256M:fast",
    "p1:256M:fast",
    "b0:256M:backup",
    "b1:256M:backup",
];

fn write_pattern(path: &Path, seed: u64, off: u64, len: usize) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let mut buf = vec![0u8; len];
    fill_pattern(seed, off, &mut buf);
    f.write_all_at(&buf, off).unwrap();
    f.sync_data().unwrap();
}

fn same_files(a: &Path, b: &Path, len: u64, what: &str) {
    let (fa, fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let mut off = 0;
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    while off < len {
        let n = (len - off).min(MIB) as usize;
        fa.read_exact_at(&mut ba[..n], off).unwrap();
        fb.read_exact_at(&mut bb[..n], off).unwrap();
        if ba[..n] != bb[..n] {
            let at = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{what}: {} and {} differ at byte {}",
                a.display(),
                b.display(),
                off + at as u64
            );
        }
        off += n as u64;
    }
}

fn state(p: &TestPool, pvol: &str) -> String {
    let v = p.cli_json(&["pair", "status", pvol]);
    v[0]["state"].as_str().unwrap().to_string()
}

fn wait_for(p: &TestPool, pvol: &str, st: &str) {
    let out = p.cli(&["pair", "wait", pvol, "--state", st, "--timeout", "120"]);
    assert!(
        out.status.success(),
        "pair wait {pvol} {st}: {}",
        describe(&out)
    );
}

#[test]
fn lifecycle_with_content_checks() {
    let p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(300));
    p.cli_ok(&["volume", "create", "db", "--size", "64M", "--tier", "fast"]);
    let (pv, sv) = (p.vol("db"), p.vol("db-copy"));
    for i in 0..16u64 {
        write_pattern(&pv, 100 + i, i * 4 * MIB, MIB as usize);
    }
    let info = p.cli_json(&[
        "pair",
        "create",
        "db",
        "db-copy",
        "--create-svol",
        "--svol-tier",
        "backup",
        "--wait",
    ]);
    assert_eq!(info["state"], "PAIR", "{info}");
    let st = p.cli_json(&["pair", "status", "db"]);
    assert_eq!(st[0]["separate_arrays"], true, "{st}");
    assert_eq!(st[0]["progress"].as_f64(), Some(100.0));
    same_files(&pv, &sv, 64 * MIB, "after the initial copy");
    // The S-VOL is read-only while paired.
    let e = OpenOptions::new()
        .write(true)
        .open(&sv)
        .unwrap()
        .write_all_at(b"x", 0)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // Dual writes in PAIR.
    write_pattern(&pv, 200, 3 * MIB, 2 * MIB as usize);
    same_files(&pv, &sv, 64 * MIB, "dual write in PAIR");

    // Split: the S-VOL holds the split image and becomes writable; both sides change.
    p.cli_ok(&["pair", "split", "db"]);
    assert_eq!(state(&p, "db"), "PSUS");
    let img = fs::read(&sv).unwrap();
    write_pattern(&pv, 300, 10 * MIB, MIB as usize);
    write_pattern(&sv, 301, 20 * MIB, MIB as usize);
    assert_eq!(
        fs::read(&sv).unwrap()[..10 * MIB as usize],
        img[..10 * MIB as usize]
    );
    let st = p.cli_json(&["pair", "status", "db"]);
    assert_eq!(st[0]["diff_bytes"].as_u64(), Some(2 * MIB), "{st}");

    // Resync P→S.
    p.cli_ok(&["pair", "resync", "db", "--wait"]);
    assert_eq!(state(&p, "db"), "PAIR");
    same_files(&pv, &sv, 64 * MIB, "after resync");

    // Split, keep the S image, change P, restore S→P.
    p.cli_ok(&["pair", "split", "db"]);
    let s_img = fs::read(&sv).unwrap();
    write_pattern(&pv, 400, 0, 4 * MIB as usize);
    p.cli_ok(&["pair", "resync", "db", "--restore", "--wait"]);
    assert!(
        fs::read(&pv).unwrap() == s_img,
        "P after restore equals the S image"
    );
    same_files(&pv, &sv, 64 * MIB, "after restore");

    // Volumes in a pair cannot be deleted or resized; pair delete keeps both.
    assert_eq!(p.cli(&["volume", "delete", "db"]).status.code(), Some(1));
    assert_eq!(
        p.cli(&["volume", "resize", "db", "--size", "128M"])
            .status
            .code(),
        Some(1)
    );
    p.cli_ok(&["pair", "delete", "db"]);
    assert!(p
        .cli_json(&["pair", "status"])
        .as_array()
        .unwrap()
        .is_empty());
    same_files(&pv, &sv, 64 * MIB, "after pair delete");
    write_pattern(&sv, 500, 0, 4096);
}

#[test]
fn pair_wait_times_out() {
    let p = TestPool::new(ARRAYS, "256K");
    p.cli_ok(&["volume", "create", "v", "--size", "32M", "--tier", "fast"]);
    write_pattern(&p.vol("v"), 1, 0, 8 * MIB as usize);
    p.cli_ok(&[
        "pair",
        "create",
        "v",
        "s",
        "--create-svol",
        "--svol-tier",
        "backup",
        "--wait",
    ]);
    let t = Instant::now();
    let out = p.cli(&["pair", "wait", "v", "--state", "PSUS", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// Quick split while a writer runs: every block of the S-VOL holds a generation that was
/// written before the split returned, and at least the one acknowledged before it started.
#[test]
fn quick_split_under_writes() {
    let p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(300));
    p.cli_ok(&["volume", "create", "v", "--size", "64M", "--tier", "fast"]);
    const BLOCKS: u64 = 64;
    for b in 0..BLOCKS {
        write_pattern(&p.vol("v"), b << 32, b * MIB, 4096);
    }
    // A slow copy: the split lands in the middle of it.
    p.cli_ok(&[
        "pair",
        "create",
        "v",
        "s",
        "--create-svol",
        "--svol-tier",
        "backup",
        "--rate",
        "2M",
    ]);
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; BLOCKS as usize]));
    let started: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; BLOCKS as usize]));
    let stop = Arc::new(AtomicBool::new(false));
    let gen = Arc::new(AtomicU64::new(1));
    let writer = {
        let (vol, acked, started, stop, gen) = (
            p.vol("v"),
            acked.clone(),
            started.clone(),
            stop.clone(),
            gen.clone(),
        );
        thread::spawn(move || {
            let mut rng = Rng::new(7);
            while !stop.load(Ordering::Relaxed) {
                let b = rng.range(0, BLOCKS);
                let g = gen.fetch_add(1, Ordering::SeqCst);
                started.lock().unwrap()[b as usize] = g;
                write_pattern(&vol, (b << 32) | g, b * MIB, 4096);
                acked.lock().unwrap()[b as usize] = g;
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let before: Vec<u64> = acked.lock().unwrap().clone();
    p.cli_ok(&["pair", "split", "v", "--quick"]);
    let after: Vec<u64> = started.lock().unwrap().clone();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(state(&p, "v"), "PSUS");
    let check = |what: &str| {
        let f = fs::File::open(p.vol("s")).unwrap();
        for b in 0..BLOCKS {
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, b * MIB).unwrap();
            let g = (0..=after[b as usize].max(before[b as usize]))
                .rev()
                .find(|&g| {
                    let mut want = vec![0u8; 4096];
                    fill_pattern((b << 32) | g, b * MIB, &mut want);
                    want == buf
                });
            let g = g.unwrap_or_else(|| {
                panic!("{what}: S block {b} holds no generation written before the split")
            });
            assert!(g >= before[b as usize], "{what}: S block {b} has generation {g}, older than {} acknowledged before the split", before[b as usize]);
        }
    };
    check("during the quick split copy");
    let out = p.cli(&["pair", "status", "v", "--json"]);
    assert!(out.status.success());
    // Let the copy finish at full speed, then check again.
    p.cli_ok(&["pair", "resync", "v", "--rate", "1G", "--wait"]);
    same_files(&p.vol("v"), &p.vol("s"), 64 * MIB, "after resync");
}

/// kill -9 during COPY, COPY(RS) and COPY(RS-R): after a restart the copy resumes and the
/// final content is right.
#[test]
fn kill9_during_copy_resync_and_restore() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(600));
    p.cli_ok(&["volume", "create", "v", "--size", "64M", "--tier", "fast"]);
    let pv = p.vol("v");
    for i in 0..32u64 {
        write_pattern(&pv, 10 + i, i * 2 * MIB, MIB as usize);
    }
    // COPY, killed in the middle.
    p.cli_ok(&[
        "pair",
        "create",
        "v",
        "s",
        "--create-svol",
        "--svol-tier",
        "backup",
        "--rate",
        "8M",
    ]);
    thread::sleep(Duration::from_millis(1500));
    write_pattern(&pv, 77, 5 * MIB, MIB as usize);
    assert_eq!(state(&p, "v"), "COPY");
    p.kill9();
    p.clear_dead_mount();
    p.check_clean();
    p.start();
    let st = state(&p, "v");
    assert!(st == "COPY" || st == "PAIR", "after restart: {st}");
    wait_for(&p, "v", "PAIR");
    same_files(
        &pv,
        &p.vol("s"),
        64 * MIB,
        "initial copy resumed after kill -9",
    );

    // COPY(RS), killed in the middle.
    p.cli_ok(&["pair", "split", "v"]);
    for i in 0..32u64 {
        write_pattern(&pv, 1000 + i, i * 2 * MIB + 4096, 512 << 10);
    }
    let out = p.cli(&["pair", "resync", "v", "--rate", "4M"]);
    assert!(out.status.success(), "{}", describe(&out));
    thread::sleep(Duration::from_millis(800));
    p.kill9();
    p.clear_dead_mount();
    p.check_clean();
    p.start();
    wait_for(&p, "v", "PAIR");
    same_files(&pv, &p.vol("s"), 64 * MIB, "resync resumed after kill -9");

    // COPY(RS-R), killed in the middle: P comes back to the S image.
    p.cli_ok(&["pair", "split", "v"]);
    let s_img = fs::read(p.vol("s")).unwrap();
    for i in 0..32u64 {
        write_pattern(&pv, 2000 + i, i * 2 * MIB, MIB as usize);
    }
    p.cli_ok(&["pair", "resync", "v", "--restore", "--rate", "4M"]);
    assert!(
        fs::read(&pv).unwrap() == s_img,
        "P reads show the S image at once"
    );
    thread::sleep(Duration::from_millis(800));
    p.kill9();
    p.clear_dead_mount();
    p.check_clean();
    p.start();
    assert!(
        fs::read(&pv).unwrap() == s_img,
        "P shows the S image after the restart"
    );
    wait_for(&p, "v", "PAIR");
    assert!(
        fs::read(&pv).unwrap() == s_img,
        "P after the restore completes"
    );
    same_files(&pv, &p.vol("s"), 64 * MIB, "restore resumed after kill -9");
    p.stop();
    p.check_clean();
}
