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
//! Failing cases are kept by proptest under proptest-regressions/ and replayed first.

mod common;
use common::images::storage_at;

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
        let (seeds, _) = pool_seeds();
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
        let (_, frames) = pool_seeds();
        let _ = bounded("meta record raw", &raw, |b| MetaRecord::decode_payload(kind, b));
        let _ = bounded("meta frame raw", &raw, RecordFrame::parse);
        let payloads: Vec<Vec<u8>> = frames.iter().map(|f| f.1.clone()).collect();
        let b = apply(&m, &payloads, 0);
        let kind = frames[m.seed % frames.len()].0;
        if let Ok(rec) = bounded("meta record", &b, |b| MetaRecord::decode_payload(kind, b)) {
            let mut out = Vec::new();
            rec.encode_frame(&mut out);
            prop_assert_eq!(out[8], kind);
            prop_assert!(out[FRAME_HEADER..] == b[..], "{:?}: encode(decode(x)) != x", rec);
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
        let seeds = journal_seeds();
        let b = apply(&m, &seeds, 0);
        if let Ok((r, used)) = bounded("journal record", &b, JournalRecord::decode) {
            prop_assert!(r.encode()[..] == b[..used], "journal record: encode(decode(x)) != x");
        }
        let sh = SegmentHeader { group: 1, epoch: 2, first_seq: 3, created: 4 };
        let mut b = apply(&m, &[sh.encode()], 8);
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
        let mut b = apply(&m, &[man.encode()], 8);
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
            let seeds = vec![b];
            let mb = apply(&m, &seeds, 0);
            if let Ok((h2, r2)) = bounded("stream", &mb, decode_stream) {
                prop_assert!(encode_stream(&h2, &r2) == mb, "stream: encode(decode(x)) != x");
            }
        }

        #[test]
        fn volume_information(m in mutation(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = bounded("info raw", &raw, InfoRecord::decode);
            let seeds = vec![info().encode(), InfoRecord::default().encode()];
            let mut b = apply(&m, &seeds, 4);
            reseal_var(&mut b);
            if let Ok(r) = bounded("info", &b, InfoRecord::decode) {
                prop_assert!(r.encode() == b, "info: encode(decode(x)) != x");
            }
        }
    }
}
