//! `volume move` that fails half-way (issue 17): the target killed in the middle of the copy,
//! or etcd lost until the switch cannot be decided. The copy is slowed by the failpoint
//! `cluster::move::chunk` (a sleep per 1 MiB), so "in the middle" is a window of seconds.
//! Either way the volume stays owned by the source and intact, the target's partial copy is
//! dropped (at once, or when it comes back), and nothing is left half-done.
#![cfg(feature = "failpoints")]

mod common;

use std::thread;
use std::time::Duration;

use common::etcd::{free_port, Etcd};
use common::*;
use serde_json::Value;

const TTL: u64 = 3;

fn node(etcd: &Etcd, name: &str, failpoints: Option<&str>) -> TestPool {
    let mut p = TestPool::init(&["a0:1G", "a1:1G"], "256K");
    p.daemon_args = vec![
        "--nbd".into(),
        format!("127.0.0.1:{}", free_port()),
        "--cluster".into(),
        etcd.url(),
        "--node".into(),
        name.into(),
        "--cluster-ttl".into(),
        TTL.to_string(),
    ];
    match failpoints {
        Some(f) => p.start_env(&[("FAILPOINTS", f)]),
        None => p.start(),
    }
    p
}

fn entry(p: &TestPool, name: &str) -> Option<Value> {
    p.cli_json(&["cluster", "volumes"])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

fn up(p: &TestPool, node: &str) -> bool {
    p.cli_json(&["cluster", "nodes"])
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == node && n["state"] == "up")
}

fn local_names(p: &TestPool) -> Vec<String> {
    p.cli_json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// Start `volume move mv --node b` on `a` in the background; wait until the copy runs.
fn start_move(a: &TestPool, c: &TestPool) -> thread::JoinHandle<std::process::Output> {
    let h = a.handle();
    let t = thread::spawn(move || h.cli(&["volume", "move", "mv", "--node", "b"]));
    wait_until("the move copying", Duration::from_secs(20), || {
        entry(c, "mv").is_some_and(|v| {
            v["moving"]
                .as_str()
                .is_some_and(|m| m.contains("copying") && !m.contains(" 0 bytes"))
        })
    });
    t
}

fn setup(etcd: &Etcd) -> (TestPool, TestPool, TestPool) {
    // 100 ms per MiB on the source: 40 MiB of data take 4 s to copy.
    let a = node(etcd, "a", Some("cluster::move::chunk=sleep(100)"));
    let b = node(etcd, "b", None);
    let c = node(etcd, "c", None);
    for p in [&a, &b, &c] {
        for n in ["a", "b", "c"] {
            wait_until("nodes up", Duration::from_secs(20), || up(p, n));
        }
    }
    a.create_volume("mv", "128M");
    write_pattern(&a.vol("mv"), 31, 0, 40 * MIB, true);
    wait_until("mv visible on c", Duration::from_secs(20), || {
        c.vol("mv").exists() && entry(&a, "mv").is_some_and(|v| v["state"] == "ready")
    });
    (a, b, c)
}

#[test]
fn target_killed_mid_copy_leaves_the_volume_on_the_source_and_its_copy_dropped() {
    let etcd = Etcd::start();
    let (a, mut b, c) = setup(&etcd);
    let mover = start_move(&a, &c);
    assert!(
        local_names(&b).contains(&"mv".to_string()),
        "the target holds the copy while copying"
    );
    // The copy is hidden on the target: its mount shows the source's volume (forwarded).
    assert_eq!(entry(&b, "mv").unwrap()["served"], "forwarded");
    b.kill9();
    let out = mover.join().unwrap();
    assert!(
        !out.status.success(),
        "the move succeeded without its target"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("move of volume 'mv'") && err.contains("'b'"),
        "the error names the volume and the target: {}",
        describe(&out)
    );
    // Owned and intact on the source; no move record left; I/O through c goes on.
    for p in [&a, &c] {
        wait_until("no move left", Duration::from_secs(10), || {
            entry(p, "mv").is_some_and(|v| v["owner"] == "a" && v.get("moving").is_none())
        });
    }
    verify_pattern(&a.vol("mv"), 31, 0, 40 * MIB, true);
    verify_pattern(&c.vol("mv"), 31, 0, 40 * MIB, true);
    write_pattern(&c.vol("mv"), 32, 64 * MIB, 4 * MIB, true);
    verify_pattern(&a.vol("mv"), 32, 64 * MIB, 4 * MIB, true);
    let evs = text(&a.cli(&["--json", "events"]).stdout);
    assert!(evs.contains("move-failed"), "no move-failed event: {evs}");
    // B comes back: it drops its partial copy and shows the source's volume.
    b.clear_dead_mount();
    b.start();
    wait_until("b dropped its copy", Duration::from_secs(30), || {
        !local_names(&b).contains(&"mv".to_string())
    });
    assert!(!b.pool().join("cluster-moves.json").exists());
    wait_until("b forwards mv", Duration::from_secs(20), || {
        entry(&b, "mv").is_some_and(|v| v["served"] == "forwarded" && v["available"] == true)
    });
    verify_pattern(&b.vol("mv"), 32, 64 * MIB, 4 * MIB, true);
    // A second move, left to finish, works.
    a.cli_ok(&["volume", "move", "mv", "--node", "b"]);
    verify_pattern(&c.vol("mv"), 31, 0, 40 * MIB, true);
    verify_pattern(&b.vol("mv"), 32, 64 * MIB, 4 * MIB, true);
    assert!(!a.pool().join("cluster-moves.json").exists());
}

#[test]
fn etcd_lost_until_the_switch_leaves_the_volume_on_the_source() {
    let mut etcd = Etcd::start();
    let (a, b, c) = setup(&etcd);
    let mover = start_move(&a, &c);
    etcd.stop();
    let out = mover.join().unwrap();
    assert!(!out.status.success(), "the move switched without etcd");
    assert!(
        text(&out.stderr).contains("etcd"),
        "the error says etcd is the reason: {}",
        describe(&out)
    );
    etcd.restart();
    // The source learns the switch did not happen, releases the held requests; the target
    // drops its copy.
    for p in [&a, &c] {
        wait_until("no move left", Duration::from_secs(30), || {
            entry(p, "mv").is_some_and(|v| v["owner"] == "a" && v.get("moving").is_none())
        });
    }
    wait_until("b dropped its copy", Duration::from_secs(30), || {
        !local_names(&b).contains(&"mv".to_string())
    });
    verify_pattern(&c.vol("mv"), 31, 0, 40 * MIB, true);
    write_pattern(&c.vol("mv"), 33, 80 * MIB, 2 * MIB, true);
    verify_pattern(&a.vol("mv"), 33, 80 * MIB, 2 * MIB, true);
}
