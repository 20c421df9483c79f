//! Crash points of the replication path (failpoint build): the primary's publish of a segment
//! into the remote directory and its purge of acknowledged segments, the secondary's apply
//! and acknowledgement. Each test arms one crash point in one daemon through `FAILPOINTS`
//! (`NAME=K*off->return`: the daemon kills itself at pass K+1, printing `crash point NAME`),
//! writes an ordered sequence of stamped 4 KiB blocks to the two volumes of a journal group,
//! and waits for the daemon to die there. The secondary must then hold a prefix of the write
//! order: its two volumes together equal the image after writes 1..j for one j. Restarted
//! without failpoints, the crashed side converges, and the secondary equals the primary byte
//! for byte.

#![cfg(feature = "failpoints")]

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;
use serde_json::Value;

const BS: u64 = 4096;
/// Blocks of each volume the writes go to (the rest stays zero).
const HOT_BLOCKS: u64 = 8;
const VOL_BLOCKS: u64 = 64; // 256 KiB volumes
const VOLS: [&str; 2] = ["va", "vb"];
/// Writes per test, one every `PACE`: with the 200 ms seal age, ten or so segments.
const WRITES: u64 = 150;
const PACE: Duration = Duration::from_millis(12);
const MAGIC: &[u8; 8] = b"FVCRASH\0";

/// Write k (from 1) goes to block (k / 2) % 8 of volume k % 2: every block is overwritten
/// every 16 writes, so the image after j writes tells j.
fn target(k: u64) -> (usize, u64) {
    ((k % 2) as usize, (k / 2) % HOT_BLOCKS)
}

fn fill(buf: &mut [u8], k: u64) {
    let (vol, block) = target(k);
    buf[..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&k.to_le_bytes());
    buf[16..24].copy_from_slice(&(vol as u64).to_le_bytes());
    buf[24..32].copy_from_slice(&block.to_le_bytes());
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for c in buf[32..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// The write a block holds (0: never written); panics on a torn or misplaced block.
fn stamp(buf: &[u8], vol: usize, block: u64) -> u64 {
    if buf.iter().all(|&b| b == 0) {
        return 0;
    }
    let k = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    assert!(
        buf[..8] == MAGIC[..] && k > 0 && target(k) == (vol, block),
        "volume {vol} block {block}: not a block of this test's writes (write {k}?)"
    );
    let mut want = vec![0u8; BS as usize];
    fill(&mut want, k);
    assert!(
        buf == want.as_slice(),
        "volume {vol} block {block}: not a whole block of write {k}"
    );
    k
}

/// The write each block of two volume images holds.
fn stamps(images: &[Vec<u8>; 2]) -> [Vec<u64>; 2] {
    let one = |vol: usize| -> Vec<u64> {
        assert_eq!(
            images[vol].len() as u64,
            VOL_BLOCKS * BS,
            "volume {vol} size"
        );
        images[vol]
            .chunks(BS as usize)
            .enumerate()
            .map(|(b, c)| stamp(c, vol, b as u64))
            .collect()
    };
    [one(0), one(1)]
}

/// The write each block holds after writes 1..=j.
fn expected(j: u64) -> [Vec<u64>; 2] {
    let mut e = [vec![0; VOL_BLOCKS as usize], vec![0; VOL_BLOCKS as usize]];
    for k in 1..=j {
        let (vol, block) = target(k);
        e[vol][block as usize] = k;
    }
    e
}

/// The write-order prefix property: the two volumes together are the image after writes
/// 1..=j, j being the highest write seen (at most `issued`). Returns j.
fn check_prefix(what: &str, images: &[Vec<u8>; 2], issued: u64) -> u64 {
    let got = stamps(images);
    let j = got.iter().flatten().copied().max().unwrap_or(0);
    assert!(j <= issued, "{what}: holds write {j}, only {issued} issued");
    let want = expected(j);
    for vol in 0..2 {
        for block in 0..VOL_BLOCKS as usize {
            assert_eq!(
                got[vol][block], want[vol][block],
                "{what}: volume {vol} block {block} holds write {}, but after write {j} it must hold {}",
                got[vol][block], want[vol][block]
            );
        }
    }
    j
}

fn read_volumes(p: &TestPool) -> [Vec<u8>; 2] {
    VOLS.map(|v| read_range(&p.vol(v), 0, VOL_BLOCKS * BS, true))
}

fn status(p: &TestPool) -> Value {
    let v = p.cli_json(&["group", "status", "g"]);
    v.as_array().expect("status list")[0].clone()
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Wait until the secondary has applied everything it can see and stays there a moment.
fn wait_settled(s: &TestPool) -> Value {
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
            t0.elapsed() < Duration::from_secs(30),
            "the secondary never settled: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until the secondary applied everything the primary wrote and the primary has the
/// acknowledgement of it.
fn wait_converged(p: &TestPool, s: &TestPool) {
    let t0 = Instant::now();
    loop {
        let (ps, ss) = (status(p), status(s));
        let written = num(&ps, "written");
        if num(&ps, "acknowledged") == written && num(&ss, "applied") == written {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no convergence:\nprimary {ps}\nsecondary {ss}\nprimary log:\n{}\nsecondary log:\n{}",
            p.daemon_log(),
            s.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two daemons and group `g` of volumes `va`, `vb` (the primary's), attached at the
/// secondary, converged.
fn two_sites() -> Daemons {
    let d = Daemons::new(1, "128M", "64K");
    d.p.set_budget(Duration::from_secs(120));
    d.s.set_budget(Duration::from_secs(120));
    for v in VOLS {
        d.p.create_volume(v, &format!("{}", VOL_BLOCKS * BS));
    }
    d.p.create_group("g", &VOLS, &d.remote);
    d.s.cli_ok(&[
        "group",
        "attach",
        "g",
        "--remote",
        d.remote.to_str().unwrap(),
    ]);
    wait_converged(&d.p, &d.s);
    d
}

/// Write 1..=WRITES in order to the primary, each acknowledged before the next, until one
/// fails (the primary died). Returns the number acknowledged.
fn write_sequence(p: &TestPool) -> u64 {
    let files: Vec<std::fs::File> = VOLS
        .iter()
        .map(|v| open_rw(&p.vol(v), true).unwrap())
        .collect();
    let mut buf = aligned(BS as usize);
    for k in 1..=WRITES {
        let (vol, block) = target(k);
        fill(&mut buf, k);
        if files[vol].write_all_at(&buf, block * BS).is_err() {
            return k - 1;
        }
        std::thread::sleep(PACE);
    }
    WRITES
}

/// Wait for the daemon armed with `point` to die there.
fn wait_crashed(d: &mut TestPool, point: &str) {
    let t0 = Instant::now();
    while d.is_running() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the daemon did not crash at {point}\nlog:\n{}",
            d.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.daemon_log();
    assert!(
        log.contains(&format!("crash point {point}")),
        "the daemon died, but not at crash point {point}\nlog:\n{log}"
    );
}

/// Once converged, the remote directory holds no published segment (each was applied and
/// retired, also those a crash left behind) and no temporary file (each was published).
fn wait_remote_drained(remote: &std::path::Path) {
    let dir = remote.join("g");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jseg") || n.ends_with(".tmp"))
            .collect()
    };
    let t0 = Instant::now();
    loop {
        let left = leftovers();
        if left.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "left in {}: {left:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The secondary equals the primary byte for byte.
fn assert_same(p: &TestPool, s: &TestPool) {
    let (a, b) = (read_volumes(p), read_volumes(s));
    for (i, v) in VOLS.iter().enumerate() {
        assert!(a[i] == b[i], "volume {v} differs between the sites");
    }
}

fn armed(point: &str, skip: u32) -> String {
    format!("{point}={skip}*off->return")
}

/// The primary crashes at `point` on its pass `skip + 1` while the writes run.
fn primary_crash(point: &str, skip: u32) {
    let t0 = Instant::now();
    let Daemons { mut p, s, remote } = two_sites();
    if point.starts_with("journal::purge::") {
        // The set-up's segments purged first: every pass is a segment of the writes.
        wait_until(
            "the primary's journal purged",
            Duration::from_secs(30),
            || num(&status(&p), "journal_bytes") == 0,
        );
    }
    p.stop();
    p.start_env(&[("FAILPOINTS", &armed(point, skip))]);
    let acked = write_sequence(&p);
    wait_crashed(&mut p, point);
    // The write in flight at the crash may or may not have been journaled.
    let issued = (acked + 1).min(WRITES);
    let st = wait_settled(&s);
    let j = check_prefix("the secondary", &read_volumes(&s), issued);
    eprintln!(
        "{point}: primary crashed after {acked} writes; the secondary holds writes 1..{j} (applied sequence {})",
        num(&st, "applied")
    );
    p.restart();
    wait_converged(&p, &s);
    // Every acknowledged write survived at the primary.
    let k = check_prefix("the restarted primary", &read_volumes(&p), issued);
    assert!(
        k >= acked,
        "the primary lost acknowledged writes: {k} < {acked}"
    );
    assert!(
        j <= k,
        "the secondary holds write {j}, the primary only {k}"
    );
    assert_same(&p, &s);
    wait_remote_drained(&remote);
    p.stop();
    p.check_clean();
    eprintln!("{point}: done in {:?}", t0.elapsed());
}

/// The secondary crashes at `point` on its pass `skip + 1`: while the writes run, or (with
/// `backlog`) as it catches up with all of them, published while it was down, in one batch
/// (under 16 segments and 500 ms), so that nothing is left to apply after its restart.
fn secondary_crash(point: &str, skip: u32, backlog: bool) {
    let t0 = Instant::now();
    let Daemons { p, mut s, remote } = two_sites();
    s.stop();
    let env = armed(point, skip);
    let env = [("FAILPOINTS", env.as_str())];
    if backlog {
        assert_eq!(write_sequence(&p), WRITES, "a write to the primary failed");
        wait_until(
            "the primary shipped every write",
            Duration::from_secs(30),
            || {
                let st = status(&p);
                num(&st, "shipped") == num(&st, "written")
            },
        );
        // It may crash before it answers: then it is not running, as below.
        let _ = s.try_start_env(&env);
    } else {
        s.start_env(&env);
        assert_eq!(write_sequence(&p), WRITES, "a write to the primary failed");
    }
    wait_crashed(&mut s, point);
    // What the secondary holds as it crashed, read from its pool offline.
    let j = {
        let st = fusevol::storage::Storage::open(s.pool()).expect("open the secondary's pool");
        let images = VOLS.map(|v| common::images::image(&st, v));
        check_prefix("the crashed secondary", &images, WRITES)
    };
    eprintln!("{point}: secondary crashed holding writes 1..{j}");
    if backlog {
        assert_eq!(j, WRITES, "the backlog was not applied in one batch");
    }
    s.restart();
    wait_converged(&p, &s);
    assert_eq!(
        check_prefix("the restarted secondary", &read_volumes(&s), WRITES),
        WRITES
    );
    assert_same(&p, &s);
    wait_remote_drained(&remote);
    // Nothing went wrong on the way (an error of the group is logged as a warning).
    let log = s.daemon_log();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("group 'g'"))
        .collect();
    assert!(
        trouble.is_empty(),
        "the restarted secondary reported errors:\n{}",
        trouble.join("\n")
    );
    s.stop();
    s.check_clean();
    eprintln!("{point}: done in {:?}", t0.elapsed());
}

#[test]
fn primary_crash_before_publish_rename() {
    primary_crash("replication::publish::before_rename", 3);
}

#[test]
fn primary_crash_after_publish_rename() {
    primary_crash("replication::publish::after_rename", 3);
}

#[test]
fn primary_crash_in_purge() {
    // Segments acknowledged and synced are purged: the second removal crashes.
    primary_crash("journal::purge::before_remove", 1);
}

#[test]
fn secondary_crash_before_sync_of_applied_records() {
    secondary_crash("replication::apply::before_sync", 2, false);
}

#[test]
fn secondary_crash_before_acknowledgement() {
    secondary_crash("replication::apply::before_ack", 2, false);
}

#[test]
fn secondary_crash_after_acknowledgement() {
    secondary_crash("replication::ack::after_write", 2, false);
}

#[test]
fn secondary_crash_before_sync_of_the_last_batch() {
    secondary_crash("replication::apply::before_sync", 0, true);
}

#[test]
fn secondary_crash_before_acknowledgement_of_the_last_batch() {
    // Nothing is left to apply after the restart: the acknowledgement must be written again
    // (`apply::reacknowledge`), or the primary never learns and keeps its journal.
    secondary_crash("replication::apply::before_ack", 0, true);
}

#[test]
fn secondary_crash_after_acknowledgement_of_the_last_batch() {
    // The applied segments are still published after the restart: retired, all of them.
    secondary_crash("replication::ack::after_write", 0, true);
}
