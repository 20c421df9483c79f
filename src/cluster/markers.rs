//! A small durable list kept in the pool directory as JSON (`cluster-moves.json`,
//! `cluster-parts.json`): what this node started and must finish or undo after a crash.
//! Each change rewrites the file whole (a temporary file, fsync, rename); an empty list
//! removes it. A damaged file is logged and read as empty.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};

/// An entry of a marker file, found by its key.
pub trait Marker: Clone + Serialize + DeserializeOwned {
    fn key(&self) -> &str;
}

pub struct MarkerFile<T> {
    path: PathBuf,
    list: Mutex<Vec<T>>,
}

impl<T: Marker> MarkerFile<T> {
    /// Read `pool_dir/file` (missing: empty).
    pub fn load(pool_dir: &Path, file: &str) -> MarkerFile<T> {
        let path = pool_dir.join(file);
        let list = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                log::warn!("cluster: ignoring {}: {e}", path.display());
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        MarkerFile {
            path,
            list: Mutex::new(list),
        }
    }

    fn save(&self, list: &[T]) -> std::io::Result<()> {
        if list.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(list).expect("serialize"))?;
            f.sync_all()?;
        }
        crate::fsio::rename(&tmp, &self.path)
    }

    /// Add or replace the entry of `m`'s key (durable when it returns Ok).
    pub fn put(&self, m: T) -> std::io::Result<()> {
        let mut g = self.list.lock();
        g.retain(|x| x.key() != m.key());
        g.push(m);
        self.save(&g)
    }

    /// Remove the entry of `key` (a failure to rewrite the file is logged).
    pub fn remove(&self, key: &str) {
        let mut g = self.list.lock();
        let before = g.len();
        g.retain(|x| x.key() != key);
        if g.len() != before {
            if let Err(e) = self.save(&g) {
                log::warn!("cluster: update {}: {e}", self.path.display());
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<T> {
        self.list.lock().iter().find(|m| m.key() == key).cloned()
    }

    pub fn all(&self) -> Vec<T> {
        self.list.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct M {
        name: String,
        n: u64,
    }
    impl Marker for M {
        fn key(&self) -> &str {
            &self.name
        }
    }

    #[test]
    fn put_replaces_by_key_survives_a_reload_and_an_empty_list_removes_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f: MarkerFile<M> = MarkerFile::load(d.path(), "m.json");
        let m = |name: &str, n| M {
            name: name.into(),
            n,
        };
        f.put(m("a", 1)).unwrap();
        f.put(m("b", 2)).unwrap();
        f.put(m("a", 3)).unwrap();
        let again: MarkerFile<M> = MarkerFile::load(d.path(), "m.json");
        assert_eq!(again.get("a"), Some(m("a", 3)));
        assert_eq!(again.all().len(), 2);
        f.remove("a");
        f.remove("b");
        assert!(!d.path().join("m.json").exists());
        std::fs::write(d.path().join("m.json"), b"{not json").unwrap();
        assert!(MarkerFile::<M>::load(d.path(), "m.json").all().is_empty());
    }
}
