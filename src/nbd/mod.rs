//! NBD server: every volume is an export named after it, every snapshot a read-only export
//! `VOL@SNAP`. A front end beside FUSE: requests go through `Storage`'s one write pipeline
//! (`read`, `write`, `discard`, `fsync_volume`), so snapshots' copy-on-write, pairs' dual
//! writes and journal groups' write-ahead journaling apply as they do to the mount; a journal
//! group secondary's volumes answer writes with EPERM. This is the only place NBD error codes
//! are made (`nbd_error`).
//!
//! Wire format: `format::nbd` (pure encode/decode); negotiation: `handshake`; transmission
//! (reader thread + workers per connection, replies out of order): `conn`.
//!
//! Safety of the listener: by default it binds 127.0.0.1; a non-loopback address is refused
//! unless an allow-list is given, and then only loopback peers and the listed networks get in.
//! `NBD_FLAG_CAN_MULTI_CONN` is set: a FLUSH on any connection syncs the whole pool, so every
//! write acknowledged on any connection before it is durable after it.

pub mod conn;
pub mod handshake;
mod listen;

use std::io;
use std::sync::Arc;

use crate::format::nbd as w;
use crate::pool::IoError;
use crate::snapshot::{Snapshot, SPLIT_SNAPSHOT_PREFIX};
use crate::storage::Storage;
use crate::volume::Volume;
use handshake::{Catalog, HandshakeError};
pub use listen::{Cidr, NbdOptions, NbdServer, Sock};

/// The NBD error code for a data-path error (NBD has no EROFS: read-only is EPERM).
pub fn nbd_error(e: &IoError) -> u32 {
    let errno = match e {
        IoError::BeyondEnd { .. } | IoError::NoSpace { .. } | IoError::JournalFull { .. } => {
            libc::ENOSPC
        }
        IoError::Array { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        IoError::Invalid { .. } => libc::EINVAL,
        IoError::ReadOnly { .. } => libc::EPERM,
        IoError::Journal { source, .. } => source.errno(),
        _ => libc::EIO,
    };
    match errno {
        libc::ENOSPC | libc::EDQUOT => w::ENOSPC,
        libc::EINVAL => w::EINVAL,
        libc::EPERM | libc::EROFS => w::EPERM,
        libc::ENOMEM => w::ENOMEM,
        _ => w::EIO,
    }
}

/// How long a client may take to negotiate.
pub const NEGOTIATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a connection serves: a volume (read-write) or a snapshot (read-only).
pub enum Export {
    Volume(Arc<Volume>),
    Snapshot(Arc<Snapshot>),
}

impl Export {
    pub fn size(&self) -> u64 {
        match self {
            Export::Volume(v) => v.size(),
            Export::Snapshot(s) => s.size,
        }
    }

    /// Counted as an open handle while a client uses it, so `volume delete` and `snapshot
    /// delete` refuse it as they refuse an open file.
    fn opened(&self) {
        match self {
            Export::Volume(v) => v.opened(),
            Export::Snapshot(s) => s.opened(),
        }
    }

    fn closed(&self) {
        match self {
            Export::Volume(v) => v.closed(),
            Export::Snapshot(s) => s.closed(),
        }
    }
}

/// Export names over a `Storage`.
struct StorageCatalog<'a>(&'a Storage);

impl StorageCatalog<'_> {
    fn lookup(&self, name: &str) -> Option<Export> {
        let st = self.0;
        if let Some(v) = st.volumes.volume(name) {
            return Some(Export::Volume(v));
        }
        let (vol, snap) = name.rsplit_once('@')?;
        if snap.starts_with(SPLIT_SNAPSHOT_PREFIX) {
            return None;
        }
        st.snapshots.snapshot(vol, snap).ok().map(Export::Snapshot)
    }

    /// A secondary's volumes are read-only; tell the client so up front.
    fn read_only(&self, e: &Export) -> bool {
        match e {
            Export::Volume(v) => self
                .0
                .replication
                .group_of(v.id)
                .is_some_and(|g| !g.is_primary()),
            Export::Snapshot(_) => true,
        }
    }
}

impl Catalog for StorageCatalog<'_> {
    fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.0.volumes.volume_list() {
            out.push(v.name.clone());
            for s in self.0.snapshots.snapshots_of(v.id) {
                if !s.name.starts_with(SPLIT_SNAPSHOT_PREFIX) {
                    out.push(format!("{}@{}", v.name, s.name));
                }
            }
        }
        out
    }

    fn describe(&self, name: &str) -> Option<(u64, bool)> {
        let e = self.lookup(name)?;
        Some((e.size(), self.read_only(&e)))
    }
}

fn serve_connection(st: Arc<Storage>, stream: Sock, peer: String, shared: bool) {
    // The reader's buffer cannot hold transmission bytes when negotiation ends: a client
    // sends its first request only after the reply to NBD_OPT_GO (or EXPORT_NAME).
    // A client that does not finish negotiating within the limit is dropped, so idle
    // connections cannot hold every slot (`listen::MAX_CONNECTIONS`).
    let _ = stream.set_read_timeout(Some(NEGOTIATION_TIMEOUT));
    let mut r = io::BufReader::new(&stream);
    let mut wr = io::BufWriter::new(&stream);
    let neg = handshake::negotiate(&mut r, &mut wr, &StorageCatalog(&st));
    drop((r, wr));
    let _ = stream.set_read_timeout(None);
    let neg = match neg {
        Ok(n) => n,
        Err(HandshakeError::Closed | HandshakeError::Aborted) => return,
        Err(e) => {
            log::warn!("nbd: negotiation with {peer}: {e}");
            return;
        }
    };
    let Some(export) = StorageCatalog(&st).lookup(&neg.export) else {
        log::warn!("nbd: export '{}' went away during negotiation", neg.export);
        return;
    };
    log::info!(
        "nbd: {peer} opened export '{}' (structured replies: {}, base:allocation: {})",
        neg.export,
        neg.structured,
        neg.allocation
    );
    export.opened();
    let name = neg.export.clone();
    let export = Arc::new(export);
    conn::transmit(st, export.clone(), neg, stream, shared);
    export.closed();
    log::info!("nbd: {peer} closed export '{name}'");
}
