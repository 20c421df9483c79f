//! Point-in-time restore end to end: two daemons, one remote directory, `dd` through the FUSE
//! mount in rounds with `group snapshot` between, then `group restore-to` by sequence number
//! and by time through the CLI, the restored volume files compared (`cmp`) with the
//! snapshot files in `.snapshots/` and with copies taken at the moments in between.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sites::Daemons;
use common::*;

const VOL: u64 = 4 << 20;

fn status(p: &TestPool) -> serde_json::Value {
    let v = p.cli_json(&["group", "status", "g"]);
    v.as_array().expect("status list")[0].clone()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// `dd` COUNT 4 KiB blocks of random data into VOL at block SEEK, fsynced.
fn dd(p: &TestPool, vol: &str, seek: u64, count: u64) {
    run_ok(
        Command::new(tool("dd"))
            .arg("if=/dev/urandom")
            .arg(format!("of={}", p.vol(vol).display()))
            .args(["bs=4k", "conv=notrunc,fsync", "status=none"])
            .arg(format!("seek={seek}"))
            .arg(format!("count={count}")),
        CLI_TIMEOUT,
    );
}

fn same(a: &Path, b: &Path) {
    let out = run(Command::new(tool("cmp")).arg(a).arg(b), CLI_TIMEOUT);
    assert!(
        out.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        describe(&out)
    );
}

#[test]
fn restore_to_through_the_cli_equals_the_snapshots_and_the_moments_between() {
    let Daemons { p, mut s, remote } = Daemons::new(2, "128M", "64K");
    p.set_budget(Duration::from_secs(300));
    s.set_budget(Duration::from_secs(300));
    let remote_s = remote.to_str().unwrap().to_string();
    for v in ["va", "vb"] {
        p.create_volume(v, &VOL.to_string());
    }
    dd(&p, "va", 0, 64); // before the group: travels as base records
    p.cli_ok(&[
        "group",
        "create",
        "g",
        "--volumes",
        "va,vb",
        "--remote",
        &remote_s,
        "--seal-ms",
        "50",
        "--segment-size",
        "256K",
    ]);
    s.cli_ok(&[
        "group",
        "attach",
        "g",
        "--remote",
        &remote_s,
        "--retain-secs",
        "3600",
        "--retain-size",
        "1G",
    ]);
    s.cli_ok(&["group", "wait", "g", "--consistent", "--timeout", "60"]);
    let keep = p.root().join("moments");
    std::fs::create_dir(&keep).unwrap();
    let mut rng = Rng::new(0x9172_ab01);
    // (seq, time as seconds.nanos) after the middle of each round, and copies of both
    // volumes at that moment.
    let mut mids: Vec<(u64, String)> = Vec::new();
    for round in 0..3u64 {
        for _ in 0..6 {
            let vol = ["va", "vb"][rng.range(0, 2) as usize];
            dd(&p, vol, rng.range(0, 1000), rng.range(1, 24));
        }
        let seq = num(&status(&p), "written");
        std::thread::sleep(Duration::from_millis(30));
        let t = fusevol::journal::now_ns();
        mids.push((
            seq,
            format!("{}.{:09}", t / 1_000_000_000, t % 1_000_000_000),
        ));
        for v in ["va", "vb"] {
            std::fs::copy(p.vol(v), keep.join(format!("{v}-{round}"))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(30));
        for _ in 0..6 {
            let vol = ["va", "vb"][rng.range(0, 2) as usize];
            dd(&p, vol, rng.range(0, 1000), rng.range(1, 24));
        }
        p.cli_ok(&["group", "snapshot", "g", &format!("r{round}")]);
    }
    let written = num(&status(&p), "written");
    s.cli_ok(&[
        "group",
        "wait",
        "g",
        "--applied",
        &written.to_string(),
        "--timeout",
        "60",
    ]);
    let st = status(&s);
    let markers = st["pitr"]["markers"].as_array().expect("markers").clone();
    assert_eq!(markers.len(), 3, "{st}");
    assert!(num(&st["pitr"], "retained_segments") > 0, "{st}");
    let shown = s.cli_ok(&["group", "status", "g"]);
    for key in ["retention", "retained", "markers"] {
        assert!(shown.contains(key), "{key} missing in:\n{shown}");
    }
    // At each group snapshot: the restored files equal the snapshot files of both sites.
    for (round, m) in markers.iter().enumerate() {
        let name = m["name"].as_str().unwrap();
        assert_eq!(name, format!("r{round}"));
        let seq = num(m, "seq");
        let prefix = format!("at-{name}-");
        let r = s.cli_json(&[
            "group",
            "restore-to",
            "g",
            "--seq",
            &seq.to_string(),
            "--prefix",
            &prefix,
        ]);
        assert_eq!(num(&r, "seq"), seq, "{r}");
        for v in ["va", "vb"] {
            let restored = s.vol(&format!("{prefix}{v}"));
            same(&restored, &p.mnt().join(".snapshots").join(v).join(name));
            same(&restored, &s.mnt().join(".snapshots").join(v).join(name));
        }
    }
    // Between snapshots: by sequence number (text output), by time, into image files.
    for (round, (seq, t)) in mids.iter().enumerate() {
        let out = s.cli_ok(&["group", "restore-to", "g", "--seq", &seq.to_string()]);
        assert!(out.contains(&format!("as of sequence {seq}")), "{out}");
        let r = s.cli_json(&[
            "group",
            "restore-to",
            "g",
            "--time",
            t,
            "--prefix",
            &format!("t{round}-"),
        ]);
        assert_eq!(num(&r, "seq"), *seq, "time {t}: {r}");
        let dir = p.root().join(format!("img{round}"));
        std::fs::create_dir(&dir).unwrap();
        s.cli_ok(&[
            "group",
            "restore-to",
            "g",
            "--seq",
            &seq.to_string(),
            "--into",
            dir.to_str().unwrap(),
        ]);
        for v in ["va", "vb"] {
            let moment = keep.join(format!("{v}-{round}"));
            same(&s.vol(&format!("g-{seq}-{v}")), &moment);
            same(&s.vol(&format!("t{round}-{v}")), &moment);
            same(&dir.join(format!("{v}.img")), &moment);
        }
    }
    // Too old: refused with exit 1 and a message saying so. Bad time: usage (exit 2).
    let out = s.cli(&["group", "restore-to", "g", "--time", "1000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("older than anything retained"),
        "{}",
        describe(&out)
    );
    for bad in [
        &["group", "restore-to", "g", "--time", "last tuesday"][..],
        &["group", "restore-to", "g", "--seq", "5", "--prefix", "a/"],
        &["group", "restore-to", "g"],
        &["group", "set", "g"],
    ] {
        let out = s.cli(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", describe(&out));
    }
    let out = s.cli(&["group", "restore-to", "nope", "--seq", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    // group set changes the settings; status shows them.
    s.cli_ok(&["group", "set", "g", "--apply-delay", "1"]);
    let st = status(&s);
    assert_eq!(num(&st["pitr"], "apply_delay"), 1, "{st}");
    assert_eq!(num(&st["pitr"], "retain_secs"), 3600, "{st}");
    // The group kept replicating: the secondary still follows the primary.
    dd(&p, "va", 5, 3);
    let written = num(&status(&p), "written");
    s.cli_ok(&[
        "group",
        "wait",
        "g",
        "--applied",
        &written.to_string(),
        "--timeout",
        "60",
    ]);
    let t0 = Instant::now();
    loop {
        let a = std::fs::read(p.vol("va")).unwrap();
        let b = std::fs::read(s.vol("va")).unwrap();
        if a == b {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "va differs");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop();
    s.check_clean();
}
