//! Journal full end to end: two daemons, their FUSE mounts and the CLI. With the remote
//! directory gone, `dd` writes fill a 1 MiB journal; policy `suspend` lets them go on and
//! `group resync` brings the secondary back to the primary's image byte for byte; policy
//! `block` (changed with `group set`) makes a direct write fail with ENOSPC after its
//! timeout, and writes go on once the remote directory is back.

mod common;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;

const VOL: u64 = 8 << 20;

fn status(p: &TestPool) -> serde_json::Value {
    p.cli_json(&["group", "status", "g"])
        .as_array()
        .expect("list")[0]
        .clone()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn dd(vol: &Path, seek_64k: u64, count: u64, direct: bool) -> std::process::Output {
    let mut c = Command::new("dd");
    c.arg("if=/dev/urandom")
        .arg(format!("of={}", vol.display()))
        .arg("bs=64K")
        .arg(format!("seek={seek_64k}"))
        .arg(format!("count={count}"))
        .arg("conv=notrunc,fsync")
        .arg("status=none");
    if direct {
        c.arg("oflag=direct");
    }
    run(&mut c, Duration::from_secs(120))
}

/// Until the primary journals again, the secondary is consistent and has applied all.
fn wait_converged(p: &TestPool, s: &TestPool) {
    let t0 = Instant::now();
    loop {
        let (ps, ss) = (status(p), status(s));
        if ps["full"]["state"] == "journaling"
            && ss["consistent"] == true
            && num(&ss, "applied") == num(&ps, "written")
            && num(&ps, "acknowledged") == num(&ps, "written")
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no convergence:\n{ps}\n{ss}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn same_files(p: &TestPool, s: &TestPool, what: &str) {
    for v in ["va", "vb"] {
        let a = std::fs::read(p.vol(v)).unwrap();
        let b = std::fs::read(s.vol(v)).unwrap();
        assert_eq!(a.len() as u64, VOL);
        assert!(a == b, "{what}: {v} differs between the sites");
    }
}

#[test]
fn suspend_dd_resync_cmp_then_block_gives_enospc() {
    let Daemons { mut p, s, remote } = Daemons::new(1, "128M", "64K");
    p.set_budget(Duration::from_secs(400));
    s.set_budget(Duration::from_secs(400));
    let away = p.root().join("remote.away");
    let remote_s = remote.to_str().unwrap().to_string();
    for v in ["va", "vb"] {
        p.create_volume(v, &VOL.to_string());
    }
    let out = dd(&p.vol("va"), 0, 16, false);
    assert!(out.status.success(), "{}", describe(&out));
    p.cli_ok(&[
        "group",
        "create",
        "g",
        "--volumes",
        "va,vb",
        "--remote",
        &remote_s,
        "--seal-ms",
        "20",
        "--segment-size",
        "64K",
        "--journal-limit",
        "1M",
        "--journal-full",
        "suspend",
    ]);
    s.cli_ok(&["group", "attach", "g", "--remote", &remote_s]);
    s.cli_ok(&["group", "wait", "g", "--consistent", "--timeout", "60"]);
    let st = status(&p);
    assert_eq!(st["full"]["policy"], "suspend");
    assert_eq!(num(&st, "journal_limit"), 1 << 20);

    // The remote directory goes away; 5 MiB of writes: far past the limit, all succeed.
    std::fs::rename(&remote, &away).unwrap();
    for (v, seek, count) in [("va", 10, 48), ("vb", 30, 32)] {
        let out = dd(&p.vol(v), seek, count, false);
        assert!(
            out.status.success(),
            "suspended writes must succeed: {}",
            describe(&out)
        );
    }
    let st = status(&p);
    assert_eq!(st["state"], "suspended", "{st}");
    assert!(num(&st, "journal_bytes") <= 1 << 20, "{st}");
    assert!(num(&st["full"], "dirty_bytes") >= 4 << 20, "{st}");
    let text = p.cli_ok(&["group", "status", "g"]);
    assert!(
        text.contains("suspended") && text.contains("group resync"),
        "{text}"
    );
    // kill -9 while suspended: the bitmap and the data survive the restart.
    let before: Vec<Vec<u8>> = ["va", "vb"]
        .iter()
        .map(|v| std::fs::read(p.vol(v)).unwrap())
        .collect();
    let dirty = num(&st["full"], "dirty_bytes");
    p.kill9();
    p.clear_dead_mount();
    p.start();
    let st = status(&p);
    assert_eq!(st["state"], "suspended", "after the restart: {st}");
    assert_eq!(num(&st["full"], "dirty_bytes"), dirty, "{st}");
    for (v, want) in ["va", "vb"].iter().zip(&before) {
        assert!(
            std::fs::read(p.vol(v)).unwrap() == *want,
            "{v} changed in the restart"
        );
    }
    let out = dd(&p.vol("vb"), 90, 8, false);
    assert!(out.status.success(), "{}", describe(&out));
    // No resync without the remote directory.
    let out = p.cli(&["group", "resync", "g"]);
    assert!(
        !out.status.success(),
        "resync without the remote: {}",
        describe(&out)
    );

    std::fs::rename(&away, &remote).unwrap();
    p.cli_ok(&["group", "resync", "g"]);
    wait_converged(&p, &s);
    same_files(&p, &s, "after the resync");
    let ss = status(&s);
    assert_eq!(ss["state"], "consistent", "{ss}");
    assert_eq!(num(&ss["full"], "resyncs"), 1, "{ss}");
    let snaps = s.cli_ok(&["snapshot", "list", "va"]);
    assert!(!snaps.contains("resync-"), "resync snapshot kept: {snaps}");

    // Policy block: a direct write that finds the journal full fails with ENOSPC.
    p.cli_ok(&[
        "group",
        "set",
        "g",
        "--journal-full",
        "block",
        "--block-timeout",
        "0.5",
    ]);
    std::fs::rename(&remote, &away).unwrap();
    let out = dd(&p.vol("vb"), 0, 64, true);
    assert!(
        !out.status.success(),
        "a full journal must refuse: {}",
        describe(&out)
    );
    assert!(
        text_of(&out).contains("No space left on device"),
        "{}",
        describe(&out)
    );
    let st = status(&p);
    assert!(num(&st, "journal_bytes") <= 1 << 20, "{st}");
    let w = st["full"]["warning"].as_str().unwrap_or("").to_string();
    assert!(w.contains("journal full"), "{st}");
    std::fs::rename(&away, &remote).unwrap();
    // Writes go on once the secondary takes segments again.
    let t0 = Instant::now();
    loop {
        let out = dd(&p.vol("vb"), 100, 4, true);
        if out.status.success() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", describe(&out));
        thread::sleep(Duration::from_millis(200));
    }
    wait_converged(&p, &s);
    same_files(&p, &s, "after the block episode");
    drop(s);
    p.stop();
    p.check_clean();
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}
