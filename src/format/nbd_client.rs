//! The client's side of the NBD wire format (the forwarding client of `cluster::remote`):
//! decoders for what a server sends and encoders for what a client sends, beside the server's
//! side in `format::nbd` (whose constants and request encoder it shares). Written against the
//! protocol document of the NetworkBlockDevice/nbd project (doc/proto.md): fixed newstyle
//! negotiation, NBD_OPT_GO, simple replies.

use super::nbd::*;
use super::FormatError;

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Length of an option reply's fixed part.
pub const OPTION_REPLY_LEN: usize = 20;

// Format: server greeting (fixed newstyle), 18 bytes:
//   u64 NBDMAGIC | u64 IHAVEOPT | u16 handshake flags
/// The server's handshake flags; refuses an old-style server or one without FIXED_NEWSTYLE.
pub fn decode_greeting(b: &[u8; GREETING_LEN]) -> Result<u16, FormatError> {
    if be64(&b[0..8]) != NBDMAGIC || be64(&b[8..16]) != IHAVEOPT {
        return Err(FormatError::BadMagic {
            what: "NBD server greeting",
        });
    }
    let flags = be16(&b[16..18]);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(FormatError::Invalid {
            what: "NBD server greeting",
            detail: "server does not speak fixed newstyle".into(),
        });
    }
    Ok(flags)
}

/// The client's flags answering a greeting: fixed newstyle, and no zeroes when offered.
pub fn encode_client_flags(server_flags: u16) -> [u8; 4] {
    let mut f = FLAG_C_FIXED_NEWSTYLE;
    if server_flags & FLAG_NO_ZEROES != 0 {
        f |= FLAG_C_NO_ZEROES;
    }
    f.to_be_bytes()
}

// Format: NBD_OPT_GO data:
//   u32 name length | name | u16 number of info requests (0: the server sends INFO_EXPORT)
/// A whole NBD_OPT_GO option (header and data) for export `name`.
pub fn encode_go(name: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(6 + name.len());
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    let mut b = encode_option_header(OPT_GO, data.len() as u32).to_vec();
    b.extend_from_slice(&data);
    b
}

/// The fixed part of an option reply; `len` bytes of data follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReply {
    pub option: u32,
    pub reply: u32,
    pub len: u32,
}

// Format: option reply, 20 bytes + data:
//   u64 OPT_REPLY_MAGIC | u32 option | u32 reply type | u32 data length | data
pub fn decode_option_reply(b: &[u8; OPTION_REPLY_LEN]) -> Result<OptionReply, FormatError> {
    if be64(&b[0..8]) != OPT_REPLY_MAGIC {
        return Err(FormatError::BadMagic {
            what: "NBD option reply",
        });
    }
    Ok(OptionReply {
        option: be32(&b[8..12]),
        reply: be32(&b[12..16]),
        len: be32(&b[16..20]),
    })
}

// Format: NBD_REP_INFO data, NBD_INFO_EXPORT:
//   u16 INFO_EXPORT | u64 size | u16 transmission flags
/// `Some((size, flags))` for an INFO_EXPORT item, `None` for another info item.
pub fn decode_info_export(data: &[u8]) -> Result<Option<(u64, u16)>, FormatError> {
    if data.len() < 2 {
        return Err(FormatError::Truncated {
            what: "NBD info reply",
            need: 2,
            have: data.len(),
        });
    }
    if be16(&data[0..2]) != INFO_EXPORT {
        return Ok(None);
    }
    if data.len() != 12 {
        return Err(FormatError::Invalid {
            what: "NBD INFO_EXPORT reply",
            detail: format!("{} bytes (expected 12)", data.len()),
        });
    }
    Ok(Some((be64(&data[2..10]), be16(&data[10..12]))))
}

/// A simple reply's header (a successful READ's data follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

// Format: simple reply, 16 bytes:
//   u32 SIMPLE_REPLY_MAGIC | u32 error | u64 cookie
pub fn decode_simple_reply(b: &[u8; SIMPLE_REPLY_LEN]) -> Result<SimpleReply, FormatError> {
    if be32(&b[0..4]) != SIMPLE_REPLY_MAGIC {
        return Err(FormatError::BadMagic {
            what: "NBD simple reply",
        });
    }
    Ok(SimpleReply {
        error: be32(&b[4..8]),
        cookie: be64(&b[8..16]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trip_with_the_servers_encoder() {
        let g = encode_greeting();
        let flags = decode_greeting(&g).unwrap();
        assert_ne!(flags & FLAG_FIXED_NEWSTYLE, 0);
        let c = encode_client_flags(flags);
        assert_eq!(
            decode_client_flags(&c).unwrap(),
            FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES
        );
        let mut bad = g;
        bad[0] ^= 1;
        assert!(decode_greeting(&bad).is_err());
    }

    #[test]
    fn go_is_read_back_by_the_servers_decoder() {
        let b = encode_go("vol1");
        let h = decode_option_header(b[..OPTION_HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(h.option, OPT_GO);
        assert_eq!(h.len as usize, b.len() - OPTION_HEADER_LEN);
        let r = decode_export_request(&b[OPTION_HEADER_LEN..]).unwrap();
        assert_eq!(r.name, "vol1");
    }

    #[test]
    fn option_reply_and_info_export_round_trip() {
        let info = encode_info_export(1 << 30, TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH);
        let rep = encode_option_reply(OPT_GO, REP_INFO, &info);
        let h = decode_option_reply(rep[..OPTION_REPLY_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            (h.option, h.reply, h.len as usize),
            (OPT_GO, REP_INFO, info.len())
        );
        assert_eq!(
            decode_info_export(&rep[OPTION_REPLY_LEN..]).unwrap(),
            Some((1 << 30, TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH))
        );
        assert_eq!(decode_info_export(&encode_info_name("x")).unwrap(), None);
        assert!(decode_info_export(&[0]).is_err());
    }

    #[test]
    fn simple_reply_round_trip() {
        let b = encode_simple_reply(EIO, 77);
        assert_eq!(
            decode_simple_reply(&b).unwrap(),
            SimpleReply {
                error: EIO,
                cookie: 77
            }
        );
        let mut bad = b;
        bad[1] ^= 0xff;
        assert!(decode_simple_reply(&bad).is_err());
    }
}
