//! fusevol: a software storage array. A pool of backing image files ("arrays") holds
//! volumes through an extent map; `fusevold` exposes every volume as a regular file in a FUSE
//! mount, and `fusevol` drives the pool over a control socket.
//!
//! Layers, bottom first; a module uses only modules below it (`scripts/module-deps.py` checks):
//! `format`, `bitmap` (pure data) → `meta` (log + checkpoints, recovery) → `extent_map`,
//! `journal` → `pool` (the storage core: arrays, allocator, metadata log, partial extents,
//! sync; it knows nothing of the services above) → `volume` (`Volumes`: the one data write,
//! `Volumes::apply`) → `snapshot` (`Snapshots`) → `mirror` (`Mirror`) → `replication`
//! (`Replication`) → `storage` (`Storage`: the top-level owner and the write pipeline router)
//! → `fuse` (errno mapping), `control`, `daemon`.
//!
//! A host write is routed once (`storage::io`): journal room → the volume's I/O lock →
//! admissions (`Replication::admit`: journal record first; `Mirror::admit`: durable
//! difference bit first) → `Volumes::apply` → completions (`Mirror::complete` after the dual
//! write; `Replication::complete`).
#![forbid(unsafe_code)]

pub mod backup;
pub mod bitmap;
pub mod cluster;
pub mod control;
pub mod daemon;
pub mod events;
pub mod extent_map;
pub mod format;
pub mod fsio;
pub mod fuse;
pub mod info;
pub mod journal;
pub mod meta;
pub mod mirror;
pub mod names;
pub mod nbd;
pub mod pool;
pub mod replication;
pub mod schedule;
pub mod snapshot;
pub mod stats;
pub mod storage;
pub mod sys;
pub mod units;
pub mod volume;
