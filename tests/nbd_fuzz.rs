//! Random byte streams into the NBD server's parsers — the negotiation (`nbd::handshake`) and
//! the transmission request reader (`nbd::conn::read_request`) — must end in a reply, an error
//! or a clean end, never a panic or a hang, and must never allocate what a length field
//! claims beyond the caps. Bounded: a fixed number of cases per property (FUSEVOL_FUZZ_CASES
//! raises it), each stream at most a few KiB.

use std::io::Cursor;

use fusevol::format::nbd as w;
use fusevol::nbd::conn::read_request;
use fusevol::nbd::handshake::{negotiate, Catalog, HandshakeError, MAX_PAYLOAD};
use proptest::prelude::*;

/// The export table the parser answers from (the negotiation only asks names and sizes).
struct Table;

impl Catalog for Table {
    fn names(&self) -> Vec<String> {
        vec!["vol".into(), "vol@snap".into()]
    }
    fn describe(&self, name: &str) -> Option<(u64, bool)> {
        match name {
            "vol" => Some((1 << 20, false)),
            "vol@snap" => Some((1 << 20, true)),
            _ => None,
        }
    }
}

fn cases() -> u32 {
    std::env::var("FUSEVOL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = w::encode_option_header(opt, data.len() as u32).to_vec();
    b.extend_from_slice(data);
    b
}

/// Options that are well-formed in shape, with random codes and data, so the fuzzer gets
/// past the magic checks into each option's decoder.
fn option_strategy() -> impl Strategy<Value = Vec<u8>> {
    let known = prop_oneof![
        Just(w::OPT_EXPORT_NAME),
        Just(w::OPT_ABORT),
        Just(w::OPT_LIST),
        Just(w::OPT_INFO),
        Just(w::OPT_GO),
        Just(w::OPT_STRUCTURED_REPLY),
        Just(w::OPT_LIST_META_CONTEXT),
        Just(w::OPT_SET_META_CONTEXT),
        any::<u32>(),
    ];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"\x00\x00\x00\x03vol\x00\x00".to_vec()),
        Just(b"\x00\x00\x00\x03vol\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation".to_vec()),
        Just(b"\x00\x00\x00\x03vol\xff\xff\xff\xff".to_vec()),
        Just(b"\xff\xff\xff\xff".to_vec()),
    ];
    (known, data).prop_map(|(o, d)| option(o, &d))
}

fn run_negotiation(input: Vec<u8>) -> Result<(), HandshakeError> {
    let mut out = Vec::new();
    let r = negotiate(&mut Cursor::new(input), &mut out, &Table).map(|_| ());
    // Every reply is to something the client sent: bounded by the options' count.
    assert!(out.len() < 1 << 20, "negotiation wrote {} bytes", out.len());
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn negotiation_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = run_negotiation(bytes);
    }

    #[test]
    fn negotiation_random_options(
        flags in prop_oneof![Just(3u32), Just(1u32), any::<u32>()],
        opts in proptest::collection::vec(option_strategy(), 0..12),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut input = flags.to_be_bytes().to_vec();
        for o in opts {
            input.extend_from_slice(&o);
        }
        input.extend_from_slice(&tail);
        let _ = run_negotiation(input);
    }

    #[test]
    fn request_reader_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut r = Cursor::new(bytes);
        while let Ok(Some((req, data))) = read_request(&mut r) {
            prop_assert!(req.len <= MAX_PAYLOAD || req.kind != w::CMD_WRITE);
            prop_assert!(data.len() <= MAX_PAYLOAD as usize);
        }
    }

    #[test]
    fn request_reader_shaped_requests(
        reqs in proptest::collection::vec(
            (any::<u16>(), 0u16..10, any::<u64>(), any::<u64>(),
             prop_oneof![0u32..9000, any::<u32>()]),
            0..16),
        junk in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut input = Vec::new();
        for (flags, kind, cookie, offset, len) in reqs {
            let r = w::Request { flags, kind, cookie, offset, len };
            input.extend_from_slice(&w::encode_request(&r));
            if kind == w::CMD_WRITE {
                input.extend(std::iter::repeat_n(0u8, (len as usize).min(9000)));
            }
        }
        input.extend_from_slice(&junk);
        let mut r = Cursor::new(input);
        while let Ok(Some((req, data))) = read_request(&mut r) {
            if req.kind == w::CMD_WRITE {
                prop_assert_eq!(data.len(), req.len as usize);
            }
        }
    }
}

/// A well-formed negotiation reaches transmission with what was agreed.
#[test]
fn negotiation_go_with_structured_replies_and_allocation() {
    let mut input = 3u32.to_be_bytes().to_vec();
    input.extend(option(w::OPT_STRUCTURED_REPLY, &[]));
    input.extend(option(
        w::OPT_SET_META_CONTEXT,
        b"\x00\x00\x00\x03vol\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation",
    ));
    input.extend(option(w::OPT_LIST, &[]));
    input.extend(option(99, &[]));
    input.extend(option(w::OPT_GO, b"\x00\x00\x00\x08vol@snap\x00\x00"));
    let mut out = Vec::new();
    let n = negotiate(&mut Cursor::new(input), &mut out, &Table).unwrap();
    assert_eq!(n.export, "vol@snap");
    assert!(n.structured && n.allocation);
    // greeting, then ACK for structured replies first
    assert_eq!(&out[..8], b"NBDMAGIC");
    assert_eq!(
        &out[18..38],
        &w::encode_option_reply(w::OPT_STRUCTURED_REPLY, w::REP_ACK, &[])[..]
    );
    // the unknown option 99 got NBD_REP_ERR_UNSUP
    let unsup = w::encode_option_reply(99, w::REP_ERR_UNSUP, &[]);
    assert!(out.windows(16).any(|win| win == &unsup[..16]));
}

/// Unknown export in GO is an error reply, and the negotiation goes on.
#[test]
fn negotiation_unknown_export_then_abort() {
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(w::OPT_GO, b"\x00\x00\x00\x04nope\x00\x00"));
    input.extend(option(w::OPT_ABORT, &[]));
    let mut out = Vec::new();
    let e = negotiate(&mut Cursor::new(input), &mut out, &Table).unwrap_err();
    assert!(matches!(e, HandshakeError::Aborted), "{e}");
    assert_eq!(&out[30..34], &w::REP_ERR_UNKNOWN.to_be_bytes());
}
