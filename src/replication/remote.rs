//! The remote directory of a group, `<remote>/<group>/`: published segments
//! (`<first_seq:020>.jseg`), the primary's `manifest` and the secondary's `ack`. Every file
//! appears whole: written under a temporary name, fsynced, renamed, and the directory fsynced.
//!
//! Spares: the secondary renames an applied segment to `.spare-<first>` instead of deleting
//! it (up to `MAX_REMOTE_SPARES`), and the shipper publishes the next segment into one of them
//! (renamed to its temporary name first, so only one side ever holds it). Overwriting the
//! pages of an existing file costs much less CPU than filling new ones; a spare is never
//! read, and its bytes past the new segment's length are cut off before the rename.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::format::journal::{Ack, Manifest};

pub const MANIFEST_FILE: &str = "manifest";
pub const ACK_FILE: &str = "ack";
const SPARE_PREFIX: &str = ".spare-";
/// Applied segments kept in the remote directory for the shipper to reuse.
pub const MAX_REMOTE_SPARES: usize = 8;

/// `<remote>/<group>`.
pub fn group_dir(remote: &Path, group: &str) -> PathBuf {
    remote.join(group)
}

/// Make `<remote>/<group>` exist. The remote directory itself must exist: when it is gone
/// (unmounted, removed) nothing is created in its place.
pub fn ensure_group_dir(remote: &Path, group: &str) -> io::Result<PathBuf> {
    if !remote.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("remote directory {} is not there", remote.display()),
        ));
    }
    let dir = group_dir(remote, group);
    match fs::create_dir(&dir) {
        Ok(()) => sync_dir(remote)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Throttles a byte stream to a rate (0: unlimited).
pub struct RateLimit {
    bytes_per_sec: u64,
    start: Instant,
    sent: u64,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Account for `n` bytes; sleeps until they fit in the rate.
    pub fn take(&mut self, n: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        self.sent += n;
        let due = Duration::from_secs_f64(self.sent as f64 / self.bytes_per_sec as f64);
        let el = self.start.elapsed();
        if due > el {
            std::thread::sleep(due - el);
        }
        // Forget old history so an idle period does not allow a burst later.
        if el > Duration::from_secs(2) {
            self.start = Instant::now();
            self.sent = 0;
        }
    }
}

/// Write `bytes` as `dir/name` whole.
pub fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Copy the local segment `src` into `dir` as `name`, whole, at most at the limiter's rate.
/// On failure the temporary file is removed (a full remote gets its space back).
pub fn publish(src: &Path, dir: &Path, name: &str, limit: &mut RateLimit) -> io::Result<u64> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let res = (|| {
        let mut input = File::open(src)?;
        let mut out = match take_spare(dir, &tmp) {
            Some(f) => f,
            None => File::create(&tmp)?,
        };
        let total = if limit.bytes_per_sec == 0 {
            // No limit: an in-kernel copy (copy_file_range), no bytes through user space.
            io::copy(&mut input, &mut out)?
        } else {
            let mut total = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                limit.take(n as u64);
                out.write_all(&buf[..n])?;
                total += n as u64;
            }
            total
        };
        out.set_len(total)?;
        out.sync_all()?;
        // Crash points: the temporary file is whole and durable but not published (the
        // next shipper publishes the segment again over it), then published but neither the
        // directory synced nor the segment recorded as shipped (it is published again).
        fail::fail_point!("replication::publish::before_rename", |_| {
            crate::journal::crash_point("replication::publish::before_rename")
        });
        fs::rename(&tmp, dir.join(name))?;
        fail::fail_point!("replication::publish::after_rename", |_| {
            crate::journal::crash_point("replication::publish::after_rename")
        });
        sync_dir(dir)?;
        Ok(total)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// A spare file of `dir` renamed to `tmp` and opened for overwriting, if there is one.
fn take_spare(dir: &Path, tmp: &Path) -> Option<File> {
    let spare = spare_files(dir).ok()?.into_iter().next()?;
    fs::rename(spare, tmp).ok()?;
    match File::options().write(true).open(tmp) {
        Ok(f) => Some(f),
        Err(_) => {
            let _ = fs::remove_file(tmp);
            None
        }
    }
}

/// The spare files in `dir`.
fn spare_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SPARE_PREFIX))
        })
        .map(|e| e.path())
        .collect())
}

/// The secondary is done with the published segment `path` (applied and acknowledged): it
/// becomes a spare for the shipper, or is removed when there are enough.
pub fn retire_published(dir: &Path, path: &Path) {
    let spares = spare_files(dir).map_or(MAX_REMOTE_SPARES, |v| v.len());
    if spares < MAX_REMOTE_SPARES {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let first = name.split('.').next().unwrap_or(name);
            if fs::rename(path, dir.join(format!("{SPARE_PREFIX}{first}"))).is_ok() {
                return;
            }
        }
    }
    let _ = fs::remove_file(path);
}

/// Published segments in `dir` as (first seq, path), in sequence order. Temporary files and
/// spares are not listed.
pub fn list_published(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some((first, _epoch)) = super::handover::parse_published(&name) {
            out.push((first, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn bad(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// The acknowledgement in `dir`, if there is one.
pub fn read_ack(dir: &Path) -> io::Result<Option<Ack>> {
    let path = dir.join(ACK_FILE);
    match fs::read(&path) {
        Ok(b) => Ack::decode(&b).map(Some).map_err(|e| bad(&path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_ack(dir: &Path, ack: &Ack) -> io::Result<()> {
    write_whole(dir, ACK_FILE, &ack.encode())
}

pub fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let b = fs::read(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Manifest::decode(&b).map_err(|e| bad(&path, e))
}

pub fn write_manifest(dir: &Path, m: &Manifest) -> io::Result<()> {
    write_whole(dir, MANIFEST_FILE, &m.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_is_whole_and_listed_in_order() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::write(&src, vec![5u8; 3 << 20]).unwrap();
        let remote = t.path().join("remote");
        assert!(
            ensure_group_dir(&remote, "g").is_err(),
            "missing remote must not be created"
        );
        fs::create_dir(&remote).unwrap();
        let dir = ensure_group_dir(&remote, "g").unwrap();
        let mut lim = RateLimit::new(0);
        publish(&src, &dir, "00000000000000000010.jseg", &mut lim).unwrap();
        publish(&src, &dir, "00000000000000000002.jseg", &mut lim).unwrap();
        fs::write(dir.join(".00000000000000000020.jseg.tmp"), b"partial").unwrap();
        let l = list_published(&dir).unwrap();
        assert_eq!(l.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 10]);
        assert_eq!(fs::read(&l[0].1).unwrap(), fs::read(&src).unwrap());
    }

    #[test]
    fn applied_segments_become_spares_that_publish_overwrites_exactly() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        fs::write(&big, vec![1u8; 3 << 20]).unwrap();
        let small = t.path().join("small");
        fs::write(&small, vec![2u8; 1000]).unwrap();
        let remote = t.path().join("r");
        fs::create_dir(&remote).unwrap();
        let spares = || {
            spare_files(&remote)
                .unwrap()
                .iter()
                .map(|p| fs::metadata(p).unwrap().ino())
                .collect::<Vec<_>>()
        };
        let mut lim = RateLimit::new(0);
        publish(&big, &remote, "00000000000000000001.jseg", &mut lim).unwrap();
        let l = list_published(&remote).unwrap();
        retire_published(&remote, &l[0].1);
        assert!(
            list_published(&remote).unwrap().is_empty(),
            "a spare is not listed"
        );
        let ino = spares();
        assert_eq!(ino.len(), 1);
        // The next segment goes into the spare: the same file, exactly the new bytes.
        let name = "00000000000000000009.jseg";
        publish(&small, &remote, name, &mut lim).unwrap();
        assert!(spares().is_empty());
        let meta = fs::metadata(remote.join(name)).unwrap();
        assert_eq!(meta.ino(), ino[0], "the spare file was reused");
        assert_eq!(fs::read(remote.join(name)).unwrap(), vec![2u8; 1000]);
        // The rate-limited copy too.
        retire_published(&remote, &remote.join(name));
        let mut slow = RateLimit::new(1 << 30);
        publish(&big, &remote, name, &mut slow).unwrap();
        assert_eq!(fs::read(remote.join(name)).unwrap(), vec![1u8; 3 << 20]);
        // Only so many are kept; the rest are removed.
        for i in 0..MAX_REMOTE_SPARES as u64 + 3 {
            publish(&small, &remote, &format!("{:020}.jseg", 100 + i), &mut lim).unwrap();
        }
        for (_, p) in list_published(&remote).unwrap() {
            retire_published(&remote, &p);
        }
        assert_eq!(spares().len(), MAX_REMOTE_SPARES);
        assert!(list_published(&remote).unwrap().is_empty());
    }

    #[test]
    fn rate_limit_slows_publishing() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::write(&src, vec![1u8; 2 << 20]).unwrap();
        let mut lim = RateLimit::new(8 << 20);
        let t0 = Instant::now();
        publish(&src, t.path(), "x.jseg", &mut lim).unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn failed_publish_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        let mut lim = RateLimit::new(0);
        assert!(publish(&missing, t.path(), "a.jseg", &mut lim).is_err());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn ack_and_manifest_roundtrip_and_damage_is_reported() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_ack(t.path()).unwrap(), None);
        let a = Ack {
            group: 1,
            epoch: 1,
            applied: 77,
            time: 2,
            acked_at: 3,
        };
        write_ack(t.path(), &a).unwrap();
        assert_eq!(read_ack(t.path()).unwrap(), Some(a));
        let m = Manifest {
            group: 9,
            epoch: 1,
            pool: 4,
            created: 5,
            name: "g".into(),
            ..Default::default()
        };
        write_manifest(t.path(), &m).unwrap();
        assert_eq!(read_manifest(t.path()).unwrap(), m);
        fs::write(t.path().join(ACK_FILE), b"garbage").unwrap();
        let e = read_ack(t.path()).unwrap_err().to_string();
        assert!(e.contains("ack"), "{e}");
    }
}
