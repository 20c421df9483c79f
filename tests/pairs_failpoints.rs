//! A pair suspended by an S-VOL write error, through the daemon and the CLI (failpoint build).
#![cfg(feature = "failpoints")]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::*;

#[test]
fn svol_write_error_suspends_the_pair_and_pair_wait_exits_6() {
    let mut p = TestPool::init(&["p0:128M:fast", "b0:128M:backup"], "256K");
    p.start_env(&[("FAILPOINTS", "mirror::dual_target::svol_write=return")]);
    p.cli_ok(&["volume", "create", "v", "--size", "16M", "--tier", "fast"]);
    p.cli_ok(&[
        "pair",
        "create",
        "v",
        "s",
        "--create-svol",
        "--svol-tier",
        "backup",
    ]);
    let out = p.cli(&["pair", "wait", "v", "--state", "PAIR", "--timeout", "60"]);
    assert!(out.status.success(), "{}", describe(&out));
    // A host write now fails on the S-VOL side: the pair goes PSUE, the host write succeeds.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.vol("v"))
        .unwrap();
    f.write_all_at(&[7u8; 4096], 0).unwrap();
    f.sync_data().unwrap();
    let st = p.cli_json(&["pair", "status", "v"]);
    assert_eq!(st[0]["state"], "PSUE", "{st}");
    assert!(st[0]["error"].as_str().unwrap().contains("S-VOL"), "{st}");
    // Waiting for another state ends at once with exit 6, naming the error.
    let out = p.cli(&["pair", "wait", "v", "--state", "PSUS", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(text(&out.stderr).contains("PSUE"), "{}", describe(&out));
    // Host I/O to the P-VOL goes on.
    let mut b = [0u8; 4096];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, [7u8; 4096]);
}
