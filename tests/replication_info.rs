//! Volume information travels to a replicated secondary (issue 14) with two real daemons and
//! mounts: the records of a group's volumes and of its group snapshots reach the secondary
//! through the journal, in order with the data, and carry origin kind `replica` naming the
//! primary's volume and pool; the secondary's catalog lists the group snapshots with their
//! information, not as missing.

mod common;

use std::time::Duration;

use common::sites::Daemons;
use common::*;
use serde_json::Value;

fn status(p: &TestPool) -> Value {
    p.cli_json(&["group", "status", "g"])
        .as_array()
        .expect("list")[0]
        .clone()
}

/// Wait until the secondary applied everything the primary journaled so far.
fn wait_applied(p: &TestPool, s: &TestPool) {
    let written = status(p)["written"].as_u64().expect("written");
    s.cli_ok(&[
        "group",
        "wait",
        "g",
        "--applied",
        &written.to_string(),
        "--timeout",
        "60",
    ]);
}

fn field(v: &Value, k: &str) -> String {
    v["fields"][k].as_str().unwrap_or("").to_string()
}

#[test]
fn info_reaches_the_secondary_with_origin_replica() {
    let Daemons { p, s, remote } = Daemons::new(1, "128M", "1M");
    p.set_budget(Duration::from_secs(300));
    s.set_budget(Duration::from_secs(300));
    let remote_s = remote.to_str().unwrap().to_string();
    p.create_volume("db", "8M");
    // Set before the group exists: sent when the volume joins.
    p.cli_ok(&["volume", "info", "set", "db", "label=nightly", "host=db1"]);
    p.create_group("g", &["db"], &remote);
    s.cli_ok(&["group", "attach", "g", "--remote", &remote_s]);
    std::fs::write(p.vol("db"), vec![5u8; 1 << 20]).unwrap();
    wait_applied(&p, &s);
    let v = s.cli_json(&["volume", "info", "get", "db"]);
    assert_eq!(v["status"], "valid", "{v}");
    assert_eq!(field(&v, "label"), "nightly", "{v}");
    assert_eq!(field(&v, "host"), "db1", "{v}");
    assert_eq!(field(&v, "origin.kind"), "replica", "{v}");
    assert_eq!(field(&v, "origin.volume"), "db", "{v}");
    // origin.pool is the primary's pool id (hex, as `pool info` shows it).
    assert_eq!(
        field(&v, "origin.pool"),
        p.cli_json(&["pool", "info"])["pool_id"].as_str().unwrap(),
        "{v}"
    );
    // A change on the primary follows, after the data written before it.
    std::fs::write(p.vol("db"), vec![6u8; 1 << 20]).unwrap();
    p.cli_ok(&[
        "volume",
        "info",
        "set",
        "db",
        "app=postgres",
        "user.ticket=OPS-9",
    ]);
    p.cli_ok(&["group", "snapshot", "g", "gs1"]);
    p.cli_ok(&["volume", "info", "set", "db@gs1", "user.verified=yes"]);
    wait_applied(&p, &s);
    let v = s.cli_json(&["volume", "info", "get", "db"]);
    assert_eq!(field(&v, "app"), "postgres", "{v}");
    assert_eq!(field(&v, "user.ticket"), "OPS-9", "{v}");
    let g = s.cli_json(&["volume", "info", "get", "db@gs1"]);
    assert_eq!(g["status"], "valid", "{g}");
    assert_eq!(field(&g, "label"), "nightly", "{g}");
    assert_eq!(field(&g, "user.verified"), "yes", "{g}");
    assert_eq!(field(&g, "origin.kind"), "replica", "{g}");
    assert_eq!(field(&g, "origin.snapshot"), "gs1", "{g}");
    // The secondary's snapshot holds the data of the marker.
    let data = std::fs::read(s.mnt().join(".snapshots/db/gs1")).unwrap();
    assert!(data[..1 << 20].iter().all(|&b| b == 6));
    // The secondary's catalog lists the group snapshot with its information.
    let cat = s.cli_json(&["catalog"]);
    let e = cat
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "db@gs1")
        .cloned()
        .unwrap_or_else(|| panic!("db@gs1 not in {cat}"));
    assert_eq!(e["info"], "valid", "{e}");
    assert_eq!(e["kind"], "replica", "{e}");
    assert_eq!(e["label"], "nightly", "{e}");
    let text = s.cli_ok(&["catalog"]);
    assert!(!text.contains("MISSING"), "{text}");
    // An unset travels too.
    p.cli_ok(&["volume", "info", "unset", "db", "app"]);
    p.cli_ok(&["group", "snapshot", "g", "gs2"]);
    wait_applied(&p, &s);
    let v = s.cli_json(&["volume", "info", "get", "db"]);
    assert_eq!(field(&v, "app"), "", "{v}");
    let g2 = s.cli_json(&["volume", "info", "get", "db@gs2"]);
    assert_eq!(g2["status"], "valid", "{g2}");
    assert_eq!(field(&g2, "origin.kind"), "replica", "{g2}");
}
