//! `fusevol stats`: the router's counters agree with what dd moved through the mount.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn stats(p: &TestPool, vol: &str) -> Value {
    let v = p.cli_json(&["stats", vol]);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    v[0].clone()
}

fn dd(args: &[&str]) {
    let out = run(Command::new("dd").args(args), CLI_TIMEOUT);
    assert!(out.status.success(), "dd {args:?}: {}", describe(&out));
}

#[test]
fn counters_match_dd_and_errors_are_counted_by_kind() {
    let p = TestPool::new(&["a0:256M", "a1:256M"], "256K");
    p.create_volume("data", "32M");
    p.create_volume("idle", "8M");
    let vol = p.vol("data");
    let path = vol.to_str().unwrap();
    let of = format!("of={path}");
    let iff = format!("if={path}");
    dd(&[
        "if=/dev/urandom",
        &of,
        "bs=1M",
        "count=8",
        "oflag=direct",
        "conv=notrunc",
    ]);
    dd(&[&iff, "of=/dev/null", "bs=1M", "count=4", "iflag=direct"]);
    let s = stats(&p, "data");
    assert_eq!(s["volume"], "data");
    let wb = s["write_bytes"].as_u64().unwrap();
    assert_eq!(wb, 8 << 20, "{s}");
    assert!(s["writes"].as_u64().unwrap() >= 8, "{s}");
    let rb = s["read_bytes"].as_u64().unwrap();
    assert!((4 << 20..=(4 << 20) + (4 << 20) / 100).contains(&rb), "{s}");
    let wl = &s["write_latency"];
    assert_eq!(wl["count"], s["writes"], "{s}");
    let (p50, p99, max) = (
        wl["p50_us"].as_f64().unwrap(),
        wl["p99_us"].as_f64().unwrap(),
        wl["max_us"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{s}");
    assert!(s["errors"].as_object().unwrap().is_empty(), "{s}");

    // A write past the end fails with ENOSPC and counts as beyond_end.
    let out = run(
        Command::new("dd").args([
            "if=/dev/zero",
            &of,
            "bs=1M",
            "count=1",
            "seek=32",
            "oflag=direct",
            "conv=notrunc",
        ]),
        CLI_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let s = stats(&p, "data");
    assert!(s["errors"]["beyond_end"].as_u64().unwrap_or(0) >= 1, "{s}");
    // A discard (punch hole) is counted.
    let out = run(
        Command::new("fallocate").args(["-p", "-o", "0", "-l", "1M", path]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let s = stats(&p, "data");
    assert_eq!(s["discards"].as_u64(), Some(1), "{s}");
    assert_eq!(s["discard_bytes"].as_u64(), Some(1 << 20), "{s}");
    // The other volume saw nothing; the table lists both.
    assert_eq!(stats(&p, "idle")["writes"].as_u64(), Some(0));
    let table = p.cli_ok(&["stats"]);
    assert!(
        table.contains("VOLUME") && table.contains("data") && table.contains("idle"),
        "{table}"
    );
    assert!(table.contains("beyond_end=1"), "{table}");
    // An unknown volume is not found (exit 1).
    assert_eq!(p.cli(&["stats", "nope"]).status.code(), Some(1));
}
