//! `fusevol-standin`, the stand-in secondary of scripts/bench-journal.sh: it acknowledges every
//! published segment (the primary's acknowledged number reaches its written one, and the
//! journal is purged), and it refuses a segment of another group.

mod common;

use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn status(p: &TestPool) -> (u64, u64, String) {
    let v = p.cli_json(&["group", "status", "g"]);
    let g = if v.is_array() { &v[0] } else { &v };
    (
        g["written"].as_u64().unwrap(),
        g["acknowledged"].as_u64().unwrap(),
        g["state"].as_str().unwrap().to_string(),
    )
}

#[test]
fn standin_acknowledges_every_published_segment() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "64K");
    p.create_volume("v", "16M");
    let remote = p.root().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    p.create_group("g", &["v"], &remote);
    let mut sb = Command::new(env!("CARGO_BIN_EXE_fusevol-standin"))
        .arg("--remote")
        .arg(&remote)
        .args(["--group", "g"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fusevol-standin");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p.vol("v"))
        .unwrap();
    for i in 0..64u64 {
        f.write_all_at(&[i as u8; 65536], (i * 65536 * 3) % (16 << 20))
            .unwrap();
    }
    f.sync_all().unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (w, a, state) = status(&p);
        if w > 0 && a == w && state == "replicating" {
            break;
        }
        assert!(
            Instant::now() < end,
            "the stand-in did not acknowledge everything: written {w}, acknowledged {a}, state {state}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        sb.try_wait().unwrap().is_none(),
        "fusevol-standin exited while the group was running"
    );
    let _ = sb.kill();
    let _ = sb.wait();
}

#[test]
fn standin_refuses_a_segment_of_another_group() {
    let p = TestPool::new(&["a0:256M"], "64K");
    p.create_volume("v", "8M");
    let remote = p.root().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    p.create_group("g", &["v"], &remote);
    // Wait for the manifest, then publish a segment whose header names another group.
    let dir = remote.join("g");
    let end = Instant::now() + Duration::from_secs(30);
    while !dir.join("manifest").exists() {
        assert!(Instant::now() < end, "no manifest in {}", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    let hdr = fusevol::format::journal::SegmentHeader {
        group: 0xdead_beef,
        epoch: 1,
        first_seq: 1_000_000,
        created: 0,
    };
    std::fs::write(dir.join(format!("{:020}.jseg", 1_000_000)), hdr.encode()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fusevol-standin"))
        .arg("--remote")
        .arg(&remote)
        .args(["--group", "g"])
        .output()
        .expect("run fusevol-standin");
    assert!(
        !out.status.success(),
        "the stand-in accepted a foreign segment"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("0xdeadbeef") && err.contains(".jseg"),
        "the error does not name the segment and its group: {err}"
    );
}
