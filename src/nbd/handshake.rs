//! Fixed newstyle negotiation: the options a client sends before transmission, answered from
//! a `Catalog` of exports. Generic over the byte stream, so the fuzz test drives it with
//! random bytes and no socket.
//!
//! Served: `NBD_OPT_GO`, `NBD_OPT_INFO`, `NBD_OPT_EXPORT_NAME` (old clients), `NBD_OPT_LIST`,
//! `NBD_OPT_ABORT`, `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_LIST_META_CONTEXT` and
//! `NBD_OPT_SET_META_CONTEXT` (`base:allocation` only). Everything else (TLS, extended
//! headers, ...) is answered `NBD_REP_ERR_UNSUP`, which the clients fall back from.

use std::io::{self, Read, Write};

use crate::format::nbd::{self as w, ExportRequest};

/// Option data longer than this closes the connection (names are at most 4 KiB).
pub const MAX_OPTION_DATA: u32 = 64 * 1024;
/// A client that sends more options than this is not negotiating in good faith.
pub const MAX_OPTIONS: usize = 4096;
/// Largest READ or WRITE payload; announced as the maximum block size.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Preferred block size: the pool's 4 KiB blocks (smaller writes read-modify-write).
pub const PREFERRED_BLOCK: u32 = 4096;
/// The id of `base:allocation` in block-status replies.
pub const ALLOCATION_CONTEXT: u32 = 1;

/// What the negotiation needs to know of the exports.
pub trait Catalog {
    /// Every export name, for `NBD_OPT_LIST`.
    fn names(&self) -> Vec<String>;
    /// Size and read-only-ness of an export, or None when there is no such export.
    fn describe(&self, name: &str) -> Option<(u64, bool)>;
}

/// The outcome of a negotiation that reached transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub export: String,
    /// Structured replies were agreed (READ replies are chunks; BLOCK_STATUS is allowed).
    pub structured: bool,
    /// `base:allocation` was selected with `NBD_OPT_SET_META_CONTEXT`.
    pub allocation: bool,
}

/// Why a negotiation ended without transmission.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client closed the connection during negotiation")]
    Closed,
    #[error("client aborted the negotiation")]
    Aborted,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Transmission flags for an export.
pub fn transmission_flags(read_only: bool) -> u16 {
    let mut f = w::TFLAG_HAS_FLAGS | w::TFLAG_SEND_FLUSH | w::TFLAG_CAN_MULTI_CONN;
    if read_only {
        f |= w::TFLAG_READ_ONLY;
    } else {
        f |= w::TFLAG_SEND_FUA | w::TFLAG_SEND_TRIM | w::TFLAG_SEND_WRITE_ZEROES;
    }
    f
}

fn read_exact_or_closed(r: &mut impl Read, buf: &mut [u8]) -> Result<(), HandshakeError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
        _ => HandshakeError::Io(e),
    })
}

fn reply(wr: &mut impl Write, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    wr.write_all(&w::encode_option_reply(option, kind, data))
}

fn error_reply(wr: &mut impl Write, option: u32, kind: u32, msg: &str) -> io::Result<()> {
    reply(wr, option, kind, msg.as_bytes())
}

/// Run the negotiation on a fresh connection: greeting, client flags, options until
/// `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME` picks an export. Malformed input ends in an error
/// reply where the protocol allows one, a `HandshakeError` (the caller closes) otherwise.
pub fn negotiate(
    r: &mut impl Read,
    wr: &mut impl Write,
    catalog: &impl Catalog,
) -> Result<Negotiated, HandshakeError> {
    wr.write_all(&w::encode_greeting())?;
    wr.flush()?;
    let mut cf = [0u8; 4];
    read_exact_or_closed(r, &mut cf)?;
    let cflags =
        w::decode_client_flags(&cf).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    if cflags & w::FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(HandshakeError::Protocol(
            "client does not speak fixed newstyle negotiation".into(),
        ));
    }
    let no_zeroes = cflags & w::FLAG_C_NO_ZEROES != 0;
    let mut structured = false;
    let mut allocation = false;
    for _ in 0..MAX_OPTIONS {
        let mut hb = [0u8; w::OPTION_HEADER_LEN];
        read_exact_or_closed(r, &mut hb)?;
        let h =
            w::decode_option_header(&hb).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
        if h.len > MAX_OPTION_DATA {
            return Err(HandshakeError::Protocol(format!(
                "option {} with {} bytes of data (at most {MAX_OPTION_DATA})",
                h.option, h.len
            )));
        }
        let mut data = vec![0u8; h.len as usize];
        read_exact_or_closed(r, &mut data)?;
        match h.option {
            w::OPT_EXPORT_NAME => {
                // No error reply exists for this option: an unknown name closes.
                let name = String::from_utf8(data)
                    .map_err(|_| HandshakeError::Protocol("export name is not UTF-8".into()))?;
                let Some((size, ro)) = catalog.describe(&name) else {
                    return Err(HandshakeError::Protocol(format!(
                        "no export named '{name}'"
                    )));
                };
                wr.write_all(&w::encode_export_name_reply(
                    size,
                    transmission_flags(ro),
                    no_zeroes,
                ))?;
                wr.flush()?;
                return Ok(Negotiated {
                    export: name,
                    structured,
                    allocation,
                });
            }
            w::OPT_ABORT => {
                let _ = reply(wr, h.option, w::REP_ACK, &[]);
                let _ = wr.flush();
                return Err(HandshakeError::Aborted);
            }
            w::OPT_LIST => {
                if !data.is_empty() {
                    error_reply(wr, h.option, w::REP_ERR_INVALID, "LIST takes no data")?;
                } else {
                    for n in catalog.names() {
                        reply(wr, h.option, w::REP_SERVER, &w::encode_rep_server(&n))?;
                    }
                    reply(wr, h.option, w::REP_ACK, &[])?;
                }
            }
            w::OPT_INFO | w::OPT_GO => match w::decode_export_request(&data) {
                Err(e) => error_reply(wr, h.option, w::REP_ERR_INVALID, &e.to_string())?,
                Ok(ExportRequest { name, info }) => match catalog.describe(&name) {
                    None => error_reply(
                        wr,
                        h.option,
                        w::REP_ERR_UNKNOWN,
                        &format!("no export named '{name}'"),
                    )?,
                    Some((size, ro)) => {
                        let flags = transmission_flags(ro);
                        reply(
                            wr,
                            h.option,
                            w::REP_INFO,
                            &w::encode_info_export(size, flags),
                        )?;
                        if info.contains(&w::INFO_NAME) {
                            reply(wr, h.option, w::REP_INFO, &w::encode_info_name(&name))?;
                        }
                        reply(
                            wr,
                            h.option,
                            w::REP_INFO,
                            &w::encode_info_block_size(1, PREFERRED_BLOCK, MAX_PAYLOAD),
                        )?;
                        reply(wr, h.option, w::REP_ACK, &[])?;
                        if h.option == w::OPT_GO {
                            wr.flush()?;
                            return Ok(Negotiated {
                                export: name,
                                structured,
                                allocation,
                            });
                        }
                    }
                },
            },
            w::OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error_reply(wr, h.option, w::REP_ERR_INVALID, "takes no data")?;
                } else {
                    structured = true;
                    reply(wr, h.option, w::REP_ACK, &[])?;
                }
            }
            w::OPT_LIST_META_CONTEXT | w::OPT_SET_META_CONTEXT => {
                let set = h.option == w::OPT_SET_META_CONTEXT;
                if !structured {
                    error_reply(
                        wr,
                        h.option,
                        w::REP_ERR_INVALID,
                        "negotiate structured replies first",
                    )?;
                } else {
                    match w::decode_meta_request(&data) {
                        Err(e) => error_reply(wr, h.option, w::REP_ERR_INVALID, &e.to_string())?,
                        Ok(m) if catalog.describe(&m.name).is_none() => error_reply(
                            wr,
                            h.option,
                            w::REP_ERR_UNKNOWN,
                            &format!("no export named '{}'", m.name),
                        )?,
                        Ok(m) => {
                            let wanted = if set {
                                m.queries.iter().any(|q| q == w::BASE_ALLOCATION)
                            } else {
                                m.queries.is_empty()
                                    || m.queries
                                        .iter()
                                        .any(|q| q == "base:" || q == w::BASE_ALLOCATION)
                            };
                            if set {
                                allocation = wanted;
                            }
                            if wanted {
                                reply(
                                    wr,
                                    h.option,
                                    w::REP_META_CONTEXT,
                                    &w::encode_rep_meta_context(
                                        ALLOCATION_CONTEXT,
                                        w::BASE_ALLOCATION,
                                    ),
                                )?;
                            }
                            reply(wr, h.option, w::REP_ACK, &[])?;
                        }
                    }
                }
            }
            other => error_reply(
                wr,
                other,
                w::REP_ERR_UNSUP,
                &format!("option {other} is not supported"),
            )?,
        }
        wr.flush()?;
    }
    Err(HandshakeError::Protocol(format!(
        "more than {MAX_OPTIONS} options"
    )))
}
