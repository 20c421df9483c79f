//! The two-site setup of the replication tests, in one place: a primary and a secondary and
//! the remote directory their journal group goes through. `Sites` is the library-level form
//! (two pools opened as `Storage` in one temporary directory), `Daemons` the end-to-end form
//! (two running `fusevold`s, driven through their mounts and the CLI).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusevol::storage::Storage;

use super::images::storage_at;
use super::TestPool;

/// A crash as the in-process tests model it: the storage is dropped with no shutdown and no
/// sync; the workers of the old instance (shipper, applier, resync copier) notice the service
/// gone and stop at their next step, as a killed daemon's would have stopped anywhere. Returns
/// once the old pool is gone, so that no worker of it still writes when the pool is opened
/// again (a fixed sleep here let an old resync copier and shipper outlive the reopen).
pub fn crash(st: Arc<Storage>) {
    let weak = Arc::downgrade(&st.pool);
    drop(st);
    let t0 = Instant::now();
    while weak.strong_count() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "a worker of the crashed instance still holds the pool after 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Two pools at library level: `<tmp>/primary` and `<tmp>/secondary` (each created on first
/// open, with `arrays` arrays of `array_size` bytes and extents of `es` bytes), and the remote
/// directory `<tmp>/remote`.
pub struct Sites {
    pub t: tempfile::TempDir,
    pub remote: PathBuf,
    es: u64,
    array_size: u64,
    arrays: usize,
}

impl Sites {
    pub fn new(es: u64, array_size: u64, arrays: usize) -> Sites {
        let t = tempfile::tempdir().unwrap();
        let remote = t.path().join("remote");
        std::fs::create_dir(&remote).unwrap();
        Sites {
            t,
            remote,
            es,
            array_size,
            arrays,
        }
    }

    /// The pool `<tmp>/<name>` (created the first time), opened.
    pub fn open(&self, name: &str) -> Arc<Storage> {
        storage_at(
            &self.t.path().join(name),
            self.es,
            self.array_size,
            self.arrays,
        )
    }

    /// The primary's pool, opened (again after a crash or a shutdown).
    pub fn primary(&self) -> Arc<Storage> {
        self.open("primary")
    }

    /// The secondary's pool, opened (again after a crash or a shutdown).
    pub fn secondary(&self) -> Arc<Storage> {
        self.open("secondary")
    }

    fn away(&self) -> PathBuf {
        self.t.path().join("remote.away")
    }

    /// The remote directory is gone (an unmounted share).
    pub fn remote_gone(&self) {
        std::fs::rename(&self.remote, self.away()).unwrap();
    }

    pub fn remote_back(&self) {
        std::fs::rename(self.away(), &self.remote).unwrap();
    }
}

/// Two running daemons: a primary pool with arrays `a0`, `a1`, ... and a secondary pool with
/// arrays `b0`, `b1`, ... (`arrays` of `array_size` each, extents of `extent_size`), and the
/// remote directory `<primary root>/remote` (created, empty).
pub struct Daemons {
    pub p: TestPool,
    pub s: TestPool,
    pub remote: PathBuf,
}

impl Daemons {
    pub fn new(arrays: usize, array_size: &str, extent_size: &str) -> Daemons {
        let specs = |prefix: &str| -> Vec<String> {
            (0..arrays)
                .map(|i| format!("{prefix}{i}:{array_size}"))
                .collect()
        };
        let (pa, sa) = (specs("a"), specs("b"));
        let p = TestPool::new(
            &pa.iter().map(String::as_str).collect::<Vec<_>>(),
            extent_size,
        );
        let s = TestPool::new(
            &sa.iter().map(String::as_str).collect::<Vec<_>>(),
            extent_size,
        );
        let remote = p.root().join("remote");
        std::fs::create_dir(&remote).unwrap();
        Daemons { p, s, remote }
    }
}
