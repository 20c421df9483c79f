//! Journal groups at library level: two pools, one remote directory, content checked at
//! every step.

mod common;
use common::images::{image, snap_image};
use common::sites::{crash, Sites};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fusevol::control::{GroupInfo, GroupOptions};
use fusevol::daemon::status;
use fusevol::fuse::io_errno;
use fusevol::storage::Storage;

const ES: u64 = 64 << 10;
const SIZE: u64 = 4 << 20;

/// The two sites of these tests: pools of two 64 MiB arrays.
fn sites() -> Sites {
    Sites::new(ES, 64 << 20, 2)
}

fn info(pool: &Storage, g: &str) -> GroupInfo {
    status::group_info(pool, Some(g)).unwrap().remove(0)
}

/// Wait until the secondary has applied everything the primary wrote and is consistent.
fn wait_caught_up(p: &Storage, s: &Storage, g: &str) -> GroupInfo {
    let t0 = Instant::now();
    loop {
        let pi = info(p, g);
        let si = info(s, g);
        if si.consistent && si.applied == pi.written && pi.acknowledged == pi.written {
            return si;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not caught up: primary {pi:?}\nsecondary {si:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write(pool: &Storage, name: &str, off: u64, len: usize, seed: u64) {
    let v = pool.volumes.volume(name).unwrap();
    let data: Vec<u8> = (0..len)
        .map(|i| (seed.wrapping_mul(31) ^ i as u64) as u8 | 1)
        .collect();
    pool.write(&v, off, &data).unwrap();
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn base_copy_updates_discards_and_group_snapshots_reach_the_secondary() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    p.volumes.create_volume("a", SIZE, None).unwrap();
    p.volumes.create_volume("b", SIZE, None).unwrap();
    // Data before the group exists travels as base records.
    write(p, "a", 0, 300_000, 1);
    write(p, "b", 2 << 20, 100_000, 2);
    let opts = GroupOptions {
        seal_ms: Some(50),
        segment_size: Some(256 << 10),
        ..Default::default()
    };
    p.replication
        .group_create("g", &["a".into(), "b".into()], &st.remote, &opts)
        .unwrap();
    assert_eq!(info(p, "g").role, "primary");
    s.replication.group_attach("g", &st.remote).unwrap();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for i in 0..400u64 {
        let vol = if i % 2 == 0 { "a" } else { "b" };
        let off = rng.next() % (SIZE - 70_000);
        let len = 1 + (rng.next() % 70_000) as usize;
        write(p, vol, off, len, i + 10);
        if i % 50 == 7 {
            let v = p.volumes.volume(vol).unwrap();
            p.discard(&v, rng.next() % SIZE, rng.next() % (3 * ES))
                .unwrap();
        }
        if i == 200 {
            p.replication.group_snapshot("g", "mid").unwrap();
        }
    }
    let si = wait_caught_up(p, s, "g");
    assert_eq!(si.role, "secondary");
    assert_eq!(si.state, "consistent");
    assert!(si.consistent_since.is_some());
    for v in ["a", "b"] {
        assert!(image(p, v) == image(s, v), "volume {v} differs");
        assert!(
            snap_image(p, v, "mid").unwrap() == snap_image(s, v, "mid").unwrap(),
            "snapshot mid of {v} differs"
        );
    }
    // The secondary's volumes are read-only while attached.
    let sv = s.volumes.volume("a").unwrap();
    let err = s.write(&sv, 0, b"x").unwrap_err();
    assert_eq!(io_errno(&err), libc::EROFS, "{err}");
    // The primary purges what was acknowledged (after a sync makes the redo floor current).
    p.sync().unwrap();
    let t0 = Instant::now();
    while info(p, "g").journal_bytes > 4096 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", info(p, "g"));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Resize travels too; a volume removed from the group becomes writable there.
    p.resize_volume("b", SIZE * 2, false).unwrap();
    write(p, "b", SIZE + 5, 1000, 99);
    wait_caught_up(p, s, "g");
    assert_eq!(s.volumes.volume("b").unwrap().size(), SIZE * 2);
    assert!(image(p, "b") == image(s, "b"));
    p.replication.group_remove_volume("g", "b").unwrap();
    write(p, "a", 7, 7, 7);
    wait_caught_up(p, s, "g");
    let sb = s.volumes.volume("b").unwrap();
    s.write(&sb, 0, b"now writable").unwrap();
    p.shutdown();
    s.shutdown();
}

#[test]
fn corrupt_segment_is_refused_by_file_and_offset_and_nothing_after_it_applies() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    p.volumes.create_volume("a", SIZE, None).unwrap();
    p.replication
        .group_create("g", &["a".into()], &st.remote, &GroupOptions::default())
        .unwrap();
    for i in 0..20u64 {
        write(p, "a", i * 4096, 4096, i);
        std::thread::sleep(Duration::from_millis(30));
    }
    // Wait until several segments are published.
    let dir = st.remote.join("g");
    let t0 = Instant::now();
    let segs = loop {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jseg"))
            .collect();
        segs.sort();
        if segs.len() >= 3 && info(p, "g").shipped == info(p, "g").written {
            break segs;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    let bad = &segs[1];
    let mut b = std::fs::read(bad).unwrap();
    b[100] ^= 0x55;
    std::fs::write(bad, &b).unwrap();
    let first_bad: u64 = bad.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    s.replication.group_attach("g", &st.remote).unwrap();
    let t0 = Instant::now();
    let si = loop {
        let si = info(s, "g");
        if si.last_error.is_some() {
            break si;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{si:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let msg = si.last_error.unwrap();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("offset 64"), "{msg}");
    assert_eq!(si.state, "error");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        info(s, "g").applied,
        first_bad - 1,
        "applied past the damage"
    );
    p.shutdown();
    s.shutdown();
}

#[test]
fn remote_gone_keeps_the_primary_serving_and_shipping_resumes() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    p.volumes.create_volume("a", SIZE, None).unwrap();
    p.replication
        .group_create("g", &["a".into()], &st.remote, &GroupOptions::default())
        .unwrap();
    s.replication.group_attach("g", &st.remote).unwrap();
    write(p, "a", 0, 8192, 1);
    wait_caught_up(p, s, "g");
    st.remote_gone();
    for i in 0..30u64 {
        write(p, "a", i * 10_000, 5000, i + 3);
    }
    let t0 = Instant::now();
    let pi = loop {
        let pi = info(p, "g");
        if pi.last_error.is_some() {
            break pi;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{pi:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(pi.state, "remote-error");
    assert!(pi.lag_records >= 30, "{pi:?}");
    assert!(
        !st.remote.exists(),
        "the shipper must not recreate a missing remote"
    );
    st.remote_back();
    wait_caught_up(p, s, "g");
    assert!(image(p, "a") == image(s, "a"));
    assert!(info(p, "g").last_error.is_none());
    p.shutdown();
    s.shutdown();
}

#[test]
fn primary_crash_redoes_its_journal_tail_and_the_secondary_converges() {
    let st = sites();
    let (p, s) = (st.primary(), &st.secondary());
    p.volumes.create_volume("a", SIZE, None).unwrap();
    p.volumes.create_volume("b", SIZE, None).unwrap();
    p.replication
        .group_create(
            "g",
            &["a".into(), "b".into()],
            &st.remote,
            &GroupOptions::default(),
        )
        .unwrap();
    s.replication.group_attach("g", &st.remote).unwrap();
    for i in 0..100u64 {
        write(
            &p,
            if i % 3 == 0 { "b" } else { "a" },
            (i * 37_000) % SIZE,
            9000,
            i,
        );
    }
    // The initial copy journals its base records in the background; a restart would run it
    // again (more records), so the crash comes after it.
    let t0 = Instant::now();
    while info(&p, "g").state == "initial-copy" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "initial copy never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = info(&p, "g").written;
    let (a, b) = (image(&p, "a"), image(&p, "b"));
    // "Crash": no shutdown, no sync; the workers see the pool gone and stop.
    crash(p);
    let p = st.primary();
    p.replication.start_groups();
    assert!(image(&p, "a") == a && image(&p, "b") == b);
    assert_eq!(info(&p, "g").written, written);
    write(&p, "a", 0, 100, 5);
    wait_caught_up(&p, s, "g");
    for v in ["a", "b"] {
        assert!(image(&p, v) == image(s, v), "{v} differs");
    }
    p.shutdown();
    s.shutdown();
}

#[test]
fn a_second_secondary_is_refused_and_a_recreated_group_seeds_a_new_one() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    p.volumes.create_volume("a", SIZE, None).unwrap();
    write(p, "a", 0, 200_000, 1);
    let opts = GroupOptions {
        seal_ms: Some(20),
        segment_size: Some(64 << 10),
        ..Default::default()
    };
    p.replication
        .group_create("g", &["a".into()], &st.remote, &opts)
        .unwrap();
    s.replication.group_attach("g", &st.remote).unwrap();
    for i in 0..20 {
        write(p, "a", i * 70_000, 60_000, i + 5);
    }
    wait_caught_up(p, s, "g");
    p.sync().unwrap();
    let third = st.open("third");
    let e = third
        .replication
        .group_attach("g", &st.remote)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another secondary"), "{e}");
    assert!(e.contains("group create"), "{e}");
    assert!(
        status::group_info(&third, Some("g")).is_err(),
        "a refused attach left a group behind"
    );
    // What the message says works: the old secondary lets go, the primary makes the group
    // anew, and the new secondary gets a whole initial copy.
    s.replication.group_delete("g").unwrap();
    p.replication.group_delete("g").unwrap();
    p.replication
        .group_create("g", &["a".into()], &st.remote, &opts)
        .unwrap();
    write(p, "a", 123, 4567, 77);
    third.replication.group_attach("g", &st.remote).unwrap();
    wait_caught_up(p, &third, "g");
    assert!(
        image(p, "a") == image(&third, "a"),
        "the new secondary differs"
    );
    p.shutdown();
    s.shutdown();
    third.shutdown();
}

#[test]
fn a_restarted_primary_resumes_the_base_copy_where_it_was_durable() {
    let st = sites();
    let (primary, secondary) = (st.primary(), st.secondary());
    let p = &primary;
    // 256 allocated extents of 64 KiB; a 4 MiB journal holds about 60 of them.
    p.volumes.create_volume("a", 16 << 20, None).unwrap();
    for i in 0..16u64 {
        write(p, "a", i << 20, 1 << 20, i + 1);
    }
    let opts = GroupOptions {
        seal_ms: Some(20),
        segment_size: Some(256 << 10),
        journal_limit: Some(4 << 20),
        ..Default::default()
    };
    p.replication
        .group_create("g", &["a".into()], &st.remote, &opts)
        .unwrap();
    // No secondary yet: nothing is acknowledged, the base copy stops at the journal limit.
    let mut last = 0;
    let mut still = Instant::now();
    let t0 = Instant::now();
    loop {
        let w = info(p, "g").written;
        if w != last {
            (last, still) = (w, Instant::now());
        } else if w > 0 && still.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", info(p, "g"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        last > 32 && last < 200,
        "the base copy did not stop at the limit: {last}"
    );
    // Status shows where the copy is.
    let b = info(p, "g").base_copy.expect("the initial copy runs");
    assert_eq!(
        (b.volume.as_str(), b.extents_total, b.volumes_after),
        ("a", 256, 0)
    );
    assert!(
        b.extents_done + 3 >= last && b.extents_done < last,
        "{b:?} with {last} records written"
    );
    // A pool sync makes the progress durable (the redo floor passes its records).
    p.sync().unwrap();
    p.shutdown();
    let written_before = last;
    drop(primary);
    let p = st.primary();
    p.replication.start_groups();
    let s = &secondary;
    s.replication.group_attach("g", &st.remote).unwrap();
    let si = wait_caught_up(&p, s, "g");
    assert!(si.consistent);
    assert!(image(&p, "a") == image(s, "a"), "the secondary differs");
    assert!(info(&p, "g").base_copy.is_none());
    // After the restart the copy journaled only the extents after its durable progress
    // (a multiple of 16 extents), not all 256 again.
    let after = info(&p, "g").written - written_before;
    let resumed_at = 256 + 1 - after; // + 1: the BaseDone record
    assert!(
        resumed_at >= 32 && resumed_at.is_multiple_of(16) && resumed_at < written_before,
        "{after} records after the restart: resumed at extent {resumed_at} of 256 ({written_before} records before)"
    );
    p.shutdown();
    s.shutdown();
}
