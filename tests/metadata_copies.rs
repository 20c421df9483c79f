//! Redundant metadata (issue 19 item 1): every checkpoint is written to two slots
//! (`checkpoint`, `checkpoint.2`) and into the reserved area of every array file (a label at
//! 4096 or 8192 pointing past the data area), and the metadata log keeps its header twice
//! (offsets 0 and 4096). A flipped byte or a zeroed 4 KiB block at many offsets of each copy: the pool opens
//! with the same volumes, snapshots and data, and the damaged copy is rewritten.

mod common;
use common::images::{image, snap_image, storage_at};

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use std::os::unix::fs::FileExt;

use fusevol::format::array_copy::{ArrayLabel, ARRAY_LABEL_OFFSETS};
use fusevol::format::meta_record::LOG_HEADER_COPY;
use fusevol::format::{ArrayHeader, Checkpoint, LogHeader};
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

/// The metadata copies of a pool, by kind (the damage loop picks offsets in each).
#[derive(Debug, Clone)]
enum MetaCopy {
    /// A whole file in the pool directory (checkpoint slots, the log's header copies).
    File(&'static str),
    /// The newest label of an array file (`file`, label offset).
    Label(String, u64),
    /// The checkpoint bytes that label points to (`file`, range).
    Checkpoint(String, u64, u64),
}

fn array_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("arrays"))
        .unwrap()
        .map(|e| format!("arrays/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

/// The newest label of an array file that verifies, with its slot offset.
fn newest_label(path: &Path) -> Option<(ArrayLabel, u64)> {
    let b = fs::read(path).unwrap();
    ARRAY_LABEL_OFFSETS
        .iter()
        .filter_map(|&o| {
            let l = ArrayLabel::decode(&b[o as usize..o as usize + 4096]).ok()?;
            let r = l.range();
            l.verify_copy(b.get(r.start as usize..r.end as usize)?)
                .ok()?;
            Some((l, o))
        })
        .max_by_key(|(l, _)| l.generation)
}

/// Both checkpoint slots verify and hold the same epoch; both log header copies verify;
/// every array's newest label and copy verify at that epoch.
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
    let files = array_files(dir);
    assert!(!files.is_empty());
    for f in files {
        let (l, _) = newest_label(&dir.join(&f))
            .unwrap_or_else(|| panic!("{what}: {f} has no good checkpoint copy"));
        assert_eq!(l.generation, a.epoch, "{what}: {f} copy not rewritten");
    }
}

/// Every metadata copy of the pool as it is now.
fn copies(dir: &Path) -> Vec<MetaCopy> {
    let mut v: Vec<MetaCopy> = FILES.iter().map(|f| MetaCopy::File(f)).collect();
    for f in array_files(dir) {
        let (l, at) = newest_label(&dir.join(&f)).expect("an array copy");
        v.push(MetaCopy::Label(f.clone(), at));
        v.push(MetaCopy::Checkpoint(f, l.copy_offset, l.copy_len));
    }
    v
}

/// (file, offset, zero a 4 KiB block rather than flip a byte) for every copy: offsets
/// spread over each checkpoint copy and label (and every 4 KiB block of them), and the
/// log's two header copies (the log's records are not copies; salvage is for them).
fn damage_cases(dir: &Path) -> Vec<(String, u64, bool)> {
    let mut cases = Vec::new();
    let spread = |cases: &mut Vec<(String, u64, bool)>, f: &str, base: u64, len: u64| {
        let step = (len / 24).max(1);
        for off in (0..len).step_by(step as usize).chain([len - 1, len - 4]) {
            cases.push((f.to_string(), base + off, false));
        }
        for off in (0..len).step_by(4096) {
            cases.push((f.to_string(), base + off, true));
        }
    };
    for c in copies(dir) {
        match c {
            MetaCopy::File(f) if f == LOG_FILE => {
                for base in [0, LOG_HEADER_COPY as u64] {
                    for off in [0, 7, 8, 16, 24, 40, 60, 63] {
                        cases.push((f.to_string(), base + off, false));
                    }
                    cases.push((f.to_string(), base, true));
                }
            }
            MetaCopy::File(f) => {
                let len = fs::metadata(dir.join(f)).unwrap().len();
                spread(&mut cases, f, 0, len);
            }
            MetaCopy::Label(f, at) => spread(&mut cases, &f, at, 4096),
            MetaCopy::Checkpoint(f, at, len) => spread(&mut cases, &f, at, len),
        }
    }
    cases
}

/// The metadata bytes of a pool: the pool-directory files whole, and of each array file
/// its header and labels (the first 12 KiB) and everything past its data area.
/// (file, head bytes, tail bytes, tail offset, file length; 0 for a pool-directory file).
type SavedFile = (String, Vec<u8>, Vec<u8>, u64, u64);
struct Saved(Vec<SavedFile>);

fn save(dir: &Path) -> Saved {
    let mut v = Vec::new();
    for f in FILES {
        v.push((f.to_string(), fs::read(dir.join(f)).unwrap(), vec![], 0, 0));
    }
    for f in array_files(dir) {
        let b = fs::read(dir.join(&f)).unwrap();
        let h = ArrayHeader::decode(&b).unwrap();
        let tail = h.data_offset + h.capacity;
        v.push((
            f,
            b[..12288].to_vec(),
            b[tail as usize..].to_vec(),
            tail,
            b.len() as u64,
        ));
    }
    Saved(v)
}

fn restore(dir: &Path, s: &Saved) {
    for (f, head, tail, at, len) in &s.0 {
        if *len == 0 {
            fs::write(dir.join(f), head).unwrap();
            continue;
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(f))
            .unwrap();
        file.write_all_at(head, 0).unwrap();
        file.set_len(*at).unwrap();
        file.write_all_at(tail, *at).unwrap();
        assert_eq!(file.metadata().unwrap().len(), *len);
    }
}

fn damage(dir: &Path, f: &str, off: u64, zero: bool) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(f))
        .unwrap();
    let len = file.metadata().unwrap().len();
    if zero {
        let n = 4096.min(len - off) as usize;
        file.write_all_at(&vec![0u8; n], off).unwrap();
    } else {
        let mut b = [0u8];
        file.read_exact_at(&mut b, off).unwrap();
        b[0] ^= 0x10;
        file.write_all_at(&b, off).unwrap();
    }
}

#[test]
fn a_damaged_copy_of_any_metadata_file_is_survived_and_rewritten() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let want = populated(&dir);
    let saved = save(&dir);
    let cases = damage_cases(&dir);
    assert!(cases.len() > 100, "{}", cases.len());
    let arrays = array_files(&dir).len();
    let mut per_file = BTreeMap::<String, usize>::new();
    for (f, off, zero) in cases {
        *per_file.entry(f.clone()).or_default() += 1;
        let what = format!(
            "{f} {} at offset {off}",
            if zero { "4 KiB zeroed" } else { "byte flipped" }
        );
        restore(&dir, &saved);
        damage(&dir, &f, off, zero);
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
    assert_eq!(per_file.len(), FILES.len() + arrays, "{per_file:?}");
}

/// Both pool-directory slots destroyed: the pool opens from the arrays' copies (the
/// daemon's start and `check --repair` alike), and both slots are rebuilt.
#[test]
fn both_checkpoint_slots_destroyed_are_rebuilt_from_the_arrays() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let want = populated(&dir);
    let saved = save(&dir);
    let destroy = || {
        fs::write(dir.join(CHECKPOINT_FILE), vec![0u8; 4096]).unwrap();
        fs::remove_file(dir.join(CHECKPOINT_COPY_FILE)).unwrap();
    };
    // As the daemon starts.
    destroy();
    let st = Storage::open(&dir).unwrap();
    st.finish_recovery().unwrap();
    assert!(images(&st) == want);
    assert!(st.pool.rewrite_at_open);
    drop(st);
    assert_all_copies_good(&dir, "open with both slots destroyed");
    // Offline: check --repair.
    restore(&dir, &saved);
    destroy();
    let r = fusevol::pool::repair_pool(&dir).unwrap();
    assert!(r.is_clean(), "{r}");
    assert!(r.repaired.is_some(), "{r}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("checkpoint.2 is missing")),
        "{r}"
    );
    assert_all_copies_good(&dir, "check --repair with both slots destroyed");
    let st = Storage::open(&dir).unwrap();
    assert!(!st.pool.rewrite_at_open);
    assert!(images(&st) == want);
}

/// Every copy destroyed (both slots, every array's labels): refused, naming each one.
#[test]
fn every_checkpoint_copy_destroyed_is_refused_naming_each() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    populated(&dir);
    fs::write(dir.join(CHECKPOINT_FILE), vec![0u8; 4096]).unwrap();
    fs::remove_file(dir.join(CHECKPOINT_COPY_FILE)).unwrap();
    for f in array_files(&dir) {
        for at in ARRAY_LABEL_OFFSETS {
            damage(&dir, &f, at, true);
        }
    }
    let e = Storage::open(&dir)
        .err()
        .expect("opened without a checkpoint")
        .to_string();
    assert!(
        e.contains("checkpoint at offset 0") && e.contains("checkpoint.2 is missing"),
        "{e}"
    );
    for f in array_files(&dir) {
        assert!(e.contains(&format!("{f} label 1 at offset 4096")), "{e}");
        assert!(e.contains(&format!("{f} label 2 at offset 8192")), "{e}");
    }
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
    // Nor had the arrays any copy: empty labels, nothing past the data area.
    for f in array_files(&dir) {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&f))
            .unwrap();
        let h = ArrayHeader::decode(&fs::read(dir.join(&f)).unwrap()).unwrap();
        file.write_all_at(&[0u8; 8192], 4096).unwrap();
        file.set_len(h.data_offset + h.capacity).unwrap();
    }
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
