//! Replication faults with two daemons: the remote directory full (a small tmpfs) and
//! read-only, and restarts of either daemon while segments are shipped and applied. The
//! primary keeps serving throughout; once the fault is gone, shipping resumes by itself and the
//! secondary ends equal to the primary.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path),
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "mount tmpfs: {}", describe(&out));
        Tmpfs(path.to_path_buf())
    }

    fn remount(&self, opt: &str) {
        let out = run(
            Command::new("mount")
                .args(["-o", &format!("remount,{opt}")])
                .arg(&self.0),
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "remount {opt}: {}", describe(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn status(p: &TestPool) -> serde_json::Value {
    p.cli_json(&["group", "status", "g"]).as_array().unwrap()[0].clone()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Write `mib` MiB of a pattern seeded by `seed` at `off_mib` (every write must succeed:
/// the primary keeps serving whatever the remote does).
fn write_mib(p: &TestPool, vol: &str, off_mib: u64, mib: u64, seed: u8) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p.vol(vol))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = seed ^ (i as u8) ^ (j as u8).wrapping_mul(7);
        }
        f.write_all_at(&buf, (off_mib + i) << 20)
            .unwrap_or_else(|e| panic!("primary write at {} MiB failed: {e}", off_mib + i));
    }
}

fn wait_error(p: &TestPool, needle: &str) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let st = status(p);
        if st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
        {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no '{needle}' error: {st}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn converge(p: &TestPool, s: &TestPool, what: &str) {
    let t0 = Instant::now();
    loop {
        let (ps, ss) = (status(p), status(s));
        if num(&ps, "acknowledged") == num(&ps, "written")
            && num(&ss, "applied") == num(&ps, "written")
        {
            assert!(
                ps["last_error"].is_null(),
                "{what}: primary error stays: {ps}"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{what}: no convergence\n{ps}\n{ss}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let a = std::fs::read(p.vol("va")).unwrap();
    let b = std::fs::read(s.vol("va")).unwrap();
    assert!(a == b, "{what}: secondary differs from primary");
}

#[test]
fn remote_full_read_only_and_restarts_lose_nothing() {
    let Daemons {
        mut p,
        mut s,
        remote,
    } = Daemons::new(2, "2G", "256K");
    p.set_budget(Duration::from_secs(400));
    s.set_budget(Duration::from_secs(400));
    let remote = Tmpfs::mount(&remote, "48M");
    let rs = remote.0.to_str().unwrap().to_string();
    p.create_volume("va", "256M");
    write_mib(&p, "va", 0, 8, 1);
    p.cli_ok(&["group", "create", "g", "--volumes", "va", "--remote", &rs]);
    s.cli_ok(&["group", "attach", "g", "--remote", &rs]);
    converge(&p, &s, "initial copy");
    assert_eq!(status(&s)["state"], "consistent");

    // Full: the secondary is away, so nothing is consumed and the remote fills up.
    s.stop();
    write_mib(&p, "va", 8, 120, 2);
    let st = wait_error(&p, "No space left");
    assert_eq!(st["state"], "remote-error", "{st}");
    assert!(num(&st, "lag_records") > 0);
    write_mib(&p, "va", 128, 4, 3); // still serving
    s.start();
    converge(&p, &s, "after the remote was full");

    // Read-only remote.
    remote.remount("ro");
    write_mib(&p, "va", 20, 10, 4);
    let st = wait_error(&p, "Read-only");
    assert_eq!(st["state"], "remote-error", "{st}");
    remote.remount("rw");
    converge(&p, &s, "after the remote was read-only");

    // The secondary killed while applying, then restarted.
    write_mib(&p, "va", 40, 40, 5);
    thread::sleep(Duration::from_millis(300));
    s.kill9();
    s.clear_dead_mount();
    s.start();
    converge(&p, &s, "after kill -9 of the secondary");

    // The primary restarted (clean stop) while shipping.
    write_mib(&p, "va", 100, 40, 6);
    p.stop();
    p.start();
    converge(&p, &s, "after a restart of the primary");
    s.stop();
    s.check_clean();
    p.stop();
    p.check_clean();
}
