//! Backups an administrator can run (issue 14, seed 001), over the `Storage`: the backup
//! catalog built from the volumes' own records (`catalog.rs`) and the export/import stream
//! (`stream.rs`, `export.rs`).

pub mod catalog;
pub mod export;
pub mod hooks;
pub mod schedule;
