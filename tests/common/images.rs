//! Helpers of the library-level tests: pools of small arrays opened as a `Storage`, and whole
//! images of volumes and snapshots to compare.

use std::path::Path;
use std::sync::Arc;

use fusevol::pool::{create_pool, ArraySpec, PoolSpec};
use fusevol::storage::Storage;

/// Open the pool in `dir`, first creating it with `arrays` arrays `a0`, `a1`, ... of
/// `array_size` bytes (tier "fast") and extents of `es` bytes when it does not exist yet.
pub fn storage_at(dir: &Path, es: u64, array_size: u64, arrays: usize) -> Arc<Storage> {
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
    Storage::open(dir).unwrap()
}

/// The whole content of volume `name`.
pub fn image(st: &Storage, name: &str) -> Vec<u8> {
    let v = st
        .volumes
        .volume(name)
        .unwrap_or_else(|| panic!("no volume {name}"));
    let mut b = vec![0u8; v.size() as usize];
    st.read(&v, 0, &mut b).unwrap();
    b
}

/// The whole content of snapshot `snap` of `vol`, or None when there is no such snapshot.
pub fn snap_image(st: &Storage, vol: &str, snap: &str) -> Option<Vec<u8>> {
    let s = st.snapshots.snapshot(vol, snap).ok()?;
    let mut b = vec![0u8; s.size as usize];
    st.snapshots.read_snapshot(&s, 0, &mut b).unwrap();
    Some(b)
}
