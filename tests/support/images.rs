//! Helpers shared by the library-level replication tests: pools of small arrays, and whole
//! images of volumes and snapshots to compare.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use fusevol::pool::{create_pool, ArraySpec, Pool, PoolSpec};

/// Open the pool in `dir`, first creating it with `arrays` arrays of `array_size` bytes (tier
/// "fast") and extents of `es` bytes when it does not exist yet.
pub fn pool_at(dir: &Path, es: u64, array_size: u64, arrays: usize) -> Arc<Pool> {
    if !dir.exists() {
        let spec = PoolSpec {
            arrays: (0..arrays)
                .map(|i| ArraySpec {
                    name: format!("a{i}"),
                    size: array_size,
                    tier: "fast".into(),
                })
                .collect(),
            extent_size: es,
            volumes: vec![],
        };
        create_pool(dir, &spec).unwrap();
    }
    Pool::open(dir).unwrap()
}

/// The whole content of volume `name`.
pub fn image(pool: &Pool, name: &str) -> Vec<u8> {
    let v = pool
        .volume(name)
        .unwrap_or_else(|| panic!("no volume {name}"));
    let mut b = vec![0u8; v.size() as usize];
    pool.read(&v, 0, &mut b).unwrap();
    b
}

/// The whole content of snapshot `snap` of `vol`, or None when there is no such snapshot.
pub fn snap_image(pool: &Pool, vol: &str, snap: &str) -> Option<Vec<u8>> {
    let s = pool.snapshot(vol, snap).ok()?;
    let mut b = vec![0u8; s.size as usize];
    pool.read_snapshot(&s, 0, &mut b).unwrap();
    Some(b)
}
