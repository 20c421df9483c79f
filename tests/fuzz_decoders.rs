//! "Fuzz" targets for every decoder of on-disk and on-wire bytes (issue 19 item 3), as
//! proptest over arbitrary bytes (cargo-fuzz needs a nightly toolchain, which CI does not
//! have). Each target feeds a decoder
//! - arbitrary bytes, and
//! - mutations of valid encodings (seeds from a real pool, whose checksums are recomputed
//!   after the mutation where the format has one trailer CRC, so that the decoder's body
//!   parsing is reached, not only its checksum test),
//!
//! and checks: no panic; no huge allocation from a length or count field (the process runs
//! under an address-space cap of its size + 1 GiB: such an allocation fails and the test
//! process aborts); and for every accepted input, encode(decode(x)) == x.
//!
//! Time bound: FUSEVOL_FUZZ_CASES cases per target (default 10,000: about a second in all, release build);
//! run longer with e.g. `FUSEVOL_FUZZ_CASES=200000 cargo test --release --test fuzz_decoders`.
//! Failing cases are kept by proptest in `fuzz_decoders.proptest-regressions` and replayed first.
//!
//! The committed corpus, `tests/fuzz-corpus/TARGET/*.bin`, adds seeds to the built-in ones:
//! the files of a real daemon's pool after a workload that writes every kind of record the
//! CLI can make (volume information, pairs through split and resync, a journal group with
//! its segments and manifest, schedules, locks, export streams, and the CLI's requests). Refresh it with
//! `cargo test --release --test fuzz_decoders make_corpus -- --ignored` (see `make_corpus`).

mod common;
use common::images::storage_at;
use common::TestPool;

use proptest::prelude::*;

use fusevol::control::Request;
use fusevol::format::journal::{
    Ack, FailbackRegion, FailbackRequest, JournalRecord, Manifest, RecordHead, RecordKind,
    SegmentHeader, ACK_SIZE, SEGMENT_HEADER_SIZE,
};
use fusevol::format::meta_record::{FRAME_HEADER, LOG_HEADER_SIZE};
use fusevol::format::{ArrayHeader, Checkpoint, LogHeader, MetaRecord, RecordFrame};

/// Run `f` on `input` under a cap on the process's address space: a length or count field
/// that made a decoder reserve far more than the input holds fails the allocation, which
/// aborts the test process (the test fails). No `unsafe` needed (nix's setrlimit).
fn bounded<T>(_what: &str, input: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    limit_address_space();
    f(input)
}

/// The cap: what the process maps now plus 1 GiB, set once.
fn limit_address_space() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{setrlimit, Resource};
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
        let cap = pages * 4096 + (1 << 30);
        setrlimit(Resource::RLIMIT_AS, cap, cap).unwrap();
    });
}

/// The cap works: an allocation beyond it fails (checked with `try_reserve`, which
/// reports the failure instead of aborting).
#[test]
fn address_space_cap_catches_a_huge_allocation() {
    limit_address_space();
    let mut v: Vec<u8> = Vec::new();
    assert!(
        v.try_reserve(3 << 30).is_err(),
        "a 3 GiB reservation succeeded under the cap"
    );
}

fn cases() -> u32 {
    std::env::var("FUSEVOL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

/// A mutation of a seed: bytes replaced, then cut or extended.
#[derive(Debug, Clone)]
struct Mutation {
    seed: usize,
    edits: Vec<(usize, u8)>,
    cut: Option<usize>,
    extra: Vec<u8>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        proptest::option::weighted(0.2, any::<usize>()),
        proptest::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(seed, edits, cut, extra)| Mutation {
            seed,
            edits,
            cut,
            extra,
        })
}

fn apply(m: &Mutation, seeds: &[Vec<u8>], keep_head: usize) -> Vec<u8> {
    let mut b = seeds[m.seed % seeds.len()].clone();
    for &(at, v) in &m.edits {
        if b.len() > keep_head {
            let i = keep_head + at % (b.len() - keep_head);
            b[i] = v;
        }
    }
    if let Some(c) = m.cut {
        b.truncate(c % (b.len() + 1));
    }
    b.extend_from_slice(&m.extra);
    b
}

/// Recompute a trailer CRC32C over everything before it (checkpoint, manifest, failback).
fn reseal_var(b: &mut [u8]) {
    if b.len() >= 12 {
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recompute the CRC32C of a fixed-size header (at size-4, over the bytes before it).
fn reseal_fixed(b: &mut [u8], size: usize) {
    if b.len() >= size {
        let crc = crc32c::crc32c(&b[..size - 4]);
        b[size - 4..size].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Where the committed corpus lives.
fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus")
}

/// The committed corpus of one target: every file of `tests/fuzz-corpus/TARGET/`, read once.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    type Corpora = std::collections::HashMap<String, Vec<Vec<u8>>>;
    static ALL: std::sync::OnceLock<std::sync::Mutex<Corpora>> = std::sync::OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap();
    all.entry(target.to_string())
        .or_insert_with(|| {
            let dir = corpus_dir().join(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files.iter().map(|f| std::fs::read(f).unwrap()).collect()
        })
        .clone()
}

/// `seeds` followed by the corpus of `target`.
fn with_corpus(mut seeds: Vec<Vec<u8>>, target: &str) -> Vec<Vec<u8>> {
    seeds.extend(corpus(target));
    seeds
}

/// Checkpoints and metadata log frames of a real pool: volumes, data, snapshots, a clone,
/// partial extents (a small write into a snapshotted extent).
/// Checkpoint files, and (kind, payload) of metadata log frames.
type PoolSeeds = (Vec<Vec<u8>>, Vec<(u8, Vec<u8>)>);

fn pool_seeds() -> PoolSeeds {
    static SEEDS: std::sync::OnceLock<PoolSeeds> = std::sync::OnceLock::new();
    SEEDS
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path().join("p");
            let st = storage_at(&dir, 64 << 10, 4 << 20, 2);
            let mut ckpts = vec![std::fs::read(dir.join("checkpoint")).unwrap()];
            let (a, _) = st.volumes.create_volume("a", 1 << 20, None).unwrap();
            st.write(&a, 0, &[1u8; 200_000]).unwrap();
            st.snapshots.create_snapshot("a", "s").unwrap();
            st.write(&a, 4096, &[2u8; 4096]).unwrap();
            st.snapshots.clone_snapshot("a", "s", "c").unwrap();
            st.discard(&a, 131072, 65536).unwrap();
            st.resize_volume("c", 2 << 20, false).unwrap();
            st.snapshots.delete_snapshot("a", "s").ok();
            st.sync().unwrap();
            let log = std::fs::read(dir.join("meta.log")).unwrap();
            let h = LogHeader::decode(&log).unwrap();
            let mut frames = Vec::new();
            let mut pos = h.records_offset();
            while let RecordFrame::Record(_, n) = RecordFrame::parse(&log[pos..]) {
                frames.push((log[pos + 8], log[pos + FRAME_HEADER..pos + n].to_vec()));
                pos += n;
            }
            st.checkpoint().unwrap();
            ckpts.push(std::fs::read(dir.join("checkpoint")).unwrap());
            assert!(frames.len() >= 6, "{}", frames.len());
            (ckpts, frames)
        })
        .clone()
}

fn journal_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, kind) in [
        RecordKind::Write,
        RecordKind::Zero,
        RecordKind::Base,
        RecordKind::VolumeAdd,
        RecordKind::Marker,
        RecordKind::Seal,
    ]
    .into_iter()
    .enumerate()
    {
        let payload: Vec<u8> = match kind {
            RecordKind::Write | RecordKind::Base => vec![i as u8; 512 * (i + 1)],
            RecordKind::VolumeAdd | RecordKind::Marker => b"name".to_vec(),
            _ => Vec::new(),
        };
        let head = RecordHead {
            kind,
            group: 7,
            epoch: 1,
            seq: 10 + i as u64,
            time: 1_700_000_000_000,
            volume: 3,
            offset: 4096 * i as u64,
            length: payload.len() as u64,
        };
        out.push(
            JournalRecord {
                head,
                payload: payload.into(),
            }
            .encode(),
        );
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn checkpoint(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let seeds = with_corpus(pool_seeds().0, "checkpoint");
        let _ = bounded("checkpoint raw", &raw, Checkpoint::decode);
        let mut b = apply(&m, &seeds, 8);
        reseal_var(&mut b);
        if let Ok(c) = bounded("checkpoint", &b, Checkpoint::decode) {
            // Versions before the current one are read and written anew as the current.
            if b[8..12] == seeds[0][8..12] {
                prop_assert!(c.encode() == b, "checkpoint: encode(decode(x)) != x");
            }
        }
    }

    #[test]
    fn meta_records(m in mutation(), kind in any::<u8>(), raw in proptest::collection::vec(any::<u8>(), 0..128)) {
        // A corpus file is the record's kind byte, then its payload.
        let mut frames = pool_seeds().1;
        frames.extend(corpus("meta_records").into_iter().map(|f| (f[0], f[1..].to_vec())));
        let _ = bounded("meta record raw", &raw, |b| MetaRecord::decode_payload(kind, b));
        let _ = bounded("meta frame raw", &raw, RecordFrame::parse);
        let payloads: Vec<Vec<u8>> = frames.iter().map(|f| f.1.clone()).collect();
        let b = apply(&m, &payloads, 0);
        let kind = frames[m.seed % frames.len()].0;
        if let Ok(rec) = bounded("meta record", &b, |b| MetaRecord::decode_payload(kind, b)) {
            let mut out = Vec::new();
            rec.encode_frame(&mut out);
            prop_assert_eq!(out[8], kind);
            // encode(decode(x)) == x, or x is an older, shorter layout of the record (trailing
            // fields or sections added since decode as their defaults) that the current
            // encoder extends: never a variant of the same or greater length that decoding
            // would silently normalise.
            let again = &out[FRAME_HEADER..];
            prop_assert!(
                again == &b[..]
                    || (again.len() > b.len()
                        && MetaRecord::decode_payload(kind, again).as_ref() == Ok(&rec)),
                "{:?}: encode(decode(x)) != x", rec
            );
            prop_assert!(matches!(RecordFrame::parse(&out), RecordFrame::Record(r, n) if r == rec && n == out.len()));
        }
    }

    #[test]
    fn log_and_array_headers(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..4200)) {
        let _ = bounded("log header raw", &raw, LogHeader::decode);
        let _ = bounded("array header raw", &raw, ArrayHeader::decode);
        let lh = LogHeader::new(5, 9);
        let logs = vec![lh.encode(), LogHeader { version: 1, ..lh }.encode()];
        let mut b = apply(&m, &logs, 8);
        reseal_fixed(&mut b, LOG_HEADER_SIZE);
        if let Ok(h) = bounded("log header", &b, LogHeader::decode) {
            prop_assert!(h.encode()[..] == b[..LOG_HEADER_SIZE]);
        }
        let ah = ArrayHeader {
            array_id: 2,
            pool_id: 77,
            capacity: 64 << 20,
            extent_size: 256 << 10,
            data_offset: 1 << 20,
            created: 1_700_000_000,
            name: "a1".into(),
            tier: "fast".into(),
        };
        let mut b = apply(&m, &[ah.encode()], 8);
        reseal_fixed(&mut b, 4096);
        if let Ok(h) = bounded("array header", &b, ArrayHeader::decode) {
            prop_assert!(h.encode()[..] == b[..4096]);
        }
    }

    #[test]
    fn journal_records_and_segment_headers(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = bounded("journal record raw", &raw, JournalRecord::decode);
        let _ = bounded("segment header raw", &raw, SegmentHeader::decode);
        let seeds = with_corpus(journal_seeds(), "journal_records");
        let b = apply(&m, &seeds, 0);
        if let Ok((r, used)) = bounded("journal record", &b, JournalRecord::decode) {
            prop_assert!(r.encode()[..] == b[..used], "journal record: encode(decode(x)) != x");
        }
        let sh = SegmentHeader { group: 1, epoch: 2, first_seq: 3, created: 4 };
        let mut b = apply(&m, &with_corpus(vec![sh.encode()], "segment_headers"), 8);
        reseal_fixed(&mut b, SEGMENT_HEADER_SIZE);
        if let Ok(h) = bounded("segment header", &b, SegmentHeader::decode) {
            prop_assert!(h.encode()[..] == b[..SEGMENT_HEADER_SIZE]);
        }
    }

    #[test]
    fn ack_manifest_failback(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = bounded("ack raw", &raw, Ack::decode);
        let _ = bounded("manifest raw", &raw, Manifest::decode);
        let _ = bounded("failback raw", &raw, FailbackRequest::decode);
        let ack = Ack { group: 1, epoch: 2, applied: 3, time: 4, acked_at: 5 };
        let mut b = apply(&m, &[ack.encode()], 8);
        reseal_fixed(&mut b, ACK_SIZE);
        if let Ok(a) = bounded("ack", &b, Ack::decode) {
            prop_assert!(a.encode() == b);
        }
        let man = Manifest {
            group: 1,
            epoch: 2,
            pool: 3,
            created: 4,
            name: "g".into(),
            start_seq: 5,
            volumes: vec![(1, "a".into()), (2, "bb".into())],
            settings: None,
        };
        let mut b = apply(&m, &with_corpus(vec![man.encode()], "manifest"), 8);
        reseal_var(&mut b);
        if let Ok(x) = bounded("manifest", &b, Manifest::decode) {
            if b[8..12] == man.encode()[8..12] {
                prop_assert!(x.encode() == b, "manifest: encode(decode(x)) != x");
            }
        }
        let fb = FailbackRequest {
            group: 1,
            epoch: 2,
            pool: 3,
            created: 4,
            regions: vec![FailbackRegion { volume: "a".into(), offset: 0, len: 4096 }],
        };
        let mut b = apply(&m, &[fb.encode()], 8);
        reseal_var(&mut b);
        if let Ok(x) = bounded("failback", &b, FailbackRequest::decode) {
            prop_assert!(x.encode() == b, "failback: encode(decode(x)) != x");
        }
    }

    #[test]
    fn control_protocol(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = bounded("request raw", &raw, |b| serde_json::from_slice::<Request>(b));
        let seeds: Vec<Vec<u8>> = [
            r#"{"op":"volume_create","name":"v","size":1048576}"#,
            r#"{"op":"volume_resize","name":"v","size":4096,"allow_shrink":true}"#,
            r#"{"op":"snapshot_rollback","volume":"v","name":"s"}"#,
            r#"{"op":"pool_info"}"#,
            r#"{"op":"salvage_confirm"}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let seeds = with_corpus(seeds, "control");
        let b = apply(&m, &seeds, 0);
        if let Ok(req) = bounded("request", &b, |b| serde_json::from_slice::<Request>(b)) {
            let again: Request = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
            prop_assert_eq!(again, req);
        }
    }
}

/// The seeds themselves decode (the targets above start from valid encodings).
#[test]
fn seeds_are_valid() {
    let (ckpts, frames) = pool_seeds();
    for c in &ckpts {
        assert!(Checkpoint::decode(c).unwrap().encode() == *c);
    }
    for (k, p) in &frames {
        MetaRecord::decode_payload(*k, p).unwrap();
    }
    for r in journal_seeds() {
        JournalRecord::decode(&r).unwrap();
    }
    for s in [
        r#"{"op":"volume_create","name":"v","size":1048576}"#,
        r#"{"op":"salvage_confirm"}"#,
    ] {
        serde_json::from_str::<Request>(s).unwrap();
    }
}

// Backups (issue 14): the export stream and the volume information record.
mod backup_streams {
    use super::*;
    use fusevol::format::stream::{decode_stream, encode_stream, StreamHeader, StreamRecord};
    use fusevol::format::volinfo::{InfoRecord, Origin};

    fn info() -> InfoRecord {
        let mut r = InfoRecord::default();
        r.set("label", "nightly", 0).unwrap();
        r.set("user.k", "v", 0).unwrap();
        r.for_copy(Origin {
            kind: "snapshot".into(),
            volume: "v".into(),
            snapshot: "s".into(),
            volume_id: 1,
            pool_id: 2,
            time: 3,
            ..Default::default()
        })
    }

    fn header(incremental: bool, size: u64) -> StreamHeader {
        StreamHeader {
            incremental,
            size,
            extent_size: 4096,
            pool_id: 9,
            volume: "vol".into(),
            snapshot: "s2".into(),
            base: if incremental {
                "s1".into()
            } else {
                String::new()
            },
            info: info().encode(),
        }
    }

    fn records() -> impl Strategy<Value = (bool, u64, Vec<StreamRecord>)> {
        (any::<bool>(), 1u64..40_000).prop_flat_map(|(inc, size)| {
            let n = size.div_ceil(4096);
            let rec = (0..n, any::<u8>(), any::<bool>()).prop_map(move |(i, fill, hole)| {
                let len = 4096u64.min(size - i * 4096) as usize;
                if hole && inc {
                    StreamRecord::Hole { index: i }
                } else {
                    StreamRecord::Extent {
                        index: i,
                        data: vec![fill; len],
                    }
                }
            });
            (Just(inc), Just(size), proptest::collection::vec(rec, 0..6))
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn export_stream((inc, size, recs) in records(), m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = bounded("stream raw", &raw, decode_stream);
            let h = header(inc, size);
            let b = encode_stream(&h, &recs);
            let (dh, drecs) = decode_stream(&b).expect("a valid stream decodes");
            prop_assert_eq!(&dh, &h);
            prop_assert_eq!(&drecs, &recs);
            let seeds = with_corpus(vec![b], "export_stream");
            let mb = apply(&m, &seeds, 0);
            if let Ok((h2, r2)) = bounded("stream", &mb, decode_stream) {
                prop_assert!(encode_stream(&h2, &r2) == mb, "stream: encode(decode(x)) != x");
            }
        }

        #[test]
        fn volume_information(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = bounded("info raw", &raw, InfoRecord::decode);
            let seeds = with_corpus(vec![info().encode(), InfoRecord::default().encode()], "volinfo");
            let mut b = apply(&m, &seeds, 4);
            reseal_var(&mut b);
            if let Ok(r) = bounded("info", &b, InfoRecord::decode) {
                prop_assert!(r.encode() == b, "info: encode(decode(x)) != x");
            }
        }
    }
}

/// A Unix socket in `dir` named `control.sock` that forwards every connection to `target`
/// and records what clients send (the control protocol's request lines).
fn recording_proxy(
    dir: &std::path::Path,
    target: std::path::PathBuf,
) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = UnixListener::bind(dir.join("control.sock")).unwrap();
    let rec = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut client) = c else { return };
            let mut server = UnixStream::connect(&target).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
            let rec = rec.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 65536];
                while let Ok(n) = client.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    rec.lock().unwrap().extend_from_slice(&b[..n]);
                    if server.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    seen
}

/// Write `items` into `tests/fuzz-corpus/TARGET/`, each named by its CRC32C (so a refresh
/// adds what is new and keeps what is there).
fn save_corpus(target: &str, items: &[Vec<u8>]) -> usize {
    let dir = corpus_dir().join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let mut added = 0;
    for b in items {
        let f = dir.join(format!("{:08x}-{}.bin", crc32c::crc32c(b), b.len()));
        if !f.exists() {
            std::fs::write(f, b).unwrap();
            added += 1;
        }
    }
    added
}

/// Builds the committed corpus from a real daemon: a pool with volume information, a
/// snapshot and a clone, a pair taken through split and resync, a journal group whose
/// segments reach a remote directory (manifest, ack), a schedule, a lock, a resize and
/// deletions, then full and incremental export streams; the CLI's requests are recorded
/// through a proxy socket. Every item is checked to decode before it is kept.
#[test]
#[ignore = "writes tests/fuzz-corpus/; run by hand to refresh the corpus"]
fn make_corpus() {
    use common::Cli;
    let mut p = TestPool::new(&["a0:64M", "a1:64M"], "64K");
    let proxy_dir = tempfile::tempdir().unwrap();
    let requests = recording_proxy(proxy_dir.path(), p.pool().join("control.sock"));
    let c = Cli {
        pool: proxy_dir.path().to_path_buf(),
    };
    let remote = p.root().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let write = |p: &TestPool, vol: &str, at: u64, len: usize, fill: u8| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(p.vol(vol))
            .unwrap();
        f.write_all_at(&vec![fill; len], at).unwrap();
        f.sync_all().unwrap();
    };
    for v in ["db", "logs", "app"] {
        c.cli_ok(&["volume", "create", v, "--size", "1M"]);
    }
    write(&p, "db", 0, 30_000, 1);
    c.cli_ok(&[
        "volume",
        "info",
        "set",
        "db",
        "label=nightly",
        "host=h1",
        "app=pg",
        "mountpoint=/srv",
        "user.k=v",
    ]);
    c.cli_ok(&["volume", "info", "unset", "db", "mountpoint"]);
    c.cli_ok(&["snapshot", "create", "db", "s1"]);
    write(&p, "db", 4096, 4096, 2);
    c.cli_ok(&["snapshot", "create", "db", "s2"]);
    c.cli_ok(&["snapshot", "clone", "db", "s1", "db-c"]);
    c.cli_ok(&["pair", "create", "app", "app-s", "--create-svol", "--wait"]);
    write(&p, "app", 65536, 8192, 3);
    c.cli_ok(&["pair", "split", "app"]);
    write(&p, "app", 0, 4096, 4);
    c.cli_ok(&["pair", "resync", "app"]);
    c.cli_ok(&["pair", "wait", "app", "--state", "PAIR", "--timeout", "60"]);
    c.cli_ok(&[
        "group",
        "create",
        "g",
        "--volumes",
        "logs",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    for i in 0..8u8 {
        write(&p, "logs", i as u64 * 70_000, 5000, 10 + i);
    }
    c.cli_ok(&["group", "snapshot", "g", "gs1"]);
    // `sync` checkpoints and cuts the log: keep what it holds now.
    let mut logs = vec![std::fs::read(p.pool().join("meta.log")).unwrap()];
    c.cli_ok(&["sync"]);
    c.cli_ok(&[
        "schedule", "add", "db", "--every", "1h", "--keep", "3", "--label", "auto", "--name",
        "db-auto",
    ]);
    c.cli_ok(&["--owner", "alice", "lock", "app", "--ttl", "60"]);
    c.cli_ok(&["--owner", "alice", "unlock", "app"]);
    c.cli_ok(&["volume", "resize", "db-c", "--size", "2M"]);
    c.cli_ok(&["snapshot", "delete", "db", "s2"]);
    c.cli_ok(&["volume", "create", "tmp", "--size", "256K"]);
    c.cli_ok(&["volume", "delete", "tmp"]);
    for args in [
        &["volume", "list"][..],
        &["pool", "info"],
        &["pair", "status"],
        &["group", "status", "g"],
        &["catalog"],
        &["stats"],
        &["events"],
        &["schedule", "list"],
    ] {
        c.cli_ok(args);
    }
    // Export streams (read through the real pool's mount).
    let ex = p.root().join("ex");
    std::fs::create_dir_all(&ex).unwrap();
    let full = ex.join("full.fvs");
    let inc = ex.join("inc.fvs");
    p.cli_ok(&["snapshot", "create", "db", "s3"]);
    p.cli_ok(&["volume", "export", "db@s1", full.to_str().unwrap()]);
    p.cli_ok(&[
        "volume",
        "export",
        "db@s3",
        inc.to_str().unwrap(),
        "--from",
        "s1",
    ]);
    // The metadata log holds every record since the last checkpoint.
    logs.push(std::fs::read(p.pool().join("meta.log")).unwrap());
    p.stop();
    let ckpt = std::fs::read(p.pool().join("checkpoint")).unwrap();
    assert!(Checkpoint::decode(&ckpt).is_ok());
    let mut frames = Vec::new();
    for log in &logs {
        let h = LogHeader::decode(log).unwrap();
        let mut pos = h.records_offset();
        while let RecordFrame::Record(_, n) = RecordFrame::parse(&log[pos..]) {
            let kind = log[pos + 8];
            let payload = &log[pos + FRAME_HEADER..pos + n];
            MetaRecord::decode_payload(kind, payload).unwrap();
            let mut f = vec![kind];
            f.extend_from_slice(payload);
            frames.push(f);
            pos += n;
        }
    }
    // Journal segments as published to the remote: header, then records.
    let (mut heads, mut recs) = (Vec::new(), Vec::new());
    let gdir = remote.join("g");
    let mut segs: Vec<_> = std::fs::read_dir(&gdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    for s in segs
        .iter()
        .filter(|s| s.extension().is_some_and(|e| e == "jseg"))
    {
        let b = std::fs::read(s).unwrap();
        SegmentHeader::decode(&b).unwrap();
        heads.push(b[..SEGMENT_HEADER_SIZE].to_vec());
        let mut at = SEGMENT_HEADER_SIZE;
        while let Ok((_, used)) = JournalRecord::decode(&b[at..]) {
            recs.push(b[at..at + used].to_vec());
            at += used;
        }
    }
    let manifest = std::fs::read(gdir.join("manifest")).unwrap();
    Manifest::decode(&manifest).unwrap();
    let (mut streams, mut infos) = (Vec::new(), Vec::new());
    for f in [&full, &inc] {
        let b = std::fs::read(f).unwrap();
        let (h, _) = fusevol::format::stream::decode_stream(&b).unwrap();
        fusevol::format::volinfo::InfoRecord::decode(&h.info).unwrap();
        infos.push(h.info.clone());
        streams.push(b);
    }
    let lines: Vec<Vec<u8>> = requests
        .lock()
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| serde_json::from_slice::<Request>(l).is_ok())
        .map(|l| l.to_vec())
        .collect();
    assert!(!recs.is_empty(), "no journal records in {}", gdir.display());
    assert!(lines.len() >= 20, "{} requests recorded", lines.len());
    for (target, items) in [
        ("checkpoint", vec![ckpt]),
        ("meta_records", frames),
        ("journal_records", recs),
        ("segment_headers", heads),
        ("manifest", vec![manifest]),
        ("export_stream", streams),
        ("volinfo", infos),
        ("control", lines),
    ] {
        let n = items.len();
        let added = save_corpus(target, &items);
        eprintln!("corpus {target}: {n} items, {added} new");
    }
}
