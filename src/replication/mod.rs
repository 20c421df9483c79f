//! Journal groups and asynchronous replication through a remote directory.
//!
//! Primary: every write to a group's volumes is appended to the group's journal before the
//! data is written (`journal`), sealed segments are published whole into `<remote>/<group>/`
//! by the shipper, and segments are purged once the secondary acknowledges them.
//! Secondary: the applier reads the published segments, verifies them, applies the records
//! strictly in sequence order, makes the data and its applied sequence number durable, and
//! writes the acknowledgement file.

mod apply;
pub mod full;
pub mod group;
pub mod handover;
pub mod ops;
pub mod pitr;
pub mod remote;
mod restore;
mod resync;
mod ship;
