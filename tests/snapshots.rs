//! Snapshots through the mount: exact point-in-time content, read-only views, space
//! accounting, rollback, clones, an ext4 file system snapshotted while it is written, many
//! generations, and kill -9 in the middle of snapshot operations.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;

fn snap_path(p: &TestPool, vol: &str, snap: &str) -> std::path::PathBuf {
    p.mnt().join(".snapshots").join(vol).join(snap)
}

/// Write `len` bytes of pattern `seed` at `off` with O_DIRECT-free pwrite + fdatasync.
fn write_pattern(path: &Path, seed: u64, off: u64, len: usize) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let mut buf = vec![0u8; len];
    fill_pattern(seed, off, &mut buf);
    f.write_all_at(&buf, off).unwrap();
    f.sync_data().unwrap();
}

fn read_range(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

fn expect_pattern(path: &Path, seed: u64, off: u64, len: usize, what: &str) {
    let mut want = vec![0u8; len];
    fill_pattern(seed, off, &mut want);
    assert!(
        read_range(path, off, len) == want,
        "{what}: content differs at {off}+{len}"
    );
}

fn used(p: &TestPool) -> u64 {
    p.pool_info()["used"].as_u64().unwrap()
}

#[test]
fn snapshot_is_a_read_only_point_in_time_image() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "64K");
    p.create_volume("v", "64M");
    let vol = p.vol("v");
    write_pattern(&vol, 1, 0, 8 * MIB as usize);
    let info = p.cli_json(&["snapshot", "create", "v", "s1"]);
    assert_eq!(info["name"], "s1");
    let s1 = snap_path(&p, "v", "s1");
    assert_eq!(info["path"].as_str().unwrap(), s1.to_str().unwrap());
    assert_eq!(fs::metadata(&s1).unwrap().len(), 64 * MIB);
    // Overwrite part of the volume and write past the old data.
    write_pattern(&vol, 2, 4 * MIB, 8 * MIB as usize);
    expect_pattern(&s1, 1, 0, 8 * MIB as usize, "snapshot after overwrite");
    assert!(read_range(&s1, 8 * MIB, MIB as usize)
        .iter()
        .all(|&b| b == 0));
    expect_pattern(&vol, 1, 0, 4 * MIB as usize, "volume head");
    expect_pattern(&vol, 2, 4 * MIB, 8 * MIB as usize, "volume overwrite");
    // Read-only: opening for writing, truncating and punching are refused with EROFS.
    let e = OpenOptions::new().write(true).open(&s1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // Listing shows the snapshot with exclusive space (the overwritten extents).
    let list = p.cli_json(&["snapshot", "list", "v"]);
    let l = &list.as_array().unwrap()[0];
    assert_eq!(l["name"], "s1");
    assert_eq!(l["exclusive"].as_u64().unwrap(), 4 * MIB, "{list}");
    assert_eq!(l["shared"].as_u64().unwrap(), 4 * MIB, "{list}");
    // Duplicate names and bad names are refused.
    assert_eq!(
        p.cli(&["snapshot", "create", "v", "s1"]).status.code(),
        Some(1)
    );
    for bad in ["", ".", "..", "a/b"] {
        assert_eq!(
            p.cli(&["snapshot", "create", "v", bad]).status.code(),
            Some(1),
            "{bad:?}"
        );
    }
    assert_eq!(
        p.cli(&["snapshot", "create", "nope", "x"]).status.code(),
        Some(1)
    );
}

#[test]
fn delete_frees_space_and_volume_delete_needs_recursive() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "64K");
    p.create_volume("v", "64M");
    let vol = p.vol("v");
    write_pattern(&vol, 3, 0, 16 * MIB as usize);
    p.cli_ok(&["snapshot", "create", "v", "s"]);
    write_pattern(&vol, 4, 0, 16 * MIB as usize);
    p.cli_ok(&["sync"]);
    assert_eq!(used(&p), 32 * MIB, "volume and snapshot each hold 16 MiB");
    p.cli_ok(&["snapshot", "delete", "v", "s"]);
    p.cli_ok(&["sync"]);
    assert_eq!(used(&p), 16 * MIB, "the snapshot's extents are free again");
    assert!(!snap_path(&p, "v", "s").exists());
    p.cli_ok(&["snapshot", "create", "v", "s2"]);
    let out = p.cli(&["volume", "delete", "v"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(text(&out.stderr).contains("snapshot"), "{}", describe(&out));
    p.cli_ok(&["volume", "delete", "v", "--recursive"]);
    p.cli_ok(&["sync"]);
    assert_eq!(used(&p), 0);
}

#[test]
fn rollback_and_clone() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "64K");
    p.create_volume("v", "32M");
    let vol = p.vol("v");
    write_pattern(&vol, 5, 0, 4 * MIB as usize);
    p.cli_ok(&["snapshot", "create", "v", "base"]);
    write_pattern(&vol, 6, 0, 2 * MIB as usize);
    p.cli_ok(&["volume", "resize", "v", "--size", "48M"]);
    // A clone starts as the snapshot and is writable on its own.
    p.cli_ok(&["snapshot", "clone", "v", "base", "c"]);
    let c = p.vol("c");
    assert_eq!(fs::metadata(&c).unwrap().len(), 32 * MIB);
    expect_pattern(&c, 5, 0, 4 * MIB as usize, "clone");
    write_pattern(&c, 7, MIB, MIB as usize);
    expect_pattern(
        &snap_path(&p, "v", "base"),
        5,
        0,
        4 * MIB as usize,
        "snapshot after clone write",
    );
    // Rollback is refused while the volume is open, done when it is closed.
    {
        let _open = fs::File::open(&vol).unwrap();
        let out = p.cli(&["snapshot", "rollback", "v", "base"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(text(&out.stderr).contains("open"), "{}", describe(&out));
    }
    p.cli_ok(&["snapshot", "rollback", "v", "base"]);
    assert_eq!(
        fs::metadata(&vol).unwrap().len(),
        32 * MIB,
        "size comes back too"
    );
    expect_pattern(&vol, 5, 0, 4 * MIB as usize, "volume after rollback");
    expect_pattern(&c, 7, MIB, MIB as usize, "clone keeps its own write");
    p.cli_ok(&["snapshot", "delete", "v", "base"]);
    expect_pattern(&c, 5, 0, MIB as usize, "clone after its snapshot is gone");
    expect_pattern(
        &vol,
        5,
        0,
        4 * MIB as usize,
        "volume after its snapshot is gone",
    );
}

#[test]
fn many_generations() {
    let mut p = TestPool::new(&["a0:512M", "a1:512M"], "64K");
    p.set_budget(Duration::from_secs(300));
    p.create_volume("v", "16M");
    let vol = p.vol("v");
    for g in 0..100u64 {
        write_pattern(&vol, 1000 + g, (g % 16) * MIB, 64 << 10);
        p.cli_ok(&["snapshot", "create", "v", &format!("g{g:03}")]);
    }
    let list = p.cli_json(&["snapshot", "list", "v"]);
    assert_eq!(list.as_array().unwrap().len(), 100);
    // Generation g sees its own write and every earlier one not yet overwritten.
    for g in [0u64, 15, 16, 50, 99] {
        let s = snap_path(&p, "v", &format!("g{g:03}"));
        for k in g.saturating_sub(15)..=g {
            expect_pattern(
                &s,
                1000 + k,
                (k % 16) * MIB,
                64 << 10,
                &format!("g{g} write {k}"),
            );
        }
    }
    p.stop();
    p.check_clean();
}

#[test]
fn ext4_snapshot_while_writing_is_crash_consistent() {
    for t in ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"] {
        tool(t);
    }
    let p = TestPool::new(&["a0:512M", "a1:512M"], "");
    p.set_budget(Duration::from_secs(300));
    p.create_volume("fs", "256M");
    let dev = p.losetup(&p.vol("fs"), false);
    run_ok(
        std::process::Command::new(tool("mkfs.ext4")).args(["-q", "-F", &dev]),
        Duration::from_secs(120),
    );
    let dir = p.root().join("fs");
    p.mount(&dev, &dir);
    fs::write(dir.join("before.txt"), b"written before the snapshot\n").unwrap();
    run_ok(
        &mut std::process::Command::new("sync"),
        Duration::from_secs(60),
    );
    // A writer keeps creating files while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), dir.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut buf = vec![0u8; 64 << 10];
                fill_pattern(i, 0, &mut buf);
                fs::write(dir.join(format!("w{}.bin", i % 500)), &buf).unwrap();
                i += 1;
            }
            i
        })
    };
    thread::sleep(Duration::from_millis(700));
    p.cli_ok(&["snapshot", "create", "fs", "live"]);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 10, "the writer made progress ({written} files)");
    p.cli_ok(&["snapshot", "create", "fs", "after"]);
    // Change the file system after the snapshots.
    fs::remove_file(dir.join("before.txt")).unwrap();
    fs::write(dir.join("later.txt"), b"later\n").unwrap();
    p.umount(&dir);
    p.detach_loop(&dev);
    // The snapshot taken mid-write is a crash-consistent image: a writable clone of it
    // mounts (replaying the journal) and then checks clean.
    p.cli_ok(&["snapshot", "clone", "fs", "live", "fsclone"]);
    let cdev = p.losetup(&p.vol("fsclone"), false);
    let cdir = p.root().join("clone");
    p.mount(&cdev, &cdir);
    assert_eq!(
        fs::read(cdir.join("before.txt")).unwrap(),
        b"written before the snapshot\n"
    );
    assert!(!cdir.join("later.txt").exists());
    p.umount(&cdir);
    let out = run(
        std::process::Command::new(tool("e2fsck")).args(["-f", "-n", &cdev]),
        Duration::from_secs(300),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck of the clone: {}",
        describe(&out)
    );
    p.detach_loop(&cdev);
    // Rollback brings the earlier files back on the original volume.
    p.cli_ok(&["snapshot", "rollback", "fs", "after"]);
    let dev = p.losetup(&p.vol("fs"), false);
    p.mount(&dev, &dir);
    assert!(
        dir.join("before.txt").exists(),
        "rollback brings before.txt back"
    );
    assert!(
        !dir.join("later.txt").exists(),
        "rollback removes later.txt"
    );
    p.umount(&dir);
    let out = run(
        std::process::Command::new(tool("e2fsck")).args(["-f", "-n", &dev]),
        Duration::from_secs(300),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck after rollback: {}",
        describe(&out)
    );
    p.detach_loop(&dev);
}

/// kill -9 while snapshots are created, deleted, rolled back and cloned under writes; after
/// each restart every surviving snapshot still holds its image and the pool checks clean.
#[test]
fn kill9_during_snapshot_operations() {
    let mut p = TestPool::new(&["a0:1G", "a1:1G"], "64K");
    p.set_budget(Duration::from_secs(600));
    p.create_volume("v", "8M");
    let mut rng = Rng::new(0x5eed_5a95);
    // Each acknowledged snapshot: (name, generation map: MiB block → seed).
    let mut snaps: Vec<(String, Vec<u64>)> = Vec::new();
    let mut current: Vec<u64> = vec![0; 8];
    for b in 0..8u64 {
        write_pattern(&p.vol("v"), 1 + b, b * MIB, MIB as usize);
        current[b as usize] = 1 + b;
    }
    let mut seq = 100u64;
    for round in 0..5 {
        let stop = Arc::new(AtomicBool::new(false));
        let killer_after = Duration::from_millis(rng.range(200, 1500));
        let deadline = std::time::Instant::now() + killer_after;
        // Do operations until the deadline, then kill -9 in the middle of the next ones.
        let cli = p.handle();
        let vol = p.vol("v");
        let mut in_flight = Vec::new();
        let mut iterations = 0;
        while std::time::Instant::now() < deadline && iterations < 60 {
            iterations += 1;
            seq += 1;
            let b = rng.range(0, 8);
            write_pattern(&vol, seq, b * MIB, MIB as usize);
            current[b as usize] = seq;
            let name = format!("r{round}s{seq}");
            let out = cli.cli(&["snapshot", "create", "v", &name]);
            if out.status.success() {
                snaps.push((name, current.clone()));
            }
            // Keep at most 8 snapshots (each holds up to 8 MiB), deleting at random.
            if snaps.len() > 8 || (snaps.len() > 4 && rng.range(0, 3) == 0) {
                let i = rng.range(0, snaps.len() as u64) as usize;
                let (name, _) = snaps.remove(i);
                let out = cli.cli(&["snapshot", "delete", "v", &name]);
                assert!(out.status.success(), "{}", describe(&out));
            }
        }
        // Operations racing the kill: their outcome is unknown, so remember them apart.
        let racer = {
            let cli = p.handle();
            let stop = stop.clone();
            let name = format!("race{round}");
            thread::spawn(move || {
                let mut made = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 50 {
                    let n = format!("{name}-{i}");
                    if cli.cli(&["snapshot", "create", "v", &n]).status.success() {
                        made.push(n);
                    }
                    i += 1;
                }
                made
            })
        };
        thread::sleep(Duration::from_millis(rng.range(5, 60)));
        p.kill9();
        stop.store(true, Ordering::Relaxed);
        in_flight.extend(racer.join().unwrap());
        p.clear_dead_mount();
        p.check_clean();
        p.start();
        // Every acknowledged snapshot holds exactly its image.
        for (name, gens) in &snaps {
            let s = snap_path(&p, "v", name);
            for (b, &seed) in gens.iter().enumerate() {
                expect_pattern(
                    &s,
                    seed,
                    b as u64 * MIB,
                    MIB as usize,
                    &format!("{name} block {b}"),
                );
            }
        }
        // Snapshots acknowledged while the kill raced survive it and equal the volume then
        // (no write ran during the race).
        for name in &in_flight {
            let s = snap_path(&p, "v", name);
            assert!(s.exists(), "acknowledged snapshot {name} lost by kill -9");
            for (b, &seed) in current.iter().enumerate() {
                expect_pattern(&s, seed, b as u64 * MIB, MIB as usize, name);
            }
            p.cli_ok(&["snapshot", "delete", "v", name]);
        }
        for (b, &seed) in current.iter().enumerate() {
            expect_pattern(&p.vol("v"), seed, b as u64 * MIB, MIB as usize, "volume");
        }
    }
    p.stop();
    p.check_clean();
}

/// kill -9 while 4 KiB writes (each fsynced) land on extents shared with snapshots: they make
/// partial extents (sub-extent copy-on-write) that the daemon's filler completes in the
/// background, so the kill hits writers and filler at random points. After each restart the
/// pool checks clean, every acknowledged write is there (the one in flight may or may not
/// be), and every snapshot holds exactly its image.
#[test]
fn kill9_during_small_writes_after_snapshots() {
    const BLK: u64 = 4096;
    let mut p = TestPool::new(&["a0:1G", "a1:1G"], "64K");
    p.set_budget(Duration::from_secs(600));
    p.create_volume("v", "8M");
    let nblk = (8 * MIB / BLK) as usize;
    for b in 0..8u64 {
        write_pattern(&p.vol("v"), 1, b * MIB, MIB as usize);
    }
    // The pattern seed of every 4 KiB block, as acknowledged.
    let mut cur: Vec<u64> = vec![1; nblk];
    let mut snaps: Vec<(String, Vec<u64>)> = Vec::new();
    let mut rng = Rng::from_env("kill9_during_small_writes_after_snapshots");
    let image_is = |path: &Path, seeds: &[u64], maybe: Option<(usize, u64)>, what: &str| {
        let img = read_range(path, 0, (8 * MIB) as usize);
        let mut want = vec![0u8; BLK as usize];
        for (b, &seed) in seeds.iter().enumerate() {
            let got = &img[b * BLK as usize..(b + 1) * BLK as usize];
            fill_pattern(seed, b as u64 * BLK, &mut want);
            if got == want.as_slice() {
                continue;
            }
            if let Some((mb, ms)) = maybe.filter(|&(mb, _)| mb == b) {
                fill_pattern(ms, mb as u64 * BLK, &mut want);
                if got == want.as_slice() {
                    continue;
                }
            }
            panic!("{what}: 4 KiB block {b} differs");
        }
    };
    for round in 0..5u64 {
        let name = format!("g{round}");
        p.cli_ok(&["snapshot", "create", "v", &name]);
        snaps.push((name, cur.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (vol, stop, seed) = (p.vol("v"), stop.clone(), rng.next_u64());
            thread::spawn(move || {
                let mut r = Rng::new(seed);
                let mut acked: Vec<(usize, u64)> = Vec::new();
                let mut in_flight = None;
                let Ok(f) = OpenOptions::new().write(true).open(&vol) else {
                    return (acked, in_flight);
                };
                let mut buf = vec![0u8; BLK as usize];
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Mostly a few hot extents, so blocks of one partial extent are
                    // written again, before and after the filler reaches it.
                    let b = if r.range(0, 2) == 0 {
                        r.range(0, 64)
                    } else {
                        r.range(0, nblk as u64)
                    } as usize;
                    let seed = 1000 * (round + 2) + i;
                    fill_pattern(seed, b as u64 * BLK, &mut buf);
                    in_flight = Some((b, seed));
                    if f.write_all_at(&buf, b as u64 * BLK).is_err() || f.sync_data().is_err() {
                        break;
                    }
                    acked.push((b, seed));
                    in_flight = None;
                }
                (acked, in_flight)
            })
        };
        thread::sleep(Duration::from_millis(rng.range(100, 1200)));
        p.kill9();
        stop.store(true, Ordering::Relaxed);
        let (acked, in_flight) = writer.join().unwrap();
        for &(b, seed) in &acked {
            cur[b] = seed;
        }
        p.clear_dead_mount();
        p.check_clean();
        p.start();
        image_is(&p.vol("v"), &cur, in_flight, "volume after kill -9");
        if let Some((b, seed)) = in_flight {
            // Settle the block the kill raced, so the model is exact again.
            write_pattern(&p.vol("v"), seed, b as u64 * BLK, BLK as usize);
            cur[b] = seed;
        }
        for (name, seeds) in &snaps {
            image_is(&snap_path(&p, "v", name), seeds, None, name);
        }
    }
    // Let the filler finish; nothing changes for the reader.
    thread::sleep(Duration::from_millis(1500));
    image_is(&p.vol("v"), &cur, None, "volume after filling");
    p.stop();
    p.check_clean();
}
