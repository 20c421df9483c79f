//! How services above the core take part in its checkpoints and syncs without the core
//! knowing them: each registers itself (as a `Weak`, so the core holds no service alive).

use std::any::Any;

use super::{Pool, PoolError};
use crate::meta::State;

/// A service whose objects are part of the pool's metadata state (volumes, snapshots, pairs,
/// journal groups). `Pool::checkpoint` asks each for its part.
pub trait StateSource: Send + Sync {
    /// Put this service's objects into `state`. Called with the metadata lock held.
    fn save(&self, state: &mut State);
}

/// A service that must make something durable around the array sync of `Pool::sync`.
pub trait SyncHook: Send + Sync {
    /// Before the arrays are synced, under the pool's sync lock (journal before data).
    /// Returns what `after_arrays` needs.
    fn before_arrays(&self, pool: &Pool) -> Result<Box<dyn Any + Send>, PoolError>;
    /// The arrays are synced: record what that made durable.
    fn after_arrays(&self, pool: &Pool, token: Box<dyn Any + Send>) -> Result<(), PoolError>;
}
