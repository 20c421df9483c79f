//! A volume as a block device: losetup + mkfs.ext4 + mount + files + umount + e2fsck, again
//! after a daemon restart. The loop device and the ext4 mount are registered with the
//! harness, which detaches and unmounts them on any failure.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const ARRAYS: &[&str] = &["a0:256M", "a1:256M", "a2:256M"];

/// (relative path, seed, length) of every file written.
type Tree = Vec<(PathBuf, u64, usize)>;

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.div_ceil(8) * 8];
    fill_pattern(seed, 0, &mut v);
    v.truncate(len);
    v
}

fn make_tree(root: &Path, rng: &mut Rng, tag: &str, n: usize) -> Tree {
    let sizes = [
        0usize,
        1,
        4095,
        4096,
        4097,
        65_536,
        100_003,
        1 << 20,
        3 * (1 << 20) + 17,
    ];
    let mut tree = Vec::new();
    for i in 0..n {
        let dir = PathBuf::from(format!("{tag}/d{}/sub{}", i % 4, i % 3));
        fs::create_dir_all(root.join(&dir)).unwrap();
        let rel = dir.join(format!("f{i}.bin"));
        let len = sizes[rng.range(0, sizes.len() as u64) as usize];
        let seed = rng.next_u64();
        fs::write(root.join(&rel), content(seed, len)).unwrap();
        tree.push((rel, seed, len));
    }
    tree
}

fn check_tree(root: &Path, tree: &Tree) {
    for (rel, seed, len) in tree {
        let path = root.join(rel);
        let got = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert_eq!(got.len(), *len, "size of {}", rel.display());
        assert!(
            got == content(*seed, *len),
            "content of {} differs from what was written",
            rel.display()
        );
    }
}

fn e2fsck_clean(dev: &str) {
    let out = run(
        Command::new(tool("e2fsck")).args(["-f", "-n", dev]),
        Duration::from_secs(300),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck -fn {dev} is not clean: {}",
        describe(&out)
    );
}

fn ext4_round_trip(direct_io: bool) {
    for t in ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"] {
        tool(t);
    }
    let mut p = TestPool::new(ARRAYS, "256K");
    p.set_budget(Duration::from_secs(400));
    let mut rng = Rng::from_env("ext4");
    p.create_volume("disk", "256M");
    let vol = p.vol("disk");
    let m = p.root().join("ext4");

    let dev = p.losetup(&vol, direct_io);
    run_ok(
        Command::new(tool("mkfs.ext4")).args(["-F", "-q", &dev]),
        Duration::from_secs(300),
    );
    p.mount(&dev, &m);
    let mut tree = make_tree(&m, &mut rng, "first", 24);
    p.umount(&m);
    e2fsck_clean(&dev);
    p.mount(&dev, &m);
    check_tree(&m, &tree);
    tree.extend(make_tree(&m, &mut rng, "second", 12));
    // Replace some files and remove others (frees blocks inside the file system).
    for (rel, seed, len) in tree.iter_mut().take(6) {
        *seed = rng.next_u64();
        *len = 200_000;
        fs::write(m.join(&*rel), content(*seed, *len)).unwrap();
    }
    let removed: Vec<_> = tree.drain(6..9).collect();
    for (rel, _, _) in &removed {
        fs::remove_file(m.join(rel)).unwrap();
    }
    run_ok(
        Command::new(tool("fstrim")).arg(&m),
        Duration::from_secs(120),
    );
    check_tree(&m, &tree);
    p.umount(&m);
    e2fsck_clean(&dev);
    p.detach_loop(&dev);
    let info = p.volume_info("disk");
    let alloc = info["allocated"].as_u64().unwrap();
    assert!(
        alloc > 8 * MIB && alloc < 256 * MIB,
        "a fresh ext4 with ~20 MiB of files should be thin: allocated {alloc}"
    );

    // Everything again after a daemon restart (no page cache can help now).
    p.restart();
    let dev = p.losetup(&vol, direct_io);
    e2fsck_clean(&dev);
    p.mount(&dev, &m);
    check_tree(&m, &tree);
    for (rel, _, _) in &removed {
        assert!(!m.join(rel).exists(), "{} came back", rel.display());
    }
    p.umount(&m);
    p.detach_loop(&dev);
    p.stop();
    p.check_clean();
}

#[test]
fn ext4_on_loop_device_buffered() {
    ext4_round_trip(false);
}

#[test]
fn ext4_on_loop_device_direct_io() {
    ext4_round_trip(true);
}
