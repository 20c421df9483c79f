//! Pure encode/decode of every on-disk record. No file handles live here.
//!
//! Every file starts with a magic and a format version; every record and header carries a
//! CRC32C. Decoders never trust a length or count they have not bounds-checked.

pub mod array_copy;
pub mod array_header;
pub mod checkpoint;
pub mod codec;
pub mod group;
pub mod journal;
pub mod meta_record;
pub mod nbd;
pub mod nbd_client;
pub mod pair_state;
pub mod schedule;
pub mod stream;
pub mod volinfo;

pub use array_header::ArrayHeader;
pub use checkpoint::{
    ArrayRec, Checkpoint, ChunkRec, GroupRec, PairRec, PartialRec, SnapshotRec, TableRec, VolumeRec,
};
pub use meta_record::{LogHeader, MetaRecord, RecordFrame};
pub use pair_state::PairState;

/// Decoding failures; the callers add the file name and offset.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("bad magic in {what}")]
    BadMagic { what: &'static str },
    #[error("unsupported {what} version {version}")]
    BadVersion { what: &'static str, version: u32 },
    #[error("checksum mismatch in {what} (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("{what} is truncated (needs {need} more bytes, has {have})")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("invalid UTF-8 string in {what}")]
    BadString { what: &'static str },
    #[error("unknown {what} type {kind}")]
    UnknownType { what: &'static str, kind: u8 },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// Check `crc32c(body) == stored`.
pub fn verify_crc(what: &'static str, body: &[u8], stored: u32) -> Result<(), FormatError> {
    let computed = crc32c::crc32c(body);
    if computed != stored {
        return Err(FormatError::BadChecksum {
            what,
            stored,
            computed,
        });
    }
    Ok(())
}

/// A physical extent address: array id and extent index inside that array's data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phys {
    pub array: u32,
    pub index: u64,
}

impl Phys {
    /// Extent indexes use the low 40 bits (1 Ti extents per array).
    pub const INDEX_BITS: u32 = 40;
    pub const MAX_INDEX: u64 = (1 << Self::INDEX_BITS) - 1;

    pub fn pack(self) -> u64 {
        ((self.array as u64) << Self::INDEX_BITS) | self.index
    }
    pub fn unpack(v: u64) -> Phys {
        Phys {
            array: (v >> Self::INDEX_BITS) as u32,
            index: v & Self::MAX_INDEX,
        }
    }
}
