//! Backups (issue 14) through the mount and the CLI: volume information set and read by the
//! CLI and as extended attributes, surviving kill -9, carried by every copy with its origin;
//! the catalog and its rebuild; export/import round trips and damaged streams.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn getfattr(path: &Path, name: &str) -> Option<String> {
    let out = run(
        Command::new(tool("getfattr"))
            .arg("--only-values")
            .arg("-n")
            .arg(name)
            .arg(path),
        CLI_TIMEOUT,
    );
    out.status.success().then(|| text(&out.stdout))
}

fn setfattr(path: &Path, name: &str, value: &str) -> std::process::Output {
    run(
        Command::new(tool("setfattr"))
            .arg("-n")
            .arg(name)
            .arg("-v")
            .arg(value)
            .arg(path),
        CLI_TIMEOUT,
    )
}

fn info(p: &TestPool, name: &str) -> Value {
    p.cli_json(&["volume", "info", "get", name])
}

fn field(v: &Value, key: &str) -> String {
    v["fields"][key].as_str().unwrap_or("").to_string()
}

#[test]
fn info_by_cli_and_xattr_agree_and_survive_kill9() {
    let mut p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("db", "32M");
    p.cli_ok(&[
        "volume",
        "info",
        "set",
        "db",
        "label=nightly",
        "host=db1",
        "mountpoint=/srv/db",
        "user.ticket=OPS-7",
    ]);
    let vol = p.vol("db");
    assert_eq!(
        getfattr(&vol, "user.fusevol.label").as_deref(),
        Some("nightly")
    );
    assert_eq!(
        getfattr(&vol, "user.fusevol.user.ticket").as_deref(),
        Some("OPS-7")
    );
    let out = setfattr(&vol, "user.fusevol.app", "postgres");
    assert!(out.status.success(), "setfattr: {}", describe(&out));
    assert_eq!(
        p.cli_ok(&["volume", "info", "get", "db", "app"]).trim(),
        "postgres"
    );
    // getfattr -d lists every field.
    let dump = run(
        Command::new(tool("getfattr")).arg("-d").arg(&vol),
        CLI_TIMEOUT,
    );
    let dump = text(&dump.stdout);
    for k in ["label", "host", "mountpoint", "app", "user.ticket"] {
        assert!(
            dump.contains(&format!("user.fusevol.{k}=")),
            "{k} missing in {dump}"
        );
    }
    // Origin fields are the array's, not the user's; unknown keys are refused.
    assert!(!setfattr(&vol, "user.fusevol.origin.kind", "x")
        .status
        .success());
    assert!(!p
        .cli(&["volume", "info", "set", "db", "colour=red"])
        .status
        .success());
    assert!(!setfattr(&vol, "user.other", "x").status.success());
    // Removal both ways.
    p.cli_ok(&["volume", "info", "unset", "db", "mountpoint"]);
    assert_eq!(getfattr(&vol, "user.fusevol.mountpoint"), None);
    let out = run(
        Command::new(tool("setfattr"))
            .arg("-x")
            .arg("user.fusevol.host")
            .arg(&vol),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "setfattr -x: {}", describe(&out));
    assert_eq!(field(&info(&p, "db"), "host"), "");
    // The info is no part of the data: the volume still reads as zeros.
    let data = std::fs::read(&vol).unwrap();
    assert!(data.iter().all(|&b| b == 0));
    // Data and info written, then kill -9: the info is in the metadata log.
    p.kill9();
    p.restart();
    let v = info(&p, "db");
    assert_eq!(v["status"], "valid");
    assert_eq!(field(&v, "label"), "nightly");
    assert_eq!(field(&v, "app"), "postgres");
    assert_eq!(field(&v, "user.ticket"), "OPS-7");
    assert_eq!(
        getfattr(&p.vol("db"), "user.fusevol.label").as_deref(),
        Some("nightly")
    );
    // And through a checkpoint (sync), then a clean restart.
    p.cli_ok(&["sync"]);
    p.restart();
    assert_eq!(field(&info(&p, "db"), "host"), "");
    assert_eq!(field(&info(&p, "db"), "app"), "postgres");
    assert_eq!(p.volume_info("db")["info"]["fields"]["label"], "nightly");
    p.stop();
    p.check_clean();
}

#[test]
fn every_copy_carries_info_and_origin() {
    let mut p = TestPool::new(&["a0:256M", "a1:256M"], "1M");
    p.create_volume("app", "16M");
    p.cli_ok(&["volume", "info", "set", "app", "label=weekly", "host=h1"]);
    let pool_id = p.pool_info()["pool_id"].clone();
    // Snapshot.
    p.cli_ok(&["snapshot", "create", "app", "s1"]);
    let s = info(&p, "app@s1");
    assert_eq!(field(&s, "label"), "weekly");
    assert_eq!(field(&s, "origin.kind"), "snapshot");
    assert_eq!(field(&s, "origin.volume"), "app");
    assert!(!field(&s, "origin.pool").is_empty());
    if let Some(id) = pool_id.as_str() {
        assert!(id.contains(&field(&s, "origin.pool")) || field(&s, "origin.pool").contains(id));
    }
    let snapfile = p.mnt().join(".snapshots/app/s1");
    assert_eq!(
        getfattr(&snapfile, "user.fusevol.origin.kind").as_deref(),
        Some("snapshot")
    );
    // The snapshot's record is its own: changing the volume's later does not change it.
    p.cli_ok(&["volume", "info", "set", "app", "label=changed"]);
    assert_eq!(field(&info(&p, "app@s1"), "label"), "weekly");
    // Clone of the snapshot.
    p.cli_ok(&["snapshot", "clone", "app", "s1", "app-clone"]);
    let c = info(&p, "app-clone");
    assert_eq!(field(&c, "label"), "weekly");
    assert_eq!(field(&c, "origin.kind"), "clone");
    assert_eq!(field(&c, "origin.volume"), "app");
    assert_eq!(field(&c, "origin.snapshot"), "s1");
    // Split S-VOL: gets the P-VOL's record at split, not before.
    p.cli_ok(&["pair", "create", "app", "app-s", "--create-svol", "--wait"]);
    assert_eq!(info(&p, "app-s")["status"], "missing");
    p.cli_ok(&["pair", "split", "app"]);
    let sv = info(&p, "app-s");
    assert_eq!(field(&sv, "label"), "changed");
    assert_eq!(field(&sv, "origin.kind"), "split");
    assert_eq!(field(&sv, "origin.volume"), "app");
    // All of it survives kill -9.
    p.kill9();
    p.restart();
    assert_eq!(field(&info(&p, "app-s"), "origin.kind"), "split");
    assert_eq!(field(&info(&p, "app@s1"), "origin.kind"), "snapshot");
    assert_eq!(field(&info(&p, "app-clone"), "origin.snapshot"), "s1");
    p.stop();
    p.check_clean();
}
