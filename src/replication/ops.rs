//! Pool-level group operations (what the control socket calls).

use std::path::Path;

use crate::control::GroupInfo;
use crate::pool::{Pool, PoolError};

impl Pool {
    /// Put `volumes` in a new journal group replicated to `<remote>/<name>/`.
    pub fn group_create(
        &self,
        name: &str,
        volumes: &[String],
        remote: &Path,
    ) -> Result<(), PoolError> {
        let _ = (name, volumes, remote);
        Err(PoolError::Invalid("group create: not built yet".into()))
    }

    /// Attach this pool as the secondary of the group published in `<remote>/<name>/`.
    pub fn group_attach(&self, name: &str, remote: &Path) -> Result<(), PoolError> {
        let _ = (name, remote);
        Err(PoolError::Invalid("group attach: not built yet".into()))
    }

    pub fn group_add_volume(&self, name: &str, volume: &str) -> Result<(), PoolError> {
        let _ = (name, volume);
        Err(PoolError::Invalid("not built yet".into()))
    }

    pub fn group_remove_volume(&self, name: &str, volume: &str) -> Result<(), PoolError> {
        let _ = (name, volume);
        Err(PoolError::Invalid("not built yet".into()))
    }

    /// Snapshot every volume of the group at one instant and put a marker in the journal.
    pub fn group_snapshot(&self, name: &str, snap: &str) -> Result<(), PoolError> {
        let _ = (name, snap);
        Err(PoolError::Invalid("not built yet".into()))
    }

    /// Stop journaling (primary) or applying (secondary); the volumes stay, writable.
    pub fn group_delete(&self, name: &str) -> Result<(), PoolError> {
        let _ = name;
        Err(PoolError::Invalid("not built yet".into()))
    }

    /// One group or all of them, sorted by name.
    pub fn group_info(&self, name: Option<&str>) -> Result<Vec<GroupInfo>, PoolError> {
        let _ = name;
        Ok(Vec::new())
    }
}
