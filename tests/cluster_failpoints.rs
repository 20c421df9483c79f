//! `volume move` that fails half-way (issue 17): the target killed in the middle of the copy,
//! or etcd lost until the switch cannot be decided. The copy is slowed by the failpoint
//! `cluster::move::chunk` (a sleep per 1 MiB), so "in the middle" is a window of seconds.
//! Either way the volume stays owned by the source and intact, the target's partial copy is
//! dropped (at once, or when it comes back), and nothing is left half-done.
#![cfg(feature = "failpoints")]

mod common;

use std::thread;
use std::time::Duration;

use common::cluster::{catalog_entry, node_entry, replicate_renamed, start_node, wait_all_up};
use common::etcd::Etcd;
use common::*;

fn node(etcd: &Etcd, name: &str, failpoints: Option<&str>) -> TestPool {
    start_node(etcd, name, &["a0:1G", "a1:1G"], &[], failpoints)
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
        catalog_entry(c, "mv").is_some_and(|v| {
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
    wait_all_up(&[&a, &b, &c], &["a", "b", "c"]);
    a.create_volume("mv", "128M");
    write_pattern(&a.vol("mv"), 31, 0, 40 * MIB, true);
    wait_until("mv visible on c", Duration::from_secs(20), || {
        c.vol("mv").exists() && catalog_entry(&a, "mv").is_some_and(|v| v["state"] == "ready")
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
    assert_eq!(catalog_entry(&b, "mv").unwrap()["served"], "forwarded");
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
            catalog_entry(p, "mv").is_some_and(|v| v["owner"] == "a" && v.get("moving").is_none())
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
        catalog_entry(&b, "mv")
            .is_some_and(|v| v["served"] == "forwarded" && v["available"] == true)
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
            catalog_entry(p, "mv").is_some_and(|v| v["owner"] == "a" && v.get("moving").is_none())
        });
    }
    wait_until("b dropped its copy", Duration::from_secs(30), || {
        !local_names(&b).contains(&"mv".to_string())
    });
    verify_pattern(&c.vol("mv"), 31, 0, 40 * MIB, true);
    write_pattern(&c.vol("mv"), 33, 80 * MIB, 2 * MIB, true);
    verify_pattern(&a.vol("mv"), 33, 80 * MIB, 2 * MIB, true);
}

/// Replica redirection by the owner's real load (issue 17 item 5): array reads on `a` are made
/// slow (`array::read::slow`, 20 ms each), so fio reading `a`'s volume keeps requests in
/// flight at its arrays; `a`'s I/O load rises above its threshold (`--busy-above 1.5`), it
/// reports itself busy, and `c`'s reads of group snapshot `s1` go to `b`. When fio stops the
/// load falls and reads go back to `a`.
#[test]
fn a_loaded_owner_reports_itself_busy_and_snapshot_readers_go_to_the_other_site() {
    let etcd = Etcd::start();
    let arrays = &["a0:512M", "a1:512M"];
    let a = start_node(
        &etcd,
        "a",
        arrays,
        &["--busy-above", "1.5"],
        Some("array::read::slow=sleep(20)"),
    );
    let b = start_node(&etcd, "b", arrays, &[], None);
    let c = start_node(&etcd, "c", arrays, &[], None);
    a.set_budget(Duration::from_secs(600));
    wait_all_up(&[&a, &b, &c], &["a", "b", "c"]);
    let remote = tempfile::tempdir().unwrap();
    a.create_volume("data", "64M");
    write_pattern(&a.vol("data"), 1, 0, 8 * MIB, true);
    replicate_renamed(&a, &b, "db", &["data"], remote.path());
    a.cli_ok(&["group", "snapshot", "db", "s1"]);
    wait_until(
        "s1 on b, listed with both sites on c",
        Duration::from_secs(30),
        || {
            catalog_entry(&c, "data").is_some_and(|e| {
                e["replicas"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["snapshot"] == "s1"))
            })
        },
    );
    let busy = |p: &TestPool| node_entry(p, "a").is_some_and(|n| n["busy"] == true);
    wait_until("a idle", Duration::from_secs(20), || !busy(&c));
    let snap_c = c.mnt().join(".snapshots/data/s1");
    let served = |p: &TestPool| -> String {
        catalog_entry(p, "data").unwrap()["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["snapshot"] == "s1")
            .map(|r| format!("{} {}", r["served_by"], r["reason"]))
            .unwrap()
    };
    verify_pattern(&snap_c, 1, 0, 4 * MIB, false);
    assert!(served(&c).starts_with("\"a\""), "{}", served(&c));

    // Load on a: 8 readers of a's volume, each read waiting 20 ms at the array.
    let vol = a.vol("data");
    let fio = thread::spawn(move || {
        run(
            std::process::Command::new(tool("fio")).args([
                "--name=load",
                &format!("--filename={}", vol.display()),
                "--rw=randread",
                "--bs=4k",
                "--size=8M",
                "--direct=1",
                "--ioengine=libaio",
                "--iodepth=16",
                "--numjobs=2",
                "--time_based",
                "--runtime=15",
            ]),
            Duration::from_secs(60),
        )
    });
    wait_until("a busy as c sees it", Duration::from_secs(14), || busy(&c));
    let a_node = node_entry(&c, "a").unwrap();
    assert!(
        a_node["io_load"].as_f64().unwrap() > 1.5,
        "busy with an I/O load of {}",
        a_node["io_load"]
    );
    verify_pattern(&snap_c, 1, 0, 4 * MIB, false);
    let s = served(&c);
    assert!(
        s.starts_with("\"b\"") && s.contains("is busy (I/O load"),
        "{s}"
    );
    let out = fio.join().unwrap();
    assert!(out.status.success(), "fio: {}", describe(&out));
    wait_until("a idle again", Duration::from_secs(15), || !busy(&c));
    verify_pattern(&snap_c, 1, 0, 4 * MIB, false);
    assert!(served(&c).starts_with("\"a\""), "{}", served(&c));
}
