//! Damaged pool files: a corrupt array header or a corrupt record in the middle of meta.log
//! stops the daemon with an error naming the file and offset (and changes nothing); a torn
//! tail of meta.log is cut off with a warning naming the offset, and the daemon starts.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;

const ARRAYS: &[&str] = &["a0:64M", "a1:64M", "a2:64M"];
/// meta.log layout (src/format/meta_record.rs): a 64-byte header at offset 0 and again at
/// 4096, then from 8192 frames of len u32 | crc32c u32 | type u8 | payload[len].
const LOG_HEADER: u64 = 8192;
const FRAME_HEADER: u64 = 9;

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

/// (start offset, payload length, type) of every whole frame in meta.log.
fn frames(log: &[u8]) -> Vec<(u64, u64, u8)> {
    let mut out = Vec::new();
    let mut pos = LOG_HEADER;
    while pos + FRAME_HEADER <= log.len() as u64 {
        let p = pos as usize;
        let len = u32::from_le_bytes(log[p..p + 4].try_into().unwrap()) as u64;
        let next = pos + FRAME_HEADER + len;
        if next > log.len() as u64 {
            break;
        }
        out.push((pos, len, log[p + 8]));
        pos = next;
    }
    out
}

/// A pool whose meta.log holds records after the last checkpoint: `fusevol sync` (new log),
/// then volumes with data, then kill -9 (no checkpoint at shutdown).
fn pool_with_log_records() -> TestPool {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.create_volume("base", "32M");
    write_pattern(&p.vol("base"), 100, 0, 4 * MIB, true);
    p.cli_ok(&["sync"]);
    for i in 0..4u64 {
        let name = format!("rec{i}");
        p.create_volume(&name, "32M");
        write_pattern(&p.vol(&name), 200 + i, i * MIB, 2 * MIB, true);
    }
    p.kill9();
    p.clear_dead_mount();
    p
}

fn verify_data(p: &TestPool) {
    verify_pattern(&p.vol("base"), 100, 0, 4 * MIB, true);
    for i in 0..4u64 {
        verify_pattern(&p.vol(&format!("rec{i}")), 200 + i, i * MIB, 2 * MIB, true);
    }
}

fn assert_names(stderr: &str, file: &str, offsets: &[u64], what: &str) {
    assert!(
        stderr.contains(file),
        "{what}: the error should name the file {file}:\n{stderr}"
    );
    let named = offsets_named(stderr);
    assert!(
        named.iter().any(|o| offsets.contains(o)),
        "{what}: the message should name the offset (one of {offsets:?}); offsets named: {named:?}\n{stderr}"
    );
}

#[test]
fn corrupt_array_header_stops_the_daemon_naming_file_and_offset() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.create_volume("v", "64M");
    write_pattern(&p.vol("v"), 1, 0, 8 * MIB, true);
    p.stop();
    let files = p.array_files();
    assert_eq!(files.len(), 3, "{files:?}");
    // The magic, a field inside the header, zero padding, the CRC itself.
    for (i, off) in [0u64, 20, 100, 4000, 4093].into_iter().enumerate() {
        let file = &files[i % files.len()];
        let before = fs::read(file).unwrap()[..4096].to_vec();
        flip(file, off);
        let e = p.start_expect_failure(&[]);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // The offset named may be the header's (0), the flipped byte's or the checksum's.
        assert_names(
            &e.stderr,
            &name,
            &[0, off, 4092],
            &format!("array header byte {off} of {name} flipped"),
        );
        let chk = p.check();
        assert!(
            !chk.status.success(),
            "fusevol check passed a corrupt header ({name} byte {off}): {}",
            describe(&chk)
        );
        assert!(
            (text(&chk.stdout) + &text(&chk.stderr)).contains(&name),
            "check should name {name}: {}",
            describe(&chk)
        );
        // Nothing was "repaired" behind our back.
        let mut now = fs::read(file).unwrap()[..4096].to_vec();
        now[off as usize] ^= 0x40;
        assert!(now == before, "the refused start changed {name}'s header");
        flip(file, off);
    }
    p.start();
    verify_pattern(&p.vol("v"), 1, 0, 8 * MIB, true);
    p.stop();
    p.check_clean();
}

#[test]
fn corrupt_record_in_middle_of_meta_log_stops_the_daemon() {
    let mut p = pool_with_log_records();
    let log_path = p.pool().join("meta.log");
    let log = fs::read(&log_path).unwrap();
    let fr = frames(&log);
    assert!(
        fr.len() >= 6,
        "meta.log should hold several records after the sync, found {} in {} bytes",
        fr.len(),
        log.len()
    );
    let tail = fr.last().unwrap();
    assert_eq!(
        tail.0 + FRAME_HEADER + tail.1,
        log.len() as u64,
        "meta.log does not parse as header + frames"
    );

    // 1. A payload byte of the second record.
    let (start, len, _) = fr[1];
    let off = if len > 0 {
        start + FRAME_HEADER + len / 2
    } else {
        start + 8
    };
    flip(&log_path, off);
    let e = p.start_expect_failure(&[]);
    assert_names(&e.stderr, "meta.log", &[start, off], "payload byte flipped");
    let now = fs::read(&log_path).unwrap();
    assert_eq!(
        now.len(),
        log.len(),
        "a refused start must not truncate meta.log"
    );
    let chk = p.check();
    assert!(!chk.status.success(), "check passed: {}", describe(&chk));
    assert!(
        (text(&chk.stdout) + &text(&chk.stderr)).contains("meta.log"),
        "{}",
        describe(&chk)
    );
    flip(&log_path, off);

    // 2. The CRC of a record in the middle.
    let (start, _, _) = fr[fr.len() / 2];
    flip(&log_path, start + 5);
    let e = p.start_expect_failure(&[]);
    assert_names(
        &e.stderr,
        "meta.log",
        &[start, start + 5],
        "record CRC flipped",
    );
    assert_eq!(fs::read(&log_path).unwrap().len(), log.len());
    flip(&log_path, start + 5);

    // 3. The length field of an early record, made to overrun the file: this must not be
    //    mistaken for a torn tail (valid records follow it).
    let (start, _, _) = fr[2];
    let f = OpenOptions::new().write(true).open(&log_path).unwrap();
    f.write_all_at(&(1u32 << 22).to_le_bytes(), start).unwrap();
    drop(f);
    let e = p.start_expect_failure(&[]);
    assert_names(&e.stderr, "meta.log", &[start], "record length overrunning");
    assert_eq!(
        fs::read(&log_path).unwrap().len(),
        log.len(),
        "a bad length in the middle was treated as a torn tail and cut off"
    );
    fs::write(&log_path, &log).unwrap();

    // Restored: the daemon starts and everything is there.
    p.start();
    verify_data(&p);
    p.stop();
    p.check_clean();
}

#[test]
fn garbage_after_the_last_record_is_cut_with_a_warning() {
    let mut p = pool_with_log_records();
    let log_path = p.pool().join("meta.log");
    let len0 = fs::metadata(&log_path).unwrap().len();
    let mut rng = Rng::from_env("garbage");
    let mut junk = vec![0u8; 100];
    for b in junk.iter_mut() {
        *b = (rng.next_u64() | 1) as u8;
    }
    OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap()
        .write_all(&junk)
        .unwrap();
    p.rust_log = "warn".into();
    p.start();
    let log = p.daemon_log();
    assert_names(&log, "meta.log", &[len0], "garbage appended");
    assert!(
        log.to_lowercase().contains("warn"),
        "the torn tail should be a warning: {log}"
    );
    verify_data(&p);
    // New records after the cut work and survive.
    p.create_volume("after", "32M");
    write_pattern(&p.vol("after"), 300, 0, MIB, true);
    p.kill9();
    p.clear_dead_mount();
    p.check_clean();
    p.start();
    verify_data(&p);
    verify_pattern(&p.vol("after"), 300, 0, MIB, true);
    p.stop();
    p.check_clean();
}

#[test]
fn truncated_last_record_is_cut_with_a_warning() {
    let mut p = TestPool::new(ARRAYS, "256K");
    p.create_volume("base", "32M");
    write_pattern(&p.vol("base"), 100, 0, 4 * MIB, true);
    p.cli_ok(&["sync"]);
    for i in 0..4u64 {
        let name = format!("rec{i}");
        p.create_volume(&name, "32M");
        write_pattern(&p.vol(&name), 200 + i, i * MIB, 2 * MIB, true);
    }
    // The last record: creating a volume that nothing else depends on.
    p.create_volume("last", "32M");
    p.kill9();
    p.clear_dead_mount();
    let log_path = p.pool().join("meta.log");
    let log = fs::read(&log_path).unwrap();
    let fr = frames(&log);
    let &(start, len, _) = fr.last().expect("records in meta.log");
    assert_eq!(start + FRAME_HEADER + len, log.len() as u64);
    let cut = start + (FRAME_HEADER + len) / 2;
    let f = OpenOptions::new().write(true).open(&log_path).unwrap();
    f.set_len(cut).unwrap();
    drop(f);
    let chk = p.check();
    assert!(
        chk.status.success(),
        "a torn tail is a warning for check, not a problem: {}",
        describe(&chk)
    );
    p.rust_log = "warn".into();
    p.start();
    let dlog = p.daemon_log();
    assert_names(&dlog, "meta.log", &[start], "last record truncated");
    verify_data(&p);
    // The torn record was the volume creation: it is gone, cleanly.
    let names: Vec<String> = p
        .cli_json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.contains(&"last".to_string()), "{names:?}");
    assert_eq!(names.len(), 5, "{names:?}");
    p.stop();
    p.check_clean();
}

/// Issue 19 item 1 through the daemon: a damaged checkpoint copy or log header copy no
/// longer stops the pool. The daemon starts from the other copy, says in its log which copy
/// it skipped and why, serves the same data, and rewrites the damaged copy.
#[test]
fn damaged_checkpoint_or_log_header_copy_starts_from_the_other() {
    let mut p = pool_with_log_records();
    let pool = p.pool().to_path_buf();
    for (file, off) in [
        ("checkpoint", 40u64),
        ("checkpoint.2", 7),
        ("meta.log", 20),
        ("meta.log", 4096 + 30),
    ] {
        flip(&pool.join(file), off);
        p.start();
        let log = p.daemon_log();
        assert!(
            log.contains(file) && log.contains("skipped"),
            "{file} byte {off}: the daemon does not say which copy it skipped:\n{log}"
        );
        assert!(log.contains("rewritten"), "{log}");
        verify_data(&p);
        p.kill9();
        p.clear_dead_mount();
        p.check_clean();
        let out = p.check();
        assert!(
            !text(&out.stdout).contains("skipped"),
            "{file} byte {off}: the damaged copy was not rewritten: {}",
            describe(&out)
        );
    }
}

/// The log damaged at the creation of `rec2`: the valid prefix holds `base`, `rec0` and
/// `rec1` with their data; `rec2`, `rec3` and their data records come after the damage.
fn damage_creation_of_rec2(p: &TestPool) {
    let log_path = p.pool().join("meta.log");
    let log = fs::read(&log_path).unwrap();
    let creates: Vec<_> = frames(&log).into_iter().filter(|f| f.2 == 2).collect();
    assert_eq!(creates.len(), 4, "four VolumeCreate records after the sync");
    let (start, len, _) = creates[2];
    flip(&log_path, start + FRAME_HEADER + len / 2);
}

fn volume_names(p: &TestPool) -> Vec<String> {
    let mut n: Vec<String> = p
        .cli_json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn verify_prefix(p: &TestPool) {
    verify_pattern(&p.vol("base"), 100, 0, 4 * MIB, true);
    for i in 0..2u64 {
        verify_pattern(&p.vol(&format!("rec{i}")), 200 + i, i * MIB, 2 * MIB, true);
    }
    assert_eq!(volume_names(p), vec!["base", "rec0", "rec1"]);
}

/// Issue 19 item 2: `fusevold --recovery salvage` on a log damaged in the middle applies the
/// valid prefix, reports what was lost (records, volumes, extents), serves read-only until
/// `fusevol pool salvage-confirm`, which commits the prefix and stops the daemon; the next
/// plain start is read-write and the pool checks clean.
#[test]
fn salvage_serves_the_valid_prefix_read_only_until_confirmed() {
    let mut p = pool_with_log_records();
    damage_creation_of_rec2(&p);
    p.start_expect_failure(&[]);
    p.daemon_args = vec!["--recovery".into(), "salvage".into()];
    p.start();
    let info = p.cli_json(&["pool", "info"]);
    assert!(
        info["read_only"]
            .as_str()
            .is_some_and(|s| s.contains("salvage")),
        "{info}"
    );
    verify_prefix(&p);
    // Read-only: writes are EROFS, metadata changes are refused.
    let f = open_rw(&p.vol("base"), false).unwrap();
    let e = f.write_all_at(&[1u8; 4096], 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    drop(f);
    assert_eq!(
        p.cli(&["volume", "create", "x", "--size", "1M"])
            .status
            .code(),
        Some(1)
    );
    // The loss report names what was not applied.
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(p.pool().join("salvage-report.json")).unwrap()).unwrap();
    // rec2's creation is the damaged record, so its later records name it by id (#4).
    let vols = report["volumes"].to_string();
    assert!(vols.contains("#4") && vols.contains("rec3"), "{report}");
    assert!(report["extents"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["lost_records"].as_array().unwrap().len() >= 2,
        "{report}"
    );
    assert!(p.daemon_log().contains("READ-ONLY"), "{}", p.daemon_log());
    // A stop without confirmation changes nothing: the same salvage again.
    p.stop();
    p.daemon_args.clear();
    p.start_expect_failure(&[]);
    p.daemon_args = vec!["--recovery".into(), "salvage".into()];
    p.start();
    p.cli_ok(&["pool", "salvage-confirm"]);
    wait_until(
        "fusevold stops after the confirmation",
        Duration::from_secs(30),
        || !p.is_running(),
    );
    p.daemon_args.clear();
    p.restart();
    verify_prefix(&p);
    assert!(p.cli_json(&["pool", "info"])["read_only"].is_null());
    write_pattern(&p.vol("base"), 300, 8 * MIB, MIB, true);
    p.create_volume("after", "8M");
    assert!(fs::read_dir(p.pool()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("meta.log.damaged-")));
    p.stop();
    p.check_clean();
}

/// `fusevol check POOL --repair` does the same offline.
#[test]
fn check_repair_salvages_offline() {
    let mut p = pool_with_log_records();
    damage_creation_of_rec2(&p);
    assert!(!p.check().status.success());
    let mut c = std::process::Command::new(fusevol_bin());
    c.args(["--json", "check"]).arg(p.pool()).arg("--repair");
    let out = run(&mut c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", describe(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["salvage"]["volumes"].to_string().contains("rec3"), "{r}");
    assert!(r["repaired"].as_str().is_some(), "{r}");
    p.check_clean();
    p.start();
    verify_prefix(&p);
    p.stop();
    p.check_clean();
}

/// Issue 19 item 1: both pool-directory checkpoint slots destroyed. The daemon starts from
/// the copy in the arrays' reserved area (its log names the array copy it used and the
/// slots it skipped), serves the same data and rebuilds both slots; offline, `fusevol check
/// POOL --repair` does the same.
#[test]
fn both_checkpoint_slots_destroyed_start_from_the_arrays_copy() {
    let mut p = pool_with_log_records();
    let pool = p.pool().to_path_buf();
    let destroy = || {
        fs::write(pool.join("checkpoint"), vec![0u8; 4096]).unwrap();
        fs::remove_file(pool.join("checkpoint.2")).unwrap();
    };
    destroy();
    p.start();
    let log = p.daemon_log();
    assert!(
        log.contains("open from arrays/") && log.contains("(array copy, label"),
        "the daemon does not say which array copy it used:\n{log}"
    );
    assert!(
        log.contains("checkpoint.2 is missing") && log.contains("checkpoint at offset 0"),
        "{log}"
    );
    verify_data(&p);
    p.stop();
    p.check_clean();
    for f in ["checkpoint", "checkpoint.2"] {
        assert!(
            fusevol::format::Checkpoint::decode(&fs::read(pool.join(f)).unwrap()).is_ok(),
            "{f} not rebuilt"
        );
    }

    destroy();
    assert!(!p.check().status.success() || text(&p.check().stdout).contains("skipped"));
    let mut c = std::process::Command::new(fusevol_bin());
    c.args(["--json", "check"]).arg(&pool).arg("--repair");
    let out = run(&mut c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", describe(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["repaired"].as_str().is_some(), "{r}");
    for f in ["checkpoint", "checkpoint.2"] {
        assert!(
            fusevol::format::Checkpoint::decode(&fs::read(pool.join(f)).unwrap()).is_ok(),
            "{f} not rebuilt by check --repair"
        );
    }
    let out = p.check();
    assert!(
        out.status.success() && !text(&out.stdout).contains("skipped"),
        "{}",
        describe(&out)
    );
    p.start();
    verify_data(&p);
    p.stop();
}
