//! Point-in-time recovery at library level: two pools, one remote directory; retention,
//! `restore-to` at several moments compared with group snapshots and with a model of the
//! writes, refusals (too old, damaged), pruning, and the apply delay.

mod common;
use common::images::{image, snap_image};
use common::sites::{crash, Sites};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fusevol::control::{GroupInfo, GroupOptions, PitrInfo, PitrOptions};
use fusevol::daemon::status;
use fusevol::journal::now_ns;
use fusevol::replication::pitr::RestoreTarget;
use fusevol::storage::Storage;

const ES: u64 = 64 << 10;
const SIZE: u64 = 1 << 20;

/// The two sites of these tests: pools of two 96 MiB arrays.
fn sites() -> Sites {
    Sites::new(ES, 96 << 20, 2)
}

/// The volumes of `VOLS` on the primary, in group "g" replicated to `remote`.
fn primary_group(p: &Storage, remote: &Path) {
    for v in VOLS {
        p.volumes.create_volume(v, SIZE, None).unwrap();
    }
    p.replication
        .group_create("g", &["a".into(), "b".into()], remote, &opts())
        .unwrap();
}

fn opts() -> GroupOptions {
    GroupOptions {
        seal_ms: Some(20),
        segment_size: Some(64 << 10),
        ..Default::default()
    }
}

fn info(pool: &Storage, g: &str) -> GroupInfo {
    status::group_info(pool, Some(g)).unwrap().remove(0)
}

fn pitr(pool: &Storage, g: &str) -> PitrInfo {
    info(pool, g)
        .pitr
        .expect("a secondary shows its pitr fields")
}

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

/// The primary's initial copy is journaled (so the model's sequence numbers are the writes').
fn wait_base(p: &Storage) {
    let t0 = Instant::now();
    while !info(p, "g").consistent {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_shipped(p: &Storage, g: &str) {
    let t0 = Instant::now();
    loop {
        let pi = info(p, g);
        if pi.shipped == pi.written {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{pi:?}");
        std::thread::sleep(Duration::from_millis(20));
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
}

/// The writes done to the primary, with their sequence numbers: the model of every moment.
#[derive(Default)]
struct Model {
    writes: Vec<(u64, usize, u64, Vec<u8>)>,
}

const VOLS: [&str; 2] = ["a", "b"];

impl Model {
    /// A random write (or a discard, as zeros) to one of the volumes; returns its seq.
    fn write(&mut self, p: &Storage, rng: &mut Rng, i: u64) -> u64 {
        let vi = (rng.next() % 2) as usize;
        let v = p.volumes.volume(VOLS[vi]).unwrap();
        let off = rng.next() % (SIZE - 40_000);
        let len = 1 + (rng.next() % 40_000) as usize;
        let data: Vec<u8> = if i % 11 == 5 {
            p.discard(&v, off, len as u64).unwrap();
            vec![0; len]
        } else {
            let d: Vec<u8> = (0..len)
                .map(|k| (i as u8).wrapping_mul(7) ^ k as u8 | 1)
                .collect();
            p.write(&v, off, &d).unwrap();
            d
        };
        let seq = info(p, "g").written;
        self.writes.push((seq, vi, off, data));
        seq
    }

    fn at(&self, seq: u64) -> [Vec<u8>; 2] {
        let mut img = [vec![0u8; SIZE as usize], vec![0u8; SIZE as usize]];
        for (s, vi, off, d) in &self.writes {
            if *s <= seq {
                img[*vi][*off as usize..*off as usize + d.len()].copy_from_slice(d);
            }
        }
        img
    }
}

fn assert_restored(s: &Storage, names: [&str; 2], want: &[Vec<u8>; 2], what: &str) {
    for (n, w) in names.iter().zip(want) {
        assert!(image(s, n) == *w, "{what}: restored volume {n} differs");
    }
}

fn marker_seq(s: &Storage, name: &str) -> u64 {
    pitr(s, "g")
        .markers
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("marker {name} not known"))
        .seq
}

fn retain(secs: u64, size: u64) -> PitrOptions {
    PitrOptions {
        retain_secs: Some(secs),
        retain_size: Some(size),
        apply_delay: None,
    }
}

#[test]
fn restore_to_several_moments_equals_the_snapshots_and_the_model() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    primary_group(p, &st.remote);
    let mut model = Model::default();
    s.replication
        .group_attach_pitr("g", &st.remote, &retain(3600, 0))
        .unwrap();
    wait_base(p);
    let mut rng = Rng(0x2545f4914f6cdd1d);
    // (seq, time just after it) in the middle of each round.
    let mut mids: Vec<(u64, u64)> = Vec::new();
    for round in 0..4u64 {
        for i in 0..24u64 {
            let seq = model.write(p, &mut rng, round * 100 + i);
            if i == 11 {
                std::thread::sleep(Duration::from_millis(3));
                mids.push((seq, now_ns()));
                std::thread::sleep(Duration::from_millis(3));
            }
            if i % 6 == 0 {
                std::thread::sleep(Duration::from_millis(25)); // several segments
            }
        }
        p.replication
            .group_snapshot("g", &format!("r{round}"))
            .unwrap();
    }
    let si = wait_caught_up(p, s, "g");
    std::thread::sleep(Duration::from_millis(200)); // the last segment is retired after its ack
    let pi = pitr(s, "g");
    assert!(pi.retained_segments >= 4, "{pi:?}");
    assert_eq!(pi.retained_oldest_seq, 1, "{pi:?}");
    assert!(pi.retained_oldest_time_ns > 0, "{pi:?}");
    assert_eq!(pi.markers.len(), 4, "{pi:?}");
    assert!(pi.markers.iter().all(|m| m.usable), "{pi:?}");
    // Nothing applied is left among the published segments.
    let published = std::fs::read_dir(st.remote.join("g"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".jseg")
        })
        .count();
    assert_eq!(published, 0);

    // At each group snapshot: equal to the primary's snapshot (and the secondary's).
    for round in 0..4 {
        let snap = format!("r{round}");
        let seq = marker_seq(s, &snap);
        let r = s
            .replication
            .group_restore(
                "g",
                RestoreTarget::Seq(seq),
                Some(&format!("m{round}-")),
                None,
            )
            .unwrap();
        assert_eq!(r.seq, seq);
        assert_eq!(r.records, 0, "a marker's own image needs no records: {r:?}");
        assert!(r.base.contains(&snap), "{r:?}");
        let want = [
            snap_image(p, "a", &snap).unwrap(),
            snap_image(p, "b", &snap).unwrap(),
        ];
        assert_restored(
            s,
            [&format!("m{round}-a"), &format!("m{round}-b")],
            &want,
            &snap,
        );
        assert!(
            want == model.at(seq),
            "the model agrees with snapshot {snap}"
        );
    }
    // Between snapshots, by sequence number: the model at that point. Round 0's middle is
    // before any snapshot: from the initial image.
    for (k, &(seq, _)) in mids.iter().enumerate() {
        let r = s
            .replication
            .group_restore("g", RestoreTarget::Seq(seq), None, None)
            .unwrap();
        assert_eq!(r.seq, seq);
        if k == 0 {
            assert_eq!(r.base, "initial image", "{r:?}");
        } else {
            assert!(r.base.contains(&format!("r{}", k - 1)), "{r:?}");
        }
        assert!(r.records > 0);
        assert_eq!(r.outputs, vec![format!("g-{seq}-a"), format!("g-{seq}-b")]);
        assert_restored(
            s,
            [&format!("g-{seq}-a"), &format!("g-{seq}-b")],
            &model.at(seq),
            &format!("seq {seq}"),
        );
    }
    // By time: the last record at or before it.
    for (k, &(seq, t)) in mids.iter().enumerate() {
        let prefix = format!("t{k}-");
        let r = s
            .replication
            .group_restore("g", RestoreTarget::Time(t), Some(&prefix), None)
            .unwrap();
        assert_eq!(r.seq, seq, "time {t}: {r:?}");
        assert!(r.time_ns <= t && r.time_ns > 0);
        assert_restored(
            s,
            [&format!("{prefix}a"), &format!("{prefix}b")],
            &model.at(seq),
            &format!("time of seq {seq}"),
        );
    }
    // Into image files.
    let files = st.t.path().join("images");
    std::fs::create_dir(&files).unwrap();
    let (seq, _) = mids[2];
    let r = s
        .replication
        .group_restore("g", RestoreTarget::Seq(seq), None, Some(&files))
        .unwrap();
    assert_eq!(r.outputs.len(), 2);
    let want = model.at(seq);
    for (vi, v) in VOLS.iter().enumerate() {
        let got = std::fs::read(files.join(format!("{v}.img"))).unwrap();
        assert!(got == want[vi], "image file of {v} differs");
    }
    // The same again is refused (nothing overwritten), and so is a name taken.
    assert!(s
        .replication
        .group_restore("g", RestoreTarget::Seq(seq), None, Some(&files))
        .is_err());
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Seq(seq), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    // A target beyond what is there, and an inconsistent one (during the initial copy).
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Seq(si.applied + 10), Some("x-"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("go up to sequence number"), "{e}");
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Seq(2), Some("x-"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a consistent group image"), "{e}");
    assert!(s.volumes.volume("x-a").is_none());
    // The group went on being applied; the restored volumes are plain and writable.
    for i in 0..10 {
        model.write(p, &mut rng, 900 + i);
    }
    wait_caught_up(p, s, "g");
    for v in VOLS {
        assert!(image(p, v) == image(s, v), "{v} differs after the restores");
    }
    let rv = s.volumes.volume("m0-a").unwrap();
    s.write(&rv, 0, b"writable").unwrap();
    // A marker's snapshot deleted and its name taken again (now a newer image): that marker
    // is no base any more; the one before it and the records after it give the same image.
    let r3 = marker_seq(s, "r3");
    s.snapshots.delete_snapshot("a", "r3").unwrap();
    s.snapshots.create_snapshot("a", "r3").unwrap();
    let m = pitr(s, "g");
    assert!(
        m.markers.iter().any(|m| m.name == "r3" && !m.usable),
        "{m:?}"
    );
    let r = s
        .replication
        .group_restore("g", RestoreTarget::Seq(r3), Some("again-"), None)
        .unwrap();
    assert!(r.base.contains("'r2'"), "{r:?}");
    let want = [
        snap_image(p, "a", "r3").unwrap(),
        snap_image(p, "b", "r3").unwrap(),
    ];
    assert_restored(s, ["again-a", "again-b"], &want, "r3 rebuilt from r2");
    p.shutdown();
    s.shutdown();
}

fn retained_files(remote: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(remote.join("g").join("retained"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn too_old_and_damaged_are_refused_and_pruning_keeps_size_and_age() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    primary_group(p, &st.remote);
    let mut model = Model::default();
    s.replication
        .group_attach_pitr("g", &st.remote, &retain(0, 400 << 10))
        .unwrap();
    wait_base(p);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut last = 0;
    for i in 0..120u64 {
        last = model.write(p, &mut rng, i);
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(25));
        }
        if i == 105 {
            p.replication.group_snapshot("g", "late").unwrap();
        }
    }
    wait_caught_up(p, s, "g");
    // Pruned by size: at most the limit is kept, and the oldest went first.
    let pi = pitr(s, "g");
    assert!(pi.retained_bytes <= 400 << 10, "{pi:?}");
    assert!(pi.retained_segments >= 2, "{pi:?}");
    assert!(pi.retained_oldest_seq > 1, "{pi:?}");
    let files = retained_files(&st.remote);
    assert_eq!(files.len() as u64, pi.retained_segments);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(total <= 400 << 10);
    // Before anything retained and before every snapshot: refused, nothing made.
    let before = s.volumes.volume_list().len();
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Seq(3), Some("old-"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("older than anything retained"), "{e}");
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Time(1_000_000_000), Some("old-"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("older than anything retained"), "{e}");
    assert_eq!(s.volumes.volume_list().len(), before);
    // The last record restores from the late snapshot and the segments after it.
    let late = marker_seq(s, "late");
    assert!(pi.retained_oldest_seq <= late, "{pi:?}");
    let r = s
        .replication
        .group_restore("g", RestoreTarget::Seq(last), Some("new-"), None)
        .unwrap();
    assert!(r.base.contains("late"), "{r:?}");
    assert_eq!(r.records, last - late);
    assert_restored(s, ["new-a", "new-b"], &model.at(last), "last");
    // A damaged retained segment: refused naming the file and the offset; nothing made.
    let victim = files.last().unwrap().clone();
    let mut b = std::fs::read(&victim).unwrap();
    b[64 + 30] ^= 0x5a; // the sequence number of the first record (its CRC fails)
    std::fs::write(&victim, &b).unwrap();
    let before = s.volumes.volume_list().len();
    let e = s
        .replication
        .group_restore("g", RestoreTarget::Seq(last), Some("bad-"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&victim.display().to_string()), "{e}");
    assert!(e.contains("offset 64"), "{e}");
    assert_eq!(
        s.volumes.volume_list().len(),
        before,
        "nothing of a failed restore is kept"
    );
    assert!(s.volumes.volume("bad-a").is_none());
    // Pruned by age: with a 1 s limit, everything goes within a few seconds.
    s.replication.group_set_pitr("g", &retain(1, 0)).unwrap();
    let t0 = Instant::now();
    while pitr(s, "g").retained_segments > 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", pitr(s, "g"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(retained_files(&st.remote).is_empty());
    // Retention off: applied segments are deleted again, nothing is retained.
    s.replication.group_set_pitr("g", &retain(0, 0)).unwrap();
    assert_eq!(pitr(s, "g").retain_secs, 0);
    model.write(p, &mut rng, 500);
    wait_caught_up(p, s, "g");
    std::thread::sleep(Duration::from_millis(100));
    assert!(retained_files(&st.remote).is_empty());
    p.shutdown();
    s.shutdown();
}

#[test]
fn apply_delay_holds_a_consistent_image_behind_and_takeover_ignores_it() {
    let st = sites();
    let (p, s) = (&st.primary(), &st.secondary());
    primary_group(p, &st.remote);
    let mut model = Model::default();
    let delay = 3;
    s.replication
        .group_attach_pitr(
            "g",
            &st.remote,
            &PitrOptions {
                apply_delay: Some(delay),
                retain_secs: Some(3600),
                retain_size: None,
            },
        )
        .unwrap();
    wait_base(p);
    let mut rng = Rng(0xdeadbeefcafef00d);
    for i in 0..20 {
        model.write(p, &mut rng, i);
    }
    let written = info(p, "g").written;
    wait_shipped(p, "g");
    let t0 = Instant::now();
    // Held back for the delay.
    while t0.elapsed() < Duration::from_millis(1500) {
        let si = info(s, "g");
        assert_eq!(si.applied, 0, "applied before the delay passed: {si:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pitr(s, "g").apply_delay, delay);
    // Then applied.
    let si = wait_caught_up(p, s, "g");
    assert_eq!(si.applied, written);
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    // A second round waits; meanwhile the image is the group's image at `applied`.
    for i in 0..20 {
        model.write(p, &mut rng, 100 + i);
    }
    let written2 = info(p, "g").written;
    wait_shipped(p, "g");
    std::thread::sleep(Duration::from_millis(500));
    let si = info(s, "g");
    assert_eq!(si.applied, written, "{si:?}");
    assert!(
        si.lag_records > 0 && si.lag_seconds >= delay as f64 * 0.5,
        "{si:?}"
    );
    let want = model.at(si.applied);
    for (vi, v) in VOLS.iter().enumerate() {
        assert!(
            image(s, v) == want[vi],
            "{v}: not the image at {}",
            si.applied
        );
    }
    // A takeover applies everything complete, delay or not.
    let detail = s.replication.group_takeover("g", None).unwrap();
    let r = status::handover_report(s, "g", detail).unwrap();
    assert_eq!(r.info.start_seq, written2, "{r:?}");
    let want = model.at(written2);
    for (vi, v) in VOLS.iter().enumerate() {
        assert!(image(s, v) == want[vi], "{v} after the takeover");
    }
    // Retention does not disturb the handover: the new primary ships epoch 2 beside
    // `retained/`, the old one goes stale, fails back and applies it (its own retention is
    // off, so nothing retained is pruned).
    let kept = retained_files(&st.remote);
    assert!(!kept.is_empty());
    for i in 0..10 {
        let v = s.volumes.volume(VOLS[i % 2]).unwrap();
        s.write(&v, (i as u64) * 4096, &[i as u8 + 1; 4096])
            .unwrap();
    }
    let t0 = Instant::now();
    while info(p, "g").stale.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", info(p, "g"));
        std::thread::sleep(Duration::from_millis(50));
    }
    p.replication.group_failback("g", false).unwrap();
    let t0 = Instant::now();
    loop {
        let (pi, si) = (info(p, "g"), info(s, "g"));
        if pi.consistent && pi.applied == si.written && si.acknowledged == si.written {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{pi:?}\n{si:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for v in VOLS {
        assert!(image(p, v) == image(s, v), "{v} after the failback");
    }
    assert_eq!(retained_files(&st.remote), kept);
    // The new primary can still restore to a moment of epoch 1 it applied as secondary.
    let r = s
        .replication
        .group_restore("g", RestoreTarget::Seq(written), Some("e1-"), None)
        .unwrap();
    assert_eq!(r.seq, written);
    let want = model.at(written);
    assert_restored(s, ["e1-a", "e1-b"], &want, "epoch 1 after the takeover");
    p.shutdown();
    s.shutdown();
}

#[test]
fn settings_markers_and_retained_segments_survive_a_crash_of_the_secondary() {
    // The secondary's only handle is `s` (dropped for the crash).
    let st = sites();
    let (p, s) = (st.primary(), st.secondary());
    let (p, remote) = (&p, st.remote.clone());
    primary_group(p, &remote);
    let mut model = Model::default();
    s.replication
        .group_attach_pitr(
            "g",
            &remote,
            &PitrOptions {
                retain_secs: Some(7200),
                retain_size: Some(1 << 30),
                apply_delay: Some(0),
            },
        )
        .unwrap();
    wait_base(p);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..30 {
        model.write(p, &mut rng, i);
        if i == 15 {
            p.replication.group_snapshot("g", "s1").unwrap();
        }
    }
    let last = model.write(p, &mut rng, 99);
    wait_caught_up(p, &s, "g");
    let before = pitr(&s, "g");
    // "Crash": no shutdown; the workers see the pool gone and stop.
    crash(s);
    let s = st.secondary();
    s.replication.start_groups();
    let t0 = Instant::now();
    let after = loop {
        let a = pitr(&s, "g");
        if a.retained_segments > 0 || t0.elapsed() > Duration::from_secs(5) {
            break a;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (after.retain_secs, after.retain_bytes, after.apply_delay),
        (7200, 1 << 30, 0)
    );
    assert_eq!(after.markers, before.markers);
    assert_eq!(after.retained_oldest_seq, 1, "{after:?}");
    let r = s
        .replication
        .group_restore("g", RestoreTarget::Seq(last), Some("x-"), None)
        .unwrap();
    assert!(r.base.contains("s1"), "{r:?}");
    assert_restored(&s, ["x-a", "x-b"], &model.at(last), "after the crash");
    // Still applying.
    model.write(p, &mut rng, 100);
    wait_caught_up(p, &s, "g");
    p.shutdown();
    s.shutdown();
}
