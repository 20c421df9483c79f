//! Journal full (issue 6) at library level: two pools, one remote directory that goes away.
//! Under `block` writers wait and then fail with ENOSPC, nothing beyond the limit is
//! journaled, and writes resume when the remote is back; under `suspend` writes go on into
//! a bitmap, `group resync` sends the changed regions while the secondary keeps a snapshot
//! of its last consistent image; crashes during the suspension and during the resync. At the
//! end of every test the secondary equals the primary and a model of the writes.

mod common;
use common::images::{image, snap_image};
use common::sites::{crash, Sites};

use std::sync::Arc;
use std::time::{Duration, Instant};

use fusevol::control::{GroupInfo, GroupOptions, GroupSetOptions, PitrOptions};
use fusevol::daemon::status;
use fusevol::fuse::io_errno;
use fusevol::replication::pitr::RestoreTarget;
use fusevol::storage::Storage;
use fusevol::volume::IoError;

const ES: u64 = 64 << 10;
const SIZE: u64 = 4 << 20;
const LIMIT: u64 = 1 << 20;

/// The two sites of these tests: pools of one 128 MiB array.
fn sites() -> Sites {
    Sites::new(ES, 128 << 20, 1)
}

/// Volumes a and b with some data, a group with `policy` and a 1 MiB journal limit, a
/// secondary attached and caught up. Returns (primary, secondary, model images).
fn setup(st: &Sites, policy: &str, rate: Option<u64>) -> (Arc<Storage>, Arc<Storage>, Model) {
    let p = st.primary();
    let s = st.secondary();
    let mut m = Model::default();
    for v in ["a", "b"] {
        p.volumes.create_volume(v, SIZE, None).unwrap();
        m.vols.push((v, vec![0u8; SIZE as usize]));
    }
    write(&p, &mut m, "a", 100_000, 200_000, 1).unwrap();
    let opts = GroupOptions {
        seal_ms: Some(20),
        segment_size: Some(64 << 10),
        journal_limit: Some(LIMIT),
        journal_full: Some(policy.into()),
        block_timeout_ms: Some(400),
        rate,
    };
    p.replication
        .group_create("g", &["a".into(), "b".into()], &st.remote, &opts)
        .unwrap();
    s.replication.group_attach("g", &st.remote).unwrap();
    wait_caught_up(&p, &s);
    (p, s, m)
}

#[derive(Default, Clone)]
struct Model {
    vols: Vec<(&'static str, Vec<u8>)>,
}

impl Model {
    fn vol(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self.vols.iter_mut().find(|(n, _)| *n == name).unwrap().1
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(131) ^ (i as u64 / 7)) as u8 | 1)
        .collect()
}

fn write(
    p: &Storage,
    m: &mut Model,
    vol: &str,
    off: u64,
    len: usize,
    seed: u64,
) -> Result<(), IoError> {
    let v = p.volumes.volume(vol).unwrap();
    let d = data(len, seed);
    p.write(&v, off, &d)?;
    m.vol(vol)[off as usize..off as usize + len].copy_from_slice(&d);
    Ok(())
}

fn info(pool: &Storage) -> GroupInfo {
    status::group_info(pool, Some("g")).unwrap().remove(0)
}

fn wait_caught_up(p: &Storage, s: &Storage) -> GroupInfo {
    let t0 = Instant::now();
    loop {
        let pi = info(p);
        let si = info(s);
        if si.consistent
            && si.applied == pi.written
            && pi.acknowledged == pi.written
            && pi.full.state == "journaling"
        {
            return si;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not caught up: primary {pi:?}\nsecondary {si:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn same(p: &Storage, s: &Storage, m: &Model) {
    for (v, want) in &m.vols {
        assert!(image(p, v) == *want, "primary {v} differs from the model");
        assert!(image(s, v) == *want, "secondary {v} differs from the model");
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn vol(&mut self) -> &'static str {
        if self.next().is_multiple_of(2) {
            "a"
        } else {
            "b"
        }
    }
}

#[test]
fn block_waits_then_fails_with_enospc_and_resumes_when_the_remote_is_back() {
    let st = sites();
    let (p, s, mut m) = setup(&st, "block", None);
    assert_eq!(info(&p).full.policy, "block");
    st.remote_gone();
    let mut rng = Rng(7);
    let mut seed = 100;
    let mut slow_seen = false;
    let failed = loop {
        let (vol, off) = (rng.vol(), (rng.next() % (SIZE / 4096 - 16)) * 4096);
        seed += 1;
        let t0 = Instant::now();
        let r = write(&p, &mut m, vol, off, 64 << 10, seed);
        let took = t0.elapsed();
        let pi = info(&p);
        assert!(
            pi.journal_bytes <= LIMIT,
            "journal beyond its limit: {pi:?}"
        );
        match r {
            Ok(()) => {
                if pi.journal_bytes >= LIMIT * 8 / 10 {
                    assert!(pi.full.warning.is_some(), "no high-water warning: {pi:?}");
                    slow_seen |= took >= Duration::from_millis(1);
                }
            }
            Err(e) => {
                assert!(matches!(e, IoError::JournalFull { .. }), "{e}");
                assert_eq!(io_errno(&e), libc::ENOSPC);
                assert!(took >= Duration::from_millis(350), "failed after {took:?}");
                break (vol, off, seed);
            }
        }
        assert!(seed < 200, "the journal never filled");
    };
    assert!(
        slow_seen,
        "writes above the high-water mark were not slowed"
    );
    let pi = info(&p);
    let w = pi.full.warning.clone().unwrap_or_default();
    assert!(w.contains("journal full"), "{pi:?}");
    assert!(w.contains("ENOSPC"), "{w}");
    // The failed write left nothing behind.
    let (vol, off, _) = failed;
    assert!(image(&p, vol)[off as usize..][..64 << 10] == m.vol(vol)[off as usize..][..64 << 10]);
    let written = pi.written;
    // Still full: a write fails again, and is not journaled.
    assert!(write(&p, &mut m, "b", 0, 64 << 10, 999).is_err());
    assert_eq!(info(&p).written, written);
    st.remote_back();
    // The shipper publishes, the secondary applies and acknowledges, the journal is purged:
    // a write goes in again within the block timeout.
    let t0 = Instant::now();
    loop {
        seed += 1;
        match write(&p, &mut m, "b", 8192, 64 << 10, seed) {
            Ok(()) => break,
            Err(e) => assert!(
                t0.elapsed() < Duration::from_secs(30),
                "writes did not resume: {e}"
            ),
        }
    }
    for i in 0..40 {
        let (vol, off) = (rng.vol(), rng.next() % (SIZE - 70_000));
        write(
            &p,
            &mut m,
            vol,
            off,
            1 + (rng.next() % 65_000) as usize,
            500 + i,
        )
        .unwrap();
    }
    let si = wait_caught_up(&p, &s);
    assert!(si.consistent);
    assert!(info(&p).full.warning.is_none(), "{:?}", info(&p));
    same(&p, &s, &m);
    p.shutdown();
    s.shutdown();
}

/// A writer blocked on a full journal waits outside its volume's I/O lock: a snapshot of the
/// volume (which takes that lock exclusively) is not held up until the writer times out, and
/// the writer still fails with ENOSPC at its timeout, counted from when it began to wait.
#[test]
fn a_blocked_writer_does_not_hold_up_a_snapshot_of_its_volume() {
    let st = sites();
    let (p, s, mut m) = setup(&st, "block", None);
    st.remote_gone();
    let mut seed = 300;
    // Fill the journal until a write fails (400 ms timeout).
    loop {
        seed += 1;
        if write(&p, &mut m, "a", (seed % 48) * 65536, 64 << 10, seed).is_err() {
            break;
        }
        assert!(seed < 400, "the journal never filled");
    }
    p.replication
        .group_set(
            "g",
            &GroupSetOptions {
                block_timeout_ms: Some(3000),
                ..Default::default()
            },
        )
        .unwrap();
    let writer = {
        let p = p.clone();
        std::thread::spawn(move || {
            let v = p.volumes.volume("a").unwrap();
            let t0 = Instant::now();
            let r = p.write(&v, 0, &data(64 << 10, 7));
            (r, t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    p.snapshots.create_snapshot("a", "while-blocked").unwrap();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the snapshot waited {took:?} behind a blocked writer"
    );
    let (r, waited) = writer.join().unwrap();
    let e = r.expect_err("the journal is still full");
    assert_eq!(io_errno(&e), libc::ENOSPC, "{e}");
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(5500),
        "the writer failed after {waited:?}, not at its 3 s timeout"
    );
    st.remote_back();
    p.shutdown();
    s.shutdown();
}

/// Remote gone, policy suspend: write until suspended and 40 writes more. Returns the
/// model at the suspension point (what the secondary can have before a resync).
fn write_through_a_suspension(p: &Storage, m: &mut Model, rng: &mut Rng) -> Model {
    let mut at_suspension = None;
    for i in 0..200u64 {
        let before = m.clone();
        let (vol, off) = (rng.vol(), rng.next() % (SIZE - 70_000));
        write(p, m, vol, off, 1 + (rng.next() % 65_000) as usize, 1000 + i).unwrap();
        let pi = info(p);
        assert!(pi.journal_bytes <= LIMIT, "{pi:?}");
        if pi.state == "suspended" && at_suspension.is_none() {
            at_suspension = Some((before, i));
        }
        if let Some((_, at)) = &at_suspension {
            if i >= at + 40 {
                break;
            }
        }
        if i % 30 == 29 {
            let v = p.volumes.volume(vol).unwrap();
            let (o, n) = (rng.next() % SIZE, rng.next() % (2 * ES));
            p.discard(&v, o, n).unwrap();
            let n = n.min(SIZE - o) as usize;
            m.vol(vol)[o as usize..o as usize + n].fill(0);
        }
    }
    at_suspension.expect("never suspended").0
}

#[test]
fn suspend_tracks_writes_in_a_bitmap_and_resync_converges_with_a_snapshot_kept() {
    let st = sites();
    // A slow shipper, so the resync is seen in progress at the secondary.
    let (p, s, mut m) = setup(&st, "suspend", Some(768 << 10));
    st.remote_gone();
    let mut rng = Rng(99);
    let consistent_image = write_through_a_suspension(&p, &mut m, &mut rng);
    let pi = info(&p);
    assert_eq!(pi.state, "suspended");
    assert_eq!(pi.full.state, "suspended");
    assert!(
        pi.full.dirty_regions > 0 && pi.full.suspended_since.is_some(),
        "{pi:?}"
    );
    assert!(pi.full.warning.as_deref().unwrap_or("").contains("resync"));
    // No group snapshot and no resync while suspended / while the remote is away.
    assert!(p.replication.group_snapshot("g", "x").is_err());
    let e = p.replication.group_resync("g").unwrap_err().to_string();
    assert!(e.contains("not reachable"), "{e}");
    st.remote_back();
    p.replication.group_resync("g").unwrap();
    assert!(
        p.replication.group_resync("g").is_err(),
        "a second resync while one runs"
    );
    let start = info(&p).full.resync_seq;
    let snap = format!("resync-{start}");
    let mut seen_resync = false;
    let t0 = Instant::now();
    let mut i = 0;
    loop {
        let si = info(&s);
        if si.state == "resync" && !seen_resync {
            seen_resync = true;
            assert!(!si.consistent);
            assert_eq!(si.full.resync_snapshot.as_deref(), Some(snap.as_str()));
            // The snapshot holds the image at the suspension: consistent.
            for (v, want) in &consistent_image.vols {
                let got = snap_image(&s, v, &snap).expect("resync snapshot");
                assert!(got == *want, "snapshot of {v} is not the suspension image");
            }
            // A takeover now is refused and names the snapshot.
            let e = s
                .replication
                .group_takeover("g", None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&snap), "{e}");
        }
        if info(&p).full.state == "journaling" && si.consistent {
            break;
        }
        // Writes go on, journaled, during the resync.
        if i < 20 {
            let (vol, off) = (rng.vol(), rng.next() % (SIZE - 70_000));
            write(
                &p,
                &mut m,
                vol,
                off,
                4096 + (rng.next() % 4096) as usize,
                5000 + i,
            )
            .unwrap();
            i += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{:?}\n{si:?}",
            info(&p)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen_resync, "the secondary was never seen in its resync");
    wait_caught_up(&p, &s);
    let pi = info(&p);
    assert_eq!(pi.full.dirty_regions, 0);
    assert_eq!(pi.full.resyncs, 1);
    assert!(pi.full.resync_done > 0 && pi.full.resync_done == pi.full.resync_total);
    for v in ["a", "b"] {
        assert!(
            snap_image(&s, v, &snap).is_none(),
            "snapshot kept after the resync"
        );
    }
    same(&p, &s, &m);
    // Journaling as usual afterwards.
    write(&p, &mut m, "a", 0, 5000, 77).unwrap();
    wait_caught_up(&p, &s);
    same(&p, &s, &m);
    p.shutdown();
    s.shutdown();
}

#[test]
fn crash_while_suspended_and_during_the_resync_then_s_equals_p() {
    let st = sites();
    let (p, s, mut m) = setup(&st, "suspend", Some(512 << 10));
    st.remote_gone();
    let mut rng = Rng(4242);
    write_through_a_suspension(&p, &mut m, &mut rng);
    let dirty = info(&p).full.dirty_regions;
    assert!(dirty > 0);
    // Crash while suspended: no shutdown, no sync.
    crash(p);
    let p = st.primary();
    p.replication.start_groups();
    let pi = info(&p);
    assert_eq!(pi.state, "suspended", "{pi:?}");
    assert_eq!(pi.full.dirty_regions, dirty, "the bitmap did not survive");
    for (v, want) in &m.vols {
        assert!(image(&p, v) == *want, "{v}: the redo overwrote newer data");
    }
    // More bypassing writes after the restart.
    for i in 0..10 {
        let (vol, off) = (rng.vol(), rng.next() % (SIZE - 70_000));
        write(&p, &mut m, vol, off, 20_000, 3000 + i).unwrap();
    }
    st.remote_back();
    p.replication.group_resync("g").unwrap();
    // Crash in the middle of the resync (the slow shipper keeps it going for seconds).
    let t0 = Instant::now();
    while info(&p).full.resync_done == 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", info(&p));
        std::thread::sleep(Duration::from_millis(10));
    }
    let pi = info(&p);
    assert_eq!(pi.state, "resync", "{pi:?}");
    assert!(
        pi.full.dirty_regions > 0,
        "the resync ended before the crash: {pi:?}"
    );
    write(&p, &mut m, "b", 4096, 10_000, 4000).unwrap();
    crash(p);
    let p = st.primary();
    for (v, want) in &m.vols {
        assert!(
            image(&p, v) == *want,
            "{v}: lost at the crash in the resync"
        );
    }
    p.replication.start_groups();
    assert_eq!(info(&p).full.state, "resync");
    wait_caught_up(&p, &s);
    same(&p, &s, &m);
    assert_eq!(info(&p).full.dirty_regions, 0);
    p.shutdown();
    s.shutdown();
}

#[test]
fn group_set_changes_the_policy_and_the_limit_and_refuses_nonsense() {
    let st = sites();
    let (p, s, _m) = setup(&st, "block", None);
    let set = |o: GroupSetOptions| p.replication.group_set("g", &o);
    set(GroupSetOptions {
        journal_full: Some("suspend".into()),
        journal_limit: Some(2 << 20),
        block_timeout_ms: Some(1500),
    })
    .unwrap();
    let pi = info(&p);
    assert_eq!(pi.full.policy, "suspend");
    assert_eq!(pi.journal_limit, 2 << 20);
    assert_eq!(pi.full.block_timeout_ms, 1500);
    assert_eq!(pi.full.high_water, (2 << 20) / 1000 * 800);
    assert!(set(GroupSetOptions {
        journal_full: Some("drop".into()),
        ..Default::default()
    })
    .is_err());
    assert!(set(GroupSetOptions {
        journal_limit: Some(1000),
        ..Default::default()
    })
    .is_err());
    assert!(s
        .replication
        .group_set("g", &GroupSetOptions::default())
        .is_err());
    assert!(
        p.replication.group_resync("g").is_err(),
        "nothing to resync"
    );
    // The settings survive a restart.
    p.shutdown();
    drop(p);
    let p = st.primary();
    let pi = info(&p);
    assert_eq!(
        (
            pi.full.policy.as_str(),
            pi.journal_limit,
            pi.full.block_timeout_ms
        ),
        ("suspend", 2 << 20, 1500)
    );
    p.shutdown();
    s.shutdown();
}

#[test]
fn secondary_crash_in_the_middle_of_a_resync_keeps_its_snapshot_and_converges() {
    let st = sites();
    let (p, s, mut m) = setup(&st, "suspend", Some(512 << 10));
    st.remote_gone();
    let mut rng = Rng(31337);
    let consistent_image = write_through_a_suspension(&p, &mut m, &mut rng);
    st.remote_back();
    p.replication.group_resync("g").unwrap();
    let snap = format!("resync-{}", info(&p).full.resync_seq);
    let t0 = Instant::now();
    while info(&s).state != "resync" {
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", info(&s));
        std::thread::sleep(Duration::from_millis(5));
    }
    // Crash of the secondary while it applies the resync.
    crash(s);
    let s = st.secondary();
    let si = info(&s);
    assert_eq!(si.state, "resync", "{si:?}");
    assert!(!si.consistent);
    for (v, want) in &consistent_image.vols {
        let got = snap_image(&s, v, &snap).expect("the snapshot survives the crash");
        assert!(got == *want, "{v}: the snapshot changed in the crash");
    }
    s.replication.start_groups();
    wait_caught_up(&p, &s);
    for v in ["a", "b"] {
        assert!(snap_image(&s, v, &snap).is_none(), "snapshot kept");
    }
    same(&p, &s, &m);
    p.shutdown();
    s.shutdown();
}

#[test]
fn restore_to_a_moment_inside_a_resync_is_refused_and_after_it_equals_the_primary() {
    let st = sites();
    let (p, s, mut m) = setup(&st, "suspend", None);
    // The secondary retains what it applies, from a group snapshot on (the restore base).
    let keep = PitrOptions {
        retain_size: Some(1 << 30),
        ..Default::default()
    };
    s.replication.group_set_pitr("g", &keep).unwrap();
    p.replication.group_snapshot("g", "base0").unwrap();
    wait_caught_up(&p, &s);
    st.remote_gone();
    let mut rng = Rng(7);
    write_through_a_suspension(&p, &mut m, &mut rng);
    st.remote_back();
    p.replication.group_resync("g").unwrap();
    let start = info(&p).full.resync_seq;
    assert!(start > 0);
    let last = wait_caught_up(&p, &s).applied;
    assert!(last > start);
    // The resync's regions come in no write order: no image between its records.
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Seq(start), Some("r1-"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside the resync"), "{e}");
    assert!(
        s.volumes.volume("r1-a").is_none(),
        "a refused restore leaves nothing"
    );
    // After its end the image is whole again.
    let rep = s
        .replication
        .group_restore("g", RestoreTarget::Seq(last), Some("r2-"), None)
        .unwrap();
    assert_eq!(rep.seq, last);
    for (v, want) in &m.vols {
        assert!(
            image(&s, &format!("r2-{v}")) == *want,
            "restored {v} differs from the primary's writes"
        );
    }
}
