//! Redundant metadata (issue 19 item 1): every checkpoint is written to two slots
//! (`checkpoint`, `checkpoint.2`) and the metadata log keeps its header twice (offsets 0 and
//! 4096). A flipped byte or a zeroed 4 KiB block at many offsets of each copy: the pool opens
//! with the same volumes, snapshots and data, and the damaged copy is rewritten.

mod common;
use common::images::{image, snap_image, storage_at};

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use fusevol::format::meta_record::LOG_HEADER_COPY;
use fusevol::format::{Checkpoint, LogHeader};
use fusevol::meta::{CHECKPOINT_COPY_FILE, CHECKPOINT_FILE, LOG_FILE};
use fusevol::storage::Storage;

const ES: u64 = 64 << 10;
const FILES: [&str; 3] = [CHECKPOINT_FILE, CHECKPOINT_COPY_FILE, LOG_FILE];

/// Volume and snapshot images by name.
type Images = BTreeMap<String, Vec<u8>>;

fn images(st: &Storage) -> Images {
    let mut m = Images::new();
    for v in st.volumes.volume_list() {
        m.insert(v.name.clone(), image(st, &v.name));
        for s in st.snapshots.snapshots_of(v.id) {
            m.insert(
                format!("{}@{}", v.name, s.name),
                snap_image(st, &v.name, &s.name).unwrap(),
            );
        }
    }
    m
}

/// A pool with volumes, a snapshot and data in the checkpoint, and more in the log after it;
/// closed as by kill -9 (no checkpoint at the end). Returns what it must hold.
fn populated(dir: &Path) -> Images {
    let st = storage_at(dir, ES, 8 << 20, 2);
    let (a, _) = st.volumes.create_volume("a", 1 << 20, None).unwrap();
    let (b, _) = st.volumes.create_volume("b", 1 << 20, None).unwrap();
    st.write(&a, 0, &[1u8; 200_000]).unwrap();
    st.write(&b, 70_000, &[2u8; 100_000]).unwrap();
    st.snapshots.create_snapshot("a", "s1").unwrap();
    st.write(&a, 4096, &[3u8; 8192]).unwrap();
    st.checkpoint().unwrap();
    // After the checkpoint: records in the log.
    let (c, _) = st.volumes.create_volume("c", 512 << 10, None).unwrap();
    st.write(&c, 0, &[4u8; 300_000]).unwrap();
    st.write(&a, 500_000, &[5u8; 4096]).unwrap();
    st.snapshots.create_snapshot("b", "s2").unwrap();
    st.write(&b, 0, &[6u8; 4096]).unwrap();
    st.sync().unwrap();
    let want = images(&st);
    assert_eq!(want.len(), 5, "{:?}", want.keys());
    drop(st);
    want
}

/// Both checkpoint slots verify and hold the same epoch; both log header copies verify.
fn assert_all_copies_good(dir: &Path, what: &str) {
    let a = Checkpoint::decode(&fs::read(dir.join(CHECKPOINT_FILE)).unwrap())
        .unwrap_or_else(|e| panic!("{what}: checkpoint not rewritten: {e}"));
    let b = Checkpoint::decode(&fs::read(dir.join(CHECKPOINT_COPY_FILE)).unwrap())
        .unwrap_or_else(|e| panic!("{what}: checkpoint.2 not rewritten: {e}"));
    assert_eq!(a.epoch, b.epoch, "{what}");
    let log = fs::read(dir.join(LOG_FILE)).unwrap();
    let h1 = LogHeader::decode(&log).unwrap_or_else(|e| panic!("{what}: log header 1: {e}"));
    let h2 = LogHeader::decode(&log[LOG_HEADER_COPY..])
        .unwrap_or_else(|e| panic!("{what}: log header 2: {e}"));
    assert_eq!((h1, h1.epoch), (h2, a.epoch), "{what}");
}

/// Offsets to damage in each file: spread over each checkpoint copy, and the log's two
/// header copies (the log's records are not copies; salvage is for them).
fn damage_cases(orig: &[Vec<u8>]) -> Vec<(usize, usize, bool)> {
    let mut cases = Vec::new();
    for (fi, b) in orig.iter().enumerate() {
        let len = b.len();
        if fi < 2 {
            let step = (len / 24).max(1);
            for off in (0..len).step_by(step).chain([len - 1, len - 4]) {
                cases.push((fi, off, false));
            }
            for off in (0..len).step_by(4096) {
                cases.push((fi, off, true));
            }
        } else {
            for base in [0, LOG_HEADER_COPY] {
                for off in [0, 7, 8, 16, 24, 40, 60, 63] {
                    cases.push((fi, base + off, false));
                }
                cases.push((fi, base, true));
            }
        }
    }
    cases
}

#[test]
fn a_damaged_copy_of_any_metadata_file_is_survived_and_rewritten() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let want = populated(&dir);
    let orig: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| fs::read(dir.join(f)).unwrap())
        .collect();
    let cases = damage_cases(&orig);
    assert!(cases.len() > 40, "{}", cases.len());
    for (fi, off, zero) in cases {
        let what = format!(
            "{} {} at offset {off}",
            FILES[fi],
            if zero { "4 KiB zeroed" } else { "byte flipped" }
        );
        for (f, b) in FILES.iter().zip(&orig) {
            fs::write(dir.join(f), b).unwrap();
        }
        let mut b = orig[fi].clone();
        if zero {
            let end = (off + 4096).min(b.len());
            b[off..end].fill(0);
        } else {
            b[off] ^= 0x10;
        }
        fs::write(dir.join(FILES[fi]), &b).unwrap();
        let st = Storage::open(&dir).unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
        st.finish_recovery().unwrap();
        assert!(
            images(&st) == want,
            "{what}: different volumes, snapshots or data"
        );
        assert!(
            st.pool.rewrite_at_open,
            "{what}: the damaged copy went unnoticed"
        );
        drop(st);
        assert_all_copies_good(&dir, &what);
        let report = fusevol::pool::check_pool(&dir).unwrap();
        assert!(report.is_clean(), "{what}: {report}");
    }
}

#[test]
fn both_checkpoint_slots_destroyed_is_refused_naming_both() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    populated(&dir);
    fs::write(dir.join(CHECKPOINT_FILE), vec![0u8; 4096]).unwrap();
    fs::remove_file(dir.join(CHECKPOINT_COPY_FILE)).unwrap();
    let e = Storage::open(&dir)
        .err()
        .expect("opened without a checkpoint")
        .to_string();
    assert!(
        e.contains("checkpoint at offset 0") && e.contains("checkpoint.2 is missing"),
        "{e}"
    );
}

/// A pool written before the copies existed (one `checkpoint`, a version 1 log with its
/// records from offset 64) opens with its data, and is rewritten in the new layout.
#[test]
fn a_pool_in_the_old_layout_opens_and_is_upgraded() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let want = populated(&dir);
    fs::remove_file(dir.join(CHECKPOINT_COPY_FILE)).unwrap();
    let log = fs::read(dir.join(LOG_FILE)).unwrap();
    let h = LogHeader::decode(&log).unwrap();
    let mut old = LogHeader { version: 1, ..h }.encode_start();
    old.extend_from_slice(&log[h.records_offset()..]);
    fs::write(dir.join(LOG_FILE), &old).unwrap();
    let st = Storage::open(&dir).unwrap();
    st.finish_recovery().unwrap();
    assert!(st.pool.replayed_at_open > 0);
    assert!(images(&st) == want);
    drop(st);
    assert_all_copies_good(&dir, "old layout");
    let st = Storage::open(&dir).unwrap();
    assert!(!st.pool.rewrite_at_open && st.pool.replayed_at_open == 0);
    assert!(images(&st) == want);
}
