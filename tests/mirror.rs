//! Split mirrors at library level: content at every transition, against an in-memory oracle.

mod common;
use common::images::image;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusevol::daemon::status;
use fusevol::fuse::io_errno;
use fusevol::mirror::PairState;
use fusevol::pool::{create_pool, ArraySpec, PoolSpec};
use fusevol::storage::Storage;

const ES: u64 = 64 << 10;
/// Failpoints are process-wide: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const SIZE: u64 = 4 << 20;

fn pool_at(dir: &Path) -> Arc<Storage> {
    let spec = PoolSpec {
        arrays: vec![
            ArraySpec {
                name: "p0".into(),
                size: 32 << 20,
                tier: "fast".into(),
            },
            ArraySpec {
                name: "p1".into(),
                size: 32 << 20,
                tier: "fast".into(),
            },
            ArraySpec {
                name: "b0".into(),
                size: 32 << 20,
                tier: "backup".into(),
            },
            ArraySpec {
                name: "b1".into(),
                size: 32 << 20,
                tier: "backup".into(),
            },
        ],
        extent_size: ES,
        volumes: vec![],
    };
    create_pool(dir, &spec).unwrap();
    Storage::open(dir).unwrap()
}

fn write(pool: &Storage, model: &mut [u8], name: &str, off: u64, len: usize, seed: u8) {
    let v = pool.volumes.volume(name).unwrap();
    let data: Vec<u8> = (0..len).map(|i| seed ^ (i as u8) | 1).collect();
    pool.write(&v, off, &data).unwrap();
    model[off as usize..off as usize + len].copy_from_slice(&data);
}

fn wait_state(pool: &Storage, pvol: &str, want: PairState) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pool.mirror.pair_of(pvol).unwrap();
        let s = p.state();
        if s == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "pair {pvol} stuck in {} waiting for {}",
            s.name(),
            want.name()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn same(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let at = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!("{what}: images differ at byte {at}");
    }
}

#[test]
fn copy_split_resync_restore() {
    let _s = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = pool_at(&dir);
    pool.volumes.create_volume("p", SIZE, Some("fast")).unwrap();
    let mut pm = vec![0u8; SIZE as usize];
    for i in 0..20 {
        write(&pool, &mut pm, "p", i * 150_000, 70_000, i as u8);
    }
    let pair = pool
        .create_pair("p", "s", true, Some("backup"), None, Some(8 << 20))
        .unwrap();
    assert!(pair.separate_arrays, "S-VOL on the backup arrays");
    // Writes during COPY go to both sides.
    for i in 0..10 {
        write(&pool, &mut pm, "p", i * 333_333 + 17, 9_000, 0x40 + i as u8);
    }
    // The S-VOL is read-only while paired.
    let s = pool.volumes.volume("s").unwrap();
    assert_eq!(io_errno(&pool.write(&s, 0, b"x").unwrap_err()), libc::EROFS);
    wait_state(&pool, "p", PairState::Pair);
    same(&image(&pool, "s"), &pm, "S after initial copy");
    // The S-VOL's extents are on other arrays than the P-VOL's.
    let info = status::volume_info_by_name(&pool, "s").unwrap();
    assert!(
        info.extents_per_array
            .iter()
            .all(|(a, _)| a.starts_with('b')),
        "{info:?}"
    );

    // Steady split: S keeps the split image; both sides change afterwards.
    pool.mirror.split_pairs(&["p".into()], None, false).unwrap();
    let split_img = pm.clone();
    write(&pool, &mut pm, "p", 10, 5000, 0x77);
    let mut sm = split_img.clone();
    write(&pool, &mut sm, "s", 3 * ES + 5, 2 * ES as usize, 0x55);
    same(&image(&pool, "s"), &sm, "S after its own write");
    let diff = status::pair_info(&pool, &pair).diff_bytes;
    assert_eq!(diff, 4 * ES, "one P region and three S regions changed");

    // Resync P→S: only the changed regions are copied; then S == P again.
    pool.mirror.resync_pair("p", false, None).unwrap();
    wait_state(&pool, "p", PairState::Pair);
    same(&image(&pool, "s"), &pm, "S after resync");

    // Split, change P, then restore S→P: P returns to the S image.
    pool.mirror.split_pairs(&["p".into()], None, false).unwrap();
    let s_img = pm.clone();
    write(&pool, &mut pm, "p", 2 * ES, ES as usize, 0x99);
    pool.mirror.resync_pair("p", true, Some(1 << 20)).unwrap();
    // From the moment the command returns, P reads show the S data.
    same(&image(&pool, "p"), &s_img, "P right after restore starts");
    wait_state(&pool, "p", PairState::Pair);
    same(&image(&pool, "p"), &s_img, "P after restore");
    same(&image(&pool, "s"), &s_img, "S after restore");

    // Everything survives a reopen (kill -9 equivalent).
    drop(pair);
    drop(pool);
    std::thread::sleep(Duration::from_millis(50));
    let pool = Storage::open(&dir).unwrap();
    assert_eq!(pool.mirror.pair_of("p").unwrap().state(), PairState::Pair);
    same(&image(&pool, "s"), &s_img, "S after reopen");
    pool.mirror.delete_pair("p").unwrap();
    assert!(pool
        .mirror
        .pair_of_volume(pool.volumes.volume("s").unwrap().id)
        .is_none());
    pool.shutdown();
    drop(pool);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(r.is_clean(), "{r}");
}

#[test]
fn quick_split_shows_only_the_split_image() {
    let _s = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = pool_at(&dir);
    pool.volumes.create_volume("p", SIZE, Some("fast")).unwrap();
    let mut pm = vec![0u8; SIZE as usize];
    for i in 0..30 {
        write(&pool, &mut pm, "p", i * 131_072, 65_536, i as u8 + 1);
    }
    // A slow copy, so the split lands in the middle of it.
    pool.create_pair("p", "s", true, Some("backup"), None, Some(256 << 10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool.mirror.pair_of("p").unwrap().state(), PairState::Copy);
    pool.mirror.split_pairs(&["p".into()], None, true).unwrap();
    let split_img = pm.clone();
    let info = status::pair_info(&pool, &pool.mirror.pair_of("p").unwrap());
    assert!(info.quick_split_copying, "{info:?}");
    // P changes after the split never reach S.
    for i in 0..30 {
        write(
            &pool,
            &mut pm,
            "p",
            i * 131_072 + 100,
            50_000,
            0xA0 + i as u8,
        );
    }
    same(
        &image(&pool, "s"),
        &split_img,
        "S during the quick split copy",
    );
    // S is writable at once; its own writes stick even where the copy has not been yet.
    let mut sm = split_img.clone();
    write(&pool, &mut sm, "s", SIZE - 3 * ES, 2 * ES as usize, 0x33);
    same(
        &image(&pool, "s"),
        &sm,
        "S after its own write during the copy",
    );
    // Reopen in the middle (the copy resumes), then let it finish.
    drop(pool);
    std::thread::sleep(Duration::from_millis(50));
    let pool = Storage::open(&dir).unwrap();
    same(
        &image(&pool, "s"),
        &sm,
        "S after reopen during the quick split copy",
    );
    let end = Instant::now() + Duration::from_secs(60);
    while status::pair_info(&pool, &pool.mirror.pair_of("p").unwrap()).quick_split_copying {
        assert!(Instant::now() < end, "quick split copy did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    same(&image(&pool, "s"), &sm, "S after the quick split copy");
    same(&image(&pool, "p"), &pm, "P untouched by the split");
    assert!(
        status::snapshot_infos(&pool, Some("p"), "")
            .unwrap()
            .is_empty(),
        "split snapshot removed"
    );
    pool.shutdown();
}

#[test]
fn group_split_is_one_instant() {
    let _s = serial();
    let d = tempfile::tempdir().unwrap();
    let pool = pool_at(&d.path().join("p"));
    for v in ["a", "b"] {
        pool.volumes.create_volume(v, SIZE, Some("fast")).unwrap();
        pool.create_pair(v, &format!("{v}-s"), true, Some("backup"), Some("g"), None)
            .unwrap();
    }
    wait_state(&pool, "a", PairState::Pair);
    wait_state(&pool, "b", PairState::Pair);
    // A writer alternates between the two P-VOLs, bumping a counter in both.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let (a, b) = (
                pool.volumes.volume("a").unwrap(),
                pool.volumes.volume("b").unwrap(),
            );
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                pool.write(&a, 0, &n.to_le_bytes()).unwrap();
                pool.write(&b, 0, &n.to_le_bytes()).unwrap();
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    pool.mirror.split_pairs(&[], Some("g"), false).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = w.join().unwrap();
    assert!(n > 10);
    let ca = u64::from_le_bytes(image(&pool, "a-s")[..8].try_into().unwrap());
    let cb = u64::from_le_bytes(image(&pool, "b-s")[..8].try_into().unwrap());
    // Both S-VOLs stopped at the same instant: b lags a by at most the one write in between.
    assert!(ca == cb || ca == cb + 1, "a-s={ca} b-s={cb}");
    pool.shutdown();
}

#[cfg(feature = "failpoints")]
#[test]
fn svol_write_error_suspends_and_resync_repairs() {
    let _s = serial();
    let d = tempfile::tempdir().unwrap();
    let pool = pool_at(&d.path().join("p"));
    pool.volumes.create_volume("p", SIZE, Some("fast")).unwrap();
    let mut pm = vec![0u8; SIZE as usize];
    write(&pool, &mut pm, "p", 0, 100_000, 1);
    pool.create_pair("p", "s", true, Some("backup"), None, None)
        .unwrap();
    wait_state(&pool, "p", PairState::Pair);
    fail::cfg("mirror::dual_target::svol_write", "return").unwrap();
    write(&pool, &mut pm, "p", 5 * ES, 1000, 2);
    fail::remove("mirror::dual_target::svol_write");
    let info = status::pair_info(&pool, &pool.mirror.pair_of("p").unwrap());
    assert_eq!(info.state, "PSUE");
    assert!(info.error.unwrap().contains("S-VOL"));
    // Host I/O to the P-VOL goes on.
    write(&pool, &mut pm, "p", 9 * ES, 1000, 3);
    same(&image(&pool, "p"), &pm, "P during PSUE");
    pool.mirror.resync_pair("p", false, None).unwrap();
    wait_state(&pool, "p", PairState::Pair);
    same(
        &image(&pool, "s"),
        &pm,
        "S after the resync that repairs PSUE",
    );
    pool.shutdown();
}

/// In PAIR, a P-VOL read that fails on its array is served from the S-VOL.
#[cfg(feature = "failpoints")]
#[test]
fn pvol_read_error_in_pair_is_served_from_svol() {
    let _s = serial();
    let d = tempfile::tempdir().unwrap();
    let pool = pool_at(&d.path().join("p"));
    pool.volumes.create_volume("p", SIZE, Some("fast")).unwrap();
    let mut pm = vec![0u8; SIZE as usize];
    write(&pool, &mut pm, "p", 0, 300_000, 9);
    pool.create_pair("p", "s", true, Some("backup"), None, None)
        .unwrap();
    wait_state(&pool, "p", PairState::Pair);
    let v = pool.volumes.volume("p").unwrap();
    let mut buf = vec![0u8; 300_000];
    // The next array read fails once: the P-VOL's; the retry on the S-VOL succeeds.
    fail::cfg("array::read::eio", "1*return").unwrap();
    let n = pool.read(&v, 0, &mut buf).unwrap();
    fail::remove("array::read::eio");
    assert_eq!(n, buf.len());
    same(&buf, &pm[..300_000], "P read served from S");
    // Unpaired, the same error reaches the caller.
    pool.mirror.delete_pair("p").unwrap();
    fail::cfg("array::read::eio", "1*return").unwrap();
    let e = pool.read(&v, 0, &mut buf).unwrap_err();
    fail::remove("array::read::eio");
    assert_eq!(io_errno(&e), libc::EIO);
    pool.shutdown();
}

/// A crash between the two legs of a dual write (the S-VOL's write lost, as a machine crash
/// loses it) leaves the pair's write intent behind: the next open copies those regions again
/// and the pair comes back to PAIR with S = P. Intents that a sync made void are cleared, so a
/// clean pair reopens in PAIR without a copy; a split syncs first and keeps its diff exact.
#[cfg(feature = "failpoints")]
#[test]
fn a_dual_write_torn_by_a_crash_is_copied_again_at_open() {
    let _s = serial();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = pool_at(&dir);
    pool.volumes.create_volume("p", SIZE, Some("fast")).unwrap();
    let mut pm = vec![0u8; SIZE as usize];
    write(&pool, &mut pm, "p", 0, 100_000, 1);
    pool.create_pair("p", "s", true, Some("backup"), None, None)
        .unwrap();
    wait_state(&pool, "p", PairState::Pair);
    write(&pool, &mut pm, "p", 7 * ES, 3000, 2);
    same(&image(&pool, "s"), &pm, "S in PAIR");

    // Two syncs with no write between: the intents are cleared, a reopen copies nothing.
    pool.sync().unwrap();
    pool.sync().unwrap();
    common::sites::crash(pool);
    let pool = Storage::open(&dir).unwrap();
    assert_eq!(pool.mirror.pair_of("p").unwrap().state(), PairState::Pair);

    // The S-VOL leg of one write lost; then a crash.
    fail::cfg("mirror::dual_target::lost", "return").unwrap();
    write(&pool, &mut pm, "p", 20 * ES + 100, 5000, 3);
    fail::remove("mirror::dual_target::lost");
    assert_ne!(image(&pool, "s"), pm, "the lost leg shows");
    common::sites::crash(pool);
    let pool = Storage::open(&dir).unwrap();
    let st = pool.mirror.pair_of("p").unwrap().state();
    assert!(
        matches!(st, PairState::CopyRs | PairState::Pair),
        "after the crash: {}",
        st.name()
    );
    wait_state(&pool, "p", PairState::Pair);
    same(&image(&pool, "p"), &pm, "P after the repair");
    same(&image(&pool, "s"), &pm, "S after the repair");

    // A lost leg, then a steady split: the split image is P's, the diff only what changed.
    fail::cfg("mirror::dual_target::lost", "return").unwrap();
    write(&pool, &mut pm, "p", 30 * ES, 100, 4);
    fail::remove("mirror::dual_target::lost");
    common::sites::crash(pool);
    let pool = Storage::open(&dir).unwrap();
    wait_state(&pool, "p", PairState::Pair);
    pool.mirror.split_pairs(&["p".into()], None, false).unwrap();
    same(&image(&pool, "s"), &pm, "S at the split");
    let pair = pool.mirror.pair_of("p").unwrap();
    assert_eq!(
        status::pair_info(&pool, &pair).diff_bytes,
        0,
        "diff right after the split"
    );
    write(&pool, &mut pm, "p", 2 * ES, 10, 5);
    assert_eq!(status::pair_info(&pool, &pair).diff_bytes, ES);
    drop(pair);
    pool.shutdown();
}
