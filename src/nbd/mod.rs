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

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::format::nbd as w;
use crate::pool::{IoError, PoolError};
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
        IoError::Moved { .. } => libc::ESHUTDOWN,
        _ => libc::EIO,
    };
    match errno {
        libc::ESHUTDOWN => w::ESHUTDOWN,
        libc::ENOSPC | libc::EDQUOT => w::ENOSPC,
        libc::EINVAL => w::EINVAL,
        libc::EPERM | libc::EROFS => w::EPERM,
        libc::ENOMEM => w::ENOMEM,
        _ => w::EIO,
    }
}

/// How long a client may take to negotiate.
pub const NEGOTIATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a connection serves: a volume (read-write), a volume added read-only with
/// `fusevol export-nbd add --read-only`, or a snapshot (read-only).
pub enum Export {
    Volume(Arc<Volume>),
    VolumeReadOnly(Arc<Volume>),
    Snapshot(Arc<Snapshot>),
}

impl Export {
    pub fn size(&self) -> u64 {
        match self {
            Export::Volume(v) | Export::VolumeReadOnly(v) => v.size(),
            Export::Snapshot(s) => s.size,
        }
    }

    /// Counted as an open handle while a client uses it, so `volume delete` and `snapshot
    /// delete` refuse it as they refuse an open file.
    fn opened(&self) {
        match self {
            Export::Volume(v) | Export::VolumeReadOnly(v) => v.opened(),
            Export::Snapshot(s) => s.opened(),
        }
    }

    fn closed(&self) {
        match self {
            Export::Volume(v) | Export::VolumeReadOnly(v) => v.closed(),
            Export::Snapshot(s) => s.closed(),
        }
    }
}

/// How `fusevol export-nbd` changed one export name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Override {
    /// `remove`: not listed, GO refused.
    Hidden,
    /// `add --read-only`: exported read-only even for a writable volume.
    ReadOnly,
}

/// The run-time export table. Every volume and snapshot is exported unless the table says
/// otherwise: `remove` hides a name, `add` shows it again (read-only with `--read-only`).
/// Runtime-only: a restarted daemon exports everything again. Connections already open on a
/// removed export finish normally; only new negotiations see the change.
#[derive(Default)]
pub struct ExportTable {
    overrides: Mutex<HashMap<String, Override>>,
    conns: Mutex<HashMap<String, u64>>,
}

/// One row of `export-nbd list`.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub name: String,
    pub size: u64,
    pub read_only: bool,
    pub connections: u64,
}

impl ExportTable {
    /// Hide `name` from LIST and GO; NotFound unless it names an export shown now.
    pub fn remove(&self, st: &Storage, name: &str) -> Result<(), PoolError> {
        let cat = StorageCatalog(st, self);
        if cat.lookup_any(name).is_none() {
            return Err(PoolError::NotFound(format!(
                "no volume or snapshot '{name}' to export"
            )));
        }
        if cat.lookup(name).is_none() {
            return Err(PoolError::NotFound(format!(
                "export '{name}' is not exported (already removed)"
            )));
        }
        self.overrides
            .lock()
            .insert(name.to_string(), Override::Hidden);
        Ok(())
    }

    /// Export `name` again (read-only if asked); NotFound unless it names a volume or
    /// snapshot.
    pub fn add(&self, st: &Storage, name: &str, read_only: bool) -> Result<ExportRow, PoolError> {
        let cat = StorageCatalog(st, self);
        if cat.lookup_any(name).is_none() {
            return Err(PoolError::NotFound(format!(
                "no volume or snapshot '{name}' to export"
            )));
        }
        let mut o = self.overrides.lock();
        if read_only {
            o.insert(name.to_string(), Override::ReadOnly);
        } else {
            o.remove(name);
        }
        drop(o);
        Ok(self
            .list(st)
            .into_iter()
            .find(|r| r.name == name)
            .expect("just added"))
    }

    /// The exports shown now.
    pub fn list(&self, st: &Storage) -> Vec<ExportRow> {
        let cat = StorageCatalog(st, self);
        let conns = self.conns.lock().clone();
        cat.names()
            .into_iter()
            .filter_map(|name| {
                let (size, read_only) = cat.describe(&name)?;
                let connections = conns.get(&name).copied().unwrap_or(0);
                Some(ExportRow {
                    name,
                    size,
                    read_only,
                    connections,
                })
            })
            .collect()
    }

    fn opened(&self, name: &str) {
        *self.conns.lock().entry(name.to_string()).or_default() += 1;
    }

    fn closed(&self, name: &str) {
        let mut c = self.conns.lock();
        if let Some(n) = c.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                c.remove(name);
            }
        }
    }
}

/// Export names over a `Storage`, through the export table.
struct StorageCatalog<'a>(&'a Storage, &'a ExportTable);

impl StorageCatalog<'_> {
    /// The export `name` as the table shows it (None when removed).
    fn lookup(&self, name: &str) -> Option<Export> {
        let o = self.1.overrides.lock().get(name).copied();
        match (o, self.lookup_any(name)?) {
            (Some(Override::Hidden), _) => None,
            (Some(Override::ReadOnly), Export::Volume(v)) => Some(Export::VolumeReadOnly(v)),
            (_, e) => Some(e),
        }
    }

    /// The volume or snapshot `name`, whatever the table says.
    fn lookup_any(&self, name: &str) -> Option<Export> {
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
            Export::VolumeReadOnly(_) | Export::Snapshot(_) => true,
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
        let o = self.1.overrides.lock();
        out.retain(|n| o.get(n) != Some(&Override::Hidden));
        out
    }

    fn describe(&self, name: &str) -> Option<(u64, bool)> {
        let e = self.lookup(name)?;
        Some((e.size(), self.read_only(&e)))
    }
}

fn serve_connection(
    st: Arc<Storage>,
    table: &ExportTable,
    stream: Sock,
    peer: String,
    shared: bool,
) {
    // The reader's buffer cannot hold transmission bytes when negotiation ends: a client
    // sends its first request only after the reply to NBD_OPT_GO (or EXPORT_NAME).
    // A client that does not finish negotiating within the limit is dropped, so idle
    // connections cannot hold every slot (`listen::MAX_CONNECTIONS`).
    let _ = stream.set_read_timeout(Some(NEGOTIATION_TIMEOUT));
    let mut r = io::BufReader::new(&stream);
    let mut wr = io::BufWriter::new(&stream);
    let neg = handshake::negotiate(&mut r, &mut wr, &StorageCatalog(&st, table));
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
    let Some(export) = StorageCatalog(&st, table).lookup(&neg.export) else {
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
    table.opened(&name);
    let export = Arc::new(export);
    conn::transmit(st, export.clone(), neg, stream, shared);
    table.closed(&name);
    export.closed();
    log::info!("nbd: {peer} closed export '{name}'");
}
