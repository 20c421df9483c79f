//! Holes seen by tools (issue 18, item 3): `lseek(SEEK_DATA/SEEK_HOLE)` on volume and
//! snapshot files through a real mount, checked against the extent map of a volume with a
//! random pattern of holes, and `qemu-img map` listing exactly the allocated extents.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::unistd::{lseek, Whence};

const ES: u64 = 64 * KIB;
const EXTENTS: u64 = 512;

/// What `lseek` must answer for a file of `size` bytes whose mapped extents are `mapped`.
fn expected(mapped: &BTreeSet<u64>, size: u64, off: u64, data: bool) -> Option<u64> {
    if off >= size {
        return None;
    }
    let mut l = off / ES;
    loop {
        if l * ES >= size {
            return if data { None } else { Some(size) };
        }
        if mapped.contains(&l) == data {
            return Some(if l == off / ES { off } else { l * ES });
        }
        l += 1;
    }
}

fn seek(f: &File, off: u64, data: bool) -> Option<u64> {
    let whence = if data {
        Whence::SeekData
    } else {
        Whence::SeekHole
    };
    match lseek(f.as_raw_fd(), off as i64, whence) {
        Ok(o) => Some(o as u64),
        Err(nix::errno::Errno::ENXIO) => None,
        Err(e) => panic!("lseek({off}, {whence:?}): {e}"),
    }
}

/// Every extent boundary, a random offset inside each extent and the end: the answers of
/// the mount against the model.
fn check_seeks(path: &Path, mapped: &BTreeSet<u64>, size: u64, rng: &mut Rng) {
    let f = File::open(path).unwrap();
    let mut probes: Vec<u64> = Vec::new();
    for l in 0..size.div_ceil(ES) {
        probes.extend([l * ES, l * ES + rng.range(1, ES), l * ES + ES - 1]);
    }
    probes.extend([size - 1, size, size + 1, size + ES * 3]);
    for off in probes {
        for data in [true, false] {
            assert_eq!(
                seek(&f, off, data),
                expected(mapped, size, off, data),
                "{}: lseek({off}, {}) (extent {})",
                path.display(),
                if data { "SEEK_DATA" } else { "SEEK_HOLE" },
                off / ES
            );
        }
    }
}

/// Runs of (start, length) of the mapped extents, adjacent ones merged.
fn runs(mapped: &BTreeSet<u64>, size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &l in mapped {
        let (s, e) = (l * ES, ((l + 1) * ES).min(size));
        match out.last_mut() {
            Some((a, n)) if *a + *n == s => *n = e - *a,
            _ => out.push((s, e - s)),
        }
    }
    out
}

/// `qemu-img map --output=json` of a raw image: the runs it reports as data.
fn qemu_map(path: &Path) -> Vec<(u64, u64)> {
    let out = run_ok(
        Command::new(tool("qemu-img"))
            .args(["map", "--output=json", "-f", "raw"])
            .arg(path),
        Duration::from_secs(60),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img map json");
    let mut data: Vec<(u64, u64)> = Vec::new();
    for r in v.as_array().expect("array") {
        if r["data"].as_bool() != Some(true) {
            continue;
        }
        let (s, n) = (r["start"].as_u64().unwrap(), r["length"].as_u64().unwrap());
        match data.last_mut() {
            Some((a, m)) if *a + *m == s => *m += n,
            _ => data.push((s, n)),
        }
    }
    data
}

/// Write a random pattern: whole extents, single blocks (the extent is mapped whole), and
/// punched extents, updating the model.
fn scribble(path: &Path, mapped: &mut BTreeSet<u64>, size: u64, rng: &mut Rng, seed: u64) {
    let f = open_rw(path, false).unwrap();
    for l in 0..size.div_ceil(ES) {
        match rng.range(0, 10) {
            0..=1 => {
                // The last extent is cut by the end of the volume.
                let mut buf = vec![0u8; ES.min(size - l * ES) as usize];
                fill_pattern(seed, l * ES, &mut buf);
                f.write_all_at(&buf, l * ES).unwrap();
                mapped.insert(l);
            }
            2 => {
                let blocks = (ES.min(size - l * ES) / 4096).max(1);
                let off = l * ES + rng.range(0, blocks) * 4096;
                let mut buf = vec![0u8; 4096];
                fill_pattern(seed, off, &mut buf);
                f.write_all_at(&buf, off).unwrap();
                mapped.insert(l);
            }
            3 if mapped.contains(&l) => {
                let r = nix::fcntl::fallocate(
                    f.as_raw_fd(),
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    (l * ES) as i64,
                    ES as i64,
                );
                r.unwrap();
                mapped.remove(&l);
            }
            _ => {}
        }
    }
    f.sync_all().unwrap();
}

#[test]
fn seek_data_and_hole_follow_the_extent_map() {
    let p = TestPool::new(&["a0:128M", "a1:128M"], "64K");
    let size = EXTENTS * ES - 12 * KIB; // the last extent is cut by the end of the volume
    p.create_volume("v", &size.to_string());
    let mut rng = Rng::from_env("holes");
    let path = p.vol("v");

    // A fresh volume is one hole.
    check_seeks(&path, &BTreeSet::new(), size, &mut rng);

    let mut m1 = BTreeSet::new();
    scribble(&path, &mut m1, size, &mut rng, 1);
    assert_eq!(
        p.volume_info("v")["allocated"].as_u64(),
        Some(m1.len() as u64 * ES),
        "the model is the volume's map"
    );
    check_seeks(&path, &m1, size, &mut rng);
    assert_eq!(
        qemu_map(&path),
        runs(&m1, size),
        "qemu-img map of the volume"
    );

    // A snapshot keeps the first pattern while the volume moves on (copy-on-write, partial
    // extents, punched shared extents).
    p.cli_ok(&["snapshot", "create", "v", "s1"]);
    let mut m2 = m1.clone();
    scribble(&path, &mut m2, size, &mut rng, 2);
    let snap = p.mnt().join(".snapshots/v/s1");
    check_seeks(&snap, &m1, size, &mut rng);
    check_seeks(&path, &m2, size, &mut rng);
    assert_eq!(
        qemu_map(&snap),
        runs(&m1, size),
        "qemu-img map of the snapshot"
    );
    assert_eq!(
        qemu_map(&path),
        runs(&m2, size),
        "qemu-img map after more writes"
    );

    // Tools that skip holes: a sparse copy out of the mount holds exactly the data.
    let out = p.root().join("copy.img");
    run_ok(
        Command::new(tool("cp"))
            .arg("--sparse=always")
            .arg(&path)
            .arg(&out),
        Duration::from_secs(60),
    );
    let (a, b) = (std::fs::read(&path).unwrap(), std::fs::read(&out).unwrap());
    assert!(a == b, "cp --sparse copy differs from the volume");
    let st = nix::sys::stat::stat(&out).unwrap();
    assert!(
        (st.st_blocks as u64) * 512 <= m2.len() as u64 * ES,
        "sparse copy takes {} bytes for {} mapped extents",
        st.st_blocks * 512,
        m2.len()
    );
}
