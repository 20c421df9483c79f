//! The NBD wire protocol (fixed newstyle negotiation, simple and structured replies), as pure
//! encode/decode over byte slices: no sockets here (the server is `crate::nbd`).
//!
//! Source: the NBD protocol document, `doc/proto.md` of github.com/NetworkBlockDevice/nbd.
//! Every integer on the wire is big-endian (network byte order), unlike our on-disk formats.
//! Decoders never trust a length they have not bounds-checked.

use super::FormatError;

/// `"NBDMAGIC"`: the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `"IHAVEOPT"`: newstyle negotiation; also the magic of every option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types; errors have bit 31 set.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

// NBD_REP_INFO types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Error values (errno-like, fixed by the protocol whatever the platform).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// Structured reply flags and chunk types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// The one meta context we serve, and the flags of its extents.
pub const BASE_ALLOCATION: &str = "base:allocation";
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// Longest string (export name, context query) the protocol allows.
pub const MAX_STRING: usize = 4096;

pub const GREETING_LEN: usize = 18;
pub const OPTION_HEADER_LEN: usize = 16;
pub const REQUEST_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const STRUCTURED_HEADER_LEN: usize = 20;

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

/// A bounds-checked big-endian reader over an option's data.
struct Be<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Be<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError::Truncated {
                what: self.what,
                need: n,
                have: self.buf.len(),
            });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(be16(self.take(2)?))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(be32(self.take(4)?))
    }
    /// u32 length + UTF-8 bytes, at most `MAX_STRING`.
    fn string(&mut self) -> Result<String, FormatError> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return Err(FormatError::Invalid {
                what: self.what,
                detail: format!("string of {n} bytes (at most {MAX_STRING})"),
            });
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadString { what: self.what })
    }
    fn end(&self) -> Result<(), FormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FormatError::Invalid {
                what: self.what,
                detail: format!("{} bytes after the end", self.buf.len()),
            })
        }
    }
}

// Format: server greeting (fixed newstyle), 18 bytes:
//   u64 NBDMAGIC | u64 IHAVEOPT | u16 handshake flags (FIXED_NEWSTYLE | NO_ZEROES)
// answered by the client's u32 flags (C_FIXED_NEWSTYLE, C_NO_ZEROES).
pub fn encode_greeting() -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// The client's flags; refuses unknown bits (the protocol says to close then).
pub fn decode_client_flags(b: &[u8; 4]) -> Result<u32, FormatError> {
    let f = be32(b);
    if f & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(FormatError::Invalid {
            what: "NBD client flags",
            detail: format!("unknown bits {f:#x}"),
        });
    }
    Ok(f)
}

/// An option's header; its data (`len` bytes) follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

// Format: option, 16 bytes + data:
//   u64 IHAVEOPT | u32 option | u32 data length | data
pub fn decode_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, FormatError> {
    if be64(&b[0..8]) != IHAVEOPT {
        return Err(FormatError::BadMagic { what: "NBD option" });
    }
    Ok(OptionHeader {
        option: be32(&b[8..12]),
        len: be32(&b[12..16]),
    })
}

pub fn encode_option_header(option: u32, len: u32) -> [u8; OPTION_HEADER_LEN] {
    let mut b = [0u8; OPTION_HEADER_LEN];
    b[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[8..12].copy_from_slice(&option.to_be_bytes());
    b[12..16].copy_from_slice(&len.to_be_bytes());
    b
}

// Format: option reply, 20 bytes + data:
//   u64 OPT_REPLY_MAGIC | u32 option | u32 reply type | u32 data length | data
pub fn encode_option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// The data of NBD_OPT_GO and NBD_OPT_INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub name: String,
    /// NBD_INFO_* items the client asks for.
    pub info: Vec<u16>,
}

// Format: NBD_OPT_GO / NBD_OPT_INFO data:
//   u32 name length | name | u16 number of info requests | u16 info type...
pub fn decode_export_request(data: &[u8]) -> Result<ExportRequest, FormatError> {
    let mut d = Be {
        buf: data,
        what: "NBD_OPT_GO/INFO",
    };
    let name = d.string()?;
    let n = d.u16()? as usize;
    let mut info = Vec::with_capacity(n.min(d.buf.len() / 2));
    for _ in 0..n {
        info.push(d.u16()?);
    }
    d.end()?;
    Ok(ExportRequest { name, info })
}

/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub name: String,
    pub queries: Vec<String>,
}

// Format: NBD_OPT_{LIST,SET}_META_CONTEXT data:
//   u32 export name length | name | u32 number of queries | (u32 length | query)...
pub fn decode_meta_request(data: &[u8]) -> Result<MetaRequest, FormatError> {
    let mut d = Be {
        buf: data,
        what: "NBD_OPT_*_META_CONTEXT",
    };
    let name = d.string()?;
    let n = d.u32()? as usize;
    let mut queries = Vec::with_capacity(n.min(d.buf.len() / 4));
    for _ in 0..n {
        queries.push(d.string()?);
    }
    d.end()?;
    Ok(MetaRequest { name, queries })
}

// Format: NBD_REP_INFO data, NBD_INFO_EXPORT: u16 type 0 | u64 size | u16 transmission flags
pub fn encode_info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

// Format: NBD_REP_INFO data, NBD_INFO_BLOCK_SIZE:
//   u16 type 3 | u32 minimum | u32 preferred | u32 maximum block size
pub fn encode_info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    b.extend_from_slice(&min.to_be_bytes());
    b.extend_from_slice(&preferred.to_be_bytes());
    b.extend_from_slice(&max.to_be_bytes());
    b
}

// Format: NBD_REP_INFO data, NBD_INFO_NAME: u16 type 1 | name (the rest of the data)
pub fn encode_info_name(name: &str) -> Vec<u8> {
    let mut b = INFO_NAME.to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

// Format: NBD_REP_SERVER data: u32 name length | name (no description)
pub fn encode_rep_server(name: &str) -> Vec<u8> {
    let mut b = (name.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

// Format: NBD_REP_META_CONTEXT data: u32 context id | name (the rest of the data)
pub fn encode_rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

// Format: reply to NBD_OPT_EXPORT_NAME (no option reply header):
//   u64 size | u16 transmission flags | 124 zero bytes unless NO_ZEROES was agreed
pub fn encode_export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0u8; 124]);
    }
    b
}

/// One transmission request; a WRITE's `len` bytes of data follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

// Format: request, 28 bytes:
//   u32 REQUEST_MAGIC | u16 command flags | u16 type | u64 cookie | u64 offset | u32 length
pub fn decode_request(b: &[u8; REQUEST_LEN]) -> Result<Request, FormatError> {
    if be32(&b[0..4]) != REQUEST_MAGIC {
        return Err(FormatError::BadMagic {
            what: "NBD request",
        });
    }
    Ok(Request {
        flags: be16(&b[4..6]),
        kind: be16(&b[6..8]),
        cookie: be64(&b[8..16]),
        offset: be64(&b[16..24]),
        len: be32(&b[24..28]),
    })
}

pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.kind.to_be_bytes());
    b[8..16].copy_from_slice(&r.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..28].copy_from_slice(&r.len.to_be_bytes());
    b
}

// Format: simple reply, 16 bytes (+ data for a successful READ):
//   u32 SIMPLE_REPLY_MAGIC | u32 error | u64 cookie
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

// Format: structured reply chunk header, 20 bytes + `len` bytes of payload:
//   u32 STRUCTURED_REPLY_MAGIC | u16 flags (DONE) | u16 type | u64 cookie | u32 length
pub fn encode_structured_header(out: &mut [u8], flags: u16, kind: u16, cookie: u64, len: u32) {
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&len.to_be_bytes());
}

/// Bytes before a READ's data in one NBD_REPLY_TYPE_OFFSET_DATA chunk (header + u64 offset).
pub const OFFSET_DATA_PREFIX: usize = STRUCTURED_HEADER_LEN + 8;

// Format: NBD_REPLY_TYPE_OFFSET_DATA chunk payload: u64 offset | data
/// Fills the first `OFFSET_DATA_PREFIX` bytes of `out` for `data_len` bytes of data that
/// follow them (the caller reads the data in place after the prefix).
pub fn encode_offset_data_prefix(
    out: &mut [u8],
    flags: u16,
    cookie: u64,
    offset: u64,
    data_len: u32,
) {
    encode_structured_header(out, flags, REPLY_TYPE_OFFSET_DATA, cookie, data_len + 8);
    out[20..28].copy_from_slice(&offset.to_be_bytes());
}

/// Length of an NBD_REPLY_TYPE_OFFSET_HOLE chunk, header included.
pub const OFFSET_HOLE_LEN: usize = STRUCTURED_HEADER_LEN + 12;

// Format: NBD_REPLY_TYPE_OFFSET_HOLE chunk payload: u64 offset | u32 hole size
pub fn encode_offset_hole(flags: u16, cookie: u64, offset: u64, len: u32) -> [u8; OFFSET_HOLE_LEN] {
    let mut b = [0u8; OFFSET_HOLE_LEN];
    encode_structured_header(&mut b, flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12);
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..32].copy_from_slice(&len.to_be_bytes());
    b
}

// Format: NBD_REPLY_TYPE_ERROR chunk payload: u32 error | u16 message length | message
pub fn encode_error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(1024)];
    let mut b = vec![0u8; STRUCTURED_HEADER_LEN];
    encode_structured_header(
        &mut b,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        (6 + msg.len()) as u32,
    );
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

// Format: NBD_REPLY_TYPE_BLOCK_STATUS chunk payload:
//   u32 meta context id | (u32 extent length | u32 status flags)...
pub fn encode_block_status(cookie: u64, context: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let len = 4 + 8 * extents.len();
    let mut b = vec![0u8; STRUCTURED_HEADER_LEN];
    encode_structured_header(
        &mut b,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        cookie,
        len as u32,
    );
    b.extend_from_slice(&context.to_be_bytes());
    for (l, f) in extents {
        b.extend_from_slice(&l.to_be_bytes());
        b.extend_from_slice(&f.to_be_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The greeting spelled as in proto.md: "NBDMAGIC", "IHAVEOPT", flags 0x0003.
    #[test]
    fn greeting_bytes() {
        let g = encode_greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0x00, 0x03]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(decode_client_flags(&[0, 0, 0, 3]).unwrap(), 3);
        assert!(decode_client_flags(&[0, 0, 0, 4]).is_err());
    }

    #[test]
    fn option_header() {
        // IHAVEOPT, NBD_OPT_GO (7), length 0x0000000a
        let b: [u8; 16] = *b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0a";
        assert_eq!(
            decode_option_header(&b).unwrap(),
            OptionHeader {
                option: OPT_GO,
                len: 10
            }
        );
        assert_eq!(encode_option_header(OPT_GO, 10), b);
        let mut bad = b;
        bad[0] = b'X';
        assert!(decode_option_header(&bad).is_err());
    }

    #[test]
    fn option_reply_bytes() {
        let r = encode_option_reply(OPT_GO, REP_ACK, &[]);
        assert_eq!(
            r,
            [
                0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, // reply magic
                0, 0, 0, 7, // NBD_OPT_GO
                0, 0, 0, 1, // NBD_REP_ACK
                0, 0, 0, 0, // no data
            ]
        );
        let e = encode_option_reply(OPT_LIST, REP_ERR_UNKNOWN, &[]);
        assert_eq!(&e[12..16], &[0x80, 0, 0, 6]);
    }

    #[test]
    fn export_request() {
        // name "vol0", two info requests: NBD_INFO_EXPORT? no: NAME (1) and BLOCK_SIZE (3)
        let data = b"\x00\x00\x00\x04vol0\x00\x02\x00\x01\x00\x03";
        assert_eq!(
            decode_export_request(data).unwrap(),
            ExportRequest {
                name: "vol0".into(),
                info: vec![INFO_NAME, INFO_BLOCK_SIZE]
            }
        );
        assert!(decode_export_request(b"\x00\x00\x00\x05vol0\x00\x00").is_err());
        assert!(decode_export_request(b"\x00\x00\x00\x04vol0\x00\x01").is_err());
        assert!(decode_export_request(b"\x00\x00\x00\x04vol0\x00\x00\x00").is_err());
        assert!(decode_export_request(b"\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn meta_request() {
        let data = b"\x00\x00\x00\x01a\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation";
        assert_eq!(
            decode_meta_request(data).unwrap(),
            MetaRequest {
                name: "a".into(),
                queries: vec![BASE_ALLOCATION.into()]
            }
        );
        // a count that the data cannot hold
        assert!(decode_meta_request(b"\x00\x00\x00\x00\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn info_and_server_bytes() {
        assert_eq!(
            encode_info_export(1 << 20, TFLAG_HAS_FLAGS | TFLAG_READ_ONLY),
            [0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 3]
        );
        assert_eq!(
            encode_info_block_size(1, 4096, 1 << 25),
            [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0]
        );
        assert_eq!(encode_rep_server("ab"), [0, 0, 0, 2, b'a', b'b']);
        assert_eq!(encode_rep_meta_context(1, "x"), [0, 0, 0, 1, b'x']);
        assert_eq!(encode_export_name_reply(1, 1, false).len(), 134);
        assert_eq!(encode_export_name_reply(1, 1, true).len(), 10);
    }

    #[test]
    fn request_bytes() {
        let b: [u8; 28] = [
            0x25, 0x60, 0x95, 0x13, // magic
            0x00, 0x01, // FUA
            0x00, 0x01, // WRITE
            1, 2, 3, 4, 5, 6, 7, 8, // cookie
            0, 0, 0, 0, 0, 0, 0x10, 0, // offset 4096
            0, 0, 0x02, 0, // length 512
        ];
        let r = decode_request(&b).unwrap();
        assert_eq!(
            r,
            Request {
                flags: CMD_FLAG_FUA,
                kind: CMD_WRITE,
                cookie: 0x0102030405060708,
                offset: 4096,
                len: 512
            }
        );
        assert_eq!(encode_request(&r), b);
        let mut bad = b;
        bad[3] = 0x14;
        assert!(decode_request(&bad).is_err());
    }

    #[test]
    fn reply_bytes() {
        assert_eq!(
            encode_simple_reply(EIO, 9),
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        let mut p = [0u8; OFFSET_DATA_PREFIX];
        encode_offset_data_prefix(&mut p, REPLY_FLAG_DONE, 7, 512, 4);
        assert_eq!(
            p,
            [
                0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 12, 0, 0, 0,
                0, 0, 0, 2, 0
            ]
        );
        assert_eq!(
            encode_offset_hole(0, 7, 4096, 512),
            [
                0x66, 0x8e, 0x33, 0xef, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 12, 0, 0, 0,
                0, 0, 0, 0x10, 0, 0, 0, 2, 0
            ]
        );
        let bs = encode_block_status(7, 1, &[(4096, STATE_HOLE | STATE_ZERO)]);
        assert_eq!(
            &bs[4..8],
            &[0, 1, 0, 5] // DONE, NBD_REPLY_TYPE_BLOCK_STATUS
        );
        assert_eq!(
            &bs[16..],
            &[0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 3]
        );
        let e = encode_error_chunk(7, EINVAL, "no");
        assert_eq!(&e[4..8], &[0, 1, 0x80, 1]);
        assert_eq!(&e[16..], &[0, 0, 0, 8, 0, 0, 0, 22, 0, 2, b'n', b'o']);
    }
}
