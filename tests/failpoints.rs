//! Crash and error paths driven by named failpoints (`cargo test --features failpoints`).
#![cfg(feature = "failpoints")]

mod common;
use common::images::{image, storage_at};

use std::path::Path;
use std::sync::{Arc, Mutex};

use fusevol::daemon::status;
use fusevol::fuse::io_errno;
use fusevol::storage::Storage;

const ES: u64 = 64 << 10;
static SERIAL: Mutex<()> = Mutex::new(());

fn new_pool(dir: &Path) -> Arc<Storage> {
    storage_at(dir, ES, 4 << 20, 2)
}

fn used(pool: &Storage) -> u64 {
    status::array_infos(pool).iter().map(|a| a.used).sum()
}

#[test]
fn failed_data_write_to_fresh_extent_leaks_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let pool = new_pool(&d.path().join("p"));
    let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
    pool.write(&v, 0, &[7u8; 4096]).unwrap();
    let before = used(&pool);
    fail::cfg("array::write::eio", "return").unwrap();
    let e = pool.write(&v, 3 * ES, &[9u8; 4096]).unwrap_err();
    fail::remove("array::write::eio");
    assert_eq!(io_errno(&e), libc::EIO, "{e}");
    assert!(e.to_string().contains("volume 'v'"), "{e}");
    assert_eq!(v.mapped_extents(), 1, "the failed extent is not mapped");
    pool.sync().unwrap();
    assert_eq!(
        used(&pool),
        before,
        "the abandoned extent went back to the free list"
    );
    let img = image(&pool, "v");
    assert!(img[..4096].iter().all(|&b| b == 7));
    assert!(img[4096..].iter().all(|&b| b == 0));
    drop(pool);
    assert!(fusevol::pool::check_pool(&d.path().join("p"))
        .unwrap()
        .is_clean());
}

#[test]
fn failed_metadata_append_publishes_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = new_pool(&dir);
    let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
    fail::cfg("meta::append::write", "return").unwrap();
    assert!(pool.write(&v, 0, &[5u8; 8192]).is_err());
    assert!(pool.volumes.create_volume("w", 1 << 20, None).is_err());
    fail::remove("meta::append::write");
    assert_eq!(v.mapped_extents(), 0);
    assert!(pool.volumes.volume("w").is_none());
    // The data written before the failed record is never visible, now or after recovery.
    assert!(image(&pool, "v").iter().all(|&b| b == 0));
    drop(pool);
    let pool = Storage::open(&dir).unwrap();
    assert!(image(&pool, "v").iter().all(|&b| b == 0));
    // Recovery scrubbed the orphaned extent: nothing is left holding data.
    drop(pool);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.free_extents_with_data, 0, "{r}");
}

#[test]
fn failed_log_fsync_is_sticky_and_keeps_freed_extents() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = new_pool(&dir);
    let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
    pool.write(&v, 0, &vec![3u8; (2 * ES) as usize]).unwrap();
    pool.sync().unwrap();
    pool.discard(&v, 0, ES).unwrap();
    fail::cfg("pool::sync::log_fsync", "return").unwrap();
    assert!(pool.fsync_volume(&v).is_err());
    fail::remove("pool::sync::log_fsync");
    // Never carry on as if a failed fsync had worked.
    let again = pool.fsync_volume(&v).unwrap_err();
    assert_eq!(io_errno(&again), libc::EIO);
    // The freed extent was not recycled on the strength of the failed sync.
    assert_eq!(used(&pool), 2 * ES);
    assert!(
        pool.write(&v, 5 * ES, &[1u8; 512]).is_err(),
        "no new metadata after a failed log fsync"
    );
    drop(pool);
    let pool = Storage::open(&dir).unwrap();
    let img = image(&pool, "v");
    assert!(img[ES as usize..2 * ES as usize].iter().all(|&b| b == 3));
}

#[test]
fn failed_array_fsync_is_sticky() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let pool = new_pool(&d.path().join("p"));
    let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
    pool.write(&v, 0, &[1u8; 4096]).unwrap();
    fail::cfg("array::sync::eio", "return").unwrap();
    assert!(pool.fsync_volume(&v).is_err());
    fail::remove("array::sync::eio");
    pool.write(&v, 0, &[2u8; 4096]).unwrap();
    let e = pool.fsync_volume(&v).unwrap_err();
    assert!(e.to_string().contains("earlier fsync"), "{e}");
}

#[test]
fn crash_between_checkpoint_and_new_log_recovers() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = new_pool(&dir);
    let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
    pool.write(&v, 100, b"hello").unwrap();
    fail::cfg("meta::rotate::after_checkpoint", "return").unwrap();
    assert!(pool.checkpoint().is_err());
    fail::remove("meta::rotate::after_checkpoint");
    drop(pool);
    let pool = Storage::open(&dir).unwrap();
    let img = image(&pool, "v");
    assert_eq!(&img[100..105], b"hello");
    let (w, _) = pool.volumes.create_volume("w", 1 << 20, None).unwrap();
    pool.write(&w, 0, b"after").unwrap();
    drop(pool);
    let pool = Storage::open(&dir).unwrap();
    assert_eq!(&image(&pool, "w")[..5], b"after");
}

/// A crash between the two checkpoint slots (issue 19): slot 1 holds epoch E+1, slot 2 epoch
/// E, the log is still E's. Either copy alone rebuilds the same state: slot 1 as it is, slot 2
/// with the log, which is cut only after both slots are durable.
#[test]
fn crash_between_the_two_checkpoint_slots_leaves_either_copy_usable() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for damage_newest in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("p");
        let pool = new_pool(&dir);
        let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
        pool.write(&v, 100, b"hello").unwrap();
        fail::cfg("meta::checkpoint::between_slots", "return").unwrap();
        assert!(pool.checkpoint().is_err());
        fail::remove("meta::checkpoint::between_slots");
        drop(pool);
        if damage_newest {
            let p = dir.join(fusevol::meta::CHECKPOINT_FILE);
            let mut b = std::fs::read(&p).unwrap();
            b[30] ^= 1;
            std::fs::write(&p, &b).unwrap();
        }
        let pool = Storage::open(&dir).unwrap();
        pool.finish_recovery().unwrap();
        assert!(pool.pool.rewrite_at_open, "damage_newest {damage_newest}");
        assert_eq!(&image(&pool, "v")[100..105], b"hello");
        drop(pool);
        let pool = Storage::open(&dir).unwrap();
        assert!(!pool.pool.rewrite_at_open);
        assert_eq!(&image(&pool, "v")[100..105], b"hello");
    }
}

#[test]
fn array_read_error_is_eio_naming_the_file() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let pool = new_pool(&d.path().join("p"));
    let (v, _) = pool.volumes.create_volume("v", 1 << 20, None).unwrap();
    pool.write(&v, 0, &[1u8; 4096]).unwrap();
    fail::cfg("array::read::eio", "return").unwrap();
    let mut b = vec![0u8; 4096];
    let e = pool.read(&v, 0, &mut b).unwrap_err();
    fail::remove("array::read::eio");
    assert_eq!(io_errno(&e), libc::EIO);
    assert!(e.to_string().contains(".img"), "{e}");
}

/// The filler of partial extents (sub-extent copy-on-write): a crash after its copy and
/// before its record, and a failed array sync, both leave the extent partial — no record,
/// the images unchanged, the sync failure sticky — and a later step completes it.
#[test]
fn filler_crash_or_failed_sync_keeps_the_extent_partial() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let pool = new_pool(&dir);
    let (v, _) = pool.volumes.create_volume("v", 4 * ES, None).unwrap();
    let base: Vec<u8> = (0..4 * ES).map(|i| (i / 4096) as u8 | 1).collect();
    pool.write(&v, 0, &base).unwrap();
    pool.snapshots.create_snapshot("v", "s").unwrap();
    pool.write(&v, ES + 4096, &[0xee; 4096]).unwrap();
    pool.write(&v, 2 * ES + 100, &[0xdd; 50]).unwrap();
    let mut img = base.clone();
    img[(ES + 4096) as usize..(ES + 8192) as usize].fill(0xee);
    img[(2 * ES + 100) as usize..(2 * ES + 150) as usize].fill(0xdd);
    assert_eq!(pool.pool.partial_extents(), 2);
    let check = |pool: &Storage| {
        assert!(image(pool, "v") == img, "volume image");
        let s = pool.snapshots.snapshot("v", "s").unwrap();
        let mut b = vec![0u8; base.len()];
        pool.snapshots.read_snapshot(&s, 0, &mut b).unwrap();
        assert!(b == base, "snapshot image");
    };

    // Killed after copying and syncing, before the record.
    fail::cfg("pool::fill_step::before_done", "return").unwrap();
    assert!(pool.pool.fill_step(10).is_err());
    fail::remove("pool::fill_step::before_done");
    assert_eq!(pool.pool.partial_extents(), 2);
    check(&pool);
    drop(pool); // as a kill -9: no checkpoint
    let pool = Storage::open(&dir).unwrap();
    assert_eq!(
        pool.pool.partial_extents(),
        2,
        "no record ended the partial state"
    );
    check(&pool);

    // A failed array sync: no record, and every later fsync reports it.
    fail::cfg("array::sync::eio", "return").unwrap();
    let e = pool.pool.fill_step(10).unwrap_err();
    fail::remove("array::sync::eio");
    assert!(e.to_string().contains("fdatasync"), "{e}");
    assert_eq!(pool.pool.partial_extents(), 2);
    check(&pool);
    assert!(
        pool.sync().is_err(),
        "a failed fsync is never retried as if it worked"
    );
    drop(pool);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(r.is_clean() && r.partial_extents == 2, "{r}");

    let pool = Storage::open(&dir).unwrap();
    check(&pool);
    assert_eq!(pool.pool.fill_step(10).unwrap(), 2);
    assert_eq!(pool.pool.partial_extents(), 0);
    check(&pool);
    pool.snapshots.delete_snapshot("v", "s").unwrap();
    pool.sync().unwrap();
    assert_eq!(used(&pool), 4 * ES, "the sources were freed");
    drop(pool);
    let r = fusevol::pool::check_pool(&dir).unwrap();
    assert!(
        r.is_clean() && r.partial_extents == 0 && r.free_extents_with_data == 0,
        "{r}"
    );
}

/// A write to an invalid block of a partial extent while the filler is copying that extent
/// waits for the copy (the extent's stripe lock), so the copy never lands on the newer block.
#[test]
fn filler_copy_never_overwrites_a_racing_write() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let pool = new_pool(&d.path().join("p"));
    let (v, _) = pool.volumes.create_volume("v", 2 * ES, None).unwrap();
    pool.write(&v, 0, &vec![1u8; (2 * ES) as usize]).unwrap();
    pool.snapshots.create_snapshot("v", "s").unwrap();
    pool.write(&v, 0, &[2u8; 4096]).unwrap();
    assert_eq!(pool.pool.partial_extents(), 1);
    fail::cfg("pool::fill_step::before_copy", "sleep(300)").unwrap();
    std::thread::scope(|s| {
        let filler = s.spawn(|| pool.pool.fill_step(1).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Block 5 is still invalid: this write races the filler's copy of it.
        pool.write(&v, 5 * 4096, &[3u8; 4096]).unwrap();
        assert_eq!(filler.join().unwrap(), 1);
    });
    fail::remove("pool::fill_step::before_copy");
    assert_eq!(pool.pool.partial_extents(), 0);
    let img = image(&pool, "v");
    assert!(img[..4096].iter().all(|&b| b == 2));
    assert!(img[4096..5 * 4096].iter().all(|&b| b == 1));
    assert!(
        img[5 * 4096..6 * 4096].iter().all(|&b| b == 3),
        "the filler copied the snapshot's block over the newer write"
    );
    assert!(img[6 * 4096..].iter().all(|&b| b == 1));
}
