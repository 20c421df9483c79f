//! The control plane: how the `fusevol` CLI talks to a running `fusevold`.
//!
//! - [`protocol`] — the request/response types, one JSON object per line (the whole contract);
//! - [`server`] — the daemon side: a Unix socket at `<POOL>/control.sock` (mode 0600), one thread
//!   per connection, every request handed to a [`ControlHandler`];
//! - [`client`] — the CLI side: connect to a pool's socket, send a request, wait for the answer.
//!
//! The socket lives inside the pool directory so that finding the daemon needs nothing but the
//! pool path; its mode 0600 limits control to the user running the daemon.

use std::path::{Path, PathBuf};

pub mod client;
pub mod plan;
pub mod protocol;
pub mod server;

pub use client::{Client, ClientError, DEFAULT_TIMEOUT};
pub use protocol::{
    ArrayInfo, ErrorBody, ErrorCode, GroupInfo, GroupOptions, HandoverReport, PairInfo, PoolInfo,
    Request, Response, SnapshotInfo, VolumeInfo,
};
pub use protocol::{ArrayStatsInfo, Event, EventsEnd, EventsHeader, VolumeStats};
pub use protocol::{BaseCopyInfo, FullInfo, GroupSetOptions, NbdExportInfo};
pub use protocol::{CatalogEntry, ExportPlan, InfoView, RebuildReport};
pub use protocol::{ClusterNodeInfo, ClusterStatusInfo, ClusterVolumeInfo};
pub use protocol::{LockInfo, LockObject};
pub use protocol::{MarkerInfo, PitrInfo, PitrOptions, RestoreReport, VolumeNames};
pub use protocol::{ScheduleSpec, ScheduleView};
pub use server::{serve, ControlHandler, ServerHandle, MAX_REQUEST_LINE};

/// File name of the control socket inside a pool directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The control socket of the pool at `pool_dir`: `<pool_dir>/control.sock`.
pub fn socket_path(pool_dir: &Path) -> PathBuf {
    pool_dir.join(SOCKET_NAME)
}
