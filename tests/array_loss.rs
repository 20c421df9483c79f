//! Array loss (issue 19 item 6), through a real FUSE mount: one array file deleted (or
//! replaced by something that cannot be opened) while the daemon is stopped. The daemon
//! starts; a volume with no extent on that array reads and writes as before; a volume with
//! extents there gets EIO for exactly those ranges (named in the daemon's log) and its other
//! ranges read back; a P-VOL whose S-VOL lives on other arrays is served whole from the
//! S-VOL, also after a restart; `fusevol array list` shows the array as missing. Nothing
//! reads as zeros in place of lost data.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const EXT: u64 = 256 << 10;

/// Read one extent of a volume file with O_DIRECT: Ok(bytes) or the errno.
fn read_extent(path: &Path, index: u64) -> Result<Vec<u8>, i32> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut b = aligned(EXT as usize);
    match f.read_at(&mut b[..], index * EXT) {
        Ok(n) => Ok(b[..n].to_vec()),
        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
    }
}

fn dd_extent(path: &Path, index: u64) -> std::process::Output {
    let mut c = Command::new("dd");
    c.arg(format!("if={}", path.display()))
        .arg("of=/dev/null")
        .arg("bs=256K")
        .arg(format!("skip={index}"))
        .arg("count=1")
        .arg("iflag=direct");
    run(&mut c, Duration::from_secs(60))
}

/// What the daemon serves with array a1 gone: `spread` (tier fast: even extents on a0, odd
/// on a1) fails on odd extents only; `safe` (tier slow) and `pv` (S-VOL on tier backup)
/// read whole.
fn check_served(p: &TestPool, what: &str) {
    for i in 0..16u64 {
        let r = read_extent(&p.vol("spread"), i);
        if i % 2 == 1 {
            assert_eq!(
                r.err(),
                Some(libc::EIO),
                "{what}: spread extent {i} on the lost array"
            );
        } else {
            let b = r.unwrap_or_else(|e| panic!("{what}: spread extent {i}: errno {e}"));
            let mut want = vec![0u8; EXT as usize];
            fill_pattern(1, i * EXT, &mut want);
            assert!(b == want, "{what}: spread extent {i} differs");
        }
    }
    let out = dd_extent(&p.vol("spread"), 3);
    assert!(
        !out.status.success() && text(&out.stderr).contains("Input/output error"),
        "{what}: dd of a lost range: {}",
        describe(&out)
    );
    let out = dd_extent(&p.vol("spread"), 2);
    assert!(
        out.status.success(),
        "{what}: dd of a kept range: {}",
        describe(&out)
    );
    verify_pattern(&p.vol("safe"), 2, 0, 4 * MIB, true);
    verify_pattern(&p.vol("pv"), 3, 0, 4 * MIB, true);
    let list = p.cli_ok(&["array", "list"]);
    assert!(
        list.contains("MISSING") && list.contains("a1"),
        "{what}: {list}"
    );
    let arrays = p.cli_json(&["array", "list"]);
    let a1 = arrays
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "a1")
        .unwrap();
    assert!(a1["missing"].as_str().is_some(), "{what}: {a1}");
    let a0 = arrays
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "a0")
        .unwrap();
    assert!(a0.get("missing").is_none(), "{what}: {a0}");
}

fn lose_array_and_check(replace_with_dir: bool) {
    let mut p = TestPool::new(
        &["a0:32M", "a1:32M", "s0:32M:slow", "b0:32M:backup"],
        "256K",
    );
    p.create_volume("spread", "4M");
    p.cli_ok(&["volume", "create", "safe", "--size", "4M", "--tier", "slow"]);
    p.create_volume("pv", "4M");
    write_pattern(&p.vol("spread"), 1, 0, 4 * MIB, true);
    write_pattern(&p.vol("safe"), 2, 0, 4 * MIB, true);
    write_pattern(&p.vol("pv"), 3, 0, 4 * MIB, true);
    p.cli_ok(&[
        "pair",
        "create",
        "pv",
        "sv",
        "--create-svol",
        "--svol-tier",
        "backup",
    ]);
    p.cli_ok(&["pair", "wait", "pv", "--state", "PAIR", "--timeout", "60"]);
    p.stop();

    let a1 = p.pool().join("arrays/a1.img");
    fs::remove_file(&a1).unwrap();
    if replace_with_dir {
        fs::create_dir(&a1).unwrap();
    }
    p.start();
    let log = p.daemon_log();
    assert!(
        log.contains("array 'a1' (arrays/a1.img) is MISSING"),
        "the daemon does not name the missing array:\n{log}"
    );
    assert!(
        log.contains("volume 'spread': bytes 262144-524287")
            && log.contains("on missing array 'a1'"),
        "the daemon does not name the lost ranges:\n{log}"
    );
    assert!(
        !log.contains("volume 'safe':"),
        "a volume with nothing on a1 is named:\n{log}"
    );
    check_served(&p, "after the loss");

    // Writes: a lost range fails, the others work; a new volume allocates elsewhere.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(p.vol("spread"))
        .unwrap();
    let e = f.write_at(&[7u8; 4096], EXT).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    f.write_all_at(&[7u8; 4096], 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    write_pattern(&p.vol("spread"), 1, 0, 4096, true);
    p.create_volume("fresh", "4M");
    write_pattern(&p.vol("fresh"), 4, 0, 4 * MIB, true);
    verify_pattern(&p.vol("fresh"), 4, 0, 4 * MIB, true);
    verify_pattern(&p.vol("safe"), 2, 0, 4 * MIB, false);
    write_pattern(&p.vol("safe"), 5, 0, 4 * MIB, true);
    p.cli_ok(&["sync"]);

    p.restart();
    verify_pattern(&p.vol("fresh"), 4, 0, 4 * MIB, true);
    verify_pattern(&p.vol("safe"), 5, 0, 4 * MIB, true);
    write_pattern(&p.vol("safe"), 2, 0, 4 * MIB, true);
    check_served(&p, "after a restart");
    p.stop();
}

#[test]
fn a_deleted_array_fails_only_its_ranges() {
    lose_array_and_check(false);
}

#[test]
fn an_unreadable_array_fails_only_its_ranges() {
    lose_array_and_check(true);
}
