//! The volume file with ordinary tools: dd, truncate, fallocate; holes, end of volume,
//! thin provisioning and a full pool.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M", "a2:256M"];
const DD_TIMEOUT: Duration = Duration::from_secs(180);

fn dd(args: &[String]) -> std::process::Output {
    let mut c = Command::new(tool("dd"));
    c.args(args);
    run(&mut c, DD_TIMEOUT)
}

fn dd_ok(args: &[String]) {
    let out = dd(args);
    assert!(out.status.success(), "dd {args:?}: {}", describe(&out));
}

fn cmp_files(a: &Path, b: &Path) {
    let out = run(
        Command::new(tool("cmp")).arg(a).arg(b),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "cmp {} {}: {}",
        a.display(),
        b.display(),
        describe(&out)
    );
}

fn make_source(p: &TestPool, name: &str, seed: u64, len: u64) -> std::path::PathBuf {
    let path = p.root().join(name);
    let mut buf = vec![0u8; len as usize];
    fill_pattern(seed, 0, &mut buf);
    fs::write(&path, &buf).unwrap();
    path
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

#[test]
fn dd_in_and_out_buffered_and_direct() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.create_volume("dd", "128M");
    let vol = p.vol("dd");
    let src = make_source(&p, "src.bin", 0xdd, 24 * MIB);
    // (write flag, read flag, offset in MiB)
    let modes = [
        ("", "", 0u64),
        ("direct", "", 32),
        ("", "direct", 64),
        ("direct", "direct", 96),
    ];
    for (oflag, iflag, off) in modes {
        let mut w = vec![
            format!("if={}", src.display()),
            format!("of={}", vol.display()),
            s("bs=1M"),
            format!("seek={off}"),
            s("conv=notrunc,fsync"),
            s("status=none"),
        ];
        if !oflag.is_empty() {
            w.push(format!("oflag={oflag}"));
        }
        dd_ok(&w);
        assert_eq!(
            fs::metadata(&vol).unwrap().len(),
            128 * MIB,
            "dd conv=notrunc changed the volume size"
        );
        let out = p.root().join(format!("out-{off}.bin"));
        let mut r = vec![
            format!("if={}", vol.display()),
            format!("of={}", out.display()),
            s("bs=1M"),
            format!("skip={off}"),
            s("count=24"),
            s("status=none"),
        ];
        if !iflag.is_empty() {
            r.push(format!("iflag={iflag}"));
        }
        dd_ok(&r);
        cmp_files(&src, &out);
    }
    // Odd block sizes, unaligned offsets, buffered (in the free range from 120 MiB on).
    let seek = 120 * MIB / 4097 + 1;
    let base = seek * 4097;
    dd_ok(&[
        format!("if={}", src.display()),
        format!("of={}", vol.display()),
        s("bs=4097"),
        s("count=100"),
        format!("seek={seek}"),
        s("conv=notrunc"),
        s("status=none"),
    ]);
    let got = read_range(&vol, base, 100 * 4097, false);
    let want = read_range(&src, 0, 100 * 4097, false);
    assert!(
        got == want,
        "unaligned dd (bs=4097 seek={seek}) did not read back"
    );
    let around = read_range(&vol, 120 * MIB, base - 120 * MIB, false);
    assert!(
        around.iter().all(|&b| b == 0),
        "bytes before the dd range changed"
    );
    let around = read_range(&vol, base + 100 * 4097, 8192, false);
    assert!(
        around.iter().all(|&b| b == 0),
        "bytes after the dd range changed"
    );

    // The whole picture again after a restart (nothing served from a page cache).
    p.restart();
    for (_, _, off) in modes {
        let out = p.root().join(format!("again-{off}.bin"));
        dd_ok(&[
            format!("if={}", vol.display()),
            format!("of={}", out.display()),
            s("bs=1M"),
            format!("skip={off}"),
            s("count=24"),
            s("iflag=direct"),
            s("status=none"),
        ]);
        cmp_files(&src, &out);
    }
    verify_zeros(&vol, 24 * MIB, 8 * MIB, true);
    // A dd of the whole volume reads exactly its size.
    let all = p.root().join("all.bin");
    dd_ok(&[
        format!("if={}", vol.display()),
        format!("of={}", all.display()),
        s("bs=1M"),
        s("status=none"),
    ]);
    assert_eq!(fs::metadata(&all).unwrap().len(), 128 * MIB);
}

#[test]
fn holes_read_as_zeros() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("h", "64M");
    let vol = p.vol("h");
    verify_zeros(&vol, 0, 64 * MIB, false);
    verify_zeros(&vol, 0, 64 * MIB, true);
    // A small unaligned write in the middle of an extent.
    let f = open_rw(&vol, false).unwrap();
    let data = vec![0xabu8; 1000];
    f.write_all_at(&data, MIB + 512 + 3).unwrap();
    f.sync_data().unwrap();
    let got = read_range(&vol, MIB - 256 * KIB, 768 * KIB, false);
    for (i, b) in got.iter().enumerate() {
        let abs = MIB - 256 * KIB + i as u64;
        let want = if (MIB + 515..MIB + 1515).contains(&abs) {
            0xab
        } else {
            0
        };
        assert_eq!(
            *b,
            want,
            "byte {abs} after a 1000-byte write at {}",
            MIB + 515
        );
    }
    let info = p.volume_info("h");
    assert_eq!(
        info["allocated"].as_u64(),
        Some(256 * KIB),
        "one extent for one small write: {info}"
    );
    // Reads past the end return nothing.
    let mut b = [0u8; 16];
    assert_eq!(f.read_at(&mut b, 64 * MIB).unwrap(), 0);
    assert_eq!(f.read_at(&mut b, 64 * MIB + 4096).unwrap(), 0);
    assert_eq!(
        f.read_at(&mut b, 64 * MIB - 8).unwrap(),
        8,
        "read crossing the end"
    );
}

#[test]
fn writes_at_or_past_the_end_fail_with_enospc() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("e", "64M");
    let vol = p.vol("e");
    for direct in [false, true] {
        let f = open_rw(&vol, direct).unwrap();
        let mut buf = aligned(8192);
        fill_pattern(77, 0, &mut buf);
        for off in [64 * MIB, 64 * MIB + 4096, 128 * MIB] {
            let e = f
                .write_at(&buf[..4096], off)
                .expect_err("a write at/after the end must fail");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "write at {off} (direct={direct}): {e}"
            );
        }
        // A write crossing the end is short: exactly up to the end. (With O_DIRECT and
        // FUSE_ASYNC_DIO the kernel turns any short direct write into EIO, see
        // fuse_get_res_by_io(), so there an error is the expected outcome too.)
        match f.write_at(&buf[..8192], 64 * MIB - 4096) {
            Ok(n) => {
                assert_eq!(n, 4096, "write crossing the end (direct={direct})");
                f.sync_data().unwrap();
                let got = read_range(&vol, 64 * MIB - 4096, 4096, true);
                assert_eq!(check_pattern(77, 0, &got), None, "the short write's bytes");
            }
            Err(e) => {
                assert!(
                    direct,
                    "a buffered write crossing the end must be short, not fail: {e}"
                );
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOSPC)),
                    "direct write crossing the end: {e}"
                );
            }
        }
        assert_eq!(fs::metadata(&vol).unwrap().len(), 64 * MIB, "size changed");
    }
    // dd past the end reports ENOSPC.
    let out = run(
        Command::new(tool("dd")).args([
            "if=/dev/zero".to_string(),
            format!("of={}", vol.display()),
            "bs=1M".into(),
            "seek=64".into(),
            "count=1".into(),
            "conv=notrunc".into(),
        ]),
        DD_TIMEOUT,
    );
    assert!(!out.status.success(), "dd past the end: {}", describe(&out));
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::metadata(&vol).unwrap().len(), 64 * MIB);
    // Nothing else changed.
    verify_zeros(&vol, 0, 64 * MIB - 4096, true);
}

#[test]
fn truncate_grows_the_volume() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.create_volume("t", "64M");
    let vol = p.vol("t");
    write_pattern(&vol, 31, 60 * MIB, 4 * MIB, false);
    let truncate = |size: &str| {
        run_ok(
            Command::new(tool("truncate")).args(["-s", size]).arg(&vol),
            Duration::from_secs(60),
        );
    };
    truncate("128M");
    assert_eq!(fs::metadata(&vol).unwrap().len(), 128 * MIB);
    assert_eq!(p.volume_info("t")["size"].as_u64(), Some(128 * MIB));
    verify_pattern(&vol, 31, 60 * MIB, 4 * MIB, true);
    verify_zeros(&vol, 64 * MIB, 64 * MIB, true);
    write_pattern(&vol, 32, 100 * MIB, MIB, true);
    verify_pattern(&vol, 32, 100 * MIB, MIB, false);
    // Growing to a size that is not a multiple of the extent size.
    let odd = 200 * MIB + 4096 * 3;
    truncate(&odd.to_string());
    assert_eq!(fs::metadata(&vol).unwrap().len(), odd);
    write_pattern(&vol, 33, odd - 4096, 4096, true);
    p.restart();
    assert_eq!(fs::metadata(&vol).unwrap().len(), odd);
    verify_pattern(&vol, 31, 60 * MIB, 4 * MIB, true);
    verify_pattern(&vol, 32, 100 * MIB, MIB, true);
    verify_pattern(&vol, 33, odd - 4096, 4096, true);
    verify_zeros(&vol, 64 * MIB, 36 * MIB, true);
}

#[test]
fn truncate_grows_and_refuses_to_shrink() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("t", "64M");
    let vol = p.vol("t");
    write_pattern(&vol, 31, 60 * MIB, 4 * MIB, false);
    let truncate = |size: &str| {
        run(
            Command::new(tool("truncate")).args(["-s", size]).arg(&vol),
            Duration::from_secs(60),
        )
    };
    let out = truncate("128M");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(fs::metadata(&vol).unwrap().len(), 128 * MIB);
    assert_eq!(p.volume_info("t")["size"].as_u64(), Some(128 * MIB));
    verify_pattern(&vol, 31, 60 * MIB, 4 * MIB, true);
    verify_zeros(&vol, 64 * MIB, 64 * MIB, true);
    // Writable in the grown part.
    write_pattern(&vol, 32, 100 * MIB, MIB, true);
    verify_pattern(&vol, 32, 100 * MIB, MIB, false);

    // Shrinking through the file is refused with EPERM (README: tools truncate as a side
    // effect, e.g. `dd seek=N` without conv=notrunc); nothing is lost.
    let out = truncate("62M");
    assert!(!out.status.success(), "shrink by truncate must be refused");
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::metadata(&vol).unwrap().len(), 128 * MIB);
    verify_pattern(&vol, 31, 60 * MIB, 4 * MIB, true);
    verify_pattern(&vol, 32, 100 * MIB, MIB, true);
    // dd with seek= and no conv=notrunc tries to truncate: refused, the data stays.
    let out = run(
        Command::new(tool("dd"))
            .args(["if=/dev/zero", "bs=1M", "count=1", "seek=2", "status=none"])
            .arg(format!("of={}", vol.display())),
        Duration::from_secs(60),
    );
    assert!(text(&out.stderr).contains("truncate"), "{}", describe(&out));
    assert_eq!(fs::metadata(&vol).unwrap().len(), 128 * MIB);
    verify_pattern(&vol, 32, 100 * MIB, MIB, true);
}

#[test]
fn punch_hole_frees_extents_and_reads_zeros() {
    let p = TestPool::new(ARRAYS, "256K");
    p.create_volume("d", "64M");
    let vol = p.vol("d");
    write_pattern(&vol, 41, 0, 8 * MIB, true);
    let info = p.volume_info("d");
    assert_eq!(info["allocated"].as_u64(), Some(8 * MIB), "{info}");
    let used0 = sum_field(&p.cli_json(&["array", "list"]), "used");
    assert_eq!(used0, 8 * MIB);

    run_ok(
        Command::new(tool("fallocate"))
            .args(["--punch-hole", "--offset", "1MiB", "--length", "4MiB"])
            .arg(&vol),
        Duration::from_secs(60),
    );
    assert_eq!(
        fs::metadata(&vol).unwrap().len(),
        64 * MIB,
        "punch changed the size"
    );
    let info = p.volume_info("d");
    assert_eq!(
        info["allocated"].as_u64(),
        Some(4 * MIB),
        "punching 4 MiB of aligned extents frees them: {info}"
    );
    // ArrayInfo.used drops once the free record is durable (the daemon's next flush).
    wait_until(
        "ArrayInfo.used to drop by the punched 4 MiB",
        Duration::from_secs(5),
        || sum_field(&p.cli_json(&["array", "list"]), "used") == 4 * MIB,
    );
    verify_pattern(&vol, 41, 0, MIB, true);
    verify_zeros(&vol, MIB, 4 * MIB, true);
    verify_zeros(&vol, MIB, 4 * MIB, false);
    verify_pattern(&vol, 41, 5 * MIB, 3 * MIB, false);

    // A punch that covers no extent fully frees nothing but still reads back zeros.
    let f = open_rw(&vol, false).unwrap();
    punch_hole(&f, 6 * MIB + 100 * KIB, 300 * KIB).expect("unaligned punch");
    let info = p.volume_info("d");
    assert_eq!(info["allocated"].as_u64(), Some(4 * MIB), "{info}");
    verify_pattern(&vol, 41, 5 * MIB, MIB + 100 * KIB, true);
    verify_zeros(&vol, 6 * MIB + 100 * KIB, 300 * KIB, true);
    verify_pattern(&vol, 41, 6 * MIB + 400 * KIB, 2 * MIB - 400 * KIB, true);
    drop(f);

    // Punched space is reusable and the hole is writable again.
    write_pattern(&vol, 42, 2 * MIB, MIB, false);
    verify_pattern(&vol, 42, 2 * MIB, MIB, true);
    verify_zeros(&vol, MIB, MIB, true);
    verify_zeros(&vol, 3 * MIB, 2 * MIB, true);

    // The result survives a restart.
    let mut p = p;
    p.restart();
    assert_eq!(p.volume_info("d")["allocated"].as_u64(), Some(5 * MIB));
    verify_zeros(&vol, MIB, MIB, true);
    verify_pattern(&vol, 42, 2 * MIB, MIB, true);
    verify_zeros(&vol, 3 * MIB, 2 * MIB, true);
    verify_zeros(&vol, 6 * MIB + 100 * KIB, 300 * KIB, true);
    p.stop();
    p.check_clean();
}

#[test]
fn thin_provisioning_grows_arrays_only_with_data() {
    let p = TestPool::new(ARRAYS, "256K");
    let arrays = p.array_paths();
    assert_eq!(arrays.len(), 3);
    let du = || arrays.iter().map(|a| disk_usage(a)).sum::<u64>();
    let du0 = du();
    assert!(
        du0 < 8 * MIB,
        "fresh arrays are not sparse: {du0} bytes on disk"
    );
    for a in &arrays {
        assert!(
            fs::metadata(a).unwrap().len() >= 256 * MIB,
            "{}",
            a.display()
        );
    }
    p.create_volume("big", "512M");
    assert!(du() < du0 + MIB, "creating a volume wrote data");
    write_pattern(&p.vol("big"), 51, 100 * MIB, 16 * MIB, true);
    p.cli_ok(&["sync"]);
    let du1 = du();
    assert!(
        du1 >= du0 + 16 * MIB && du1 <= du0 + 24 * MIB,
        "16 MiB of data should grow the arrays by ~16 MiB on disk: before {du0}, after {du1}"
    );
    let pi = p.pool_info();
    assert_eq!(pi["used"].as_u64(), Some(16 * MIB));
    let on_disk = sum_field(&pi["arrays"], "on_disk");
    assert!(
        on_disk >= 16 * MIB && on_disk <= du1 + MIB,
        "ArrayInfo.on_disk should be like du: {on_disk} vs du {du1}"
    );

    // Overcommit: a volume bigger than the pool is created, with a warning.
    let out = p.cli(&["volume", "create", "huge", "--size", "2G"]);
    assert!(
        out.status.success(),
        "overcommitted create: {}",
        describe(&out)
    );
    let err = text(&out.stderr).to_lowercase();
    assert!(
        err.contains("overcommit"),
        "creating a volume larger than the pool should warn about overcommit on stderr: {}",
        describe(&out)
    );
    assert_eq!(fs::metadata(p.vol("huge")).unwrap().len(), 2 * GIB);
    let pi = p.pool_info();
    assert_eq!(pi["provisioned"].as_u64(), Some(2 * GIB + 512 * MIB));
    assert!(pi["provisioned"].as_u64() > pi["capacity"].as_u64());
    // Writing at its far end works (thin) and grows usage by one extent.
    write_pattern(&p.vol("huge"), 52, 2 * GIB - MIB, MIB, true);
    verify_pattern(&p.vol("huge"), 52, 2 * GIB - MIB, MIB, false);
    assert_eq!(p.volume_info("huge")["allocated"].as_u64(), Some(MIB));
    verify_pattern(&p.vol("big"), 51, 100 * MIB, 16 * MIB, true);
}

/// Sequential O_DIRECT 1 MiB writes of pattern `seed` from `start` until an error;
/// returns (bytes written, the error).
fn fill_until_error(
    path: &Path,
    seed: u64,
    start: u64,
    limit: u64,
) -> (u64, Option<std::io::Error>) {
    let f = open_rw(path, true).unwrap();
    let mut buf = aligned(MIB as usize);
    let mut pos = start;
    while pos < limit {
        fill_pattern(seed, pos, &mut buf);
        match f.write_at(&buf, pos) {
            Ok(n) if n == MIB as usize => pos += MIB,
            // A short write at the edge of the free space: keep going from there (the pattern
            // depends only on the offset); the next write must then fail.
            Ok(n) if n > 0 && n % 4096 == 0 => {
                pos += n as u64;
                let r = f.write_at(&buf[..4096], pos);
                return match r {
                    Ok(m) => (
                        pos - start,
                        Some(std::io::Error::other(format!(
                            "write of {m} at {pos} after a short write succeeded"
                        ))),
                    ),
                    Err(e) => (pos - start, Some(e)),
                };
            }
            Ok(n) => {
                return (
                    pos - start,
                    Some(std::io::Error::other(format!("short write {n} at {pos}"))),
                )
            }
            Err(e) => return (pos - start, Some(e)),
        }
    }
    (pos - start, None)
}

/// `fill_until_error`, retried for up to 5 s until at least `want` bytes went in.
fn fill_retrying(
    path: &Path,
    seed: u64,
    start: u64,
    limit: u64,
    want: u64,
) -> (u64, Option<std::io::Error>) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut done = 0;
    loop {
        let (w, e) = fill_until_error(path, seed, start + done, limit);
        done += w;
        if done >= want || e.is_none() || std::time::Instant::now() > end {
            return (done, e);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn full_pool_gives_enospc_and_recovers_after_discard_and_delete() {
    let mut p = TestPool::new(&["a0:32M", "a1:32M", "a2:32M"], "256K");
    let cap = p.pool_info()["capacity"].as_u64().unwrap();
    assert!((90 * MIB..=96 * MIB).contains(&cap), "capacity {cap}");
    p.create_volume("a", "64M");
    write_pattern(&p.vol("a"), 61, 0, 48 * MIB, true);
    let out = p.cli(&["volume", "create", "b", "--size", "80M"]);
    assert!(out.status.success(), "{}", describe(&out));
    let b = p.vol("b");

    let (written, err) = fill_until_error(&b, 62, 0, 80 * MIB);
    let err = err.expect("filling past the pool's capacity must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "a full pool must give ENOSPC, got {err} after {written} bytes"
    );
    assert!(
        written >= cap - 48 * MIB - MIB && written <= cap - 48 * MIB,
        "b took {written} bytes of a pool with {cap} capacity and 48 MiB used by a"
    );
    let pi = p.pool_info();
    assert!(pi["free"].as_u64().unwrap() < MIB, "{pi}");
    // Existing data is intact; overwriting allocated space still works while full.
    verify_pattern(&p.vol("a"), 61, 0, 48 * MIB, true);
    verify_pattern(&b, 62, 0, written, true);
    write_pattern(&b, 63, 0, MIB, true);
    verify_pattern(&b, 63, 0, MIB, false);
    // Buffered writes into new space fail too (at write or at fsync), never silently.
    {
        let f = open_rw(&b, false).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        fill_pattern(64, written + MIB, &mut buf);
        let r = f
            .write_all_at(&buf, written + MIB)
            .and_then(|_| f.sync_data());
        let e = r.expect_err("buffered write into a full pool must fail at write or fsync");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    }
    // The buffered failure must not have broken the data around it.
    verify_pattern(&b, 62, MIB, written - MIB, true);

    // Discard 16 MiB of a: b can grow by that much again.
    run_ok(
        Command::new(tool("fallocate"))
            .args(["--punch-hole", "--offset", "0", "--length", "16MiB"])
            .arg(p.vol("a")),
        Duration::from_secs(60),
    );
    // Freed extents become allocatable once the free is durable (the next flush): retry
    // for a few seconds.
    let (w2, err2) = fill_retrying(&b, 62, written, 80 * MIB, 15 * MIB);
    assert!(
        (15 * MIB..=17 * MIB).contains(&w2),
        "after discarding 16 MiB, b wrote {w2} more bytes"
    );
    assert_eq!(err2.and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
    let mut total = written + w2;

    // Delete a: the rest of b fits.
    let out = p.handle().delete_volume_retry("a", Duration::from_secs(10));
    assert!(out.status.success(), "{}", describe(&out));
    let (w3, err3) = fill_retrying(&b, 62, total, 80 * MIB, 80 * MIB - total);
    assert!(
        err3.is_none(),
        "after deleting a, b must fit: {err3:?} after {w3}"
    );
    total += w3;
    assert_eq!(total, 80 * MIB);
    verify_pattern(&b, 63, 0, MIB, true);
    verify_pattern(&b, 62, MIB, 79 * MIB, true);

    p.restart();
    verify_pattern(&b, 63, 0, MIB, true);
    verify_pattern(&b, 62, MIB, 79 * MIB, true);
    assert_eq!(p.volume_info("b")["allocated"].as_u64(), Some(80 * MIB));
    p.stop();
    p.check_clean();
}
