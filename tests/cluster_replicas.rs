//! Replica redirection (issue 17 item 5): a group snapshot exists as the same image at both
//! sites of a journal group, so a read of it may be served by either. Three daemons on a real
//! etcd: `a` is the primary of group `db` (volume `data`), `b` its secondary (the volume is
//! `r-data` there), `c` a third node that owns neither. While `a` is idle readers go to `a`;
//! when `a` reports itself busy they go to `b` (`b` itself reads its own copy, `a` sends its
//! own readers to `b`), and `fusevol cluster volumes` shows which site served; when `a` is
//! down the snapshot stays readable from `b` while the live volume fails with EIO.

mod common;

use std::time::Duration;

use common::cluster::{
    catalog_entry, node_entry, node_up, replicate_renamed, start_node, wait_all_up, TTL,
};
use common::etcd::Etcd;
use common::*;
use serde_json::Value;

const ARRAYS: &[&str] = &["a0:512M", "a1:512M"];
const LEN: u64 = 16 * MIB;

/// The replica entry of `data@s1` as node `p` shows it.
fn replica(p: &TestPool) -> Option<Value> {
    catalog_entry(p, "data")?["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["snapshot"] == "s1")
        .cloned()
}

fn served_by(p: &TestPool) -> (String, String) {
    let r = replica(p).expect("data@s1 has a replica entry");
    (
        r["served_by"].as_str().unwrap_or("").to_string(),
        r["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn reads_from(p: &TestPool, node: &str) -> u64 {
    replica(p).map_or(0, |r| r["reads"][node].as_u64().unwrap_or(0))
}

fn wait_busy(p: &TestPool, node: &str, busy: bool) {
    wait_until(
        &format!(
            "node '{node}' busy={busy} as {} sees it",
            p.pool().display()
        ),
        Duration::from_secs(20),
        || node_entry(p, node).is_some_and(|n| n["busy"] == busy),
    );
}

#[test]
fn group_snapshot_reads_go_to_the_other_site_while_the_owner_is_busy_or_down() {
    let etcd = Etcd::start();
    let mut a = start_node(&etcd, "a", ARRAYS, &[], None);
    let b = start_node(&etcd, "b", ARRAYS, &[], None);
    let c = start_node(&etcd, "c", ARRAYS, &[], None);
    a.set_budget(Duration::from_secs(600));
    wait_all_up(&[&a, &b, &c], &["a", "b", "c"]);
    let remote = tempfile::tempdir().unwrap();

    // The group: data on a, replicated to b as r-data; snapshot s1 of seed 1.
    a.create_volume("data", "64M");
    write_pattern(&a.vol("data"), 1, 0, LEN, true);
    replicate_renamed(&a, &b, "db", &["data"], remote.path());
    a.cli_ok(&["group", "snapshot", "db", "s1"]);
    // The live volume moves on: s1 must read as seed 1 wherever it is served.
    write_pattern(&a.vol("data"), 2, 0, LEN, true);
    wait_until("s1 applied on b", Duration::from_secs(30), || {
        b.mnt().join(".snapshots/r-data/s1").exists()
    });
    wait_until(
        "c's catalog lists data@s1 at both sites",
        Duration::from_secs(20),
        || replica(&c).is_some_and(|r| r["sites"].as_array().is_some_and(|s| s.len() == 2)),
    );
    let r = replica(&c).unwrap();
    assert_eq!(r["group"], "db");
    let sites: Vec<(String, String)> = r["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_string(),
                s["export"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sites,
        [
            ("a".to_string(), "data@s1".to_string()),
            ("b".to_string(), "r-data@s1".to_string())
        ]
    );
    // A snapshot made by hand on one site is no group snapshot: no replica entry.
    a.cli_ok(&["snapshot", "create", "data", "hand"]);
    thread_sleep(4);
    assert!(catalog_entry(&c, "data").unwrap()["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["snapshot"] != "hand"));

    // a idle: c's reads go to the owner.
    let snap_c = c.mnt().join(".snapshots/data/s1");
    verify_pattern(&snap_c, 1, 0, LEN, false);
    assert_eq!(served_by(&c), ("a".into(), "owner".into()));
    let a_reads = reads_from(&c, "a");
    assert!(a_reads > 0);

    // a busy (the operator says so): c's reads go to b, and say why.
    let set = a.cli_json(&["cluster", "set", "--busy", "on"]);
    assert_eq!(set["busy"], true, "{set}");
    wait_busy(&c, "a", true);
    verify_pattern(&snap_c, 1, 0, LEN, false);
    let (by, why) = served_by(&c);
    assert_eq!(by, "b");
    assert!(why.contains("owner 'a' is busy"), "{why}");
    assert!(reads_from(&c, "b") > 0);
    assert_eq!(reads_from(&c, "a"), a_reads, "no read went to a while busy");
    let text = c.cli_ok(&["cluster", "volumes"]);
    assert!(
        text.contains("data@s1") && text.contains("b:r-data@s1") && text.contains("a:data@s1 busy"),
        "{text}"
    );

    // b reads the snapshot through its own mount: from its own copy.
    wait_busy(&b, "a", true);
    verify_pattern(&b.mnt().join(".snapshots/data/s1"), 1, 0, LEN, false);
    assert_eq!(served_by(&b).0, "b");
    assert_eq!(reads_from(&b, "a"), 0);

    // a's own readers of its snapshot go to b while a is busy.
    wait_busy(&a, "b", false);
    verify_pattern(&a.mnt().join(".snapshots/data/s1"), 1, 0, LEN, true);
    assert_eq!(served_by(&a).0, "b");

    // Back to auto with a threshold an idle node is under: the owner again.
    a.cli_ok(&["cluster", "set", "--busy", "auto", "--busy-above", "1000"]);
    wait_busy(&c, "a", false);
    verify_pattern(&snap_c, 1, 0, LEN, false);
    assert_eq!(served_by(&c), ("a".into(), "owner".into()));

    // Bad settings are refused, naming what is wrong.
    let out = a.cli(&["cluster", "set"]);
    assert!(!out.status.success());
    let out = a.cli(&["cluster", "set", "--busy-above=-1"]);
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("busy threshold -1"),
        "{}",
        describe(&out)
    );
    let out = a.cli(&["cluster", "set", "--busy", "maybe"]);
    assert!(!out.status.success());

    // a down: the snapshot is still read from b, the live volume fails with EIO.
    a.kill9();
    wait_until("a down on c", Duration::from_secs(TTL + 6), || {
        !node_up(&c, "a")
    });
    verify_pattern(&snap_c, 1, 0, LEN, false);
    let (by, why) = served_by(&c);
    assert_eq!(by, "b");
    assert!(why.contains("owner 'a' is down"), "{why}");
    let f = open_ro(&c.vol("data"), true).unwrap();
    let mut buf = aligned(4096);
    let e = std::os::unix::fs::FileExt::read_at(&f, &mut buf[..], 0).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "live volume of a down owner"
    );
}

fn thread_sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}
