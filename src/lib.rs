//! fusevol: a software storage array. A pool of backing image files ("arrays") holds
//! volumes through an extent map; `fusevold` exposes every volume as a regular file in a FUSE
//! mount, and `fusevol` drives the pool over a control socket.
//!
//! Layers, one job each (a write flows top to bottom):
//! `fuse` (errno mapping) → `volume` (façade: plan, reserve, I/O, commit) → `extent_map`
//! (describes where bytes live) → `pool` (arrays, allocator, placement) → `meta` (log +
//! checkpoints, recovery) → `format` (pure encode/decode).
#![forbid(unsafe_code)]

pub mod control;
pub mod daemon;
pub mod extent_map;
pub mod format;
pub mod fuse;
pub mod journal;
pub mod meta;
pub mod mirror;
pub mod names;
pub mod pool;
pub mod replication;
pub mod snapshot;
pub mod sys;
pub mod units;
pub mod volume;
