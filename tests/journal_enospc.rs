//! A journal whose local disk fills gives ENOSPC to the writer, not EINVAL: the pool's
//! `journals/` directory is a 4 MiB tmpfs, a grouped volume is written with `dd` through the
//! FUSE mount until the journal cannot take another record, and `dd` reports "No space left
//! on device". What was acknowledged before is intact, the daemon keeps serving, and the
//! volume reads back byte for byte.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size}"),
                    "fusevol-test-tmpfs",
                ])
                .arg(dir),
            Duration::from_secs(20),
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn dd(
    of: &std::path::Path,
    input: &std::path::Path,
    seek_64k: u64,
    count: u64,
) -> std::process::Output {
    run(
        Command::new("dd")
            .arg(format!("if={}", input.display()))
            .arg(format!("of={}", of.display()))
            .args(["bs=64K", "oflag=direct", "conv=notrunc", "status=none"])
            .arg(format!("seek={seek_64k}"))
            .arg(format!("count={count}")),
        Duration::from_secs(60),
    )
}

#[test]
fn full_journal_disk_gives_enospc_through_the_mount_and_loses_nothing() {
    let mut p = TestPool::init(&["a0:128M"], "64K");
    let journals = p.pool().join("journals");
    let tmpfs = Tmpfs::mount(&journals, "4M");
    p.start();
    p.create_volume("v", "32M");
    let remote = p.root().join("remote");
    std::fs::create_dir(&remote).unwrap();
    // No secondary attaches: nothing is acknowledged, so nothing is purged.
    p.create_group("g", &["v"], &remote);

    // 1 MiB that fits, acknowledged and fsynced.
    let data = p.root().join("data");
    let bytes: Vec<u8> = (0..32u64 << 20)
        .map(|i| (splitmix64(i / 8) >> (8 * (i % 8))) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let out = dd(&p.vol("v"), &data, 0, 16);
    assert!(out.status.success(), "first 1 MiB: {}", describe(&out));
    let out = run(
        Command::new("sync").arg(p.vol("v")),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "sync: {}", describe(&out));

    // 16 MiB more cannot fit in the 4 MiB journal file system.
    let out = dd(&p.vol("v"), &data, 16, 256);
    assert!(!out.status.success(), "dd should fail: {}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("No space left on device"),
        "the writer must see ENOSPC, got: {err}\n{}",
        p.daemon_log()
    );
    assert!(!err.contains("Invalid argument"), "never EINVAL: {err}");

    // Nothing acknowledged is lost, and the daemon still serves.
    assert!(p.is_running(), "daemon died:\n{}", p.daemon_log());
    let now = std::fs::read(p.vol("v")).unwrap();
    assert_eq!(&now[..1 << 20], &bytes[..1 << 20], "first 1 MiB changed");
    let status = p.cli_json(&["group", "status", "g"]);
    assert!(status.is_array(), "group status: {status}");
    p.stop();
    p.check_clean();
    drop(tmpfs);
}
